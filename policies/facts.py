"""What the evaluator reads (facts gathered in steps 1-2) and what it returns. This is
the contract between the workflow and the policy package."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from core.models import RefundReason

RiskLevel = Literal["low", "medium", "high"]
Outcome = Literal["approve", "deny", "need_info", "agent_review"]


class PolicyFacts(BaseModel):
    """Everything the policy may look at. Money in minor units of `currency`."""

    reason: RefundReason
    currency: str
    charge_amount: int = Field(ge=0)
    amount_refunded: int = Field(0, ge=0, description="Already refunded on this charge.")
    requested_amount: int | None = Field(None, gt=0, description="None: the policy decides.")
    purchased_at: datetime = Field(description="Charge created (renewal date for renewals).")
    period_start: datetime | None = Field(None, description="Subscription billing period.")
    period_end: datetime | None = None
    usage_fraction: float | None = Field(None, ge=0, le=1, description="Share of quota used.")
    product_used: bool | None = None
    customer_since: datetime | None = None
    prior_refunds: int = Field(0, ge=0, description="Customer's earlier refunds, other charges.")
    disputed: bool = False
    already_fully_refunded: bool = False
    billing_error_confirmed: bool = Field(
        False, description="The facts show the error, e.g. a duplicate charge of same amount."
    )
    risk: RiskLevel = "low"
    risk_reasons: list[str] = Field(default_factory=list)
    documents: list[str] = Field(default_factory=list)
    findings: list[str] = Field(
        default_factory=list,
        description="Inconsistency codes from assessment: charge_not_found, email_mismatch, "
        "amount_exceeds_refundable, currency_mismatch.",
    )
    terms_violation: bool = False
    requirements_met: list[str] = Field(
        default_factory=list, description="Document kinds met otherwise than by a file "
                                          "named for them (e.g. answered in a reply).")

    @property
    def refundable(self) -> int:
        return max(0, self.charge_amount - self.amount_refunded)


class Alternative(BaseModel):
    id: str
    text: str


class PolicyDecision(BaseModel):
    outcome: Outcome
    amount: int = Field(ge=0, description="Minor units to refund; 0 unless approving.")
    currency: str
    clause_ids: list[str] = Field(description="The clauses that produced this outcome.")
    questions: list[str] = Field(default_factory=list)
    alternatives: list[Alternative] = Field(default_factory=list)
    approvers_required: int = Field(1, ge=1, le=2)
    explanation: str
    policy_version: str
    citable_clause_ids: list[str] = Field(
        default_factory=list,
        description="The clauses an agent may cite to deny, given the facts at evaluation "
                    "(policies.evaluate.denial_grounds says why the others may not).")
