"""The playbook's special paths that can close a case at any wait: a dispute (the card
issuer's process decides, not us) and the customer's withdrawal. The billing-error fast
path is the policy's (a confirmed billing error is approved in full with an apology)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contract import TERMINAL_STATUSES, CaseStatus, DisputeOpenedSignal, WithdrawSignal

    from . import patches
    from .runtime import CaseRuntime


async def on_dispute(rt: CaseRuntime, sig: DisputeOpenedSignal) -> None:
    case = rt.case
    if case.dispute is not None and case.dispute.dispute_id == sig.dispute_id:
        return  # a redelivered webhook
    case.dispute = sig
    if case.progress.refund_started or case.status in TERMINAL_STATUSES:
        message = (f"Dispute {sig.dispute_id} opened ({sig.reason or 'no reason'}) while "
                   f"the case is {case.status}; the refund was already under way")
        rt.record("dispute_opened", message, actor="stripe", dispute_id=sig.dispute_id)
    else:
        message = (f"Dispute {sig.dispute_id} opened ({sig.reason or 'no reason'}): no "
                   "refund will be made, the dispute process decides")
        case.progress.closing = CaseStatus.disputed
        rt.set_status(CaseStatus.disputed, message, actor="stripe")
        if patches.has(patches.TEXT_DISPUTE_EMAIL):  # what happens next, to the customer
            amount = sig.amount or (case.facts.amount if case.facts else 0)
            await rt.email("dispute_opened", f"dispute_{sig.dispute_id}",
                           {"amount": amount, "currency": case.currency})
    await rt.notify_ops("dispute_opened", message, f"dispute_{sig.dispute_id}")


def on_withdraw(rt: CaseRuntime, sig: WithdrawSignal) -> None:
    case = rt.case
    actor = sig.by if sig.by in ("customer", "system") else f"agent:{sig.by}"
    if case.progress.refund_started or case.status in TERMINAL_STATUSES:
        why = ("the refund is already made" if case.progress.refund_started
               else f"the case is already {case.status}")
        rt.record("withdraw_refused", f"Withdrawal refused: {why}", actor=actor, note=sig.note)
        return
    case.progress.closing = CaseStatus.withdrawn
    rt.set_status(CaseStatus.withdrawn, f"withdrawn{': ' + sig.note if sig.note else ''}",
                  actor=actor)


def close_if_disputed(rt: CaseRuntime) -> None:
    """No refund was made and the charge is disputed (a dispute_opened signal during
    the refund, or the fresh facts): the dispute process decides, not us."""
    case = rt.case
    facts, dispute = case.facts, case.dispute
    if case.progress.closing is not None or case.progress.refund_started:
        return
    if dispute is None and not (facts and (facts.disputed or facts.dispute_ids)):
        return
    which = dispute.dispute_id if dispute else ", ".join(facts.dispute_ids if facts
                                                           else []) or "open"
    case.progress.closing = CaseStatus.disputed
    rt.set_status(CaseStatus.disputed, f"Dispute {which} on the charge: no refund will be "
                  "made, the dispute process decides", actor="stripe")
