"""Step 3 of an incident, after a second lead's approval: the drain. Batch by batch, each
charge is looked up again (it may have been refunded or disputed since the dry run),
checked for an open case, and then skipped, joined to its open case, or given its own
case. At most `in_flight` cases are refunding at once; each tells the incident its
outcome. Pausing stops new cases; cancelling stops them too and withdraws the cases whose
refund has not started (made refunds stay made)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from activities.incident_models import (
        INCIDENT_RETRY_POLICY,
        INCIDENT_START_TO_CLOSE,
        START_CASES,
        StartCasesInput,
        StartCasesResult,
    )
    from activities.stripe_models import ChargeSummary
    from core.contract import (
        ChargeFailure,
        JoinIncidentSignal,
        RefundRequest,
        Signal,
        Tally,
        WithdrawSignal,
    )

    from .charges import case_request, classify, look_up, open_cases
    from .outcomes import add_failure, on_outcome
    from .runtime import IncidentRuntime

# A case may finish before the activity that opened it answers (a fast case, a slow
# worker): its outcome waits for the answer instead of being taken for another's.
EARLY_OUTCOMES = "incident-early-outcomes"


async def drain(rt: IncidentRuntime) -> None:
    state, request = rt.state, rt.request
    if state.drain_started_at is None:
        state.drain_started_at = workflow.now()
    refs = rt.refs
    while state.position < len(refs) and not rt.cancelling:
        await rt.wait("a lead to resume", lambda: not state.paused)
        if rt.cancelling:
            break
        batch = refs[state.position:state.position + request.batch]
        charges = await look_up(batch)
        await rt.wait(f"room for {len(batch)} more cases (at most {request.in_flight} "
                      "refunding at once)", _room_for(rt, len(batch)))
        if rt.cancelling:
            break
        await _act_on(rt, charges)
        state.position += len(batch)
        state.counts.processed += len(batch)
        rt.run_processed += len(batch)
        rt.show()
        await rt.continue_as_new_if_due()
    if not rt.cancelling:
        await rt.wait("the last cases' outcomes", lambda: not state.in_flight)
    if rt.cancelling:
        await _wind_down(rt)


def _room_for(rt: IncidentRuntime, cases: int) -> Callable[[], bool]:
    """At most `in_flight` cases without an outcome, and not paused."""
    state, limit = rt.state, rt.request.in_flight
    room = limit - min(cases, limit)
    return lambda: len(state.in_flight) <= room and not state.paused


async def _act_on(rt: IncidentRuntime, charges: list[ChargeSummary]) -> None:
    state, request = rt.state, rt.request
    opens = await open_cases(request.incident_id, charges)
    window = state.policy_window_days or None
    to_start: list[RefundRequest] = []
    refs: dict[str, str] = {}  # case id -> charge
    joins: list[tuple[str, str]] = []
    for charge in charges:
        verdict = classify(charge, request, window_days=window, now=workflow.now())
        if verdict.skip is not None:
            state.skipped.setdefault(verdict.skip, Tally()).add(charge.ref)
            state.counts.skipped += 1
        elif charge.ref in opens.on_charge:
            joins.append((opens.on_charge[charge.ref], charge.ref))
        else:
            case = case_request(request, charge, verdict.amount)
            to_start.append(case)
            refs[case.case_id] = charge.ref
    await asyncio.gather(*(_join(rt, case_id, ref) for case_id, ref in joins))
    if not to_start:
        return
    if workflow.patched(EARLY_OUTCOMES):
        state.starting = dict(refs)
    result: StartCasesResult = await workflow.execute_activity(
        START_CASES, StartCasesInput(incident_id=request.incident_id, requests=to_start),
        result_type=StartCasesResult, start_to_close_timeout=INCIDENT_START_TO_CLOSE,
        retry_policy=INCIDENT_RETRY_POLICY, summary=f"Open {len(to_start)} cases")
    for started in result.cases:
        state.in_flight[started.case_id] = refs[started.case_id]
        state.counts.started += 1
    state.starting = {}
    early, state.early_outcomes = state.early_outcomes, []
    for outcome in early:  # a case that was quicker than the opening's answer
        on_outcome(rt, outcome)


async def _join(rt: IncidentRuntime, case_id: str, ref: str) -> None:
    """The charge's open case joins the incident instead of a second case being made."""
    state = rt.state
    try:
        await workflow.get_external_workflow_handle(case_id).signal(
            Signal.join_incident, JoinIncidentSignal(link=rt.request.link()))
    except FailureError as err:
        state.counts.failed += 1
        add_failure(state, ChargeFailure(ref=ref, case_id=case_id, kind="failed",
                                         reason=f"its open case closed before joining: {err}"))
        return
    state.joined[case_id] = ref
    state.counts.joined += 1
    rt.record("case_joined", f"Open case {case_id} on {ref} joined the incident")


async def _wind_down(rt: IncidentRuntime) -> None:
    """Cancelled: no new cases; the ones whose refund has not started are withdrawn, the
    others finish; the charges never reached are counted as cancelled."""
    state = rt.state
    left = len(rt.refs) - state.position
    state.counts.cancelled += left
    state.position = len(rt.refs)
    note = f"billing incident {rt.request.incident_id} cancelled by {state.cancelled_by}"
    await asyncio.gather(*(_withdraw(case_id, note) for case_id in list(state.in_flight)))
    rt.record("winding_down", f"{left} charges not started; {len(state.in_flight)} cases "
              "asked to stop (a refund already started is not undone)")
    await workflow.wait_condition(lambda: not state.in_flight)


async def _withdraw(case_id: str, note: str) -> None:
    with contextlib.suppress(FailureError):  # the case has closed: its outcome is coming
        await workflow.get_external_workflow_handle(case_id).signal(
            Signal.withdraw, WithdrawSignal(by="system", note=note))
