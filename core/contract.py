"""The RefundCase contract: everything that crosses the workflow boundary, in one module.

The API, the CLI, the console, the activities' callers and the tests import from here,
never from inside `workflows/`: the workflow's names (type, task queue, signals, updates,
query), its input and signal messages, and what it answers (`CaseState`, `ActionResult`).
The messages themselves are defined in `core.models` (which the activity models build on)
and re-exported here, so there is one place to import the contract from.

Pure (no I/O): the workflow sandbox imports this module.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from activities.stripe_models import RefundResult, StripeFacts
from core import search_attributes as sa
from core.models import (
    CASE_ID,
    CHARGE_ID,
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
    Locale,
    NoteSignal,
    RefundReason,
    RefundRequest,
    RefundStatusName,
    RefundUpdateSignal,
    RequestInfoSignal,
    RetryRefundSignal,
    SatisfyRequirementSignal,
    TimelineEntry,
    WithdrawSignal,
    case_id_for,
)
from policies.facts import PolicyDecision, RiskLevel
from policies.model import Policy

__all__ = [
    "ACTION_REFUSED",
    "CASE_ID",
    "CHARGE_ID",
    "QUEUE_MEMO",
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
    "Locale",
    "NoteSignal",
    "Query",
    "QueueCard",
    "RefundReason",
    "RefundRequest",
    "RefundStatusName",
    "RefundUpdateSignal",
    "RefusalCode",
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

    kind: Literal["approve", "deny", "request_info"]
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
    root_cause: str | None = None
    feedback: FeedbackSignal | None = None
    sla_breached: bool = False
    sla_breaches: list[str] = Field(default_factory=list, description="acknowledge, ...")
    waiting_for: str | None = None
    deadline: datetime | None = None
    progress: CaseProgress = Field(default_factory=CaseProgress)
    timeline: list[TimelineEntry] = Field(default_factory=list)

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


class ContinuedCase(BaseModel):
    """What a case carries into its next run when it continues as new: its whole state
    and the policy it pinned (the policy file may have changed since)."""

    state: CaseState
    policy: Policy


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
    ]
    return [SearchAttributePair(key, value) for key, value in values if value is not None]


# --- what the agent console reads from visibility -------------------------------------

QUEUE_MEMO = "queue"  # memo key of the QueueCard, kept by the workflow


class QueueCard(BaseModel):
    """What a queue row shows beyond the search attributes, kept in the workflow's memo
    (returned by visibility listings, so a page of the queue needs no query per case)."""

    status: CaseStatus
    waiting_for: str | None = None
    deadline: datetime | None = None
    approvals: int = 0
    approvers_required: int = 1


def queue_deadline(case: CaseState) -> datetime | None:
    """When what the case waits for is due; for a wait escalated past its SLA (no deadline
    any more), when the SLA was breached, so that overdue cases sort first."""
    if case.waiting_for is None:
        return None
    if case.deadline is not None:
        return case.deadline
    breaches = [entry.at for entry in case.timeline if entry.kind == "sla_breached"]
    return breaches[-1] if breaches else None


def queue_card_of(case: CaseState) -> QueueCard:
    return QueueCard(status=case.status, waiting_for=case.waiting_for,
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
