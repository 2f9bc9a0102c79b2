"""The pure assessment (step 2): findings, risk score with reasons, billing-error
confirmation, and the PolicyFacts the evaluator reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from activities.stripe_models import StripeFacts
from core.models import RefundReason, RefundRequest
from core.policy_facts import policy_facts
from workflows.refund_case.assessment import assess

NOW = datetime(2026, 11, 20, tzinfo=UTC)


def req(**kw: object) -> RefundRequest:
    fields: dict[str, object] = {"request_id": "r1", "customer_email": "ana@example.com",
                                 "charge_id": "ch_1", "reason": RefundReason.unused}
    fields.update(kw)
    return RefundRequest(**fields)  # type: ignore[arg-type]


def facts(**kw: object) -> StripeFacts:
    fields: dict[str, object] = {
        "found": True, "charge_id": "ch_1", "customer_email": "ana@example.com",
        "amount": 10_000, "amount_refunded": 2_000, "currency": "usd",
        "created": NOW - timedelta(days=3), "customer_created": NOW - timedelta(days=300)}
    fields.update(kw)
    return StripeFacts(**fields)  # type: ignore[arg-type]


def test_consistent_request_has_no_findings_and_low_risk() -> None:
    a = assess(req(amount=8_000, currency="usd"), facts())
    assert a.findings == [] and a.risk == "low" and a.risk_score == 0


def test_inconsistencies_are_findings_with_readable_lines() -> None:
    a = assess(req(amount=9_000, currency="eur", customer_email="bo@example.com"), facts())
    assert a.findings == ["email_mismatch", "currency_mismatch", "amount_exceeds_refundable"]
    assert "80.00 USD" in a.finding_details[2]
    assert "bo@example.com" in a.finding_details[0]


def test_charge_not_found_is_a_finding() -> None:
    missing = StripeFacts(found=False, not_found_reason="charge ch_1 does not exist")
    a = assess(req(), missing)
    assert a.findings == ["charge_not_found"]
    pf = policy_facts(req(currency="jpy"), missing, a, documents=[], now=NOW)
    assert pf.currency == "jpy" and pf.charge_amount == 0 and pf.findings == ["charge_not_found"]


def test_risk_adds_up_with_reasons() -> None:
    a = assess(req(reason=RefundReason.fraud_suspected),
               facts(radar_risk_level="elevated", customer_other_refunds=3))
    assert a.risk == "high" and a.risk_score == 95
    assert len(a.risk_reasons) == 3 and any("Radar" in r for r in a.risk_reasons)
    assert assess(req(), facts(customer_other_refunds=1)).risk == "low"
    assert assess(req(), facts(radar_risk_level="elevated")).risk == "medium"


def test_duplicate_charge_is_confirmed_by_the_facts_only() -> None:
    dup = facts(duplicate_charge_ids=["ch_2"])
    confirmed = assess(req(reason=RefundReason.duplicate_charge), dup)
    assert confirmed.billing_error_confirmed
    assert confirmed.root_cause is not None and "ch_2" in confirmed.root_cause
    assert not assess(req(reason=RefundReason.duplicate_charge), facts()).billing_error_confirmed
    assert not assess(req(reason=RefundReason.unused), dup).billing_error_confirmed


def test_policy_facts_count_outside_refunds_and_documents() -> None:
    f = facts()
    a = assess(req(), f)
    pf = policy_facts(req(amount=5_000), f, a, documents=["receipt.pdf"], now=NOW,
                      external_refunded=3_000)
    assert pf.amount_refunded == 5_000 and pf.refundable == 5_000
    assert pf.documents == ["receipt.pdf"] and pf.requested_amount == 5_000
    assert pf.purchased_at == f.created and pf.customer_since == f.customer_created
    full = policy_facts(req(), f, a, documents=[], now=NOW, external_refunded=8_000)
    assert full.already_fully_refunded
