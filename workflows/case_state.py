"""What a refund case knows about itself: the `state` query's answer and the result of the
update handlers. Pure pydantic models (no I/O), imported by the workflow, the API and the
CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from activities.stripe_models import RefundResult, StripeFacts
from core.models import (
    CaseStatus,
    CustomerReplySignal,
    DisputeOpenedSignal,
    FeedbackSignal,
    RefundRequest,
    TimelineEntry,
)
from policies.facts import PolicyDecision, RiskLevel

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


class CaseState(BaseModel):
    """The whole case, as the `state` query returns it."""

    case_id: str
    status: CaseStatus = CaseStatus.received
    request: RefundRequest
    documents: list[str] = Field(default_factory=list, description="Request + reply files.")
    policy_version: str | None = None
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
    root_cause: str | None = None
    feedback: FeedbackSignal | None = None
    sla_breached: bool = False
    sla_breaches: list[str] = Field(default_factory=list, description="acknowledge, ...")
    waiting_for: str | None = None
    deadline: datetime | None = None
    timeline: list[TimelineEntry] = Field(default_factory=list)

    @property
    def refundable(self) -> int:
        """What is still refundable on the charge, counting refunds made outside the case
        that the gathered facts did not already include."""
        if self.facts is None or not self.facts.found:
            return 0
        known = {r.refund_id for r in self.facts.existing_refunds}
        outside = sum(r.amount for r in self.external_refunds
                      if r.refund_id not in known and r.status != "failed"
                      and r.status != "canceled")
        return max(0, self.facts.amount - self.facts.amount_refunded - outside)
