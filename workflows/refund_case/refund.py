"""Step 6: refund through Stripe exactly once and follow the refund to a final status.

One idempotency key per refund round (`<case id>:refund`, then `:refund-N`), never per
attempt; a new round exists only after Stripe refused the earlier one for good or the
refund failed and an agent retried it, and the activity first looks for a refund carrying
the case id (a failed one is not reused). Stripe's webhooks (signal
`refund_update`) settle the refund; polling is the bounded fallback."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.stripe_models import (
        FINAL_REFUND_STATUSES,
        STRIPE_STEP_DEADLINE,
        CreateRefundInput,
        GetRefundInput,
        RefundResult,
    )
    from core.contract import CaseStatus, RefundUpdateSignal
    from core.money import plain

    from . import patches, stripe_calls
    from .assess import root_cause_tag
    from .incident import apology_context
    from .runtime import CaseRuntime, cause, details, iso

RefundOutcome = Literal["refunded", "failed", "not_made", "nothing_left"]

# How often to poll Stripe when no webhook came, and for how long.
MAX_REFUND_POLLS = 6
MAX_POLL_INTERVAL = timedelta(hours=12)
# What the approval email promises: the money is back on the card within this time.
REFUND_ARRIVAL = timedelta(days=10)


async def refund(rt: CaseRuntime, amount: int) -> RefundOutcome:
    case, progress = rt.case, rt.case.progress
    facts = case.facts
    assert facts is not None
    if amount > case.refundable:
        amount = case.refundable
        rt.record("amount_reduced", f"Refunds made outside this case leave "
                  f"{rt.money(amount)} to refund", amount=amount)
    if amount <= 0:
        if rt.paths.within_refundable:
            await close_nothing_left(rt)
        else:
            rt.set_status(CaseStatus.completed, "nothing is left to refund on the charge")
        return "nothing_left"
    case.approved_amount = amount
    progress.refund_started = True
    progress.refund_rounds += 1
    step = "refund" if progress.refund_rounds == 1 else f"refund-{progress.refund_rounds}"
    rt.set_status(CaseStatus.refunding, f"refunding {rt.money(amount)}")
    request = CreateRefundInput(
        case_id=case.case_id, charge_id=facts.charge_id,
        payment_intent_id=facts.payment_intent_id, amount=amount, currency=case.currency,
        idempotency_key=f"{workflow.info().workflow_id}:{step}",
        reason_tag=root_cause_tag(case.root_cause) or case.request.reason.value,
    )
    try:
        # Stripe unreachable is not a refusal: the same round (same idempotency key) is
        # tried again, so nothing is paid twice and nobody approves again.
        result = await rt.call_stripe(
            f"refunding {rt.money(amount)}",
            f"Stripe to create the refund of {rt.money(amount)} (retried until it answers)",
            lambda deadline: stripe_calls.create_refund(
                request, summary=f"Refund {rt.money(amount)} on {facts.charge_id}",
                deadline=deadline, runner=rt.first_alone))
    except ActivityError as err:
        await _not_made(rt, err)
        return "not_made"
    _created(rt, result)
    if progress.apology_due:  # a confirmed billing error: now that the refund exists
        progress.apology_due = False
        await send_apology(rt, result.amount, "apology")
    return await _follow(rt)


async def send_apology(rt: CaseRuntime, amount: int, step: str) -> None:
    """The billing-error apology: the refund, what went wrong in the customer's words,
    and when they hear from us again."""
    await rt.email("billing_error_apology", step, {
        "amount": amount, "currency": rt.case.currency,
        **apology_context(rt.case, rt.policy),
        "next_steps_by": iso(workflow.now() + REFUND_ARRIVAL)})


async def close_nothing_left(rt: CaseRuntime) -> None:
    """Refunds made outside the case (e.g. in the Stripe dashboard) left nothing to refund:
    the case closes and the customer is told why, never an approval of 0."""
    case = rt.case
    outside = case.outside_refunded
    case.close_reason = "nothing is left to refund on the charge" + (
        f": {rt.money(outside)} was refunded outside this case" if outside else "")
    rt.set_status(CaseStatus.closed, case.close_reason)
    charged = case.facts.amount if case.facts is not None else 0
    await rt.email("nothing_left", "nothing_left", {
        "amount": charged, "currency": case.currency,
        "refunded": max(0, charged - case.refundable)})


async def _follow(rt: CaseRuntime) -> RefundOutcome:
    """Wait for Stripe's webhook; poll as a bounded fallback."""
    sla = rt.policy.sla.refund_settle_poll

    def final() -> bool:
        return rt.case.refund is not None and rt.case.refund.status in FINAL_REFUND_STATUSES

    if not final():
        await rt.wait("Stripe's refund webhook", final, sla)
    interval = sla
    for _ in range(MAX_REFUND_POLLS):
        if final():
            break
        await _poll(rt)
        interval = min(interval * 2, MAX_POLL_INTERVAL)
        if not final():
            await rt.wait("the refund to settle", final, interval)
    if not final():
        await rt.notify_ops("refund_pending", f"Refund still not settled after "
                            f"{MAX_REFUND_POLLS} polls", "refund_pending")
        await rt.wait("the refund to settle (escalated)", final, None)
    made = rt.case.refund
    assert made is not None
    if made.status == "succeeded":
        rt.set_status(CaseStatus.refunded, f"refund {made.refund_id} succeeded", actor="stripe")
        return "refunded"
    await report_failed(rt)
    return "failed"


async def report_failed(rt: CaseRuntime) -> None:
    """The money did not go back: the customer and ops are told."""
    made = rt.case.refund
    assert made is not None
    reason = made.failure_reason or made.status
    if rt.paths.every_wait:
        rt.case.progress.agent_decision = None  # agents retry or close from now on
    rt.set_status(CaseStatus.refund_failed, f"refund {made.refund_id} {made.status} ({reason})",
                  actor="stripe")
    rounds = rt.case.progress.refund_rounds
    step = "refund_failed" if rounds <= 1 else f"refund_failed-{rounds}"
    await rt.email("refund_failed", step, {
        "amount": made.amount, "currency": made.currency, "failure_reason": reason})
    await rt.notify_ops("refund_failed", f"Refund {made.refund_id} {made.status}: {reason}"
                        + (". An agent retries the refund or closes the case"
                           if rt.paths.every_wait else ""), step)


async def _poll(rt: CaseRuntime) -> None:
    made = rt.case.refund
    assert made is not None
    try:
        result = await stripe_calls.get_refund(
            GetRefundInput(refund_id=made.refund_id), summary=f"Poll refund {made.refund_id}",
            deadline=STRIPE_STEP_DEADLINE)
    except ActivityError as err:
        rt.record("refund_poll_failed", f"Polling the refund failed: {cause(err)}")
        return
    apply_update(rt, result.as_update("poll"))


async def _not_made(rt: CaseRuntime, err: ActivityError) -> None:
    """A permanent Stripe refusal (or retries exhausted): an agent takes over. No money
    moved (a refund made by a lost attempt is found by case id in the next round)."""
    case = rt.case
    found = details(err)
    code = str(found.get("code") or "unknown")
    message = str(found.get("message") or cause(err))
    case.refund_error = {"code": code, "message": message}
    case.progress.refund_started = False
    rt.record("refund_refused", f"Stripe refused the refund ({code}): {message}",
              actor="stripe", code=code, round=case.progress.refund_rounds)
    await rt.notify_ops("refund_error", f"Stripe refused the refund ({code}): {message}."
                        " An agent must take the case over.",
                        f"refund_error_{case.progress.refund_rounds}")


def _created(rt: CaseRuntime, result: RefundResult) -> None:
    rt.case.refund = result
    verb = "found (already made for this case)" if result.reused else "created"
    rt.record("refund_created", f"Refund {result.refund_id} of "
              f"{plain(result.amount, result.currency)} {verb}: {result.status}",
              actor="stripe", refund_id=result.refund_id, status=result.status)
    early = rt.case.progress.early_refund_updates.pop(result.refund_id, None)
    if early is not None:
        apply_update(rt, early)


def on_refund_update(rt: CaseRuntime, sig: RefundUpdateSignal) -> None:
    """Stripe's word on a refund of this charge: ours (this round's or an earlier failed
    round's), or one made outside the case."""
    for i, earlier in enumerate(rt.case.earlier_refunds):
        if earlier.refund_id == sig.refund_id:
            if earlier.status not in FINAL_REFUND_STATUSES and sig.status != earlier.status:
                rt.case.earlier_refunds[i] = earlier.model_copy(update={"status": sig.status})
                rt.record("refund_status", f"Earlier refund {sig.refund_id} is {sig.status}",
                          actor="stripe", status=sig.status, source=sig.source)
            return
    ours = rt.case.refund
    if sig.case_id == rt.case.case_id or (
            sig.case_id is None and ours is not None and ours.refund_id == sig.refund_id):
        apply_update(rt, sig)
    else:
        _outside(rt, sig)


def apply_update(rt: CaseRuntime, sig: RefundUpdateSignal) -> None:
    """One refund status change; duplicates and stale updates change nothing."""
    case = rt.case
    made = case.refund
    if made is None:  # the webhook beat the activity's answer
        # Stripe does not order its events: a late "pending" must not hide a final status.
        early = case.progress.early_refund_updates
        held = early.get(sig.refund_id)
        if held is None or held.status not in FINAL_REFUND_STATUSES:
            early[sig.refund_id] = sig
            rt.record("refund_update_held", f"Refund {sig.refund_id} reported {sig.status} "
                      "before Stripe answered our request; applied when it does",
                      actor="stripe", status=sig.status)
        return
    if sig.refund_id != made.refund_id:
        _outside(rt, sig)
        return
    if sig.acquirer_reference and sig.acquirer_reference != made.acquirer_reference:
        # Stripe sends the reference later, in an update that keeps the status.
        made = case.refund = made.model_copy(
            update={"acquirer_reference": sig.acquirer_reference})
        rt.record("acquirer_reference", f"Refund {sig.refund_id} has acquirer reference "
                  f"{sig.acquirer_reference}", actor="stripe")
    if (made.status == "succeeded" and sig.status == "failed"
            and case.status == CaseStatus.refunded
            and patches.has(patches.REFUND_REVERSAL)):
        # Rare, and documented by Stripe: a refund fails after it succeeded.
        case.progress.refund_reversed = True
    elif made.status in FINAL_REFUND_STATUSES or sig.status == made.status:
        return
    case.refund = made.model_copy(update={
        "status": sig.status,
        "failure_reason": sig.failure_reason or made.failure_reason,
        "acquirer_reference": sig.acquirer_reference or made.acquirer_reference,
    })
    rt.record("refund_status", f"Refund {sig.refund_id} is {sig.status}"
              f"{' (' + sig.failure_reason + ')' if sig.failure_reason else ''}",
              actor="stripe", status=sig.status, source=sig.source)


def _outside(rt: CaseRuntime, sig: RefundUpdateSignal) -> None:
    """A refund on the charge this case did not make (e.g. in the Stripe dashboard):
    recorded, and its amount no longer refundable by the case."""
    case = rt.case
    known = {r.refund_id: i for i, r in enumerate(case.external_refunds)}
    result = RefundResult(refund_id=sig.refund_id, status=sig.status, amount=sig.amount or 0,
                          currency=sig.currency or case.currency, charge_id=sig.charge_id,
                          case_id=sig.case_id)
    if sig.refund_id in known:
        held = case.external_refunds[known[sig.refund_id]]
        if held.status in FINAL_REFUND_STATUSES or held.status == sig.status:
            return  # a duplicate or a stale event
        case.external_refunds[known[sig.refund_id]] = result
        # Its status moves what is refundable (a failed one gives the amount back).
        rt.record("outside_refund", f"Refund {sig.refund_id} made outside this case is "
                  f"{sig.status}; {rt.money(case.refundable)} remains refundable",
                  actor="stripe", refund_id=sig.refund_id, amount=result.amount,
                  status=sig.status)
        return
    case.external_refunds.append(result)
    rt.record("outside_refund", f"Refund {sig.refund_id} of {rt.money(sig.amount or 0)} was "
              f"made outside this case ({sig.status}); {rt.money(case.refundable)} remains "
              "refundable", actor="stripe", refund_id=sig.refund_id, amount=sig.amount or 0)
    rt.keep_search_attributes()
