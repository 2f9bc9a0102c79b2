"""What the webhooks ask of Temporal about a case: start it, signal it, find the open
cases on a charge, read its customer's addresses. No FastAPI: transport failures leave
as TemporalUnavailable (api.temporal), which the app answers 503."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.stripe_mapping import open_cases_query
from api.temporal import RPC_TIMEOUT, is_not_found, temporal_call
from core import search_attributes as sa
from core.config import TASK_QUEUE
from core.models import CHARGE_ID, CaseStatus, RefundRequest

WORKFLOW_TYPE = "RefundCase"  # by name: the API never imports the workflow module
MAX_CASES_PER_CHARGE = 20


def initial_search_attributes(request: RefundRequest) -> TypedSearchAttributes:
    """What makes the case findable the moment it starts (the workflow keeps them current)."""
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(sa.STATUS, CaseStatus.received.value),
        SearchAttributePair(sa.REASON, request.reason.value),
        SearchAttributePair(sa.CUSTOMER, request.customer_email),
    ]
    if request.charge_id:
        pairs.append(SearchAttributePair(sa.CHARGE_ID, request.charge_id))
    if request.currency:
        pairs.append(SearchAttributePair(sa.CURRENCY, request.currency))
    if request.amount is not None:
        pairs.append(SearchAttributePair(sa.AMOUNT, request.amount))
    return TypedSearchAttributes(pairs)


async def start_case(client: Client, request: RefundRequest, task_queue: str = TASK_QUEUE,
                     *, memo: dict[str, Any] | None = None) -> tuple[str, bool]:
    """Start the case; (case id, False) when this request id was seen before."""
    case_id = request.case_id
    try:
        async with temporal_call("start case"):
            await client.start_workflow(
                WORKFLOW_TYPE,
                request,
                id=case_id,
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=initial_search_attributes(request),
                memo=memo,
                rpc_timeout=RPC_TIMEOUT,
            )
    except WorkflowAlreadyStartedError:
        return case_id, False
    return case_id, True


async def signal_case(client: Client, case_id: str, signal: str, payload: BaseModel) -> bool:
    """True when the case took the signal; False when it does not exist or has closed."""
    try:
        async with temporal_call(f"signal {signal}"):
            await client.get_workflow_handle(case_id).signal(
                signal, payload, rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if is_not_found(exc):
            return False
        raise
    return True


async def find_open_cases(client: Client, charge_id: str | None) -> list[str]:
    """The running cases whose RefundChargeId is `charge_id` (ch_ or py_)."""
    if not charge_id or not CHARGE_ID.match(charge_id):
        return []
    async with temporal_call("find cases by charge"):
        return [wf.id async for wf in client.list_workflows(
            open_cases_query(charge_id), limit=MAX_CASES_PER_CHARGE, rpc_timeout=RPC_TIMEOUT)]


async def customer_emails(client: Client, case_id: str) -> set[str] | None:
    """The case's customer addresses from its `state` query; None: no such case."""
    try:
        async with temporal_call("query case state"):
            state = await client.get_workflow_handle(case_id).query(
                "state", rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if is_not_found(exc):
            return None
        raise
    except WorkflowQueryFailedError:
        return None
    emails = {_get(state, "request", "customer_email"), _get(state, "facts", "customer_email")}
    return {e.lower() for e in emails if isinstance(e, str) and e}


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
    return obj
