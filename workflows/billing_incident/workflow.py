"""`BillingIncident`: the charges of one billing incident refunded through their own
cases, at Stripe's rate limit, with one approval and one report.

`run()` reads as the incident's steps: a dry run, a second lead's approval, the drain,
the report. Handlers are thin: the cases' outcomes (signal) and the leads' actions
(updates with validators) go to `outcomes`. The whole state is `IncidentState`, carried
across continue-as-new so that an incident of any size keeps each run's history small.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.contract import (
        ACTION_REFUSED,
        CaseOutcome,
        IncidentActionResult,
        IncidentPhase,
        IncidentProgress,
        IncidentReport,
        IncidentRequest,
        IncidentState,
        LeadAction,
    )

    from . import outcomes
    from .drain import drain
    from .dry_run import dry_run
    from .report import send_report
    from .runtime import IncidentRuntime


@workflow.defn(name="BillingIncident")
class BillingIncident:
    @workflow.init
    def __init__(self, request: IncidentRequest, state: IncidentState | None = None) -> None:
        self.rt = IncidentRuntime(request, state or IncidentState(
            incident_id=request.incident_id, opened_by=request.opened_by))

    @workflow.run
    async def run(self, request: IncidentRequest, state: IncidentState | None = None
                  ) -> IncidentReport:
        rt, s = self.rt, self.rt.state
        if state is None:
            rt.record("opened", f"Opened by {request.opened_by}: {request.root_cause}",
                      actor=f"lead:{request.opened_by}")
        if s.phase == IncidentPhase.dry_run:
            await dry_run(rt)                                   # 1. what would happen
        if s.phase == IncidentPhase.awaiting_approval:
            await rt.wait("a second lead's approval",           # 2. two different leads
                          lambda: s.phase != IncidentPhase.awaiting_approval)
        if s.phase == IncidentPhase.draining:
            await drain(rt)                                     # 3. refund, throttled
        if rt.cancelling and s.phase != IncidentPhase.draining:
            s.counts.cancelled = s.counts.charges - s.counts.done
        s.phase = IncidentPhase.cancelled if rt.cancelling else IncidentPhase.done
        s.finished_at = workflow.now()
        rt.record(str(s.phase), f"The incident is {s.phase}: {s.counts.refunded} refunded, "
                  f"{s.counts.to_agent} with an agent, {s.counts.failed} failed, "
                  f"{s.counts.skipped} skipped, {s.counts.cancelled} not refunded")
        await send_report(rt)                                   # 4. the report to ops
        await workflow.wait_condition(workflow.all_handlers_finished)
        return rt.report()

    # --- queries ---

    @workflow.query
    def progress(self) -> IncidentProgress:
        return self.rt.progress()

    @workflow.query
    def report(self) -> IncidentReport:
        return self.rt.report()

    # --- the cases ---

    @workflow.signal
    def case_outcome(self, outcome: CaseOutcome) -> None:
        outcomes.on_outcome(self.rt, outcome)

    # --- the leads: updates, validated first ---

    @workflow.update(name="approve_incident")
    def approve(self, action: LeadAction) -> IncidentActionResult:
        return outcomes.approve(self.rt, action)

    @approve.validator
    def _validate_approve(self, action: LeadAction) -> None:
        _refuse_if(outcomes.approve_refusal(self.rt.state, action))

    @workflow.update(name="pause_incident")
    def pause(self, action: LeadAction) -> IncidentActionResult:
        return outcomes.pause(self.rt, action)

    @pause.validator
    def _validate_pause(self, action: LeadAction) -> None:
        _refuse_if(outcomes.pause_refusal(self.rt.state, action))

    @workflow.update(name="resume_incident")
    def resume(self, action: LeadAction) -> IncidentActionResult:
        return outcomes.resume(self.rt, action)

    @resume.validator
    def _validate_resume(self, action: LeadAction) -> None:
        _refuse_if(outcomes.resume_refusal(self.rt.state, action))

    @workflow.update(name="cancel_incident")
    def cancel(self, action: LeadAction) -> IncidentActionResult:
        return outcomes.cancel(self.rt, action)

    @cancel.validator
    def _validate_cancel(self, action: LeadAction) -> None:
        _refuse_if(outcomes.cancel_refusal(self.rt.state, action))


def _refuse_if(refusal: outcomes.Refusal | None) -> None:
    """A refusal becomes the error the API maps to 409 / 422 with the incident's reason."""
    if refusal is not None:
        raise ApplicationError(refusal.reason, {"code": refusal.code, "reason": refusal.reason},
                               type=ACTION_REFUSED, non_retryable=True)
