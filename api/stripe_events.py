"""`POST /webhooks/stripe`: Stripe events to the cases they concern.

The signature is the stripe SDK's own check (400 when bad), the mapping of events to
signals is api.stripe_mapping, and the signals go out through api.cases. The answer is
2xx only once every signal was accepted by Temporal: an outage is 503 and Stripe
retries. Repeated events are harmless: the workflow ignores an (event/refund id,
status) it has seen."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from temporalio.client import Client

from api import signatures
from api.cases import find_open_cases, signal_case
from api.deps import AppSettings, get_client
from api.logging import annotate, event
from api.stripe_mapping import Delivery, map_event

router = APIRouter(tags=["webhooks"])


async def deliver(client: Client, delivery: Delivery) -> list[str]:
    """Send one delivery to its case (metadata), else to the open cases on its charge;
    the case ids that took it."""
    if delivery.case_id and await signal_case(client, delivery.case_id, delivery.signal,
                                               delivery.payload):
        return [delivery.case_id]
    return [case_id for case_id in await find_open_cases(client, delivery.charge_id)
            if await signal_case(client, case_id, delivery.signal, delivery.payload)]


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
async def stripe_webhook(request: Request, settings: AppSettings) -> JSONResponse:
    body = await request.body()
    try:
        stripe_event = signatures.stripe_event(body, request.headers.get("Stripe-Signature"),
                                               settings.STRIPE_WEBHOOK_SECRET)
    except signatures.SignatureError as exc:
        annotate(request, outcome="bad_signature")
        return JSONResponse({"detail": str(exc)}, status_code=400)
    except signatures.MalformedEvent as exc:
        annotate(request, outcome="malformed_event")
        return JSONResponse({"detail": str(exc)}, status_code=400)
    kind, event_id = stripe_event["type"], stripe_event.get("id")
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
