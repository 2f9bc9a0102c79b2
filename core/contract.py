"""The RefundCase contract: everything that crosses the workflow boundary, in one module.

The API, the CLI, the console, the activities' callers and the tests import from here,
never from inside `workflows/`: the workflow's names (type, task queue, signals, updates,
query), its input and signal messages, and what it answers (`CaseState`, `ActionResult`).
The messages themselves are defined in `core.models` (which the activity models build on)
and re-exported here, so there is one place to import the contract from.

Pure (no I/O): the workflow sandbox imports this module.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from temporalio.common import (
    Priority,
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from activities.stripe_models import (
    PURCHASE_ID_PATTERN,
    ChargeSummary,
    RefundResult,
    StripeFacts,
)
from core import search_attributes as sa
from core.models import (
    CASE_ID,
    CHARGE_ID,
    INCIDENT_ID_PATTERN,
    OPEN_STATUSES,
    REQUEST_ID_PATTERN,
    TERMINAL_STATUSES,
    UNDELIVERABLE_EMAIL_EVENTS,
    ApproveSignal,
    AssignSignal,
    CaseStatus,
    CloseCaseSignal,
    CustomerReplySignal,
    DenySignal,
    DisputeOpenedSignal,
    EmailEventSignal,
    FeedbackSignal,
    IncidentLink,
    Locale,
    NoteSignal,
    RefundReason,
    RefundRequest,
    RefundStatusName,
    RefundUpdateSignal,
    RequestInfoSignal,
    RetryRefundSignal,
    SatisfyRequirementSignal,
    Strict,
    TimelineEntry,
    WithdrawSignal,
    case_id_for,
)
from core.money import normalize_currency, plain, round_down_to_step
from policies.facts import PolicyDecision, RiskLevel
from policies.model import Policy

__all__ = [
    "ACTION_REFUSED",
    "CASE_ID",
    "CHARGE_ID",
    "FOLLOWS_MEMO",
    "MAX_REPLY_IDS_KEPT",
    "OPEN_STATUSES",
    "QUEUE_MEMO",
    "QUEUE_STATUSES",
    "REOPENED_MEMO",
    "REQUEST_ID_PATTERN",
    "TASK_QUEUE",
    "TERMINAL_STATUSES",
    "UNDELIVERABLE_EMAIL_EVENTS",
    "WORKFLOW_TYPE",
    "ActionResult",
    "AgentDecision",
    "Approval",
    "ApproveSignal",
    "Assessment",
    "AssignSignal",
    "CaseProgress",
    "CaseResult",
    "CaseState",
    "CaseStatus",
    "CloseCaseSignal",
    "ContinuedCase",
    "CustomerReplySignal",
    "Denial",
    "DenySignal",
    "DisputeOpenedSignal",
    "EmailEventSignal",
    "FeedbackSignal",
    "FollowedCase",
    "Locale",
    "NoteSignal",
    "Query",
    "QueueCard",
    "RefundReason",
    "RefundRequest",
    "RefundStatusName",
    "RefundUpdateSignal",
    "RefusalCode",
    "Reopening",
    "RequestInfoSignal",
    "RetryRefundSignal",
    "RetryStripeSignal",
    "SatisfyRequirementSignal",
    "Signal",
    "TimelineEntry",
    "Update",
    "WithdrawSignal",
    "case_id_for",
    "console_attribute_updates",
    "queue_card_of",
    "queue_deadline",
    "search_attributes_of",
]

WORKFLOW_TYPE = "RefundCase"
TASK_QUEUE = "refund-cases"


class Signal(StrEnum):
    """Signal names. Signals record a refusal in the timeline instead of failing."""

    approve = "approve"
    deny = "deny"
    request_info = "request_info"
    customer_reply = "customer_reply"
    refund_update = "refund_update"
    dispute_opened = "dispute_opened"
    feedback = "feedback"
    withdraw = "withdraw"
    email_event = "email_event"
    join_incident = "join_incident"


class Update(StrEnum):
    """Agents' actions as updates: the caller learns at once whether the case took it."""

    approve = "approve_action"
    deny = "deny_action"
    request_info = "request_info_action"
    retry_stripe = "retry_stripe_action"  # RetryStripeSignal: try Stripe now, not later
    # The agent console (the workflow handles them once wired; until then the console
    # reads the workflow's handlers and shows these as not available).
    assign = "assign_action"  # AssignSignal: claim (assignee = agent), reassign, unassign
    note = "note_action"  # NoteSignal: a note in the timeline (kind "note")
    # The lifecycle: agents can act at every wait.
    satisfy_requirement = "satisfy_requirement_action"  # SatisfyRequirementSignal
    retry_refund = "retry_refund_action"  # RetryRefundSignal, in refund_failed
    close = "close_action"  # CloseCaseSignal, e.g. in refund_failed


class Query(StrEnum):
    state = "state"


ACTION_REFUSED = "ActionRefused"  # ApplicationError.type of a refused update
RefusalCode = Literal["wrong_state", "invalid"]


class Assessment(BaseModel):
    """Step 2: what the facts say about the request. Findings are inconsistency codes
    (charge_not_found, email_mismatch, amount_exceeds_refundable, currency_mismatch)."""

    findings: list[str] = Field(default_factory=list)
    finding_details: list[str] = Field(default_factory=list, description="One line a finding.")
    risk: RiskLevel = "low"
    risk_score: int = Field(0, ge=0, le=100)
    risk_reasons: list[str] = Field(default_factory=list)
    billing_error_confirmed: bool = False
    root_cause: str | None = Field(None, description="Billing errors: what went wrong.")


class Approval(BaseModel):
    """One agent's approval. Two different agents above the two-approver threshold."""

    agent: str
    amount: int
    note: str = ""
    at: datetime


class Denial(BaseModel):
    by: str = Field(description="policy | agent:<id>")
    clause_id: str
    note: str = ""
    alternative: str | None = None


class ActionResult(BaseModel):
    """What an agent's update (approve_action, deny_action, request_info_action) did.
    A refused action is not returned: it raises ApplicationError(type="ActionRefused",
    details=[{"code": "wrong_state"|"invalid", "reason": ...}])."""

    accepted: bool
    status: CaseStatus
    message: str
    approvals: int = 0
    approvers_required: int = 1


class RetryStripeSignal(BaseModel):
    """An agent asks a case waiting for Stripe (during an outage) to try again now."""

    agent: str = Field(min_length=1, max_length=100)


class AgentDecision(BaseModel):
    """The agents' decision the case is acting on (step 5)."""

    kind: Literal["approve", "deny", "request_info", "retry", "close"]
    agent: str
    amount: int = 0
    note: str = ""
    denial: Denial | None = None
    questions: list[str] = Field(default_factory=list)


class CaseProgress(BaseModel):
    """Where the workflow is within its own steps: kept in the state (not in private
    attributes) so that the `state` query shows everything the case knows."""

    closing: CaseStatus | None = Field(
        None, description="withdrawn / disputed by a signal before any refund")
    agent_decision: AgentDecision | None = None
    agent_must_decide: bool = Field(
        False, description="Stripe refused a refund: the policy no longer decides alone")
    refund_started: bool = False
    refund_rounds: int = 0
    refund_reversed: bool = Field(False, description="a succeeded refund failed after all")
    early_refund_updates: dict[str, RefundUpdateSignal] = Field(
        default_factory=dict, description="webhooks that beat the create call's answer")
    info_rounds: int = 0
    info_undeliverable: bool = Field(False, description="SendGrid could not deliver our "
                                                        "questions")
    email_events_seen: list[str] = Field(default_factory=list, description="sg_event_ids")
    search_attributes_written: bool = False
    # Waiting for the customer's reply (kept so a continued run resumes the same wait).
    info_reply_by: datetime | None = None
    info_reminded: bool = False
    replies_at_ask: int = 0
    # Bounds: what a customer sends cannot grow the state without limit.
    replies_received: int = Field(0, description="every reply, kept or not")
    replies_omitted: int = Field(0, description="oldest replies no longer kept in full")
    timeline_omitted: int = Field(0, description="timeline entries compacted away")
    runs: int = Field(1, description="1 + times the case continued as new")
    # A Stripe outage: the case waits for Stripe and tries again, never deciding without it.
    stripe_unreachable_since: datetime | None = None
    stripe_retry_requested: bool = False
    joined_incident: IncidentLink | None = Field(
        None, description="a billing incident that covers this open case's charge")
    incident_reported: CaseStatus | None = Field(
        None, description="the last status told to the billing incident")
    # Customer-facing text (issue 11).
    clauses_fit_facts: bool = Field(
        False, description="agents' denials must cite a clause the facts fit (patched)")
    apology_due: bool = Field(
        False, description="a confirmed billing error: the apology goes once the refund "
                           "is created")
    # Agents at every wait: a requirement marked met makes the policy decide again.
    reevaluate: bool = Field(False, description="an agent marked a requirement met")
    joined_requests: list[str] = Field(
        default_factory=list, description="request ids of later requests for this charge "
                                          "joined as replies (a redelivery is taken once)")
    # Replies (issue 11): no question twice.
    questions_asked: list[str] = Field(
        default_factory=list, description="every question emailed so far (never twice)")
    # Replies after closing (issue 11): never lost, each taken once.
    reopened: int = Field(0, description="times a reply after closing reopened the case")
    reply_ids: list[str] = Field(
        default_factory=list, description="message ids of the replies taken (the latest "
                                          "MAX_REPLY_IDS_KEPT): a redelivered mail is taken once")


class CaseState(BaseModel):
    """The whole case, as the `state` query returns it."""

    case_id: str
    status: CaseStatus = CaseStatus.received
    request: RefundRequest
    documents: list[str] = Field(default_factory=list, description="Request + reply files.")
    policy_version: str | None = None
    policy_sha256: str | None = Field(None, description="Content hash of the pinned policy.")
    facts: StripeFacts | None = None
    assessment: Assessment | None = None
    decision: PolicyDecision | None = None
    questions: list[str] = Field(default_factory=list, description="Open questions.")
    replies: list[CustomerReplySignal] = Field(default_factory=list)
    approvals: list[Approval] = Field(default_factory=list, description="Current round.")
    approvers_required: int = 1
    approved_amount: int | None = None
    denial: Denial | None = None
    refund: RefundResult | None = None
    refund_error: dict[str, str] | None = Field(None, description="Permanent Stripe failure.")
    external_refunds: list[RefundResult] = Field(
        default_factory=list, description="Refunds on the charge made outside this case."
    )
    dispute: DisputeOpenedSignal | None = None
    assignee: str | None = Field(None, description="The agent holding the case (console).")
    requirements_met: dict[str, str] = Field(
        default_factory=dict, description="Document kind -> how an agent found it met.")
    close_reason: str | None = Field(None, description="Why the case was closed (closed).")
    earlier_refunds: list[RefundResult] = Field(
        default_factory=list, description="Failed refunds of earlier rounds (retried).")
    requirements_answered: dict[str, str] = Field(
        default_factory=dict, description="Document kind -> what in the customer's words or "
                                          "files answered it (policy replies.answers).")
    root_cause: str | None = None
    feedback: FeedbackSignal | None = None
    sla_breached: bool = False
    sla_breaches: list[str] = Field(default_factory=list, description="acknowledge, ...")
    waiting_for: str | None = None
    deadline: datetime | None = None
    progress: CaseProgress = Field(default_factory=CaseProgress)
    timeline: list[TimelineEntry] = Field(default_factory=list)

    @property
    def incident(self) -> IncidentLink | None:
        """The billing incident covering this case: it opened it, or the case joined it."""
        return self.request.incident or self.progress.joined_incident

    @property
    def received_at(self) -> datetime | None:
        """When the request reached us: the intake's receipt time, else the case's first
        timeline entry (cases started before the intake recorded it)."""
        if self.request.received_at is not None:
            return self.request.received_at
        return self.timeline[0].at if self.timeline else None

    @property
    def outside_refunded(self) -> int:
        """Refunds on the charge made outside this case (e.g. in the Stripe dashboard) that
        the gathered facts did not already count, and that did not fail."""
        known = {r.refund_id for r in self.facts.existing_refunds} if self.facts else set()
        return sum(r.amount for r in self.external_refunds
                   if r.refund_id not in known and r.status not in ("failed", "canceled"))

    @property
    def refundable(self) -> int:
        """What is still refundable on the charge."""
        if self.facts is None or not self.facts.found:
            return 0
        return max(0, self.facts.amount - self.facts.amount_refunded - self.outside_refunded)

    @property
    def currency(self) -> str:
        facts = self.facts
        return (facts.currency if facts and facts.currency else None) \
            or self.request.currency or "usd"


class CaseResult(BaseModel):
    """What a finished case returns: small on purpose (the whole case is the `state`
    query, which a closed case still answers)."""

    case_id: str
    status: CaseStatus
    approved_amount: int | None = None
    refund_id: str | None = None


class Reopening(BaseModel):
    """Why a closed case runs again: the customer replied within the reopen window of its
    policy; the reply comes with it (the new run takes it first)."""

    closed_status: CaseStatus
    closed_at: datetime | None = None
    closed_run_id: str | None = Field(None, description="The run that closed (Temporal).")
    reply: CustomerReplySignal


class FollowedCase(BaseModel):
    """Memo `follows` of a case opened by a reply to a closed case past its reopen
    window: which case it follows and how that one closed."""

    case_id: str
    closed_status: CaseStatus


class ContinuedCase(BaseModel):
    """What a case carries into its next run when it continues as new: its whole state
    and the policy it pinned (the policy file may have changed since). A case reopened by
    a reply after closing (`reopen`) carries no policy: the new run resolves the one its
    state pinned (version and content hash) from the worker's policies."""

    state: CaseState
    policy: Policy | None = None
    reopen: Reopening | None = None


def search_attributes_of(case: CaseState) -> list[SearchAttributePair[Any]]:
    """The case's search attributes, set at start by the CaseClient and kept current by
    the workflow: one definition for both. `RefundCustomer` is not among them: it holds a
    keyed hash of the customer's email (core.customer_ref) that only the starter, which
    has the key, can compute; the workflow never writes it."""
    request, facts = case.request, case.facts
    values: list[tuple[SearchAttributeKey[Any], Any]] = [
        (sa.STATUS, str(case.status)),
        (sa.REASON, str(request.reason)),
        (sa.SLA_BREACHED, case.sla_breached),
        (sa.CHARGE_ID, (facts.charge_id if facts and facts.charge_id else None)
         or request.charge_id or request.payment_intent_id),
        (sa.AMOUNT, case.approved_amount or (case.decision.amount if case.decision else None)
         or request.amount or (facts.amount if facts and facts.found else None)),
        (sa.CURRENCY, (facts.currency if facts and facts.currency else None)
         or request.currency),
        (sa.RISK, case.assessment.risk if case.assessment else None),
        (sa.POLICY_VERSION, case.policy_version),
        (sa.INCIDENT, case.incident.incident_id if case.incident else None),
    ]
    return [SearchAttributePair(key, value) for key, value in values if value is not None]


# --- what the agent console reads from visibility -------------------------------------

QUEUE_MEMO = "queue"  # memo key of the QueueCard, kept by the workflow
# Replies after closing: a case opened for a reply past the reopen window names the closed
# case it follows; a reopened run says what closed (Reopening as JSON).
FOLLOWS_MEMO = "follows"  # FollowedCase as JSON
REOPENED_MEMO = "reopened"  # Reopening (without the reply) as JSON
MAX_REPLY_IDS_KEPT = 100
# The statuses of the agents' queue: only their waits carry a RefundDeadline and a full
# card (other waits, e.g. for Stripe's webhook, change nothing in visibility).
QUEUE_STATUSES = frozenset(
    {CaseStatus.awaiting_agent, CaseStatus.awaiting_info, CaseStatus.refund_failed})


class QueueCard(BaseModel):
    """What a queue row shows beyond the search attributes, kept in the workflow's memo
    (returned by visibility listings, so a page of the queue needs no query per case).
    The memo is a payload like any other: the codec encrypts it (core.codec), so the
    customer's address may be here while RefundCustomer holds only its keyed hash.
    `customer` is None on cards written before it was added."""

    status: CaseStatus
    customer: str | None = None
    waiting_for: str | None = None
    deadline: datetime | None = None
    approvals: int = 0
    approvers_required: int = 1


def queue_deadline(case: CaseState) -> datetime | None:
    """When what the case waits for is due; for a wait escalated past its SLA (no deadline
    any more), when the SLA was breached, so that overdue cases sort first. None outside
    the queue's statuses."""
    if case.waiting_for is None or case.status not in QUEUE_STATUSES:
        return None
    if case.deadline is not None:
        return case.deadline
    breaches = [entry.at for entry in case.timeline if entry.kind == "sla_breached"]
    return breaches[-1] if breaches else None


def queue_card_of(case: CaseState) -> QueueCard:
    customer = case.request.customer_email
    if case.status not in QUEUE_STATUSES:
        return QueueCard(status=case.status, customer=customer)
    return QueueCard(status=case.status, customer=customer, waiting_for=case.waiting_for,
                     deadline=queue_deadline(case), approvals=len(case.approvals),
                     approvers_required=case.approvers_required)


def console_attribute_updates(case: CaseState, current: TypedSearchAttributes
                              ) -> list[SearchAttributeUpdate[Any]]:
    """The changes to RefundAssignee and RefundDeadline that bring `current` (the
    workflow's typed_search_attributes) in line with the case; a value that is gone is
    unset, so an unassigned case or one no longer waiting drops out of those filters."""
    wanted: list[tuple[SearchAttributeKey[Any], Any]] = [
        (sa.ASSIGNEE, case.assignee), (sa.DEADLINE, queue_deadline(case))]
    updates: list[SearchAttributeUpdate[Any]] = []
    for key, value in wanted:
        if current.get(key) == value:
            continue
        updates.append(key.value_unset() if value is None else key.value_set(value))
    return updates


# ======================================================================================
# BillingIncident: the charges of one billing incident refunded through their own cases
# ======================================================================================
# Its cases are ordinary RefundCases (id refund-incident-<incident id>-<charge id>) that
# carry an IncidentLink and report their outcome to the incident with the `case_outcome`
# signal; an open case on a charge joins the incident (signal `join_incident`).

INCIDENT_WORKFLOW_TYPE = "BillingIncident"
INCIDENT_WORKFLOW_ID = re.compile(rf"^incident-{INCIDENT_ID_PATTERN}$")
MAX_INCIDENT_CHARGES = 50_000
# On every queue an incident goes after ordinary cases (default 3): it never starves an
# ordinary customer. The incident workflow's own tasks (its Stripe look-ups, its case
# starts) go before its cases' tasks, so that the next charges are looked up in a second
# rather than behind the whole backlog of the cases in flight, and cases start a few at a
# time as room frees instead of a hundred at once (a CPU spike that stalled the Stripe
# queue for seconds, then a burst of requests and 429s; bench/incident_drain.py).
INCIDENT_PRIORITY = Priority(priority_key=4)
INCIDENT_CASE_PRIORITY = Priority(priority_key=5)
MAX_LISTED = 1_000  # failures kept by name in the report; the rest are counted
MAX_EXAMPLES = 20  # ids shown per group of skipped charges


def incident_workflow_id(incident_id: str) -> str:
    return f"incident-{incident_id}"


def incident_case_request_id(incident_id: str, ref: str) -> str:
    """The request id of the case an incident opens for one charge: stable, so that a
    retried start finds the case instead of making a second one."""
    return f"incident-{incident_id}-{ref}"


class IncidentSignal(StrEnum):
    case_outcome = "case_outcome"


class IncidentUpdate(StrEnum):
    """Leads' actions; refusals raise ActionRefused as a case's updates do."""

    approve = "approve_incident"
    pause = "pause_incident"
    resume = "resume_incident"
    cancel = "cancel_incident"


class IncidentQuery(StrEnum):
    progress = "progress"
    report = "report"


class IncidentPhase(StrEnum):
    dry_run = "dry_run"
    awaiting_approval = "awaiting_approval"
    draining = "draining"
    done = "done"
    cancelled = "cancelled"


ChargeOutcomeKind = Literal["refunded", "to_agent", "failed", "skipped", "cancelled"]
SkipReason = Literal["not_found", "not_paid", "already_refunded", "disputed", "no_email",
                     "nothing_due", "outside_query", "older_than_policy_window",
                     "unsupported_payment"]


class AmountRule(Strict):
    """What to refund on each charge: all of it, a fixed over-charge per currency, or a
    share of the charge. Never more than is still refundable, in Stripe's refund steps."""

    kind: Literal["full", "fixed", "percent"] = "full"
    fixed: dict[str, int] = Field(default_factory=dict, description="currency -> minor units")
    percent: Decimal | None = Field(None, gt=0, le=100, max_digits=9, decimal_places=4)

    @field_validator("fixed")
    @classmethod
    def _fixed(cls, v: dict[str, int]) -> dict[str, int]:
        if any(amount <= 0 for amount in v.values()):
            raise ValueError("fixed amounts are positive minor units")
        return {normalize_currency(currency): amount for currency, amount in v.items()}

    @model_validator(mode="after")
    def _consistent(self) -> AmountRule:
        if self.kind == "fixed" and not self.fixed:
            raise ValueError("a fixed amount rule needs at least one currency's amount")
        if self.kind == "percent" and self.percent is None:
            raise ValueError("a percent amount rule needs the percent")
        if (self.kind != "fixed" and self.fixed) or (self.kind != "percent" and self.percent):
            raise ValueError(f"a {self.kind} amount rule takes no other amounts")
        return self

    def due(self, charge: ChargeSummary) -> int | None:
        """What to refund on this charge; None when the rule has no amount for its
        currency (a fixed rule)."""
        currency = charge.currency or "usd"
        refundable = max(0, charge.amount - charge.amount_refunded)
        if self.kind == "fixed":
            if currency not in self.fixed:
                return None
            wanted = self.fixed[currency]
        elif self.kind == "percent":
            assert self.percent is not None
            share = Fraction(charge.amount) * Fraction(str(self.percent)) / 100
            wanted = int(share + Fraction(1, 2))  # half up, to the minor unit
        else:
            wanted = refundable
        return round_down_to_step(min(wanted, refundable), currency)

    def describe(self) -> str:
        if self.kind == "fixed":
            return ", ".join(plain(a, c) for c, a in sorted(self.fixed.items())) + \
                " per charge"
        if self.kind == "percent":
            return f"{self.percent}% of each charge"
        return "the full charge"


class ChargeQuery(Strict):
    """The charges of an incident found in Stripe: created in [created_from, created_to),
    of an amount (and currency) and/or from invoices with a line of a price or product."""

    created_from: datetime
    created_to: datetime
    amount: int | None = Field(None, gt=0, description="minor units")
    currency: str | None = None
    price: str | None = Field(None, pattern=r"^price_[A-Za-z0-9_]{1,80}$")
    product: str | None = Field(None, pattern=r"^prod_[A-Za-z0-9_]{1,80}$")

    @field_validator("created_from", "created_to")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        return v if v.tzinfo is not None else v.replace(tzinfo=UTC)

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        return normalize_currency(v) if v is not None else None

    @model_validator(mode="after")
    def _narrow(self) -> ChargeQuery:
        if self.created_to <= self.created_from:
            raise ValueError("created_to must be after created_from")
        if self.amount is None and self.price is None and self.product is None:
            raise ValueError("a query needs an amount, a price or a product besides the "
                             "time range")
        return self

    def matches(self, charge: ChargeSummary) -> bool:
        """The amount / currency filters (the price / product ones select invoices)."""
        return (self.amount is None or charge.amount == self.amount) and \
            (self.currency is None or charge.currency == self.currency)


class IncidentRequest(Strict):
    """A billing incident as a lead opens it: input of `BillingIncident`."""

    incident_id: str = Field(pattern=rf"^{INCIDENT_ID_PATTERN}$", examples=["2026-11-pricing"])
    root_cause: str = Field(min_length=1, max_length=2_000,
                            description="Internal: never shown to customers.")
    explanation: dict[Locale, str] = Field(
        description="What customers are told, per locale (en at least).",
        examples=[{"en": "A pricing error charged your subscription twice."}])
    amount: AmountRule = Field(default_factory=AmountRule)
    charges: list[str] = Field(default_factory=list, max_length=MAX_INCIDENT_CHARGES,
                               description="Charge (ch_) or payment-intent (pi_) ids.")
    query: ChargeQuery | None = None
    opened_by: str = Field(min_length=1, max_length=100, description="The lead who opens it.")
    in_flight: int = Field(300, ge=1, le=1_000, description="Cases refunding at once.")
    batch: int = Field(20, ge=1, le=200, description="Charges looked up and started at once "
                       "(more: cases start in bursts that stall the workers).")
    charges_per_run: int = Field(1_000, ge=1, le=5_000,
                                 description="Charges per workflow run (continue-as-new).")

    @field_validator("charges")
    @classmethod
    def _charges(cls, v: list[str]) -> list[str]:
        pattern = re.compile(PURCHASE_ID_PATTERN)
        bad = [ref for ref in v if not pattern.match(ref)]
        if bad:
            raise ValueError(f"not charge or payment-intent ids: {', '.join(bad[:5])}")
        if len(set(v)) != len(v):
            raise ValueError("a charge is listed twice")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> IncidentRequest:
        if bool(self.charges) == (self.query is not None):
            raise ValueError("give the charges either as a list (file) or as a Stripe query")
        self.link()  # the explanation is checked as the cases will read it
        return self

    @property
    def workflow_id(self) -> str:
        return incident_workflow_id(self.incident_id)

    def link(self) -> IncidentLink:
        return IncidentLink(incident_id=self.incident_id, root_cause=self.root_cause,
                            explanation=self.explanation)


class Tally(BaseModel):
    """How many, and a few of them by id."""

    count: int = 0
    examples: list[str] = Field(default_factory=list)

    def add(self, ref: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(ref)


class DryRun(BaseModel):
    """What the incident would do, computed before any money moves."""

    charges: int = Field(0, description="Charges in scope (listed, or found by the query).")
    to_refund: int = Field(0, description="Cases to open or join.")
    totals: dict[str, int] = Field(default_factory=dict, description="To refund, per currency.")
    skipped: dict[str, Tally] = Field(default_factory=dict,
                                      description="By reason: already_refunded, disputed, ...")
    open_case_on_charge: Tally = Field(default_factory=Tally,
                                       description="Charges whose open case will be joined.")
    customer_has_open_case: Tally = Field(
        default_factory=Tally, description="Charges whose customer has an open case on "
                                           "another charge.")


class ChargeFailure(BaseModel):
    ref: str
    case_id: str | None = None
    kind: ChargeOutcomeKind
    reason: str


class IncidentEvent(BaseModel):
    at: datetime
    actor: str = Field(description="system | lead:<id> | case:<id>")
    kind: str
    message: str


class IncidentCounts(BaseModel):
    charges: int = 0
    processed: int = Field(0, description="Looked up during the drain and acted on.")
    started: int = 0
    joined: int = 0
    refunded: int = 0
    to_agent: int = Field(0, description="Routed to an agent (e.g. Stripe refused).")
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0

    @property
    def done(self) -> int:
        return self.refunded + self.to_agent + self.failed + self.skipped + self.cancelled


class CaseOutcome(Strict):
    """A case tells its incident where it stands (refunded, refund failed, with an agent,
    closed): signal `case_outcome`, sent on each such status."""

    case_id: str
    ref: str | None = Field(None, description="The charge or payment intent of the case.")
    status: CaseStatus
    refunded: int = Field(0, description="Minor units refunded, when refunded.")
    currency: str | None = None
    customer_email: str
    apology_sent: bool = False
    reason: str = ""


class IncidentState(BaseModel):
    """Everything the incident knows, carried across continue-as-new. Per-charge detail is
    kept only where the report needs it (failures, customers emailed); the cases hold the
    rest."""

    incident_id: str
    phase: IncidentPhase = IncidentPhase.dry_run
    paused: bool = False
    opened_by: str
    approved_by: str | None = None
    cancelled_by: str | None = None
    dry_run: DryRun | None = None
    refs: list[str] = Field(default_factory=list, description="Found by the query.")
    position: int = Field(0, description="Charges of the list handled so far.")
    counts: IncidentCounts = Field(default_factory=IncidentCounts)
    refunded_totals: dict[str, int] = Field(default_factory=dict)
    in_flight: dict[str, str] = Field(default_factory=dict,
                                      description="case id -> charge: no outcome yet")
    to_agent: dict[str, str] = Field(default_factory=dict, description="case id -> charge")
    joined: dict[str, str] = Field(default_factory=dict, description="case id -> charge")
    starting: dict[str, str] = Field(
        default_factory=dict, description="case id -> charge: being opened now; an outcome "
        "that comes before the opening's answer waits in early_outcomes")
    early_outcomes: list[CaseOutcome] = Field(default_factory=list)
    failures: list[ChargeFailure] = Field(default_factory=list)
    failures_unlisted: int = 0
    skipped: dict[str, Tally] = Field(default_factory=dict)
    customers_emailed: list[str] = Field(default_factory=list)
    drain_started_at: datetime | None = None
    paused_seconds: float = 0.0
    paused_at: datetime | None = None
    finished_at: datetime | None = None
    runs: int = 1
    timeline: list[IncidentEvent] = Field(default_factory=list)
    # the dry run, resumable across continue-as-new
    listing_done: bool = False
    list_cursor: str | None = None
    candidates: list[str] = Field(default_factory=list,
                                  description="Found through invoices, before the look-up.")
    dry_position: int = 0
    policy_window_days: int | None = Field(
        None, description="The policy's billing-error window: older charges are skipped "
                          "(their cases would be denied).")


class IncidentProgress(BaseModel):
    """The `progress` query: where the incident is, without the long lists."""

    incident_id: str
    phase: IncidentPhase
    paused: bool
    opened_by: str
    approved_by: str | None
    cancelled_by: str | None
    amount_rule: str
    dry_run: DryRun | None
    counts: IncidentCounts
    done: int
    in_flight: int
    refunded_totals: dict[str, int]
    estimated_seconds_left: float | None
    recent_failures: list[ChargeFailure]
    runs: int
    timeline: list[IncidentEvent]


class IncidentReport(BaseModel):
    """When the incident ends (done or cancelled): for ops, by email and through the API."""

    incident_id: str
    phase: IncidentPhase
    opened_by: str
    approved_by: str | None
    cancelled_by: str | None
    root_cause: str
    explanation: str = Field(description="The English explanation customers received.")
    amount_rule: str
    started_at: datetime | None
    finished_at: datetime | None
    counts: IncidentCounts
    refunded_totals: dict[str, int]
    failures: list[ChargeFailure]
    failures_unlisted: int
    skipped: dict[str, Tally]
    customers_emailed: list[str]
    open_cases_joined: list[str] = Field(description="Case ids decided by their agents.")
    runs: int = Field(description="Workflow runs it took (continue-as-new).")


class LeadAction(Strict):
    lead: str = Field(min_length=1, max_length=100)
    note: str = Field("", max_length=2_000)


class IncidentActionResult(BaseModel):
    accepted: bool
    phase: IncidentPhase
    paused: bool
    message: str


class JoinIncidentSignal(Strict):
    """Signal `join_incident`: a billing incident covers this open case's charge."""

    link: IncidentLink


__all__ += [
    "INCIDENT_CASE_PRIORITY",
    "INCIDENT_PRIORITY",
    "INCIDENT_WORKFLOW_ID",
    "INCIDENT_WORKFLOW_TYPE",
    "MAX_INCIDENT_CHARGES",
    "AmountRule",
    "CaseOutcome",
    "ChargeFailure",
    "ChargeOutcomeKind",
    "ChargeQuery",
    "DryRun",
    "IncidentActionResult",
    "IncidentCounts",
    "IncidentEvent",
    "IncidentLink",
    "IncidentPhase",
    "IncidentProgress",
    "IncidentQuery",
    "IncidentReport",
    "IncidentRequest",
    "IncidentSignal",
    "IncidentState",
    "IncidentUpdate",
    "JoinIncidentSignal",
    "LeadAction",
    "SkipReason",
    "Tally",
    "incident_case_request_id",
    "incident_workflow_id",
]
