"""The policy's view of a case (`PolicyFacts`), built from what the case knows; and the
inputs of a past case's last evaluation, rebuilt from its state, so that a new policy can
be tried on real history (`policy simulate --from-cases`, the console's simulation page).

Pure (no I/O): the workflow sandbox can import it.
"""

from __future__ import annotations

from datetime import datetime

from activities.stripe_models import StripeFacts
from core.contract import Assessment, CaseState, RefundRequest
from policies.facts import PolicyFacts


def policy_facts(request: RefundRequest, facts: StripeFacts, assessment: Assessment, *,
                 documents: list[str], now: datetime, external_refunded: int = 0,
                 requirements_met: list[str] | None = None) -> PolicyFacts:
    """The policy's view of the case. A charge not found still yields facts (zero amount,
    the request's currency) so the policy can route it to an agent by its finding."""
    currency = facts.currency or request.currency or "usd"
    return PolicyFacts(
        reason=request.reason,
        currency=currency,
        charge_amount=facts.amount,
        amount_refunded=min(facts.amount, facts.amount_refunded + external_refunded),
        requested_amount=request.amount,
        purchased_at=facts.created or now,
        period_start=facts.period_start,
        period_end=facts.period_end,
        customer_since=facts.customer_created,
        prior_refunds=facts.customer_other_refunds,
        disputed=facts.disputed or bool(facts.dispute_ids),
        already_fully_refunded=facts.found and (
            facts.refunded or facts.amount_refunded + external_refunded >= facts.amount),
        billing_error_confirmed=assessment.billing_error_confirmed,
        risk=assessment.risk,
        risk_reasons=assessment.risk_reasons,
        documents=list(documents),
        findings=list(assessment.findings),
        requirements_met=list(requirements_met or []),
    )


def last_evaluation(case: CaseState) -> tuple[PolicyFacts, datetime] | None:
    """The facts and the moment of the case's last policy evaluation (the one its
    `decision` holds): the documents it had then (the request's, and those that came with
    replies before that moment) and the refunds made outside it. None: never evaluated."""
    if case.facts is None or case.assessment is None or case.decision is None:
        return None
    moments = [entry.at for entry in case.timeline if entry.kind == "policy_decision"]
    if not moments:
        return None
    at = moments[-1]
    documents = list(case.request.documents)
    for entry in case.timeline:
        if entry.kind == "customer_replied" and entry.at <= at:
            documents += [str(name) for name in entry.data.get("attachments", [])]
    met = [str(entry.data.get("requirement")) for entry in case.timeline
           if entry.kind == "requirement_answered" and entry.at <= at]
    facts = policy_facts(case.request, case.facts, case.assessment, documents=documents,
                         now=at, external_refunded=case.outside_refunded,
                         requirements_met=met)
    return facts, at
