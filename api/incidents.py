"""Billing incidents under `/incidents`, for leads (bearer tokens with role `lead`).

A lead opens an incident (`POST /incidents`: its dry run starts at once), a different lead
approves it, any lead pauses, resumes or cancels it; anyone with a token reads its
progress and, once it has ended, its report. The lead comes from the token, never from
the body. Actions are the incident's updates: a refusal is 409 (wrong state) or 422
(invalid, e.g. the opener approving) with the incident's reason."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

from api.deps import Agent, current_agent, get_client
from api.logging import annotate
from api.temporal import RPC_TIMEOUT, temporal_call
from core.charge_files import ChargeFileError, parse_charge_file
from core.config import AgentIdentity
from core.contract import (
    INCIDENT_WORKFLOW_ID,
    INCIDENT_WORKFLOW_TYPE,
    AmountRule,
    ChargeQuery,
    IncidentActionResult,
    IncidentProgress,
    IncidentReport,
    IncidentRequest,
    IncidentUpdate,
    LeadAction,
    Locale,
)
from core.incident_client import (
    ActionRefused,
    IncidentClient,
    IncidentIsClosed,
    IncidentNotFound,
    workflow_id_of,
)

router = APIRouter(prefix="/incidents", tags=["incidents"])

MAX_BODY_BYTES = 4 * 1024 * 1024  # 50,000 ids in a file fit
ACTION_TIMEOUT = timedelta(seconds=30)


async def lead(request: Request, identity: Annotated[AgentIdentity, Depends(current_agent)]
               ) -> AgentIdentity:
    if identity.role != "lead":
        annotate(request, outcome="forbidden")
        raise HTTPException(403, "only a lead can open or steer a billing incident")
    return identity


Lead = Annotated[AgentIdentity, Depends(lead)]


async def incidents_client(request: Request) -> IncidentClient:
    return IncidentClient(await get_client(request), task_queue=request.app.state.task_queue,
                          rpc_timeout=RPC_TIMEOUT)


def _workflow_id(request: Request, incident_id: str) -> str:
    workflow_id = workflow_id_of(incident_id)
    if not INCIDENT_WORKFLOW_ID.match(workflow_id):
        raise HTTPException(404, f"no incident {incident_id!r}")
    annotate(request, case_id=workflow_id)
    return workflow_id


# --- bodies ---------------------------------------------------------------------------


class ChargesFile(BaseModel):
    model_config = {"extra": "forbid"}
    format: Literal["csv", "jsonl"]
    content: str = Field(description="The file's text: CSV (a charge_id / payment_intent_id "
                                     "/ id column, or ids in the first column) or JSON lines.")


class IncidentBody(BaseModel):
    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [{
        "incident_id": "2026-11-pricing",
        "root_cause": "The price migration applied the annual price to monthly plans.",
        "explanation": {"en": "A pricing error charged your subscription twice.",
                        "ja": "料金設定の誤りにより、二重にご請求いたしました。"},
        "amount": {"kind": "full"},
        "charges_file": {"format": "csv", "content": "charge_id\nch_3Pq...\n"}}]}}
    incident_id: str
    root_cause: str
    explanation: dict[Locale, str]
    amount: AmountRule = Field(default_factory=AmountRule)
    charges: list[str] = Field(default_factory=list)
    charges_file: ChargesFile | None = None
    query: ChargeQuery | None = None
    in_flight: int = Field(300, ge=1, le=1_000)


class LeadNote(BaseModel):
    model_config = {"extra": "forbid"}
    note: str = Field("", max_length=2_000)


class IncidentStartedBody(BaseModel):
    incident: str = Field(examples=["incident-2026-11-pricing"])
    status: str = Field(description="started (202) or duplicate (200)")


class IncidentSummary(BaseModel):
    id: str
    execution_status: str | None
    start_time: datetime
    close_time: datetime | None = None


# --- routes ---------------------------------------------------------------------------


@router.post("", status_code=202, response_model=IncidentStartedBody,
             summary="Open a billing incident (lead); its dry run starts at once",
             responses={200: {"model": IncidentStartedBody, "description": "Exists already"},
                        413: {"description": "Body too large"}})
async def open_incident(request: Request, body: IncidentBody, who: Lead) -> JSONResponse:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return JSONResponse({"detail": f"body too large (limit {MAX_BODY_BYTES} bytes)"},
                            status_code=413)
    charges = list(body.charges)
    if body.charges_file is not None:
        if charges:
            raise HTTPException(422, "give charges or charges_file, not both")
        try:
            charges, _ = parse_charge_file(body.charges_file.content, body.charges_file.format)
        except ChargeFileError as exc:
            raise HTTPException(422, f"charges_file: {exc}") from None
    try:
        incident = IncidentRequest(
            incident_id=body.incident_id, root_cause=body.root_cause,
            explanation=body.explanation, amount=body.amount, charges=charges,
            query=body.query, opened_by=who.agent, in_flight=body.in_flight)
    except ValidationError as exc:
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)
    annotate(request, case_id=incident.workflow_id, action="open_incident")
    incidents = await incidents_client(request)
    async with temporal_call("start incident"):
        started = await incidents.start(incident)
    return JSONResponse({"incident": started.workflow_id,
                         "status": "started" if started.started else "duplicate"},
                        status_code=202 if started.started else 200)


@router.get("", response_model=list[IncidentSummary], summary="List billing incidents")
async def list_incidents(request: Request, agent: Agent,
                         limit: Annotated[int, Query(ge=1, le=500)] = 50
                         ) -> list[IncidentSummary]:
    client = await get_client(request)
    out: list[IncidentSummary] = []
    async with temporal_call("list incidents"):
        async for wf in client.list_workflows(f"WorkflowType = '{INCIDENT_WORKFLOW_TYPE}'",
                                              limit=limit, rpc_timeout=RPC_TIMEOUT):
            out.append(IncidentSummary(id=wf.id, start_time=wf.start_time,
                                       close_time=wf.close_time,
                                       execution_status=wf.status.name if wf.status else None))
    return out


@router.get("/{incident_id}", response_model=IncidentProgress,
            summary="An incident's progress: dry run, counts, totals, time left")
async def get_incident(request: Request, incident_id: str, agent: Agent) -> IncidentProgress:
    workflow_id = _workflow_id(request, incident_id)
    incidents = await incidents_client(request)
    try:
        async with temporal_call("query incident"):
            return await incidents.progress(workflow_id)
    except IncidentNotFound:
        raise HTTPException(404, f"no incident {incident_id!r}") from None


@router.get("/{incident_id}/report", response_model=IncidentReport,
            summary="The incident's report (final once it is done or cancelled)")
async def get_report(request: Request, incident_id: str, agent: Agent) -> IncidentReport:
    workflow_id = _workflow_id(request, incident_id)
    incidents = await incidents_client(request)
    try:
        async with temporal_call("query incident report"):
            return await incidents.report(workflow_id)
    except IncidentNotFound:
        raise HTTPException(404, f"no incident {incident_id!r}") from None


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": IncidentActionResult},
    403: {"description": "Not a lead"},
    404: {"description": "No such incident"},
    409: {"description": "Wrong state (e.g. not waiting for approval, already paused, ended)"},
    422: {"description": "Invalid (e.g. the lead who opened it approving it)"},
    504: {"description": "The incident did not answer in time; the action may still apply"},
}


async def _act(request: Request, incident_id: str, update: IncidentUpdate, who: AgentIdentity,
               body: LeadNote) -> JSONResponse:
    workflow_id = _workflow_id(request, incident_id)
    annotate(request, action=update.value)
    incidents = await incidents_client(request)
    try:
        async with asyncio.timeout(ACTION_TIMEOUT.total_seconds() + 5):
            async with temporal_call(update.value):
                result = await incidents.act(workflow_id, update,
                                             LeadAction(lead=who.agent, note=body.note),
                                             rpc_timeout=ACTION_TIMEOUT)
    except ActionRefused as refused:
        annotate(request, outcome=f"refused:{refused.code}")
        return JSONResponse({"detail": {"code": refused.code, "reason": refused.reason}},
                            status_code=409 if refused.code == "wrong_state" else 422)
    except IncidentNotFound:
        raise HTTPException(404, f"no incident {incident_id!r}") from None
    except IncidentIsClosed:
        return JSONResponse({"detail": {"code": "wrong_state",
                                        "reason": "the incident has ended"}}, status_code=409)
    except (WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError):
        raise HTTPException(504, "the incident did not answer in time (is the worker "
                                 "running?); check GET /incidents/{id} before retrying"
                            ) from None
    return JSONResponse(result.model_dump(mode="json"))


@router.post("/{incident_id}/approve", responses=_RESPONSES,
             summary="Approve (a lead other than the one who opened it): money moves")
async def approve(request: Request, incident_id: str, who: Lead,
                  body: LeadNote | None = None) -> JSONResponse:
    return await _act(request, incident_id, IncidentUpdate.approve, who, body or LeadNote())


@router.post("/{incident_id}/pause", responses=_RESPONSES,
             summary="Pause: no new cases start (those under way go on)")
async def pause(request: Request, incident_id: str, who: Lead,
                body: LeadNote | None = None) -> JSONResponse:
    return await _act(request, incident_id, IncidentUpdate.pause, who, body or LeadNote())


@router.post("/{incident_id}/resume", responses=_RESPONSES, summary="Resume a paused incident")
async def resume(request: Request, incident_id: str, who: Lead,
                 body: LeadNote | None = None) -> JSONResponse:
    return await _act(request, incident_id, IncidentUpdate.resume, who, body or LeadNote())


@router.post("/{incident_id}/cancel", responses=_RESPONSES,
             summary="Cancel: no new refunds; made refunds stay made")
async def cancel(request: Request, incident_id: str, who: Lead,
                 body: LeadNote | None = None) -> JSONResponse:
    return await _act(request, incident_id, IncidentUpdate.cancel, who, body or LeadNote())
