"""`POST /webhooks/refund-requests`: the billing system's or helpdesk's refund request.

Size first (413 from Content-Length before reading anything, or as soon as the streamed
body passes 256 KB), then the signature (401, nothing parsed), then the body (422 with
field errors), then one start of `refund-<request_id>`. The id is the idempotency key: a
repeated delivery is refused by Temporal itself (conflict FAIL, reuse REJECT_DUPLICATE)
and answered 200 "duplicate" with the same case id, even after the case has closed. One open
case per charge: a request for a charge that has an open case joins it as the customer's
reply (200 "joined", that case's id), or is refused 409 with its id (`CaseClient.open`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from api import signatures
from api.bodies import BodyTooLarge, read_limited
from api.deps import AppSettings, get_cases
from api.logging import annotate
from api.temporal import temporal_call
from core.case_client import OpenCaseOnCharge, Started
from core.contract import RefundRequest

router = APIRouter(tags=["webhooks"])

MAX_BODY_BYTES = 256 * 1024
# Only a billing incident (approved by two leads) opens a case carrying `incident`.
INCIDENT_NOT_ALLOWED = "`incident` is set only by a billing incident (POST /incidents)"


class CaseStarted(BaseModel):
    case_id: str = Field(examples=["refund-req_1042"])
    status: str = Field(description="started (202), duplicate (200) or joined (200: the "
                                    "open case on the same charge took the request as the "
                                    "customer's reply)", examples=["started"])


class OpenCaseConflict(BaseModel):
    detail: str
    case_id: str = Field(description="The open case on the charge.")


def started_response(started: Started) -> JSONResponse:
    if started.started:
        return JSONResponse({"case_id": started.case_id, "status": "started"}, status_code=202)
    status = "joined" if started.joined else "duplicate"
    return JSONResponse({"case_id": started.case_id, "status": status}, status_code=200)


def open_case_conflict(exc: OpenCaseOnCharge) -> JSONResponse:
    """409 naming the charge's open case: this request cannot join it."""
    return JSONResponse({"detail": str(exc), "case_id": exc.case_id}, status_code=409)


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors, JSON-safe (its ctx may hold exception objects)."""
    errors: list[dict[str, Any]] = json.loads(exc.json(include_url=False, include_input=False))
    return errors


_REQUEST_EXAMPLE = {
    "request_id": "req_1042",
    "customer_email": "ana@example.com",
    "charge_id": "ch_3PqExample",
    "reason": "technical_issue",
    "message": "The export never worked for me.",
    "amount": 4900,
    "currency": "usd",
    "locale": "en",
    "timezone": "America/New_York",
}

_OPENAPI = {
    "parameters": [{
        "name": signatures.HEADER,
        "in": "header",
        "required": True,
        "description": 't=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>"> '
                       "(INTAKE_WEBHOOK_SECRET; several v1 allowed; 5-minute tolerance)",
        "schema": {"type": "string"},
        "example": "t=1767225600,v1=5f2b...",
    }],
    "requestBody": {
        "required": True,
        "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/RefundRequest"},
            "examples": {"technical_issue": {"summary": "A full refund request",
                                             "value": _REQUEST_EXAMPLE}},
        }},
    },
}


@router.post(
    "/webhooks/refund-requests",
    status_code=202,
    response_model=CaseStarted,
    summary="Refund request from the billing system or helpdesk (signed)",
    responses={
        200: {"model": CaseStarted, "description": "Repeated delivery: the existing case; "
                                                  "or joined: the charge's open case took "
                                                  "it as the customer's reply"},
        401: {"description": "Missing, malformed, wrong or expired signature"},
        409: {"model": OpenCaseConflict, "description": "The charge has an open case this "
                                                       "request cannot join (another "
                                                       "customer's address): its id"},
        413: {"description": "Body too large"},
        422: {"description": "Not a valid RefundRequest (field errors in `detail`), e.g. an "
                            "amount above 99999999, the most Stripe holds"},
        503: {"description": "Temporal unreachable: retry"},
    },
    openapi_extra=_OPENAPI,
)
async def refund_request_webhook(request: Request, settings: AppSettings) -> JSONResponse:
    received_at = datetime.now(UTC)  # the customer's clock: the ack SLA counts from here
    try:
        body = await read_limited(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        annotate(request, outcome="too_large")
        return JSONResponse({"detail": f"body too large (limit {MAX_BODY_BYTES} bytes)"},
                            status_code=413)
    try:
        signatures.verify(body, request.headers.get(signatures.HEADER),
                          settings.INTAKE_WEBHOOK_SECRET)
    except signatures.SignatureError as exc:
        annotate(request, outcome="bad_signature")
        return JSONResponse({"detail": str(exc)}, status_code=401)
    try:
        refund_request = RefundRequest.model_validate_json(body)
    except ValidationError as exc:
        annotate(request, outcome="invalid_body")
        return JSONResponse({"detail": validation_errors(exc)}, status_code=422)
    refund_request = refund_request.model_copy(update={"received_at": received_at})
    if refund_request.incident is not None:
        annotate(request, outcome="invalid_body")
        return JSONResponse({"detail": INCIDENT_NOT_ALLOWED}, status_code=422)
    annotate(request, case_id=refund_request.case_id, reason=refund_request.reason.value)
    cases = await get_cases(request)
    try:
        async with temporal_call("start case"):
            started = await cases.open(refund_request)
    except OpenCaseOnCharge as exc:
        annotate(request, outcome="open_case_on_charge", open_case=exc.case_id)
        return open_case_conflict(exc)
    annotate(request, outcome=outcome_of(started))
    return started_response(started)


def outcome_of(started: Started) -> str:
    return "started" if started.started else "joined" if started.joined else "duplicate"

