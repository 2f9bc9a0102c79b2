"""Step 4: ask the customer what the policy (or an agent) needs, wait durably for the reply
with one reminder, and close politely at the timeout. SendGrid reporting the questions
undeliverable hands the case to an agent at once instead of waiting out the timeout."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contract import (
        UNDELIVERABLE_EMAIL_EVENTS,
        CaseStatus,
        CustomerReplySignal,
        EmailEventSignal,
        FeedbackSignal,
    )

    from . import patches
    from .follow_up import rating_in, record_feedback
    from .runtime import CaseRuntime, iso

AskOutcome = Literal["replied", "abandoned", "undeliverable"]


async def ask(rt: CaseRuntime, questions: list[str], asked_by: str) -> AskOutcome:
    """"replied": the case is re-evaluated; "undeliverable": an agent takes over."""
    case, progress, sla = rt.case, rt.case.progress, rt.policy.sla
    progress.info_rounds += 1
    progress.info_undeliverable = False
    rounds = progress.info_rounds
    reply_by = workflow.now() + sla.info_timeout
    case.questions = list(questions)
    rt.set_status(CaseStatus.awaiting_info, f"{len(questions)} question(s) for the customer",
                  actor=asked_by)
    context = {"questions": list(questions), "reply_by": iso(reply_by)}
    seen = len(case.replies)  # before the email: a quick reply must count
    await rt.email("info_request", f"info_request_{rounds}", context)

    def replied() -> bool:
        return len(case.replies) > seen

    def answered_or_bounced() -> bool:
        return replied() or progress.info_undeliverable

    if not await rt.wait("the customer's reply", answered_or_bounced, sla.info_reminder,
                         reply_by):
        await rt.email("reminder", f"reminder_{rounds}", context)
        left = max(reply_by - workflow.now(), timedelta(seconds=1))
        if not await rt.wait("the customer's reply (reminded)", answered_or_bounced, left):
            rt.set_status(CaseStatus.abandoned, f"no reply to our questions by {iso(reply_by)}")
            await rt.email("abandoned", "abandoned", {"questions": list(questions)})
            return "abandoned"
    if not replied():
        return "undeliverable"
    case.questions = []
    rt.set_status(CaseStatus.assessing, "the customer replied; deciding again")
    return "replied"


def on_reply(rt: CaseRuntime, sig: CustomerReplySignal) -> None:
    """A reply (inbound email, API or CLI): kept with its new documents, whatever the
    case's state; a rating in a reply to the follow-up email is feedback."""
    case = rt.case
    case.replies.append(sig)
    new = [a for a in sig.attachments if a not in case.documents]
    case.documents.extend(new)
    line = f"The customer replied by {sig.channel}"
    if new:
        line += f" with {', '.join(new)}"
    if case.status != CaseStatus.awaiting_info:
        line += f" (no question was open: the case is {case.status})"
    rt.record("customer_replied", line, actor="customer", attachments=new)
    rating = rating_in(sig.text)
    if (case.status == CaseStatus.refunded and case.feedback is None
            and rating is not None and workflow.patched(patches.FEEDBACK_BY_EMAIL)):
        # The follow-up email asks for a 1-5 rating by reply.
        record_feedback(rt, FeedbackSignal(rating=rating, comment=sig.text[:5_000]), "email")


def on_email_event(rt: CaseRuntime, sig: EmailEventSignal) -> None:
    """A SendGrid delivery event; a bounce of our open questions hands over to an agent."""
    case, progress = rt.case, rt.case.progress
    if sig.sg_event_id is not None:
        if sig.sg_event_id in progress.email_events_seen:
            return  # SendGrid delivers events at least once
        progress.email_events_seen.append(sig.sg_event_id)
    rt.record("email_event", f"Email {sig.template or ''} to {sig.email}: {sig.event}"
              f"{' (' + sig.reason + ')' if sig.reason else ''}", actor="sendgrid",
              event=sig.event, template=sig.template)
    if (sig.event in UNDELIVERABLE_EMAIL_EVENTS and sig.template in ("info_request", "reminder")
            and case.status == CaseStatus.awaiting_info
            and sig.email.lower() == case.request.customer_email.lower()
            and workflow.patched(patches.UNDELIVERABLE_INFO)):
        progress.info_undeliverable = True
