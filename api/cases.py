"""What the webhooks ask of Temporal about a case, through the one CaseClient: signal it,
find the open cases on a charge, read its customer's addresses. No FastAPI: transport failures leave
as TemporalUnavailable (api.temporal), which the app answers 503."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from temporalio.client import Client, WorkflowQueryFailedError

from api.stripe_mapping import open_cases_query
from api.temporal import RPC_TIMEOUT, temporal_call
from core.case_client import CaseClient, CaseIsClosed, CaseNotFound
from core.contract import CHARGE_ID, Signal

MAX_CASES_PER_CHARGE = 20


async def signal_case(client: Client, case_id: str, signal: Signal, payload: BaseModel) -> bool:
    """True when the case took the signal; False when it does not exist or has closed."""
    try:
        async with temporal_call(f"signal {signal}"):
            await CaseClient(client, rpc_timeout=RPC_TIMEOUT).signal(case_id, signal, payload)
    except (CaseNotFound, CaseIsClosed):
        return False
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
            state = await CaseClient(client, rpc_timeout=RPC_TIMEOUT).state_json(case_id)
    except CaseNotFound:
        return None
    except WorkflowQueryFailedError:
        return None
    emails = {_get(state, "request", "customer_email"), _get(state, "facts", "customer_email")}
    return {e.lower() for e in emails if isinstance(e, str) and e}


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
    return obj
