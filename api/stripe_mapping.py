"""Stripe events to the signals they call for, and how to find their cases. Pure: no
FastAPI, no Temporal.

Refund events become `refund_update`, disputes `dispute_opened`. A refund carrying
`metadata.case_id` goes to that case; otherwise (a refund made in the dashboard, or a
dispute) to the open cases whose `RefundChargeId` is the charge: a card charge (`ch_`) or
a non-card payment such as SEPA Direct Debit or ACH (`py_`, whose refunds are `pyr_`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from core import case_client
from core.contract import CASE_ID, CHARGE_ID, DisputeOpenedSignal, RefundUpdateSignal, Signal

REFUND_EVENTS = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)
CHARGE_REFUNDED = "charge.refunded"
DISPUTE_CREATED = "charge.dispute.created"
HANDLED = REFUND_EVENTS | {CHARGE_REFUNDED, DISPUTE_CREATED}
REFUND_STATUSES = frozenset({"pending", "requires_action", "succeeded", "failed", "canceled"})


@dataclass(frozen=True)
class Delivery:
    """One signal to send, and how to find its case."""

    signal: Literal[Signal.refund_update, Signal.dispute_opened]
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
    return Delivery(Signal.refund_update, payload, case_id, charge_id)


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
    return Delivery(Signal.dispute_opened, payload, None, charge_id)


def map_event(stripe_event: dict[str, Any]) -> list[Delivery] | None:
    """The signals an event calls for; None for an event type we do not handle (a `type`
    that is not a string included)."""
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
    if not CHARGE_ID.match(charge_id):
        raise ValueError(f"not a charge id: {charge_id!r}")
    return case_client.open_cases_query([charge_id])
