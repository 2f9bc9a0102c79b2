"""Messages that cross a boundary: the workflow input, its signals and its `state`
query. One pydantic model per message, sent with temporalio's pydantic converter.
Pure (no I/O): the workflow sandbox imports this module."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.money import normalize_currency

Locale = Literal["en", "ja", "ko"]
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


class Strict(BaseModel):
    """Boundary models refuse unknown keys: a typo must not pass silently."""

    model_config = ConfigDict(extra="forbid")


class RefundReason(StrEnum):
    technical_issue = "technical_issue"
    not_as_described = "not_as_described"
    unused = "unused"
    billing_error = "billing_error"
    duplicate_charge = "duplicate_charge"
    change_of_mind = "change_of_mind"
    fraud_suspected = "fraud_suspected"
    other = "other"


# Reasons that, confirmed by the facts, take the billing-error fast path.
BILLING_REASONS = frozenset({RefundReason.billing_error, RefundReason.duplicate_charge})

class CaseStatus(StrEnum):
    """Where a case is. The value is also the `RefundStatus` search attribute."""

    received = "received"
    assessing = "assessing"
    awaiting_info = "awaiting_info"
    awaiting_agent = "awaiting_agent"
    approved = "approved"
    refunding = "refunding"
    refunded = "refunded"
    refund_failed = "refund_failed"
    denied = "denied"
    abandoned = "abandoned"
    withdrawn = "withdrawn"
    disputed = "disputed"
    completed = "completed"
    closed = "closed"  # closed on purpose by an agent, or nothing was left to refund


TERMINAL_STATUSES = frozenset(
    {CaseStatus.denied, CaseStatus.abandoned, CaseStatus.withdrawn, CaseStatus.disputed,
     CaseStatus.completed, CaseStatus.closed}
)
# A case still deciding or moving money: a second request for its charge joins it.
OPEN_STATUSES = frozenset(
    {CaseStatus.received, CaseStatus.assessing, CaseStatus.awaiting_info,
     CaseStatus.awaiting_agent, CaseStatus.approved, CaseStatus.refunding,
     CaseStatus.refund_failed}
)


def check_timezone(value: str) -> str:
    """An IANA time zone name this machine knows ("Asia/Seoul", "America/New_York")."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}", value):
        raise ValueError(f"{value!r} is not an IANA time zone name (e.g. Asia/Seoul)")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. Asia/Seoul)"
                         ) from None
    return value


def check_email(value: str) -> str:
    value = value.strip()
    if not _EMAIL.match(value) or len(value) > 254:
        raise ValueError(f"{value!r} is not an email address")
    return value.lower()


# A request id, and so a case id `refund-<request id>`: no ':' (nor '+', '@', spaces),
# because the case id rides in the reply-to address refunds+<case id>+<tag>@..., which
# email parsers split on ':'. Every module that reads a case id checks it with CASE_ID.
REQUEST_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
CASE_ID = re.compile(rf"^refund-{REQUEST_ID_PATTERN}$")


def case_id_for(request_id: str) -> str:
    return f"refund-{request_id}"


# A Stripe charge id: `ch_` for cards, `py_` for the non-card payments (SEPA Direct Debit,
# ACH, Bacs...). Bounded: the id becomes the RefundChargeId search attribute, which
# Temporal caps at 2 KB (a longer one would fail the start, answered 503 and retried
# forever), and it is quoted into visibility queries, so it allows no quote.
CHARGE_ID_PATTERN = r"(?:ch|py)_[A-Za-z0-9_]{1,200}"
CHARGE_ID = re.compile(rf"^{CHARGE_ID_PATTERN}$")

# The largest amount Stripe holds: its `amount` fields take at most eight digits of minor
# units (99999999 = $999,999.99; https://docs.stripe.com/api/charges/object#charge_object-amount).
# A larger one could not be charged or refunded; bounding it here also keeps the Int
# search attribute RefundAmount (int64) valid, so a bad amount is a 422, never a 503.
MAX_STRIPE_AMOUNT = 99_999_999

# A billing incident's id, and so its workflow id `incident-<id>`; short, because the
# request ids of its cases are `incident-<id>-<charge id>`.
INCIDENT_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}"


class IncidentLink(Strict):
    """What a case knows of the billing incident that covers its charge. Set only by the
    incident (the intake and the agents' API refuse it): the incident's approval by two
    leads confirms the billing error for every charge it covers."""

    incident_id: str = Field(pattern=rf"^{INCIDENT_ID_PATTERN}$")
    root_cause: str = Field(min_length=1, max_length=2_000,
                            description="Internal: what went wrong (timeline, tag).")
    explanation: dict[Locale, str] = Field(
        description="What the customer is told, per locale (en at least); never the root "
                    "cause.")

    @field_validator("explanation")
    @classmethod
    def _has_english(cls, v: dict[Locale, str]) -> dict[Locale, str]:
        if not v.get("en", "").strip():
            raise ValueError("an English explanation is required (the fallback locale)")
        if any(not text.strip() or len(text) > 2_000 for text in v.values()):
            raise ValueError("each explanation is 1-2000 characters")
        return v

    def explanation_for(self, locale: Locale) -> str:
        return self.explanation.get(locale) or self.explanation["en"]

    @property
    def tag(self) -> str:
        """The root-cause tag of its cases (Stripe metadata, the trend report)."""
        return f"incident-{self.incident_id}"


class RefundRequest(Strict):
    """A customer's refund request, as the billing system or helpdesk sends it."""

    request_id: str = Field(
        pattern=rf"^{REQUEST_ID_PATTERN}$",
        description="The sender's id for this request (letters, digits, '.', '_', '-'); "
                    "the case id is refund-<request_id>.",
        examples=["req_1042"],
    )
    customer_email: str = Field(examples=["ana@example.com"])
    charge_id: str | None = Field(
        None, pattern=rf"^{CHARGE_ID_PATTERN}$", examples=["ch_3Pq...", "py_3Pq..."],
        description="A card charge (ch_) or a non-card payment such as SEPA or ACH (py_).")
    payment_intent_id: str | None = Field(None, pattern=r"^pi_[A-Za-z0-9_]{1,200}$")
    reason: RefundReason
    message: str = Field("", max_length=10_000)
    amount: int | None = Field(
        None, gt=0, description="Minor units (cents, or yen for JPY), at most 99999999 as in "
                                "Stripe. Absent: the policy decides.",
        json_schema_extra={"maximum": MAX_STRIPE_AMOUNT},
    )
    currency: str | None = Field(None, examples=["usd"])
    locale: Locale = "en"
    timezone: str | None = Field(
        None, max_length=64, examples=["Asia/Seoul"],
        description="The customer's IANA time zone: times in emails are shown in it. "
                    "Absent: the locale's (ja Asia/Tokyo, ko Asia/Seoul, en UTC).")
    documents: list[str] = Field(default_factory=list, max_length=20)
    incident: IncidentLink | None = Field(
        None, description="Set only on the cases a billing incident opens.")
    received_at: datetime | None = Field(
        None, description="When the request reached Refund Desk: set by the intake (its "
                          "receipt time; a value sent is replaced). The acknowledgment SLA "
                          "counts from it. Absent: when the case started.")

    @field_validator("customer_email")
    @classmethod
    def _email(cls, v: str) -> str:
        return check_email(v)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        return normalize_currency(v) if v is not None else None

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str | None) -> str | None:
        return check_timezone(v) if v is not None else None
    @field_validator("received_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v

    @field_validator("amount")
    @classmethod
    def _amount(cls, v: int | None) -> int | None:
        if v is not None and v > MAX_STRIPE_AMOUNT:
            raise ValueError(f"amount {v} is above {MAX_STRIPE_AMOUNT}, the most Stripe can "
                             "charge or refund (eight digits of minor units)")
        return v

    @model_validator(mode="after")
    def _has_purchase(self) -> RefundRequest:
        if not (self.charge_id or self.payment_intent_id):
            raise ValueError("one of charge_id or payment_intent_id is required")
        return self

    @property
    def case_id(self) -> str:
        return case_id_for(self.request_id)


# --- signals -------------------------------------------------------------------------


class ApproveSignal(Strict):
    agent: str = Field(min_length=1, max_length=100)
    amount: int | None = Field(None, gt=0, description="Minor units; absent: the policy amount.")
    note: str = Field("", max_length=2_000)


class DenySignal(Strict):
    agent: str = Field(min_length=1, max_length=100)
    clause_id: str = Field(min_length=1, description="The policy clause the denial rests on.")
    note: str = Field("", max_length=2_000)
    alternative: str | None = Field(None, description="Id of one of the policy's alternatives.")


class RequestInfoSignal(Strict):
    agent: str = Field(min_length=1, max_length=100)
    questions: list[str] = Field(min_length=1, max_length=10)


class CustomerReplySignal(Strict):
    text: str = Field(max_length=50_000)
    from_email: str | None = None
    attachments: list[str] = Field(default_factory=list)
    channel: Literal["email", "api", "cli"] = "api"
    request_id: str | None = Field(
        None, description="A second request for the charge of an open case, joined to it "
                          "as a reply (its request id: a redelivery is taken once).")
    attachment_types: dict[str, str] = Field(
        default_factory=dict, description="Content type of each attachment by name, as the "
                                          "sender's mail claims it (image/png...).")
    message_id: str | None = Field(
        None, max_length=300, description="The mail's Message-ID (or a digest of it): a "
                                          "redelivered reply is taken once.")


RefundStatusName = Literal["pending", "requires_action", "succeeded", "failed", "canceled"]


class RefundUpdateSignal(Strict):
    """A refund's status as Stripe reports it (webhook or poll)."""

    refund_id: str
    status: RefundStatusName
    amount: int | None = None
    currency: str | None = None
    charge_id: str | None = None
    failure_reason: str | None = None
    acquirer_reference: str | None = None
    case_id: str | None = Field(None, description="metadata.case_id; None: made outside us.")
    event_id: str | None = None
    source: Literal["webhook", "poll", "activity"] = "webhook"


class DisputeOpenedSignal(Strict):
    dispute_id: str
    charge_id: str | None = None
    reason: str | None = None
    amount: int | None = None
    event_id: str | None = None


class FeedbackSignal(Strict):
    rating: int = Field(ge=1, le=5)
    comment: str = Field("", max_length=5_000)


class WithdrawSignal(Strict):
    by: str = Field("customer", max_length=100)
    note: str = Field("", max_length=2_000)


class AssignSignal(Strict):
    """`agent` gives the case to `assignee` (themselves: a claim); None: unassigned."""

    agent: str = Field(min_length=1, max_length=100)
    assignee: str | None = Field(None, min_length=1, max_length=100,
                                 pattern=r"^[A-Za-z0-9._@-]+$")
    note: str = Field("", max_length=2_000)


class NoteSignal(Strict):
    """An agent's note on the case, for the other agents (the customer never sees it)."""

    agent: str = Field(min_length=1, max_length=100)
    text: str = Field(min_length=1, max_length=5_000)


class SatisfyRequirementSignal(Strict):
    """An agent marks one of the policy's document requirements as met, saying how
    ("ticket 4411 confirmed by support")."""

    agent: str = Field(min_length=1, max_length=100)
    requirement: str = Field(min_length=1, max_length=60,
                             description="A document kind of the pinned policy.")
    note: str = Field(min_length=1, max_length=2_000)


class RetryRefundSignal(Strict):
    """After a failed refund: a new refund round (its own idempotency key)."""

    agent: str = Field(min_length=1, max_length=100)
    note: str = Field("", max_length=2_000)


class CloseCaseSignal(Strict):
    """Close a case on purpose (e.g. a failed refund settled another way), with why."""

    agent: str = Field(min_length=1, max_length=100)
    reason: str = Field(min_length=1, max_length=2_000)


# SendGrid events after which the email will not reach the customer (the API maps a
# bounce of type "blocked" to "blocked"); a spam report means it arrived.
UNDELIVERABLE_EMAIL_EVENTS = frozenset({"bounce", "dropped", "blocked"})


class EmailEventSignal(Strict):
    """A SendGrid delivery event (bounce, dropped, ...) for one of the case's emails."""

    event: str
    email: str
    template: str | None = None
    reason: str | None = None
    sg_event_id: str | None = None


# --- the case's record ---------------------------------------------------------------


class TimelineEntry(BaseModel):
    """One change to a case: who, what, when, why."""

    at: datetime
    actor: str = Field(description="system | customer | stripe | sendgrid | agent:<id>")
    kind: str = Field(description="A stable code, e.g. acknowledged, approval_refused.")
    message: str
    data: dict[str, Any] = Field(default_factory=dict)
