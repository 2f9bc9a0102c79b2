"""Agent endpoints under `/cases`, with a bearer token per agent.

Tokens map to an agent id and a role (settings.AGENT_TOKENS); a viewer only reads. The
agent id of an action comes from the token, never from the body. Actions are workflow
UPDATES, so the case's own validation answers: a refusal (ApplicationError
"ActionRefused") is 409 for the wrong state and 422 for an invalid action, with the
case's reason; a case that does not answer within UPDATE_TIMEOUT_SECONDS (no worker, a
failing workflow task) is 504. Handlers fetch the Temporal client only after
authentication and validation, so a bad request is a 4xx even while Temporal is down."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from temporalio.client import WorkflowQueryFailedError
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError as RPCTimeoutOrCancelledError
from temporalio.common import SearchAttributeKey

from api.deps import Actor, Agent, get_cases, get_client
from api.intake import (
    INCIDENT_NOT_ALLOWED,
    CaseStarted,
    OpenCaseConflict,
    open_case_conflict,
    outcome_of,
    started_response,
)
from api.logging import annotate
from api.temporal import RPC_TIMEOUT, temporal_call
from core import search_attributes as sa
from core.case_client import (
    ActionRefused,
    CaseIsClosed,
    CaseNotFound,
    OpenCaseOnCharge,
)
from core.config import Settings
from core.contract import (
    CASE_ID,
    ActionResult,
    ApproveSignal,
    AssignSignal,
    CaseState,
    CaseStatus,
    CloseCaseSignal,
    DenySignal,
    NoteSignal,
    RefundReason,
    RefundRequest,
    RequestInfoSignal,
    RetryRefundSignal,
    RetryStripeSignal,
    SatisfyRequirementSignal,
    Update,
)
from core.customer_ref import customer_ref, is_customer_ref
from core.models import check_email

router = APIRouter(prefix="/cases", tags=["agents"])

UPDATE_TIMEOUT_SECONDS = 30.0
# The SDK re-issues the update (and its result poll) while the server answers "not yet
# accepted", each call with the full rpc_timeout: a local backstop bounds the total.
UPDATE_BACKSTOP_SECONDS = 5.0
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
CASE_SLOW = ("the case did not answer in time (is the worker running?); the action may "
             "still be applied: check GET /cases/{id} before retrying")


def _case_id(request: Request, case_id: str) -> str:
    if not CASE_ID.match(case_id):
        raise HTTPException(404, f"no case {case_id!r}")
    annotate(request, case_id=case_id)
    return case_id


# --- bodies ---------------------------------------------------------------------------


class ApproveBody(BaseModel):
    model_config = {"extra": "forbid", "json_schema_extra": {
        "examples": [{"note": "Export bug confirmed by support."},
                     {"amount": 2500, "note": "Half: the second month was used."}]}}
    amount: int | None = Field(None, gt=0, description="Minor units; absent: the policy amount.")
    note: str = Field("", max_length=2_000)


class DenyBody(BaseModel):
    model_config = {"extra": "forbid", "json_schema_extra": {
        "examples": [{"clause_id": "window.30_days", "note": "Bought 70 days ago.",
                      "alternative": "discounted_upgrade"}]}}
    clause_id: str = Field(min_length=1, description="The policy clause the denial rests on.")
    note: str = Field("", max_length=2_000)
    alternative: str | None = Field(None, description="Id of one of the policy's alternatives.")


class RequestInfoBody(BaseModel):
    model_config = {"extra": "forbid", "json_schema_extra": {
        "examples": [{"questions": ["Which export failed, and when?"]}]}}
    questions: list[str] = Field(min_length=1, max_length=10)


class Refusal(BaseModel):
    code: str = Field(description="wrong_state (409) or invalid (422)",
                      examples=["invalid", "wrong_state"])
    reason: str = Field(examples=["alice already approved; a second approval must come from a "
                                  "different agent",
                                  "the case is refunding, not waiting for an agent"])


class CaseSummary(BaseModel):
    id: str
    run_id: str
    execution_status: str | None = Field(description="Temporal's: RUNNING, COMPLETED, ...")
    start_time: datetime
    close_time: datetime | None = None
    status: str | None = Field(None, description="RefundStatus")
    reason: str | None = None
    customer: str | None = None
    charge_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    risk: str | None = None
    sla_breached: bool | None = None
    policy_version: str | None = None


_SUMMARY_FIELDS: dict[str, SearchAttributeKey[Any]] = {
    "status": sa.STATUS, "reason": sa.REASON, "customer": sa.CUSTOMER,
    "charge_id": sa.CHARGE_ID, "amount": sa.AMOUNT, "currency": sa.CURRENCY, "risk": sa.RISK,
    "sla_breached": sa.SLA_BREACHED, "policy_version": sa.POLICY_VERSION,
}


# --- listing --------------------------------------------------------------------------


def _quoted(value: str) -> str:
    """A visibility-query string literal: backslash and quote escaped (Temporal's query
    parser reads `\\` and `\'` inside '...'), so a value can never end the literal
    (o'brien@example.com is a valid address). Control characters are refused."""
    if _CONTROL_CHARS.search(value):
        raise HTTPException(422, f"unsupported character in filter value {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def cases_query(*, status: str | None = None, reason: str | None = None,
                customer: str | list[str] | None = None, risk: str | None = None,
                sla_breached: bool | None = None, open_only: bool = False) -> str:
    """The visibility query for GET /cases; several `customer` values match any."""
    clauses = ["WorkflowType = 'RefundCase'"]
    for key, value in ((sa.STATUS, status), (sa.REASON, reason), (sa.CUSTOMER, customer),
                       (sa.RISK, risk)):
        if isinstance(value, list):
            clauses.append(f"{key.name} IN ({', '.join(_quoted(v) for v in value)})")
        elif value is not None:
            clauses.append(f"{key.name} = {_quoted(value)}")
    if sla_breached is not None:
        clauses.append(f"{sa.SLA_BREACHED.name} = {'true' if sla_breached else 'false'}")
    if open_only:
        clauses.append("ExecutionStatus = 'Running'")
    return " AND ".join(clauses)


def customer_filter(customer: str, settings: Settings) -> list[str]:
    """RefundCustomer values for `customer`: an email becomes its keyed hash
    (core.customer_ref), plus the address itself for cases started before RefundCustomer
    stopped holding emails; a `cust_…` value is taken as it is."""
    if is_customer_ref(customer):
        return [customer]
    try:
        email = check_email(customer)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return [customer_ref(email, settings.CUSTOMER_REF_KEY.get_secret_value()), email]


@router.get("", response_model=list[CaseSummary], summary="List cases (visibility query)")
async def list_cases(
    request: Request,
    agent: Agent,
    status: CaseStatus | None = None,
    reason: RefundReason | None = None,
    customer: Annotated[str | None, Query(
        examples=["ana@example.com"],
        description="An email (matched through its keyed hash) or a RefundCustomer value")] = None,
    risk: Literal["low", "medium", "high"] | None = None,
    sla_breached: bool | None = None,
    open: Annotated[bool, Query(description="Only cases still running")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[CaseSummary]:
    settings: Settings = request.app.state.settings
    customers = None if customer is None else customer_filter(customer, settings)
    query = cases_query(status=status.value if status else None,
                        reason=reason.value if reason else None, customer=customers,
                        risk=risk, sla_breached=sla_breached, open_only=open)
    client = await get_client(request)
    out: list[CaseSummary] = []
    async with temporal_call("list cases"):
        async for wf in client.list_workflows(query, limit=limit, page_size=limit,
                                              rpc_timeout=RPC_TIMEOUT):
            attrs = wf.typed_search_attributes
            out.append(CaseSummary(
                id=wf.id, run_id=wf.run_id,
                execution_status=wf.status.name if wf.status else None,
                start_time=wf.start_time, close_time=wf.close_time,
                **{name: attrs.get(key) for name, key in _SUMMARY_FIELDS.items()},
            ))
    return out


# --- one case -------------------------------------------------------------------------


@router.get("/{case_id}", summary="A case's full state (the `state` query)",
            responses={200: {"model": CaseState}, 404: {"description": "No such case"}})
async def get_case(request: Request, case_id: str, agent: Agent) -> JSONResponse:
    case_id = _case_id(request, case_id)
    cases = await get_cases(request)
    try:
        async with temporal_call("query case state"):
            state = await cases.state_json(case_id)
    except CaseNotFound:
        raise HTTPException(404, f"no case {case_id!r}") from None
    except WorkflowQueryFailedError as exc:
        raise HTTPException(502, f"the case could not answer: {exc}") from None
    return JSONResponse(state)


@router.post("", status_code=202, response_model=CaseStarted,
             summary="Open a case by hand (agent or lead)",
             responses={200: {"model": CaseStarted,
                               "description": "Already exists, or joined the charge's open "
                                              "case as the customer's reply"},
                        409: {"model": OpenCaseConflict,
                              "description": "The charge's open case cannot take it"}})
async def open_case(request: Request, body: RefundRequest, agent: Actor) -> JSONResponse:
    """The agent who opened the case is recorded in the workflow's memo (`opened_by`,
    shown by the Temporal UI and `describe`), not in the request itself."""
    annotate(request, case_id=body.case_id, action="open", reason=body.reason.value)
    if body.incident is not None:
        raise HTTPException(422, INCIDENT_NOT_ALLOWED)
    cases = await get_cases(request)
    body = body.model_copy(update={"received_at": datetime.now(UTC)})
    try:
        async with temporal_call("start case"):
            started = await cases.open(body, opened_by=f"agent:{agent.agent}")
    except OpenCaseOnCharge as exc:
        annotate(request, outcome="open_case_on_charge", open_case=exc.case_id)
        return open_case_conflict(exc)
    annotate(request, outcome=outcome_of(started))
    return started_response(started)


async def _run_action(request: Request, case_id: str, update: Update, action: BaseModel
                      ) -> JSONResponse:
    """Execute one action update; the case's refusal becomes 409/422 with its reason, a
    case that does not answer in time 504."""
    annotate(request, action=update.value)
    cases = await get_cases(request)
    try:
        # The backstop is outside temporal_call: a slow case is 504, not "Temporal down".
        async with asyncio.timeout(UPDATE_TIMEOUT_SECONDS + UPDATE_BACKSTOP_SECONDS):
            async with temporal_call(update.value):
                result = await cases.act(case_id, update, action,
                                         rpc_timeout=timedelta(seconds=UPDATE_TIMEOUT_SECONDS))
    except ActionRefused as refused:
        annotate(request, outcome=f"refused:{refused.code}")
        status = 409 if refused.code == "wrong_state" else 422
        return JSONResponse({"detail": {"code": refused.code, "reason": refused.reason}},
                            status_code=status)
    except CaseNotFound:
        return JSONResponse({"detail": f"no case {case_id!r}"}, status_code=404)
    except CaseIsClosed:
        return JSONResponse({"detail": {"code": "wrong_state", "reason": "the case is closed"}},
                            status_code=409)
    except (RPCTimeoutOrCancelledError, TimeoutError):
        # WorkflowUpdateRPCTimeoutOrCancelledError: the rpc_timeout passed, or the call
        # was cancelled. A cancellation of this request itself must stay one.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from None
        annotate(request, outcome="case_slow")
        raise HTTPException(504, CASE_SLOW) from None
    annotate(request, outcome="accepted")
    return JSONResponse(result.model_dump(mode="json"))


_ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ActionResult},
    403: {"description": "A viewer cannot act"},
    404: {"description": "No such case"},
    409: {"model": Refusal, "description": "Wrong state (e.g. the case is not awaiting an "
                                           "agent, or has closed)"},
    422: {"model": Refusal, "description": "Invalid (e.g. the same agent approving twice, an "
                                           "amount above the refundable, an unknown clause)"},
    504: {"description": "The case did not answer in time (e.g. no worker); the action may "
                         "still be applied"},
}


@router.post("/{case_id}/approve", summary="Approve (update approve_action)",
             responses=_ACTION_RESPONSES)
async def approve(request: Request, case_id: str, body: ApproveBody, agent: Actor) -> JSONResponse:
    case_id = _case_id(request, case_id)
    signal = ApproveSignal(agent=agent.agent, amount=body.amount, note=body.note)
    return await _run_action(request, case_id, Update.approve, signal)


@router.post("/{case_id}/deny", summary="Deny citing a clause (update deny_action)",
             responses=_ACTION_RESPONSES)
async def deny(request: Request, case_id: str, body: DenyBody, agent: Actor) -> JSONResponse:
    case_id = _case_id(request, case_id)
    signal = DenySignal(agent=agent.agent, clause_id=body.clause_id, note=body.note,
                        alternative=body.alternative)
    return await _run_action(request, case_id, Update.deny, signal)


@router.post("/{case_id}/request-info", summary="Ask the customer (update request_info_action)",
             responses=_ACTION_RESPONSES)
async def request_info(request: Request, case_id: str, body: RequestInfoBody,
                       agent: Actor) -> JSONResponse:
    case_id = _case_id(request, case_id)
    signal = RequestInfoSignal(agent=agent.agent, questions=body.questions)
    return await _run_action(request, case_id, Update.request_info, signal)


@router.post("/{case_id}/retry-stripe",
             summary="Try Stripe again now, during an outage (update retry_stripe_action)",
             responses=_ACTION_RESPONSES)
async def retry_stripe(request: Request, case_id: str, agent: Actor) -> JSONResponse:
    """A case that waits for Stripe (it was unreachable past a step's deadline) otherwise
    tries again every few minutes on its own; 409 when it is not waiting for Stripe."""
    case_id = _case_id(request, case_id)
    return await _run_action(request, case_id, Update.retry_stripe,
                             RetryStripeSignal(agent=agent.agent))


class AssignBody(BaseModel):
    model_config = {"extra": "forbid"}
    assignee: str | None = Field(None, min_length=1, max_length=100,
                                 pattern=r"^[A-Za-z0-9._@-]+$",
                                 description="Absent or null: nobody holds the case.")
    note: str = Field("", max_length=2_000)


class NoteBody(BaseModel):
    model_config = {"extra": "forbid"}
    text: str = Field(min_length=1, max_length=5_000)


class SatisfyBody(BaseModel):
    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"requirement": "support_evidence", "note": "ticket 4411 confirmed by support"}]}}
    requirement: str = Field(min_length=1, max_length=60)
    note: str = Field(min_length=1, max_length=2_000)


class RetryRefundBody(BaseModel):
    model_config = {"extra": "forbid"}
    note: str = Field("", max_length=2_000)


class CloseBody(BaseModel):
    model_config = {"extra": "forbid"}
    reason: str = Field(min_length=1, max_length=2_000)


@router.post("/{case_id}/assign", summary="Claim, reassign or release (update assign_action)",
             responses=_ACTION_RESPONSES)
async def assign(request: Request, case_id: str, body: AssignBody, agent: Actor
                 ) -> JSONResponse:
    """An agent claims the case or releases it; giving it to someone else takes a lead."""
    case_id = _case_id(request, case_id)
    if body.assignee not in (None, agent.agent) and agent.role != "lead":
        raise HTTPException(403, "only a lead can give a case to someone else")
    return await _run_action(request, case_id, Update.assign, AssignSignal(
        agent=agent.agent, assignee=body.assignee, note=body.note))


@router.post("/{case_id}/note", summary="A note for the other agents (update note_action)",
             responses=_ACTION_RESPONSES)
async def note(request: Request, case_id: str, body: NoteBody, agent: Actor) -> JSONResponse:
    case_id = _case_id(request, case_id)
    return await _run_action(request, case_id, Update.note,
                             NoteSignal(agent=agent.agent, text=body.text))


@router.post("/{case_id}/satisfy",
             summary="Mark a requirement met (update satisfy_requirement_action)",
             responses=_ACTION_RESPONSES)
async def satisfy(request: Request, case_id: str, body: SatisfyBody, agent: Actor
                  ) -> JSONResponse:
    case_id = _case_id(request, case_id)
    return await _run_action(request, case_id, Update.satisfy_requirement,
                             SatisfyRequirementSignal(agent=agent.agent,
                                                      requirement=body.requirement,
                                                      note=body.note))


@router.post("/{case_id}/retry-refund",
             summary="Retry a failed refund, a new round (update retry_refund_action)",
             responses=_ACTION_RESPONSES)
async def retry_refund(request: Request, case_id: str, body: RetryRefundBody, agent: Actor
                       ) -> JSONResponse:
    case_id = _case_id(request, case_id)
    return await _run_action(request, case_id, Update.retry_refund,
                             RetryRefundSignal(agent=agent.agent, note=body.note))


@router.post("/{case_id}/close", summary="Close a failed refund's case with why "
                                         "(update close_action)",
             responses=_ACTION_RESPONSES)
async def close(request: Request, case_id: str, body: CloseBody, agent: Actor
                ) -> JSONResponse:
    case_id = _case_id(request, case_id)
    return await _run_action(request, case_id, Update.close,
                             CloseCaseSignal(agent=agent.agent, reason=body.reason))
