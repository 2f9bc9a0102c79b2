"""Stripe activities: the only code that reads or moves money in Stripe.

Async activities on the SDK's `*_async` methods (aiohttp), so the worker needs no
activity executor. SDK network retries are off: Temporal retries, and every failure
leaves here as a typed ApplicationError (`map_stripe_error`). A refund is created only
after a look-up of the charge's refunds for one carrying this case's id, with an explicit
idempotency key from the workflow, so a retry after a lost response never pays twice.

Stripe's rate limit is kept here, per worker process: every request waits for a token of
the `StripeActivities`' pacer (activities/stripe_pacing.py) before it goes out. The
charge is retrieved with its refunds expanded, so an activity makes as few requests as
it can.
"""

from __future__ import annotations

import contextlib
import random
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aiohttp
import stripe
from opentelemetry.trace import StatusCode
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.errors import permanent, transient
from activities.stripe_models import (
    CREATE_REFUND,
    GATHER_FACTS,
    GET_REFUND,
    LIST_CHARGES,
    LIST_INVOICE_PURCHASES,
    LOOKUP_CHARGE,
    STRIPE_PERMANENT,
    STRIPE_PERMIT,
    STRIPE_QUEUE_SUFFIX,
    STRIPE_RATE_LIMITED,
    STRIPE_TRANSIENT,
    ChargePage,
    ChargeSummary,
    CreateRefundInput,
    GatherFactsInput,
    GetRefundInput,
    ListChargesInput,
    ListInvoicePurchasesInput,
    LookupChargeInput,
    PurchasePage,
    RefundResult,
    StripeFacts,
    rate_limit_backoff,
    stripe_dispatch_rate,
)
from activities.stripe_pacing import RequestPacer
from core.config import Settings
from core.money import plain
from core.tracing import http_client_span

if TYPE_CHECKING:  # the SDK's typed request parameters (not exported at top level)
    from stripe.params._charge_list_params import ChargeListParams
    from stripe.params._invoice_list_params import InvoiceListParams
    from stripe.params._refund_list_params import RefundListParams

__all__ = [
    "CreateRefundInput",
    "GatherFactsInput",
    "GetRefundInput",
    "RefundResult",
    "StripeActivities",
    "StripeFacts",
    "map_stripe_error",
    "refund_result",
]

HTTP_TIMEOUT_SECONDS = 20.0
DUPLICATE_WINDOW_SECONDS = 24 * 3600
MAX_CUSTOMER_CHARGES = 300  # enough history for abuse signals; bounds the look-up cost
OPEN_DISPUTE_STATUSES = frozenset(
    {"warning_needs_response", "warning_under_review", "needs_response", "under_review"}
)
# Codes Stripe uses for "try again shortly" whatever the HTTP class.
_TRANSIENT_CODES = frozenset({"lock_timeout", "rate_limit", "idempotency_key_in_use"})


class _NotFound(Exception):
    """The charge or payment intent does not exist (or has no charge yet)."""


# --- counting requests (the rate limit is in Stripe requests) ------------------------

_REQUESTS: ContextVar[list[int] | None] = ContextVar("stripe_requests", default=None)


class _PacedHTTPClient(stripe.AIOHTTPClient):
    """The SDK's aiohttp client: every request waits for the pacer's token, then is counted
    for the activity running it (each activity is its own asyncio task, so a context
    variable tells them apart), in a client span when tracing is on. It sees every request
    the SDK makes, pages included. aiohttp rather than the SDK's httpx client: a request
    costs the worker 0.55 ms of CPU against 1.4 ms (issue 12). As httpx did, it takes the
    timeout per phase (connecting, then each read) and honours HTTPS_PROXY / NO_PROXY."""

    def __init__(self, *, timeout: float, pacer: RequestPacer) -> None:
        super().__init__(timeout=aiohttp.ClientTimeout(connect=timeout, sock_read=timeout))
        self._pacer = pacer
        self._own_session: aiohttp.ClientSession | None = None

    @property
    def _session(self) -> aiohttp.ClientSession:
        """The session the SDK's client uses (Stripe's CA bundle, as the SDK makes it), made
        with the environment's proxy settings; made by the first request, in its loop."""
        if self._own_session is None:
            tls = ssl.create_default_context(cafile=stripe.ca_bundle_path)
            self._own_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls), trust_env=True)
        return self._own_session

    async def request_async(self, method: str, url: str, headers: Mapping[str, str],
                            post_data: Any = None) -> tuple[bytes, int, Mapping[str, str]]:
        await self._pacer.acquire()
        counter = _REQUESTS.get()
        if counter is not None:
            counter[0] += 1
        with http_client_span(method, url) as span:
            content, status, answer_headers = await self.request_stream_async(
                method, url, headers, post_data=post_data)
            try:
                body = await content.read()
            except (aiohttp.ClientError, TimeoutError) as exc:  # cut off, or too slow
                raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                    f"Stripe's answer did not arrive whole: {type(exc).__name__}",
                    should_retry=True) from exc
            if span is not None:
                span.set_attribute("http.response.status_code", status)
                if status >= 400:
                    span.set_status(StatusCode.ERROR)
            return body, status, answer_headers


@contextlib.contextmanager
def counting_requests() -> Iterator[list[int]]:
    """`with counting_requests() as n:` ... n[0] is the number of Stripe requests made."""
    counter = [0]
    token = _REQUESTS.set(counter)
    try:
        yield counter
    finally:
        _REQUESTS.reset(token)



# --- error mapping -------------------------------------------------------------------


def _field(obj: Any, *path: str) -> Any:
    """obj.a.b.c, or None where a link is missing (Stripe objects omit absent fields)."""
    for name in path:
        if obj is None:
            return None
        obj = getattr(obj, name, None)
    return obj


def _id(value: Any) -> str | None:
    """An id from a field that is either an id or an expanded object."""
    if value is None or isinstance(value, str):
        return value
    return str(value.id)


def _stripe_code(exc: stripe.StripeError) -> str:
    """Stripe's error code, or a stable stand-in where Stripe sends none."""
    if isinstance(exc, stripe.AuthenticationError):
        return "authentication"
    if isinstance(exc, stripe.PermissionError):
        return "permission"
    if isinstance(exc, stripe.APIConnectionError):
        return "connection"
    code = exc.code or _field(exc.error, "code")
    if code:
        return code
    if isinstance(exc, stripe.RateLimitError):
        return "rate_limit"
    if isinstance(exc, stripe.IdempotencyError):
        return "idempotency_error"
    if isinstance(exc, stripe.InvalidRequestError):
        if exc.http_status == 404:
            return "resource_missing"
        # Stripe sends an over-refund without a code: param=amount and this wording.
        if exc.param == "amount" and "greater than unrefunded" in (exc.user_message or ""):
            return "amount_too_large"
        return "invalid_request"
    if isinstance(exc, stripe.CardError):
        return "card_error"
    return "api_error"


def map_stripe_error(exc: stripe.StripeError) -> ApplicationError:
    """The one place that decides whether a Stripe failure is worth retrying.

    Transient (`StripeTransient`): rate limit / lock timeout (429), connection errors,
    5xx and 409 idempotency-key-in-use. Everything else (already refunded, disputed,
    amount too large, invalid request, auth, permission) is `StripePermanent`,
    non-retryable. details[0] = {code, message, http_status}.
    """
    code = _stripe_code(exc)
    status = exc.http_status
    # Short, and raised `from None`: a retrying activity's last failure must fit what
    # Temporal shows (a chain of SDK exceptions once exceeded its size limit).
    message = _short(exc.user_message or type(exc).__name__)
    retryable = (
        isinstance(exc, (stripe.RateLimitError, stripe.APIConnectionError))
        or code in _TRANSIENT_CODES
        or (status is not None and status >= 500)
        or (type(exc) is stripe.APIError and status is None)
    )
    if code == "rate_limit" or isinstance(exc, stripe.RateLimitError):
        # Retried after Stripe's back-off: by Temporal, or on the rate-limited queue by
        # the workflow, which pays for the retry's requests (STRIPE_QUEUE_RETRY_POLICY).
        info = activity.info() if activity.in_activity() else None
        on_stripe_queue = info is not None and info.task_queue.endswith(STRIPE_QUEUE_SUFFIX)
        return ApplicationError(
            f"Stripe {code}: {message}",
            {"code": code, "message": message, "http_status": status},
            type=STRIPE_RATE_LIMITED if on_stripe_queue else STRIPE_TRANSIENT,
            non_retryable=False,
            next_retry_delay=rate_limit_backoff(info.attempt if info else 1, random.random()))
    build = transient if retryable else permanent
    error_type = STRIPE_TRANSIENT if retryable else STRIPE_PERMANENT
    return build(error_type, f"Stripe {code}: {message}", code=code, message=message,
                 http_status=status)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _not_found_error(reason: str) -> ApplicationError:
    return permanent(STRIPE_PERMANENT, f"Stripe resource_missing: {reason}",
                     code="resource_missing", message=reason, http_status=404)


def _is_missing(exc: stripe.StripeError) -> bool:
    return isinstance(exc, stripe.InvalidRequestError) and (
        exc.http_status == 404 or _stripe_code(exc) == "resource_missing"
    )


# --- conversions ---------------------------------------------------------------------


def _time(ts: int | None) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=UTC) if ts is not None else None


def refund_result(refund: stripe.Refund, *, reused: bool = False) -> RefundResult:
    metadata = refund.metadata.to_dict() if refund.metadata and _field(refund, "metadata") else {}
    return RefundResult(
        refund_id=refund.id,
        status=refund.status,
        amount=refund.amount,
        currency=refund.currency,
        charge_id=_id(_field(refund, "charge")),
        failure_reason=_field(refund, "failure_reason"),
        acquirer_reference=_field(refund, "destination_details", "card", "reference"),
        reused=reused,
        case_id=metadata.get("case_id"),
    )


def _duplicates(charge: stripe.Charge, others: Sequence[stripe.Charge]) -> list[str]:
    """Other succeeded, unrefunded charges of the same amount and currency within 24 h."""
    return [
        c.id
        for c in others
        if c.amount == charge.amount
        and c.currency == charge.currency
        and abs(c.created - charge.created) <= DUPLICATE_WINDOW_SECONDS
        and _field(c, "status") == "succeeded"
        and not (_field(c, "amount_refunded") or 0)
    ]


REFUND_KEY_METADATA = "refund_key"  # the round's idempotency key, on each refund made


def _of_this_round(refund: stripe.Refund, inp: CreateRefundInput) -> bool:
    """The refund this round of the case made. A case reopened after a refund, or retried
    after a failed one, has rounds of its own (`<case id>:refund-N`), each its own refund.
    Refunds made before the key was recorded carry only the case id: they are the first
    round's (`<case id>:refund`)."""
    if _field(refund, "metadata", "case_id") != inp.case_id:
        return False
    key = _field(refund, "metadata", REFUND_KEY_METADATA)
    if key is not None:
        return bool(key == inp.idempotency_key)
    return inp.idempotency_key.endswith(":refund")


# --- activities ----------------------------------------------------------------------


class StripeActivities:
    """Holds one StripeClient and the pacer all its requests wait on; register
    `activities()` on the worker (async, no executor). One instance per process: two
    would each pace at the full rate. `pacer` is for tests (a fake clock)."""

    def __init__(self, settings: Settings, *, http_timeout: float = HTTP_TIMEOUT_SECONDS,
                 pacer: RequestPacer | None = None):
        self.pacer = pacer or RequestPacer(
            stripe_dispatch_rate(settings.STRIPE_MAX_REQUESTS_PER_SECOND))
        self._http = _PacedHTTPClient(timeout=http_timeout, pacer=self.pacer)
        self._stripe = stripe.StripeClient(
            settings.STRIPE_API_KEY,
            base_addresses={"api": settings.STRIPE_API_BASE},
            max_network_retries=0,
            http_client=self._http,
        )
        self._v1 = self._stripe.v1

    async def close(self) -> None:
        """Close the HTTP connections (their session is made by the first request)."""
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    def activities(self) -> list[Callable[..., Any]]:
        return [self.stripe_gather_facts, self.stripe_create_refund, self.stripe_get_refund,
                self.stripe_lookup_charge, self.stripe_list_charges,
                self.stripe_list_invoice_purchases, stripe_permit]

    # -- look-ups --

    async def _charge(
        self, charge_id: str | None, payment_intent_id: str | None, expand: list[str]
    ) -> stripe.Charge:
        """The charge itself, or the payment intent's latest charge. Raises _NotFound."""
        try:
            if not charge_id:
                pi = await self._v1.payment_intents.retrieve_async(payment_intent_id or "")
                charge_id = _id(_field(pi, "latest_charge"))
                if not charge_id:
                    raise _NotFound(f"payment intent {payment_intent_id} has no charge")
            return await self._v1.charges.retrieve_async(charge_id, {"expand": expand})
        except stripe.InvalidRequestError as exc:
            if _is_missing(exc):
                what = f"charge {charge_id}" if charge_id else f"payment intent {payment_intent_id}"
                raise _NotFound(f"{what} does not exist in Stripe") from exc
            raise

    async def _refunds(self, charge: stripe.Charge) -> list[stripe.Refund]:
        """All the charge's refunds, newest first: the first page comes embedded in the
        charge (retrieved with `expand: ["refunds"]`), the rest is listed after its last.
        A charge without the list (not expanded) has them all listed: the exactly-once
        check must never take a missing list for no refunds."""
        embedded = _field(charge, "refunds")
        refunds: list[stripe.Refund] = list(embedded.data) if embedded is not None else []
        if embedded is None or embedded.has_more:
            params: RefundListParams = {"charge": charge.id, "limit": 100}
            if refunds:
                params["starting_after"] = refunds[-1].id
            page = await self._v1.refunds.list_async(params)
            refunds.extend([r async for r in page.auto_paging_iter()])
        return refunds

    async def _customer_charges(self, customer_id: str) -> list[stripe.Charge]:
        page = await self._v1.charges.list_async({"customer": customer_id, "limit": 100})
        found: list[stripe.Charge] = []
        async for charge in page.auto_paging_iter():
            found.append(charge)
            if len(found) >= MAX_CUSTOMER_CHARGES:
                break
        return found

    async def _open_disputes(self, charge: stripe.Charge) -> list[str]:
        if not _field(charge, "disputed"):
            return []
        page = await self._v1.disputes.list_async({"charge": charge.id, "limit": 100})
        return [d.id async for d in page.auto_paging_iter() if d.status in OPEN_DISPUTE_STATUSES]

    async def _invoice_period(self, charge: stripe.Charge) -> tuple[int | None, int | None]:
        """Service period of the invoice this charge paid (subscriptions), if any.

        API versions before 2025-03-31 (and localstripe) carry `charge.invoice`; newer
        ones link a payment intent to its invoice through invoice payments."""
        invoice: Any = None
        if "invoice" in charge:
            invoice = charge["invoice"]  # only on API versions before 2025-03-31
        elif _field(charge, "payment_intent"):
            payments = await self._v1.invoice_payments.list_async({
                "payment": {"type": "payment_intent",
                            "payment_intent": _id(charge.payment_intent) or ""},
                "expand": ["data.invoice"],
                "limit": 1,
            })
            invoice = _field(payments.data[0], "invoice") if payments.data else None
        if isinstance(invoice, str):
            invoice = await self._v1.invoices.retrieve_async(invoice)
        periods = [p for p in (_field(line, "period") for line in
                               (_field(invoice, "lines", "data") or [])) if p]
        if not periods:
            return None, None
        return min(p.start for p in periods), max(p.end for p in periods)

    # -- activities --

    @activity.defn(name=GATHER_FACTS)
    async def stripe_gather_facts(self, inp: GatherFactsInput) -> StripeFacts:
        """Everything Stripe knows that the policy and the agent need. A missing charge
        is a fact (found=False), not an error. Says how many requests it made."""
        with counting_requests() as made:
            facts = await self._gather_facts(inp)
        return facts.model_copy(update={"stripe_requests": made[0]})

    async def _gather_facts(self, inp: GatherFactsInput) -> StripeFacts:
        req = inp.request
        try:
            charge = await self._charge(req.charge_id, req.payment_intent_id,
                                        ["customer", "refunds"])
        except _NotFound as nf:
            return StripeFacts(found=False, not_found_reason=str(nf), charge_id=req.charge_id,
                               payment_intent_id=req.payment_intent_id)
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from None
        try:
            customer = _field(charge, "customer")
            customer_id = _id(customer)
            others: list[stripe.Charge] = []
            if customer_id:
                others = [c for c in await self._customer_charges(customer_id)
                          if c.id != charge.id]
            refunds = await self._refunds(charge)
            disputes = await self._open_disputes(charge)
            period_start, period_end = await self._invoice_period(charge)
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from None
        live_customer = customer if customer_id and not isinstance(customer, str) else None
        return StripeFacts(
            found=True,
            charge_id=charge.id,
            payment_intent_id=_id(_field(charge, "payment_intent")),
            customer_id=customer_id,
            customer_email=_field(live_customer, "email"),
            customer_created=_time(_field(live_customer, "created")),
            amount=charge.amount,
            amount_refunded=_field(charge, "amount_refunded") or 0,
            currency=charge.currency,
            created=_time(charge.created),
            period_start=_time(period_start),
            period_end=_time(period_end),
            description=_field(charge, "description"),
            refunded=bool(_field(charge, "refunded")),
            disputed=bool(_field(charge, "disputed")),
            dispute_ids=disputes,
            radar_risk_level=_field(charge, "outcome", "risk_level"),
            radar_risk_score=_field(charge, "outcome", "risk_score"),
            customer_other_refunds=sum(1 for c in others if _field(c, "amount_refunded")),
            duplicate_charge_ids=_duplicates(charge, others),
            existing_refunds=[refund_result(r) for r in refunds],
        )

    @activity.defn(name=CREATE_REFUND)
    async def stripe_create_refund(self, inp: CreateRefundInput) -> RefundResult:
        """Refund once per round of a case: reuse the refund this round made (a retry
        after a lost response, past Stripe's 24 h of idempotency), else create one with
        the round's idempotency key."""
        try:
            charge = await self._charge(inp.charge_id, inp.payment_intent_id, ["refunds"])
            for refund in await self._refunds(charge):
                # A failed or canceled refund moved no money: an agent's retry (a new
                # round, its own key) makes a new one.
                if (_of_this_round(refund, inp)
                        and _field(refund, "status") not in ("failed", "canceled")):
                    activity.logger.info("refund %s for %s already exists", refund.id,
                                         inp.idempotency_key)
                    return refund_result(refund, reused=True)
            _check_refundable(charge, inp)
            metadata = {"case_id": inp.case_id, REFUND_KEY_METADATA: inp.idempotency_key}
            if inp.reason_tag:
                metadata["reason_tag"] = inp.reason_tag
            refund = await self._v1.refunds.create_async(
                {"charge": charge.id, "amount": inp.amount, "metadata": metadata},
                {"idempotency_key": inp.idempotency_key},
            )
        except _NotFound as nf:
            raise _not_found_error(str(nf)) from None
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from None
        return refund_result(refund)

    @activity.defn(name=GET_REFUND)
    async def stripe_get_refund(self, inp: GetRefundInput) -> RefundResult:
        """The refund's current status: the fallback when no webhook came in time."""
        try:
            refund = await self._v1.refunds.retrieve_async(inp.refund_id)
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from None
        return refund_result(refund)


    # -- billing incidents: one request per activity --

    @activity.defn(name=LOOKUP_CHARGE)
    async def stripe_lookup_charge(self, inp: LookupChargeInput) -> ChargeSummary:
        """One charge (or a payment intent's latest charge) with its customer, in one
        request. A missing one is a fact (found=False)."""
        try:
            if inp.ref.startswith("pi_"):
                intent = await self._v1.payment_intents.retrieve_async(
                    inp.ref, {"expand": ["latest_charge", "customer"]})
                charge = _field(intent, "latest_charge")
                if charge is None or isinstance(charge, str):
                    return ChargeSummary(ref=inp.ref, found=False, payment_intent_id=inp.ref,
                                         not_found_reason="the payment intent has no charge")
                return charge_summary(inp.ref, charge, _field(intent, "customer"))
            charge = await self._v1.charges.retrieve_async(inp.ref, {"expand": ["customer"]})
        except stripe.StripeError as exc:
            if _is_missing(exc):
                return ChargeSummary(ref=inp.ref, found=False,
                                     not_found_reason=f"{inp.ref} does not exist in Stripe")
            raise map_stripe_error(exc) from exc
        return charge_summary(inp.ref, charge, _field(charge, "customer"))

    @activity.defn(name=LIST_CHARGES)
    async def stripe_list_charges(self, inp: ListChargesInput) -> ChargePage:
        """One page (100) of the charges created in the range, with their customers;
        those of another amount or currency are left out."""
        params: ChargeListParams = {
            "created": {"gte": int(inp.created_from.timestamp()),
                        "lt": int(inp.created_to.timestamp())},
            "limit": 100, "expand": ["data.customer"]}
        if inp.starting_after:
            params["starting_after"] = inp.starting_after
        try:
            page = await self._v1.charges.list_async(params)
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        charges = [charge_summary(c.id, c, _field(c, "customer")) for c in page.data
                   if (inp.amount is None or c.amount == inp.amount)
                   and (inp.currency is None or c.currency == inp.currency)]
        last = page.data[-1].id if page.data and page.has_more else None
        return ChargePage(charges=charges, next_after=last)

    @activity.defn(name=LIST_INVOICE_PURCHASES)
    async def stripe_list_invoice_purchases(self, inp: ListInvoicePurchasesInput
                                            ) -> PurchasePage:
        """One page (100) of the paid invoices created in the range: the charge or payment
        intent of each one with a line of the price or product."""
        params: InvoiceListParams = {
            "created": {"gte": int(inp.created_from.timestamp()),
                        "lt": int(inp.created_to.timestamp())},
            "status": "paid", "limit": 100, "expand": ["data.payments"]}
        if inp.starting_after:
            params["starting_after"] = inp.starting_after
        try:
            page = await self._v1.invoices.list_async(params)
        except stripe.StripeError as exc:
            raise map_stripe_error(exc) from exc
        refs: list[str] = []
        for invoice in page.data:
            if _invoice_matches(invoice, inp.price, inp.product):
                refs.extend(_invoice_purchases(invoice))
        last = page.data[-1].id if page.data and page.has_more else None
        return PurchasePage(refs=list(dict.fromkeys(refs)), next_after=last)


@activity.defn(name=STRIPE_PERMIT)
async def stripe_permit() -> None:
    """Makes no request: its dispatch on the rate-limited Stripe queue pays for one more
    request of the activity that follows it (see workflows/stripe_rate.py)."""


def _locale(customer: Any) -> str | None:
    locales = _field(customer, "preferred_locales") or []
    return str(locales[0]) if locales else None


def charge_summary(ref: str, charge: Any, customer: Any) -> ChargeSummary:
    """A charge (and its customer, when expanded) as a billing incident sees it."""
    live_customer = customer if customer is not None and not isinstance(customer, str) \
        else None
    email = (_field(live_customer, "email") or _field(charge, "billing_details", "email")
             or _field(charge, "receipt_email"))
    return ChargeSummary(
        ref=ref, found=True, charge_id=charge.id,
        payment_intent_id=_id(_field(charge, "payment_intent")),
        status=_field(charge, "status"),
        amount=charge.amount, amount_refunded=_field(charge, "amount_refunded") or 0,
        currency=charge.currency, refunded=bool(_field(charge, "refunded")),
        disputed=bool(_field(charge, "disputed")), created=_time(_field(charge, "created")),
        customer_id=_id(customer), customer_email=email,
        customer_locale=_locale(live_customer))


def _invoice_matches(invoice: Any, price: str | None, product: str | None) -> bool:
    """A line of the price / product: `line.price` on API versions before 2025-03-31,
    `line.pricing.price_details` since."""
    for line in _field(invoice, "lines", "data") or []:
        old = _field(line, "price")
        new = _field(line, "pricing", "price_details")
        line_price = _id(old) or _field(new, "price")
        line_product = _id(_field(old, "product")) or _id(_field(new, "product"))
        if (price is None or price == line_price) and \
                (product is None or product == line_product):
            return True
    return False


def _invoice_purchases(invoice: Any) -> list[str]:
    """What paid the invoice: `charge` / `payment_intent` before 2025-03-31, its
    `payments` (when listed) since."""
    refs = [_id(_field(invoice, "charge")) or _id(_field(invoice, "payment_intent"))]
    for payment in _field(invoice, "payments", "data") or []:
        refs.append(_id(_field(payment, "payment", "charge"))
                    or _id(_field(payment, "payment", "payment_intent")))
    return [ref for ref in refs if ref]


def _check_refundable(charge: stripe.Charge, inp: CreateRefundInput) -> None:
    """Refuse what Stripe would refuse, before asking it (a wrong currency would refund the
    wrong sum; localstripe also allows over-refunds that Stripe rejects)."""
    if charge.currency != inp.currency:
        msg = f"charge {charge.id} is in {charge.currency}, refund asked in {inp.currency}"
        raise permanent(STRIPE_PERMANENT, f"Stripe currency_mismatch: {msg}",
                        code="currency_mismatch", message=msg, http_status=None)
    remaining = charge.amount - (_field(charge, "amount_refunded") or 0)
    if remaining <= 0:
        msg = f"Charge {charge.id} has already been refunded."
        raise permanent(STRIPE_PERMANENT, f"Stripe charge_already_refunded: {msg}",
                        code="charge_already_refunded", message=msg, http_status=None)
    if inp.amount > remaining:
        msg = (f"Refund amount ({plain(inp.amount, inp.currency)}) is greater than unrefunded "
               f"amount on charge ({plain(remaining, inp.currency)})")
        raise permanent(STRIPE_PERMANENT, f"Stripe amount_too_large: {msg}",
                        code="amount_too_large", message=msg, http_status=None)
