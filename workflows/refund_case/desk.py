"""The desk around a case: who holds it (`RefundAssignee`, kept for the console's queue),
agents' notes for each other, and later requests for the same charge joined as replies.
None of these moves the case; who may give a case to whom is the console's and the API's
rule (roles live there), the case only refuses what cannot be."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contract import (
        TERMINAL_STATUSES,
        ActionResult,
        AssignSignal,
        CustomerReplySignal,
        NoteSignal,
    )

    from .decide import Refusal
    from .runtime import CaseRuntime

MAX_JOINED_KEPT = 100


def assign_refusal(rt: CaseRuntime, sig: AssignSignal) -> Refusal | None:
    case = rt.case
    if case.status in TERMINAL_STATUSES:
        return Refusal("wrong_state", f"the case is {case.status}: nobody needs to hold it")
    if sig.assignee == case.assignee:
        holder = f"{sig.assignee} already holds the case" if sig.assignee \
            else "nobody holds the case"
        return Refusal("invalid", holder)
    return None


def assign(rt: CaseRuntime, sig: AssignSignal) -> ActionResult:
    case = rt.case
    before, case.assignee = case.assignee, sig.assignee
    actor = f"agent:{sig.agent}"
    if sig.assignee is None:
        message = f"{before} no longer holds the case"
    elif sig.assignee == sig.agent and before is None:
        message = f"{sig.agent} takes the case"
    else:
        message = f"{sig.agent} gives the case to {sig.assignee}" + (
            f" (held by {before})" if before else "")
    rt.record("assigned", message + (f": {sig.note}" if sig.note else ""), actor=actor,
              assignee=sig.assignee, previous=before)
    rt.keep_assignee()
    return ActionResult(accepted=True, status=case.status, message=message,
                        approvals=len(case.approvals),
                        approvers_required=case.approvers_required)


def note_refusal(rt: CaseRuntime, sig: NoteSignal) -> Refusal | None:
    if not sig.text.strip():
        return Refusal("invalid", "the note is empty")
    return None


def note(rt: CaseRuntime, sig: NoteSignal) -> ActionResult:
    """A note for the other agents, in the timeline (kind "note"); the customer never sees
    it."""
    rt.record("note", sig.text.strip(), actor=f"agent:{sig.agent}")
    case = rt.case
    return ActionResult(accepted=True, status=case.status, message="Note added",
                        approvals=len(case.approvals),
                        approvers_required=case.approvers_required)


def joined_before(rt: CaseRuntime, sig: CustomerReplySignal) -> bool:
    """A second request for this charge arrives as a reply carrying its request id; the
    same request delivered again is taken once."""
    if sig.request_id is None:
        return False
    joined = rt.case.progress.joined_requests
    if sig.request_id in joined:
        rt.record("request_joined_again", f"Request {sig.request_id} for this charge was "
                  "delivered again; it was joined already", actor="customer")
        return True
    joined.append(sig.request_id)
    del joined[:-MAX_JOINED_KEPT]
    rt.record("request_joined", f"Request {sig.request_id} for the same charge joins this "
              "case as the customer's reply", actor="customer", request_id=sig.request_id)
    return False
