"""`POST /webhooks/stripe`: Stripe events to the cases they concern.

Verified with the stripe SDK's own `Webhook.construct_event` (400 on a bad signature).
Refund events become `refund_update`, disputes `dispute_opened`. A refund carrying
`metadata.case_id` goes to that case; otherwise (a refund made in the dashboard, or a
dispute) to the open cases whose `RefundChargeId` is the charge. The answer is 2xx only
once every signal was accepted by Temporal: an outage is 503 and Stripe retries. Repeated
events are harmless: the workflow ignores an (event/refund id, status) it has seen."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import stripe
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.service import RPCError

from api.logging import annotate, event
from api.temporal import RPC_TIMEOUT, get_client, is_not_found, temporal_call
from core.config import Settings
from core.models import CASE_ID, DisputeOpenedSignal, RefundUpdateSignal

router = APIRouter(tags=["webhooks"])

REFUND_EVENTS = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)
CHARGE_REFUNDED = "charge.refunded"
DISPUTE_CREATED = "charge.dispute.created"
HANDLED = REFUND_EVENTS | {CHARGE_REFUNDED, DISPUTE_CREATED}
REFUND_STATUSES = frozenset({"pending", "requires_action", "succeeded", "failed", "canceled"})
_CHARGE_ID = re.compile(r"^ch_[A-Za-z0-9_]{1,200}$")


@dataclass(frozen=True)
class Delivery:
    """One signal to send, and how to find its case."""

    signal: Literal["refund_update", "dispute_opened"]
    payload: RefundUpdateSignal | DisputeOpenedSignal
    case_id: str | None  # from metadata; None: look the case up by charge id
    charge_id: str | None


def _id_of(value: Any) -> str | None:
    """A Stripe reference is an id string or an expanded object with an `id`."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def refund_delivery(refund: Any, event_id: str | None) -> Delivery | None:
    """A Stripe refund object -> refund_update; None when it is not a usable refund."""
    if not isinstance(refund, dict) or not _str(refund.get("id")):
        return None
    status = refund.get("status")
    if not isinstance(status, str) or status not in REFUND_STATUSES:  # a list: unhashable
        return None
    case_id = _str(_get(refund, "metadata", "case_id"))
    if case_id is not None and not CASE_ID.match(case_id):
        case_id = None  # not one of ours: route by charge instead
    charge_id = _id_of(refund.get("charge"))
    currency = _str(refund.get("currency"))
    try:
        payload = RefundUpdateSignal(
            refund_id=refund["id"],
            status=status,
            amount=_int(refund.get("amount")),
            currency=currency.lower() if currency else None,
            charge_id=charge_id,
            failure_reason=_str(refund.get("failure_reason")),
            acquirer_reference=_str(_get(refund, "destination_details", "card", "reference")),
            case_id=case_id,
            event_id=event_id,
            source="webhook",
        )
    except ValidationError:
        return None
    return Delivery("refund_update", payload, case_id, charge_id)


def dispute_delivery(dispute: Any, event_id: str | None) -> Delivery | None:
    if not isinstance(dispute, dict) or not _str(dispute.get("id")):
        return None
    charge_id = _id_of(dispute.get("charge"))
    try:
        payload = DisputeOpenedSignal(
            dispute_id=dispute["id"],
            charge_id=charge_id,
            reason=_str(dispute.get("reason")),
            amount=_int(dispute.get("amount")),
            event_id=event_id,
        )
    except ValidationError:
        return None
    return Delivery("dispute_opened", payload, None, charge_id)


def map_event(stripe_event: dict[str, Any]) -> list[Delivery] | None:
    """The signals an event calls for; None for an event type we do not handle (a `type`
    that is not a string included: the handler refuses those first)."""
    kind = stripe_event.get("type")
    if not isinstance(kind, str) or kind not in HANDLED:
        return None
    event_id = _str(stripe_event.get("id"))
    obj = _get(stripe_event, "data", "object")
    found: list[Delivery | None]
    if kind in REFUND_EVENTS:
        found = [refund_delivery(obj, event_id)]
    elif kind == CHARGE_REFUNDED:
        refunds = _get(obj, "refunds", "data")
        charge_id = _id_of(obj)
        found = []
        for refund in refunds if isinstance(refunds, list) else []:
            if isinstance(refund, dict) and not refund.get("charge") and charge_id:
                refund = {**refund, "charge": charge_id}
            found.append(refund_delivery(refund, event_id))
    else:
        found = [dispute_delivery(obj, event_id)]
    return [d for d in found if d is not None]


def open_cases_query(charge_id: str) -> str:
    """Visibility query for the open cases on a charge (the id is pattern-checked, so it
    cannot break out of its quotes)."""
    if not _CHARGE_ID.match(charge_id):
        raise ValueError(f"not a charge id: {charge_id!r}")
    return (f"WorkflowType = 'RefundCase' AND ExecutionStatus = 'Running' "
            f"AND RefundChargeId = '{charge_id}'")


async def find_open_cases(client: Client, charge_id: str | None) -> list[str]:
    if not charge_id or not _CHARGE_ID.match(charge_id):
        return []
    async with temporal_call("find cases by charge"):
        return [wf.id async for wf in client.list_workflows(
            open_cases_query(charge_id), limit=20, rpc_timeout=RPC_TIMEOUT)]


async def _signal(client: Client, case_id: str, delivery: Delivery) -> bool:
    """True when delivered; False when the case does not exist or has closed."""
    try:
        async with temporal_call(f"signal {delivery.signal}"):
            await client.get_workflow_handle(case_id).signal(
                delivery.signal, delivery.payload, rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if is_not_found(exc):
            return False
        raise
    return True


async def deliver(client: Client, delivery: Delivery) -> list[str]:
    """Send one delivery; the case ids that received it."""
    if delivery.case_id and await _signal(client, delivery.case_id, delivery):
        return [delivery.case_id]
    delivered = []
    for case_id in await find_open_cases(client, delivery.charge_id):
        if await _signal(client, case_id, delivery):
            delivered.append(case_id)
    return delivered


@router.post(
    "/webhooks/stripe",
    summary="Stripe events (Stripe-Signature verified by the stripe SDK)",
    responses={
        200: {"description": "Delivered, ignored (unhandled type) or no_case",
              "content": {"application/json": {"examples": {
                  "delivered": {"value": {"status": "delivered", "cases": ["refund-req_1"]}},
                  "ignored": {"value": {"status": "ignored", "type": "customer.created"}},
              }}}},
        400: {"description": "Bad signature or malformed event (e.g. `type` not a string)"},
        503: {"description": "Temporal unreachable: Stripe will retry"},
    },
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object"},
        "example": {"id": "evt_1", "object": "event", "type": "refund.updated",
                    "data": {"object": {"id": "re_1", "object": "refund", "status": "succeeded",
                                        "amount": 4900, "currency": "usd", "charge": "ch_1",
                                        "metadata": {"case_id": "refund-req_1042"}}}},
    }}}},
)
async def stripe_webhook(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    body = await request.body()
    try:
        verified = stripe.Webhook.construct_event(
            body, request.headers.get("Stripe-Signature"), settings.STRIPE_WEBHOOK_SECRET
        )
    except stripe.SignatureVerificationError as exc:
        annotate(request, outcome="bad_signature")
        return JSONResponse({"detail": f"bad signature: {exc.user_message or exc}"},
                            status_code=400)
    except (ValueError, TypeError, AttributeError, KeyError):
        annotate(request, outcome="malformed_event")
        return JSONResponse({"detail": "malformed event"}, status_code=400)
    stripe_event = verified.to_dict()
    kind, event_id = stripe_event.get("type"), stripe_event.get("id")
    if not isinstance(kind, str) or not kind:
        annotate(request, outcome="malformed_event")
        return JSONResponse({"detail": "malformed event: `type` must be a non-empty string"},
                            status_code=400)
    if event_id is not None and not isinstance(event_id, str):
        annotate(request, outcome="malformed_event")
        return JSONResponse({"detail": "malformed event: `id` must be a string"},
                            status_code=400)
    annotate(request, stripe_event=event_id, stripe_type=kind)
    deliveries = map_event(stripe_event)
    if deliveries is None:
        return JSONResponse({"status": "ignored", "type": kind})
    if not deliveries:  # e.g. charge.refunded without its refunds list: refund.* follow
        annotate(request, outcome="nothing_usable")
        return JSONResponse({"status": "ignored", "type": kind,
                             "reason": "no usable refund or dispute in the event"})
    client = await get_client(request)
    cases: list[str] = []
    for delivery in deliveries:
        cases += await deliver(client, delivery)
    if not cases:
        event("stripe_event_no_case", stripe_event=event_id, stripe_type=kind,
              charges=[d.charge_id for d in deliveries])
        annotate(request, outcome="no_case")
        return JSONResponse({"status": "no_case", "type": kind})
    annotate(request, case_id=",".join(dict.fromkeys(cases)), outcome="delivered")
    return JSONResponse({"status": "delivered", "cases": list(dict.fromkeys(cases))})
