"""Messages of the Stripe activities, kept apart from the activity code so the workflow
sandbox can import them without the stripe SDK. Money in minor units + lowercase ISO code."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import Field, field_validator, model_validator
from temporalio.common import RetryPolicy

from core.models import RefundRequest, RefundStatusName, RefundUpdateSignal, Strict
from core.money import normalize_currency

# Activity names: the workflow and its test doubles use these strings.
GATHER_FACTS = "stripe_gather_facts"
CREATE_REFUND = "stripe_create_refund"
GET_REFUND = "stripe_get_refund"
LOOKUP_CHARGE = "stripe_lookup_charge"  # billing incidents: one charge, one request
LIST_CHARGES = "stripe_list_charges"  # billing incidents: one page, one request
LIST_INVOICE_PURCHASES = "stripe_list_invoice_purchases"  # one page, one request
STRIPE_PERMIT = "stripe_permit"  # makes no request: one more Stripe request paid for

# --- Stripe's rate limit ------------------------------------------------------------
# Kept in the Stripe worker process: every request waits for a token of its one pacer
# (activities/stripe_pacing.py) at `stripe_dispatch_rate(STRIPE_MAX_REQUESTS_PER_SECOND)`.
# The pacer is per PROCESS: several Stripe worker processes must split the setting.
# Every Stripe activity also runs on its own task queue, `<workflow task queue>-stripe`
# (`refund-cases-stripe`), whose dispatch rate Temporal's matching service caps for all
# workers of the queue (Worker(max_task_queue_activities_per_second=...)).
# Legacy: cases started before the pacer pay for an activity's n requests with n - 1
# `stripe_permit` dispatches on that queue (workflows/stripe_rate.py), by the counts
# below. Recorded histories of running cases schedule permits by these numbers, so they
# never change (replay must stay deterministic). The activities now make fewer (the
# charge comes with its refunds expanded): a refund 2, gathering facts 2 for a charge
# with a customer; a legacy case pays a permit more than needed, which only slows it.
STRIPE_QUEUE_SUFFIX = "-stripe"
STRIPE_REQUESTS = {
    GATHER_FACTS: 3,  # the charge, the customer's charges, the charge's refunds; the rest
                      # (invoice, disputes, more pages) is paid after, from `stripe_requests`
    CREATE_REFUND: 3,  # the charge, its refunds (one of this case?), the refund
    GET_REFUND: 1,
    LOOKUP_CHARGE: 1,
    LIST_CHARGES: 1,
    LIST_INVOICE_PURCHASES: 1,
}
PAYMENT_INTENT_REQUESTS = 1  # known only by its payment intent: one look-up more
# Both our limiters and Stripe's are token buckets; sending at exactly Stripe's rate lets
# them drift into each other (a few 429s an hour), so the pacer and the queue run at this
# share of the setting.
STRIPE_RATE_SHARE = 0.96
STRIPE_WORKER_SLOTS = 5  # Stripe activities a worker runs at once


def stripe_task_queue(task_queue: str) -> str:
    """The Stripe activities' queue of the workflows on `task_queue`."""
    return f"{task_queue}{STRIPE_QUEUE_SUFFIX}"


def stripe_dispatch_rate(max_requests_per_second: float) -> float:
    """Requests a second one process's pacer lets out, and activities a second the
    Stripe queue may dispatch."""
    return max_requests_per_second * STRIPE_RATE_SHARE

# Error types raised by the activities (ApplicationError.type).
STRIPE_TRANSIENT = "StripeTransient"
STRIPE_PERMANENT = "StripePermanent"
# A 429 on the rate-limited Stripe queue: the workflow pays for the retry (stripe_rate.py).
STRIPE_RATE_LIMITED = "StripeRateLimited"

# A refund in one of these states changes no more (but for Stripe's rare reversal of a
# succeeded refund, which the case handles on its own).
FINAL_REFUND_STATUSES = frozenset({"succeeded", "failed", "canceled"})

# Schedule options, the one definition the workflow uses. The SDK's own HTTP timeout
# is 20 s, so one attempt ends inside the start-to-close timeout; Temporal (not the
# SDK) retries transient errors, against a deadline rather than a count: a Stripe outage
# is retried for STRIPE_STEP_DEADLINE, then the case waits for Stripe and tries again (it
# never turns an outage into "not found" or "refused").
STRIPE_START_TO_CLOSE = timedelta(seconds=30)
STRIPE_STEP_DEADLINE = timedelta(minutes=10)
STRIPE_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=0,  # unlimited: the schedule-to-close deadline ends the retries
    non_retryable_error_types=[STRIPE_PERMANENT],
)
# How long a case waits for Stripe before trying again after a step deadline passed.
STRIPE_PAUSE = timedelta(minutes=5)
# On the rate-limited queue a 429 is not retried by the server (the attempt would make
# its requests unpaid): it goes back to the workflow, which backs off as Stripe advises
# and pays for every request of the next attempt. It is never a failure: no attempt
# budget is spent on it. Elsewhere (cases started before the queue) it is an ordinary
# transient error, retried by Temporal after the same back-off.
STRIPE_QUEUE_RETRY_POLICY = RetryPolicy(
    initial_interval=STRIPE_RETRY_POLICY.initial_interval,
    backoff_coefficient=STRIPE_RETRY_POLICY.backoff_coefficient,
    maximum_interval=STRIPE_RETRY_POLICY.maximum_interval,
    maximum_attempts=STRIPE_RETRY_POLICY.maximum_attempts,
    non_retryable_error_types=[STRIPE_PERMANENT, STRIPE_RATE_LIMITED],
)
RATE_LIMIT_BACKOFF_BASE = timedelta(seconds=1)
RATE_LIMIT_BACKOFF_MAX = timedelta(seconds=32)
STRIPE_PERMIT_START_TO_CLOSE = timedelta(seconds=10)


def rate_limit_backoff(attempt: int, jitter: float) -> timedelta:
    """Stripe's advice for a 429: back off exponentially, with jitter (`jitter` in [0, 1):
    the activity's random, or the workflow's deterministic one)."""
    base: timedelta = min(RATE_LIMIT_BACKOFF_BASE * 2 ** max(0, attempt - 1),
                          RATE_LIMIT_BACKOFF_MAX)
    return base * (0.5 + jitter)


class GatherFactsInput(Strict):
    case_id: str
    request: RefundRequest


class RefundResult(Strict):
    """A Stripe refund as the case needs it. `reused`: found by metadata case_id, not made
    by this call (a retry after a lost response, or a duplicate approval)."""

    refund_id: str
    status: RefundStatusName
    amount: int
    currency: str
    charge_id: str | None = None
    failure_reason: str | None = None
    acquirer_reference: str | None = Field(
        None, description="Card network reference (ARN) the customer's bank can trace."
    )
    reused: bool = False
    case_id: str | None = Field(None, description="metadata.case_id; None: made outside us.")

    def as_update(self, source: Literal["poll", "activity"]) -> RefundUpdateSignal:
        """The same refund as a status update, as a webhook would report it."""
        return RefundUpdateSignal(
            refund_id=self.refund_id, status=self.status, amount=self.amount,
            currency=self.currency, charge_id=self.charge_id,
            failure_reason=self.failure_reason, acquirer_reference=self.acquirer_reference,
            case_id=self.case_id, source=source)


class StripeFacts(Strict):
    """What Stripe knows about the purchase. `found=False` (charge or payment intent
    missing) carries `not_found_reason`; the money fields are then empty."""

    found: bool
    not_found_reason: str | None = None
    charge_id: str | None = None
    payment_intent_id: str | None = None
    customer_id: str | None = None
    customer_email: str | None = None
    amount: int = 0
    amount_refunded: int = 0
    currency: str | None = None
    created: datetime | None = None
    period_start: datetime | None = Field(None, description="Invoice line period, if any.")
    period_end: datetime | None = None
    description: str | None = None
    refunded: bool = False
    disputed: bool = False
    dispute_ids: list[str] = Field(default_factory=list, description="Open disputes.")
    radar_risk_level: str | None = None
    radar_risk_score: int | None = None
    customer_created: datetime | None = None
    customer_other_refunds: int = Field(0, description="Customer's other charges refunded.")
    duplicate_charge_ids: list[str] = Field(
        default_factory=list,
        description="Same customer, same amount and currency, within 24 h, not refunded.",
    )
    existing_refunds: list[RefundResult] = Field(default_factory=list)
    stripe_requests: int = Field(0, description="Requests the look-up made (rate limit).")


class CreateRefundInput(Strict):
    case_id: str
    charge_id: str | None = None
    payment_intent_id: str | None = None
    amount: int = Field(gt=0, description="Minor units.")
    currency: str
    idempotency_key: str = Field(
        min_length=1, description="Workflow id + stable step name; never per attempt."
    )
    reason_tag: str | None = None

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return normalize_currency(v)

    @model_validator(mode="after")
    def _has_purchase(self) -> CreateRefundInput:
        if not (self.charge_id or self.payment_intent_id):
            raise ValueError("one of charge_id or payment_intent_id is required")
        return self


class GetRefundInput(Strict):
    refund_id: str


# --- billing incidents: charges as the incident sees them ---------------------------

PURCHASE_ID_PATTERN = r"^(ch|py|pi)_[A-Za-z0-9_]{1,70}$"  # ids of 73 characters at most


class ChargeSummary(Strict):
    """One charge (given by its charge or payment-intent id, `ref`) as a billing incident
    sees it: enough to decide whether to refund it, how much, and whom to tell."""

    ref: str
    found: bool
    not_found_reason: str | None = None
    charge_id: str | None = None
    payment_intent_id: str | None = None
    status: str | None = Field(None, description="succeeded, pending, failed")
    amount: int = 0
    amount_refunded: int = 0
    currency: str | None = None
    refunded: bool = False
    disputed: bool = False
    created: datetime | None = None
    customer_id: str | None = None
    customer_email: str | None = None
    customer_locale: str | None = Field(None, description="Stripe's preferred_locales[0].")


class LookupChargeInput(Strict):
    ref: str = Field(pattern=PURCHASE_ID_PATTERN)


class ListChargesInput(Strict):
    """One page of the charges created in [created_from, created_to), optionally of one
    amount and currency."""

    created_from: datetime
    created_to: datetime
    amount: int | None = None
    currency: str | None = None
    starting_after: str | None = None


class ChargePage(Strict):
    charges: list[ChargeSummary]
    next_after: str | None = Field(None, description="None: the last page.")


class ListInvoicePurchasesInput(Strict):
    """One page of the paid invoices created in [created_from, created_to) with a line of
    this price or product (the lines Stripe includes in the list: the first ten)."""

    created_from: datetime
    created_to: datetime
    price: str | None = None
    product: str | None = None
    starting_after: str | None = None


class PurchasePage(Strict):
    refs: list[str] = Field(description="Charge or payment-intent ids of matching invoices.")
    next_after: str | None = None
