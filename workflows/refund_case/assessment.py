"""Step 2, the assessment: compare the request with what Stripe knows, score the risk and
build the facts the policy reads. Pure and deterministic (`now` is an argument), so the
workflow calls it directly; inconsistencies become findings, never exceptions."""

from __future__ import annotations

from datetime import timedelta

from activities.stripe_models import StripeFacts
from core.contract import Assessment, RefundReason, RefundRequest
from core.models import BILLING_REASONS
from core.money import plain
from policies.facts import RiskLevel

HIGH_RISK_SCORE = 60
MEDIUM_RISK_SCORE = 30
_RADAR_POINTS = {"highest": 70, "elevated": 35}


def assess(request: RefundRequest, facts: StripeFacts, *, external_refunded: int = 0
           ) -> Assessment:
    """Findings (codes + readable lines), risk score 0-100 with its reasons, and whether
    the facts confirm a billing error."""
    findings: list[tuple[str, str]] = []
    if not facts.found:
        findings.append(("charge_not_found", facts.not_found_reason or "charge not found"))
    else:
        findings.extend(_inconsistencies(request, facts, external_refunded))
    score, reasons = _risk(request, facts, [code for code, _ in findings])
    incident = request.incident  # two leads approved a billing incident covering it
    confirmed = (request.reason in BILLING_REASONS and facts.found
                 and (bool(facts.duplicate_charge_ids) or incident is not None))
    root_cause = None
    if confirmed and incident is not None:
        root_cause = f"{incident.tag}: {incident.root_cause}"
    elif confirmed:
        root_cause = ("duplicate_charge: the customer was charged "
                      f"{plain(facts.amount, facts.currency or 'usd')} again within 24 h "
                      f"({', '.join(facts.duplicate_charge_ids)})")
    return Assessment(
        findings=[code for code, _ in findings],
        finding_details=[line for _, line in findings],
        risk=_level(score),
        risk_score=score,
        risk_reasons=reasons,
        billing_error_confirmed=confirmed,
        root_cause=root_cause,
    )


def _inconsistencies(request: RefundRequest, facts: StripeFacts, external_refunded: int
                     ) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    currency = facts.currency or "usd"
    if facts.customer_email and facts.customer_email.lower() != request.customer_email:
        out.append(("email_mismatch", f"request from {request.customer_email}, Stripe customer "
                                      f"is {facts.customer_email}"))
    if request.currency and facts.currency and request.currency != facts.currency:
        out.append(("currency_mismatch", f"request in {request.currency.upper()}, charge in "
                                         f"{facts.currency.upper()}"))
    remaining = max(0, facts.amount - facts.amount_refunded - external_refunded)
    if request.amount is not None and request.amount > remaining:
        out.append(("amount_exceeds_refundable",
                    f"asked {plain(request.amount, currency)}, refundable "
                    f"{plain(remaining, currency)}"))
    return out


def _risk(request: RefundRequest, facts: StripeFacts, findings: list[str]
          ) -> tuple[int, list[str]]:
    """Additive points, each with the reason an agent reads."""
    points: list[tuple[int, str]] = []
    level = facts.radar_risk_level
    if level in _RADAR_POINTS:
        points.append((_RADAR_POINTS[level], f"Stripe Radar risk level {level}"))
    elif facts.radar_risk_score is not None and facts.radar_risk_score >= 65:
        points.append((35, f"Stripe Radar risk score {facts.radar_risk_score}"))
    if request.reason == RefundReason.fraud_suspected:
        points.append((30, "the customer reports the charge as unauthorised"))
    if facts.customer_other_refunds >= 3:
        points.append((30, f"{facts.customer_other_refunds} earlier refunds for this customer"))
    elif facts.customer_other_refunds >= 1:
        points.append((10, f"{facts.customer_other_refunds} earlier refund(s) for this "
                           "customer"))
    if facts.dispute_ids or facts.disputed:
        points.append((20, "the charge is disputed with the card issuer"))
    if "email_mismatch" in findings:
        points.append((20, "the request's email is not the Stripe customer's"))
    if facts.customer_created and facts.created and \
            facts.created - facts.customer_created < timedelta(hours=1) and \
            request.reason == RefundReason.fraud_suspected:
        points.append((10, "the customer account was created just before the charge"))
    score = min(100, sum(p for p, _ in points))
    return score, [reason for _, reason in points]


def _level(score: int) -> RiskLevel:
    if score >= HIGH_RISK_SCORE:
        return "high"
    if score >= MEDIUM_RISK_SCORE:
        return "medium"
    return "low"
