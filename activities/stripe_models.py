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

# Error types raised by the activities (ApplicationError.type).
STRIPE_TRANSIENT = "StripeTransient"
STRIPE_PERMANENT = "StripePermanent"

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
