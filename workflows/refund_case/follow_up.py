"""Step 7: after the refund settles, confirm it (with the acquirer reference when Stripe
has one) and ask for a 1-5 rating, recorded once from a signal or an email reply."""

from __future__ import annotations

import re

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contract import CaseStatus, FeedbackSignal

    from .runtime import CaseRuntime

FEEDBACK_HINT = {
    "en": "Reply to this email with a rating from 1 (poor) to 5 (excellent) and a comment.",
    "ja": "このメールに 1（不満）から 5（満足）の評価とご意見を添えてご返信ください。",
    "ko": "이 메일에 1(불만족)부터 5(매우 만족)까지의 평가와 의견을 회신해 주세요.",
}


async def follow_up(rt: CaseRuntime) -> bool:
    """True when the case was followed up; False when the refund failed after all (a
    late reversal), which the refund step then reports."""
    case, sla = rt.case, rt.policy.sla
    await rt.wait("the follow-up date", lambda: case.progress.refund_reversed,
                  sla.follow_up_delay)
    refund = case.refund
    assert refund is not None
    if case.progress.refund_reversed:
        return False  # no "your money is back" after a failure
    await rt.email("refund_completed", "refund_completed", {
        "amount": refund.amount, "currency": refund.currency,
        "acquirer_reference": refund.acquirer_reference or "",
        "feedback_hint": FEEDBACK_HINT[case.request.locale],
    })
    if not await rt.wait("the customer's feedback", lambda: case.feedback is not None,
                         sla.feedback_wait):
        rt.record("no_feedback", f"No feedback within {sla.feedback_wait}")
    rt.set_status(CaseStatus.completed, "refunded and followed up")
    return True


def on_feedback(rt: CaseRuntime, sig: FeedbackSignal) -> None:
    case = rt.case
    if case.status != CaseStatus.refunded:
        rt.record("feedback_refused", f"Feedback {sig.rating}/5 not recorded: the case "
                  f"is {case.status}", actor="customer")
        return
    if case.feedback is not None:
        rt.record("feedback_refused", f"Feedback {sig.rating}/5 not recorded: "
                  f"{case.feedback.rating}/5 was already given", actor="customer")
        return
    record_feedback(rt, sig, "signal")


def record_feedback(rt: CaseRuntime, sig: FeedbackSignal, channel: str) -> None:
    rt.case.feedback = sig
    rt.record("feedback", f"Rated {sig.rating}/5: {sig.comment}", actor="customer",
              rating=sig.rating, channel=channel)


# Full-width forms typed by Japanese and Korean keyboards ("５", "３／５", "Rating：4").
_FULL_WIDTH = str.maketrans("０１２３４５６７８９：／＝", "0123456789:/=")


def has_full_width(text: str) -> bool:
    return text != text.translate(_FULL_WIDTH)


def rating_in(text: str, *, full_width: bool = False) -> int | None:
    """A 1-5 rating at the start of a reply ("4", "5 - quick", "Rating: 3/5"), else None.
    Only the first line counts: quoted history and signatures hold other digits.
    `full_width`: full-width digits count too ("５"); cases started before did not read
    them (patch replies-full-width-rating)."""
    if full_width:
        text = text.translate(_FULL_WIDTH)
    first = text.strip().splitlines()[0] if text.strip() else ""
    m = re.match(r"^\s*(?:rating\s*[:=]?\s*)?([1-5])(?:\s*/\s*5)?(?![0-9])", first,
                 re.IGNORECASE)
    return int(m.group(1)) if m else None
