"""A case in a billing incident (workflows/billing_incident/): the incident opened it, or
it was open on a charge the incident covers and joined it.

The incident's approval by two leads confirms the billing error (assessment.py), so such
a case takes the billing-error fast path: no acknowledgment (the customer asked for
nothing), the apology with the incident's customer-facing explanation in the customer's
locale (never the internal root cause), the root cause tagged `incident-<id>`. The case
tells the incident each outcome that matters to it (refunded, refund failed, with an
agent, closed) with the `case_outcome` signal, from a reporter task that watches the
case's status, so no step has to know about incidents.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from core.contract import (
        TERMINAL_STATUSES,
        CaseOutcome,
        CaseState,
        CaseStatus,
        IncidentSignal,
        JoinIncidentSignal,
        incident_workflow_id,
    )
    from policies.model import Policy

    from . import patches
    from .assess import root_cause_tag
    from .runtime import CaseRuntime

# A signal to an incident that has ended fails; one that is continuing as new may too.
TELL_ATTEMPTS = 4
TELL_RETRY = timedelta(seconds=5)
# The statuses an incident counts: money back, money not back, an agent decides, closed.
REPORTED = frozenset({CaseStatus.refunded, CaseStatus.refund_failed, CaseStatus.awaiting_agent,
                      CaseStatus.denied, CaseStatus.abandoned, CaseStatus.withdrawn,
                      CaseStatus.disputed, CaseStatus.completed})


class IncidentReporter:
    """Tells the case's incident each reported status once, in order; `finish()` before
    the case ends sends the last one."""

    def __init__(self, rt: CaseRuntime) -> None:
        self.rt = rt
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def finish(self) -> None:
        self._closing = True
        if self._task is not None:
            await self._task

    def _due(self) -> bool:
        case = self.rt.case
        status, told = case.status, case.progress.incident_reported
        if status not in REPORTED or status == told:
            return False
        # "completed" after "refunded" is the follow-up: the incident has counted it.
        return not (status == CaseStatus.completed and told == CaseStatus.refunded)

    async def _run(self) -> None:
        while True:
            await workflow.wait_condition(lambda: self._due() or self._closing)
            if not self._due():
                return
            await self._tell()

    async def _tell(self) -> None:
        rt, case = self.rt, self.rt.case
        link = case.incident
        assert link is not None
        case.progress.incident_reported = case.status
        outcome = outcome_of(case)
        incident = workflow.get_external_workflow_handle(incident_workflow_id(link.incident_id))
        for attempt in range(TELL_ATTEMPTS):
            try:
                await incident.signal(IncidentSignal.case_outcome, outcome)
                return
            except FailureError as err:  # ended, or between two runs: try again shortly
                failure = err
            if attempt + 1 < TELL_ATTEMPTS:
                await workflow.sleep(TELL_RETRY * 2 ** attempt,
                                     summary="tell the incident again")
        rt.record("incident_not_told", f"Incident {link.incident_id} could not be told "
                  f"this case is {outcome.status}: {failure}")


def outcome_of(case: CaseState) -> CaseOutcome:
    refund = case.refund
    refunded = refund.amount if refund is not None and refund.status == "succeeded" and \
        case.status in (CaseStatus.refunded, CaseStatus.completed) else 0
    request = case.request
    return CaseOutcome(
        case_id=case.case_id, ref=request.charge_id or request.payment_intent_id,
        status=case.status, refunded=refunded, currency=case.currency,
        customer_email=request.customer_email,
        apology_sent=any(t.kind == "email_sent" and t.data.get("template") ==
                         "billing_error_apology" for t in case.timeline),
        reason=_why(case))


def _why(case: CaseState) -> str:
    """Why the case is where it is: Stripe's refusal, else its last status change."""
    if case.status == CaseStatus.awaiting_agent and case.refund_error is not None:
        error = case.refund_error
        return f"Stripe refused the refund ({error['code']}): {error['message']}"
    if case.status == CaseStatus.refund_failed and case.refund is not None:
        return f"the refund {case.refund.status}: {case.refund.failure_reason or 'no reason'}"
    changes = [t for t in case.timeline if t.kind == "status"]
    return changes[-1].message if changes else str(case.status)


def start_reporting(rt: CaseRuntime, reporter: IncidentReporter) -> None:
    """At the case's start: a case an incident opened reports to it."""
    if rt.case.request.incident is not None and patches.has(patches.BILLING_INCIDENT):
        reporter.start()


def skips_acknowledgment(rt: CaseRuntime) -> bool:
    """No acknowledgment for a case the customer did not ask for: the apology is the
    first email."""
    link = rt.case.request.incident
    if link is None or not patches.has(patches.BILLING_INCIDENT):
        return False
    rt.record("acknowledgment_skipped", f"Opened by billing incident {link.incident_id}: "
              "the customer asked for nothing, the apology is the first email")
    return True


def apology_context(case: CaseState, policy: Policy) -> dict[str, Any]:
    """What the billing-error apology says went wrong: the incident's explanation in the
    customer's locale, or (a duplicate charge) the policy's wording of the root cause's
    tag in that locale. Never the internal root cause itself."""
    link = case.request.incident
    if link is not None:
        return {"root_cause": "", "explanation": link.explanation_for(case.request.locale)}
    assessment = case.assessment
    tag = root_cause_tag(assessment.root_cause) if assessment else None
    return {"root_cause": policy.root_cause_text(tag, case.request.locale)}


def on_join(rt: CaseRuntime, reporter: IncidentReporter, sig: JoinIncidentSignal) -> None:
    """An incident covers this open case's charge: the case is tagged with it and reports
    to it; agents decide as before, told that the incident confirms a billing error."""
    case, link = rt.case, sig.link
    if case.incident is not None:
        if case.incident.incident_id != link.incident_id:
            rt.record("incident_join_refused", f"Incident {link.incident_id} covers this "
                      f"charge too; the case stays in incident {case.incident.incident_id}",
                      actor=f"incident:{link.incident_id}")
        return
    if case.status in TERMINAL_STATUSES or not patches.has(patches.BILLING_INCIDENT):
        rt.record("incident_join_refused", f"Incident {link.incident_id} covers this charge; "
                  f"the case is already {case.status}", actor=f"incident:{link.incident_id}")
        return
    case.progress.joined_incident = link
    rt.record("incident_joined", f"Billing incident {link.incident_id} covers this charge and "
              f"confirms a billing error ({link.root_cause}); the customer is told: "
              f"{link.explanation_for(case.request.locale)}",
              actor=f"incident:{link.incident_id}", incident=link.incident_id)
    rt.keep_search_attributes()
    reporter.start()
