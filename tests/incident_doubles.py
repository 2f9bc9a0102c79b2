"""Test doubles for a BillingIncident and its cases on the time-skipping server: Stripe as a
table of charges (look-ups, the cases' facts and refunds), the open-case check as a table;
the incident's cases are real RefundCases, started by the real start activity (through the
CaseClient) on the same test server. Used only by the workflow-branch tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.email_models import EmailInput, EmailSent, OpsReport
from activities.incident_activities import IncidentActivities
from activities.incident_models import OpenCases, OpenCasesInput
from activities.stripe_models import (
    ChargeSummary,
    CreateRefundInput,
    GatherFactsInput,
    LookupChargeInput,
    RefundResult,
    StripeFacts,
)
from core.contract import (
    CaseState,
    IncidentProgress,
    IncidentReport,
    IncidentRequest,
)
from core.incident_client import IncidentClient
from tests.workflow_doubles import Fakes, stripe_worker
from workflows.billing_incident import BillingIncident
from workflows.refund_case import RefundCase

EXPLANATION = {"en": "A pricing error charged your subscription twice.",
               "ja": "料金設定の誤りにより、ご請求が二重になりました。"}
ROOT_CAUSE = "migration 2026-11 applied the annual price to monthly plans"


def incident_request(charges: list[str], **kw: Any) -> IncidentRequest:
    fields: dict[str, Any] = {
        "incident_id": f"inc-{uuid.uuid4().hex[:8]}", "root_cause": ROOT_CAUSE,
        "explanation": EXPLANATION, "charges": charges, "opened_by": "carol",
        "batch": 2, "in_flight": 10}
    fields.update(kw)
    return IncidentRequest(**fields)


@dataclass

class IncidentFakes(Fakes):
    """Charges by id (a field left out takes the default), for the incident's look-ups
    and its cases' facts; `refund_errors_for`: charges whose refund Stripe refuses."""

    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    open_on_charge: dict[str, str] = field(default_factory=dict)
    refund_errors_for: dict[str, Exception] = field(default_factory=dict)
    gather_gates: dict[str, asyncio.Event] = field(default_factory=dict)
    refund_gates: dict[str, asyncio.Event] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)
    reports: list[OpsReport] = field(default_factory=list)

    def charge(self, ref: str, now: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "ref": ref, "found": True, "charge_id": ref, "payment_intent_id": None,
            "status": "succeeded", "amount": 4900, "amount_refunded": 0, "currency": "usd",
            "created": now - timedelta(days=2), "customer_id": f"cus_{ref}",
            "customer_email": f"{ref.lower()}@example.com", "customer_locale": None}
        base.update(self.charges.get(ref, {}))
        return base

    def activities(self) -> list[Callable[..., Any]]:
        return [*super().activities(), self.stripe_lookup_charge, self.incident_open_cases,
                self.send_ops_report]

    @activity.defn(name="send_email")
    async def send_email(self, email: EmailInput) -> EmailSent:
        """Every case's emails (the base double keeps one email per step)."""
        if (email.case_id, email.step) not in {(e.case_id, e.step) for e in self.emails}:
            self.emails.append(email)
        return EmailSent(message_id=f"msg-{email.case_id}-{email.step}", backend="outbox",
                         template=email.template, to=email.to, subject=email.template)

    @activity.defn(name="send_ops_report")
    async def send_ops_report(self, report: OpsReport) -> EmailSent:
        self.reports.append(report)
        return EmailSent(message_id=f"ops-{report.step}", backend="outbox",
                         template=report.template, to="ops@example.com",
                         subject=report.template)

    @activity.defn(name="stripe_lookup_charge")
    async def stripe_lookup_charge(self, inp: LookupChargeInput) -> ChargeSummary:
        self.lookups.append(inp.ref)
        return ChargeSummary(**self.charge(inp.ref, activity.info().scheduled_time))

    @activity.defn(name="incident_open_cases")
    async def incident_open_cases(self, inp: OpenCasesInput) -> OpenCases:
        return OpenCases(on_charge={p.ref: self.open_on_charge[p.ref] for p in inp.purchases
                                    if p.ref in self.open_on_charge})

    @activity.defn(name="stripe_gather_facts")
    async def stripe_gather_facts(self, inp: GatherFactsInput) -> StripeFacts:
        ref = inp.request.charge_id or ""
        if inp.request.incident is None and ref not in self.charges:
            return await super().stripe_gather_facts(inp)  # an ordinary case's charge
        gate = self.gather_gates.get(ref)
        if gate is not None:
            await gate.wait()
        now = activity.info().scheduled_time
        c = self.charge(ref, now)
        self.gathers += 1
        return StripeFacts(found=True, charge_id=ref, customer_id=c["customer_id"],
                           customer_email=c["customer_email"], amount=c["amount"],
                           amount_refunded=c["amount_refunded"], currency=c["currency"],
                           created=c["created"], customer_created=now - self.customer_age,
                           stripe_requests=3)

    @activity.defn(name="stripe_create_refund")
    async def stripe_create_refund(self, inp: CreateRefundInput) -> RefundResult:
        ref = inp.charge_id or ""
        gate = self.refund_gates.get(ref)
        if gate is not None:
            await gate.wait()
        if ref in self.refund_errors_for:
            self.refund_calls.append(inp)
            raise self.refund_errors_for[ref]
        return await super().stripe_create_refund(inp)


# How a query the test server left unanswered comes back (see Incident.until).
UNANSWERED = (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)


class Incident:
    """One BillingIncident (and its cases) on a fresh task queue; use as `async with`."""

    def __init__(self, env: WorkflowEnvironment, fakes: IncidentFakes,
                 request: IncidentRequest) -> None:
        self.env, self.fakes, self.request = env, fakes, request
        self.task_queue = f"inc-{uuid.uuid4().hex[:8]}"
        acts = [*fakes.activities(),
                IncidentActivities(env.client, self.task_queue).incident_start_cases]
        self.worker = Worker(env.client, task_queue=self.task_queue,
                             workflows=[BillingIncident, RefundCase], activities=acts)
        self.stripe_worker = stripe_worker(env.client, self.task_queue, acts)
        self.client = IncidentClient(env.client, task_queue=self.task_queue,
                                     rpc_timeout=timedelta(seconds=5))
        self.handle: WorkflowHandle[Any, Any]

    async def __aenter__(self) -> Incident:
        await self.worker.__aenter__()
        await self.stripe_worker.__aenter__()
        started = await self.client.start(self.request)
        assert started.started
        self.handle = self.env.client.get_workflow_handle(started.workflow_id,
                                                          result_type=IncidentReport)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.end_leftovers()
        await self.stripe_worker.__aexit__(*exc)
        await self.worker.__aexit__(*exc)

    async def end_leftovers(self, *more: str) -> None:
        """Terminate the incident and its cases (and `more`) if still running: their
        follow-up timers would otherwise fire, with no worker left, in later tests of
        the shared time-skipping server, and lock its clock."""
        refs = [*self.fakes.charges, *self.fakes.lookups]
        for workflow_id in {self.handle.id, *(self.case_id(r) for r in refs), *more}:
            with contextlib.suppress(RPCError):
                await self.env.client.get_workflow_handle(workflow_id).terminate("test over")

    async def progress(self) -> IncidentProgress:
        return await self.client.progress(self.request.incident_id)

    async def until(self, predicate: Callable[[IncidentProgress], bool], what: str,
                    timeout: float = 20.0) -> IncidentProgress:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            try:
                progress = await self.progress()
            except RPCError as err:
                # The time-skipping test server sometimes leaves a query that arrives as a
                # run continues as new unanswered: ask again. The server may say so
                # (DEADLINE_EXCEEDED), or the client's own 5-s timeout ends the call
                # (CANCELLED, "Timeout expired"), as it did about one run in eight here.
                if err.status not in UNANSWERED or loop.time() > end:
                    raise
                continue
            if predicate(progress):
                return progress
            if loop.time() > end:
                raise AssertionError(f"incident never reached {what}: {progress.phase}, "
                                     f"{progress.counts}, {[e.kind for e in progress.timeline]}")
            await asyncio.sleep(0.05)

    async def result(self, timeout: float = 60.0) -> IncidentReport:
        """The incident's report once it ends; a test that would hang fails instead, with
        where the incident stood."""
        try:
            report: IncidentReport = await asyncio.wait_for(self.handle.result(), timeout)
        except TimeoutError:
            described = await self.handle.describe()
            history = await self.env.client.get_workflow_handle(
                self.handle.id, run_id=described.run_id).fetch_history()
            untold = []
            for ref in self.fakes.charges:
                with contextlib.suppress(RPCError):
                    state: CaseState = await self.env.client.get_workflow_handle(
                        self.case_id(ref)).query("state", result_type=CaseState,
                                                 rpc_timeout=timedelta(seconds=3))
                    untold += [t.message for t in state.timeline
                               if t.kind == "incident_not_told"]
            raise AssertionError(
                f"incident did not end: run {described.run_id} {described.status}, last "
                f"events {[e.event_type for e in history.events][-12:]}, lookups "
                f"{self.fakes.lookups}, cases that could not tell it: {untold}") from None
        return report

    def case_id(self, ref: str) -> str:
        return f"refund-incident-{self.request.incident_id}-{ref}"
