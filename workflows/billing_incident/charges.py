"""The incident's charges: looked up in Stripe (one request each, on the rate-limited
queue), checked for open cases, and classified: refund (how much), join an open case, or
skip (why). The dry run and the drain classify the same way."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.incident_models import (
        INCIDENT_RETRY_POLICY,
        INCIDENT_START_TO_CLOSE,
        OPEN_CASES,
        OpenCases,
        OpenCasesInput,
        PurchaseRef,
    )
    from activities.stripe_models import LOOKUP_CHARGE, ChargeSummary, LookupChargeInput
    from core.contract import (
        IncidentRequest,
        Locale,
        RefundReason,
        RefundRequest,
        SkipReason,
        incident_case_request_id,
    )
    from core.models import check_email

    from .. import stripe_rate


@dataclass(frozen=True)
class Verdict:
    """What to do with one charge: refund `amount` (None: whatever is left), or skip."""

    skip: SkipReason | None = None
    amount: int | None = None


def classify(charge: ChargeSummary, request: IncidentRequest, *,
             window_days: int | None, now: datetime) -> Verdict:
    """Pure: the same answer in the dry run and in the drain, for the same facts."""
    if not charge.found:
        return Verdict(skip="not_found")
    if charge.status != "succeeded":
        return Verdict(skip="not_paid")
    if charge.disputed:
        return Verdict(skip="disputed")
    if charge.refunded or charge.amount_refunded >= charge.amount:
        return Verdict(skip="already_refunded")
    if request.query is not None and not request.query.matches(charge):
        return Verdict(skip="outside_query")
    if not _purchase(charge):
        return Verdict(skip="unsupported_payment")
    if not _email(charge):
        return Verdict(skip="no_email")
    if window_days is not None and charge.created is not None and \
            charge.created < now - timedelta(days=window_days):
        return Verdict(skip="older_than_policy_window")
    due = request.amount.due(charge)
    if not due:
        return Verdict(skip="nothing_due")
    return Verdict(amount=None if request.amount.kind == "full" else due)


def _purchase(charge: ChargeSummary) -> tuple[str | None, str | None] | None:
    """(charge id, payment intent id) a case can take: a card charge (ch_), else its
    payment intent."""
    if charge.charge_id and charge.charge_id.startswith("ch_"):
        return charge.charge_id, None
    if charge.payment_intent_id:
        return None, charge.payment_intent_id
    return None


def _email(charge: ChargeSummary) -> str | None:
    try:
        return check_email(charge.customer_email) if charge.customer_email else None
    except ValueError:
        return None


def locale_of(stripe_locale: str | None) -> Locale:
    """Stripe's preferred locale ("ja-JP") as one of ours; English otherwise."""
    language = (stripe_locale or "en").split("-")[0].lower()
    return "ja" if language == "ja" else "ko" if language == "ko" else "en"


def case_request(request: IncidentRequest, charge: ChargeSummary, amount: int | None
                 ) -> RefundRequest:
    """The request of the case the incident opens for one charge."""
    purchase = _purchase(charge)
    email = _email(charge)
    assert purchase is not None and email is not None, "classified first"
    charge_id, payment_intent_id = purchase
    return RefundRequest(
        request_id=incident_case_request_id(request.incident_id, charge.ref),
        customer_email=email, charge_id=charge_id, payment_intent_id=payment_intent_id,
        reason=RefundReason.billing_error,
        message=f"Opened by billing incident {request.incident_id}.",
        amount=amount, currency=charge.currency, locale=locale_of(charge.customer_locale),
        incident=request.link())


async def look_up(refs: list[str]) -> list[ChargeSummary]:
    """The charges, one Stripe request each, all at once (the queue paces them)."""
    return list(await asyncio.gather(*(
        stripe_rate.call(LOOKUP_CHARGE, LookupChargeInput(ref=ref),
                         result_type=ChargeSummary, summary=f"Look up {ref} in Stripe")
        for ref in refs)))


async def open_cases(incident_id: str, charges: list[ChargeSummary]) -> OpenCases:
    """Running cases on these charges, or of their customers, other than the incident's."""
    found = [c for c in charges if c.found]
    if not found:
        return OpenCases()
    purchases = [PurchaseRef(ref=c.ref, charge_id=c.charge_id,
                             payment_intent_id=c.payment_intent_id, customer_id=c.customer_id,
                             customer_email=_email(c)) for c in found]
    result: OpenCases = await workflow.execute_activity(
        OPEN_CASES, OpenCasesInput(incident_id=incident_id, purchases=purchases),
        result_type=OpenCases, start_to_close_timeout=INCIDENT_START_TO_CLOSE,
        retry_policy=INCIDENT_RETRY_POLICY,
        summary=f"Look for open cases on {len(purchases)} charges")
    return result
