"""What changes an incident from outside: its cases' outcomes (signal `case_outcome`) and
its leads' actions (updates approve / pause / resume / cancel, validated first so that a
refused one writes nothing to history)."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contract import (
        MAX_LISTED,
        CaseOutcome,
        CaseStatus,
        ChargeFailure,
        ChargeOutcomeKind,
        IncidentActionResult,
        IncidentPhase,
        IncidentState,
        LeadAction,
        RefusalCode,
    )

    from .runtime import IncidentRuntime


@dataclass
class Refusal:
    code: RefusalCode
    reason: str


# --- the cases' outcomes ---------------------------------------------------------------


def kind_of(outcome: CaseOutcome, cancelling: bool) -> ChargeOutcomeKind | None:
    """How the incident counts a case's status; None: not an outcome."""
    status = outcome.status
    if status in (CaseStatus.refunded, CaseStatus.completed) and outcome.refunded > 0:
        return "refunded"
    if status == CaseStatus.awaiting_agent:
        return "to_agent"
    if status == CaseStatus.withdrawn and cancelling:
        return "cancelled"
    if status in (CaseStatus.refund_failed, CaseStatus.denied, CaseStatus.abandoned,
                  CaseStatus.disputed, CaseStatus.withdrawn, CaseStatus.completed):
        return "failed"
    return None


def on_outcome(rt: IncidentRuntime, outcome: CaseOutcome) -> None:
    """Count a case's outcome once; a case with an agent (or a joined open case) may
    later refund or fail, which moves it."""
    state = rt.state
    kind = kind_of(outcome, rt.cancelling)
    if kind is None:
        return
    case_id = outcome.case_id
    first = True
    if case_id in state.in_flight:
        ref = state.in_flight.pop(case_id)
    elif case_id in state.joined:
        ref = state.joined.pop(case_id)
    elif case_id in state.to_agent and kind != "to_agent":
        first = False
        ref = state.to_agent.pop(case_id)
        state.counts.to_agent -= 1
        state.failures = [f for f in state.failures if f.case_id != case_id]
    elif case_id in state.starting:
        state.early_outcomes.append(outcome)  # counted once the opening answers (drain.py)
        return
    else:
        return  # not ours, or already counted
    _count(state, kind, outcome)
    if kind == "to_agent":
        state.to_agent[case_id] = ref
    if kind in ("to_agent", "failed"):
        add_failure(state, ChargeFailure(ref=ref, case_id=case_id, kind=kind,
                                         reason=outcome.reason))
    if first and outcome.apology_sent:
        state.customers_emailed.append(outcome.customer_email)
    rt.record(f"case_{kind}", f"{case_id} ({ref}): {kind.replace('_', ' ')}"
              f"{': ' + outcome.reason if kind != 'refunded' else ''}",
              actor=f"case:{case_id}")


def _count(state: IncidentState, kind: ChargeOutcomeKind, outcome: CaseOutcome) -> None:
    counts = state.counts
    setattr(counts, kind, getattr(counts, kind) + 1)
    if kind == "refunded" and outcome.currency:
        totals = state.refunded_totals
        totals[outcome.currency] = totals.get(outcome.currency, 0) + outcome.refunded


def add_failure(state: IncidentState, failure: ChargeFailure) -> None:
    if len(state.failures) < MAX_LISTED:
        state.failures.append(failure)
    else:
        state.failures_unlisted += 1


# --- the leads' actions ----------------------------------------------------------------


def approve_refusal(state: IncidentState, action: LeadAction) -> Refusal | None:
    if state.phase != IncidentPhase.awaiting_approval or state.cancelled_by:
        return Refusal("wrong_state", f"the incident is {state.phase}, not waiting for "
                                      "approval")
    if action.lead == state.opened_by:
        return Refusal("invalid", f"{action.lead} opened the incident; a different lead must "
                                  "approve it")
    return None


def pause_refusal(state: IncidentState, action: LeadAction) -> Refusal | None:
    if state.phase != IncidentPhase.draining or state.cancelled_by:
        return Refusal("wrong_state", f"the incident is {state.phase}, not refunding")
    if state.paused:
        return Refusal("wrong_state", "the incident is already paused")
    return None


def resume_refusal(state: IncidentState, action: LeadAction) -> Refusal | None:
    if state.phase != IncidentPhase.draining or state.cancelled_by:
        return Refusal("wrong_state", f"the incident is {state.phase}, not refunding")
    if not state.paused:
        return Refusal("wrong_state", "the incident is not paused")
    return None


def cancel_refusal(state: IncidentState, action: LeadAction) -> Refusal | None:
    if state.phase in (IncidentPhase.done, IncidentPhase.cancelled) or state.cancelled_by:
        already = "cancelled" if state.cancelled_by else state.phase
        return Refusal("wrong_state", f"the incident is already {already}")
    return None


def approve(rt: IncidentRuntime, action: LeadAction) -> IncidentActionResult:
    state = rt.state
    state.approved_by = action.lead
    state.phase = IncidentPhase.draining
    state.drain_started_at = workflow.now()
    rt.record("approved", f"Approved by {action.lead}{_note(action)}: refunding "
              f"{state.dry_run.to_refund if state.dry_run else 0} charges",
              actor=f"lead:{action.lead}")
    return result(rt, f"Approved: the incident is refunding (approved by {action.lead}, "
                      f"opened by {state.opened_by})")


def pause(rt: IncidentRuntime, action: LeadAction) -> IncidentActionResult:
    rt.state.paused, rt.state.paused_at = True, workflow.now()
    rt.record("paused", f"Paused by {action.lead}{_note(action)}: no new cases; the "
              f"{len(rt.state.in_flight)} under way go on", actor=f"lead:{action.lead}")
    return result(rt, "Paused: no new cases start until a lead resumes")


def resume(rt: IncidentRuntime, action: LeadAction) -> IncidentActionResult:
    state = rt.state
    if state.paused_at is not None:
        state.paused_seconds += (workflow.now() - state.paused_at).total_seconds()
    state.paused, state.paused_at = False, None
    rt.record("resumed", f"Resumed by {action.lead}{_note(action)}", actor=f"lead:{action.lead}")
    return result(rt, "Resumed")


def cancel(rt: IncidentRuntime, action: LeadAction) -> IncidentActionResult:
    rt.state.cancelled_by = action.lead
    rt.record("cancel_requested", f"Cancelled by {action.lead}{_note(action)}: no new "
              "refunds; refunds already made stay made", actor=f"lead:{action.lead}")
    return result(rt, "Cancelled: no new refunds start; cases not yet refunding are "
                      "withdrawn")


def result(rt: IncidentRuntime, message: str) -> IncidentActionResult:
    return IncidentActionResult(accepted=True, phase=rt.state.phase, paused=rt.state.paused,
                                message=message)


def _note(action: LeadAction) -> str:
    return f" ({action.note})" if action.note else ""
