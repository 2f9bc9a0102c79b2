"""Billing-incident activities that talk to Temporal itself: start the incident's cases
through the CaseClient (the one way to start a case: its id policy makes a retried start
find the case instead of making a second one), and find the open cases on the incident's
charges through visibility."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError

from activities.errors import transient
from activities.incident_models import (
    INCIDENT_TRANSIENT,
    OPEN_CASES,
    START_CASES,
    OpenCases,
    OpenCasesInput,
    StartCasesInput,
    StartCasesResult,
    StartedCase,
)
from core import search_attributes as sa
from core.case_client import CaseClient, open_cases_query
from core.contract import INCIDENT_CASE_PRIORITY, RefundRequest, incident_case_request_id
from core.customer_ref import customer_ref

START_CONCURRENCY = 8  # case starts in flight at once (each is one Temporal RPC)


class IncidentActivities:
    """Holds the worker's Temporal client; cases start on the worker's own task queue."""

    def __init__(self, client: Client, task_queue: str, customer_ref_key: str | None = None
                 ) -> None:
        """`customer_ref_key` (CUSTOMER_REF_KEY): started cases get their RefundCustomer,
        and the open-case check finds a customer's cases by it (without it, only by
        charge)."""
        self._cases = CaseClient(client, task_queue=task_queue,
                                 customer_ref_key=customer_ref_key)
        self._client = client
        self._customer_ref_key = customer_ref_key

    def activities(self) -> list[Callable[..., Any]]:
        return [self.incident_start_cases, self.incident_open_cases]

    @activity.defn(name=START_CASES)
    async def incident_start_cases(self, inp: StartCasesInput) -> StartCasesResult:
        """Start one case per request, below ordinary cases' priority, a few at a time:
        one after another, a batch of 100 took seconds in which the Stripe queue ran dry."""
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def start(request: RefundRequest) -> StartedCase:
            async with gate:
                started = await self._cases.start(
                    request, opened_by=f"incident:{inp.incident_id}",
                    priority=INCIDENT_CASE_PRIORITY)
            return StartedCase(case_id=started.case_id, started=started.started)
        try:
            out = await asyncio.gather(*(start(request) for request in inp.requests))
        except RPCError as exc:
            raise transient(INCIDENT_TRANSIENT, f"starting cases: {exc}") from exc
        return StartCasesResult(cases=list(out))

    @activity.defn(name=OPEN_CASES)
    async def incident_open_cases(self, inp: OpenCasesInput) -> OpenCases:
        """Running cases (not the incident's own) on these charges or of their customers."""
        ids = {i for p in inp.purchases for i in (p.ref, p.charge_id, p.payment_intent_id)
               if i}
        key = self._customer_ref_key
        # RefundCustomer holds the keyed hash of the customer's email (core.customer_ref).
        refs = {p.ref: customer_ref(p.customer_email, key)
                for p in inp.purchases if p.customer_email and key}
        customers = set(refs.values())
        if not ids:
            return OpenCases()
        query = open_cases_query(ids, customers)
        own = f"refund-{incident_case_request_id(inp.incident_id, '')}"
        found = OpenCases()
        try:
            async for wf in self._client.list_workflows(query):
                if wf.id.startswith(own):
                    continue
                charge = wf.typed_search_attributes.get(sa.CHARGE_ID)
                customer = wf.typed_search_attributes.get(sa.CUSTOMER)
                for p in inp.purchases:
                    if charge in (p.ref, p.charge_id, p.payment_intent_id):
                        found.on_charge.setdefault(p.ref, wf.id)
                    elif customer is not None and customer == refs.get(p.ref):
                        found.of_customer.setdefault(p.ref, wf.id)
        except RPCError as exc:
            raise transient(INCIDENT_TRANSIENT, f"listing open cases: {exc}") from exc
        return found
