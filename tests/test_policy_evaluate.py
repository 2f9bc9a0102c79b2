"""The default policy, clause by clause: one table row per rule, each asserting the
outcome, the amount and the clauses cited. Plus currencies with 0 and 3 decimals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from policies.evaluate import evaluate, prorate, unused_time_share
from policies.facts import PolicyFacts
from policies.loader import load_policy

POLICY = load_policy()
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def facts(days_ago: float = 10, period_days: int = 30, **kw: Any) -> PolicyFacts:
    """A USD 29.00 monthly charge made `days_ago`, by a long-standing customer."""
    bought = NOW - days_ago * DAY
    base: dict[str, Any] = dict(
        reason="unused", currency="usd", charge_amount=2900, purchased_at=bought,
        period_start=bought, period_end=bought + period_days * DAY,
        customer_since=bought - 400 * DAY, product_used=True,
    )
    base.update(kw)
    return PolicyFacts(**base)


# (row id, facts, outcome, amount, clause_ids)
TABLE: list[tuple[str, PolicyFacts, str, int, list[str]]] = [
    # money-back guarantee and its late exclusion
    ("change of mind, new customer, day 10", facts(reason="change_of_mind",
     customer_since=NOW - 12 * DAY), "approve", 2900, ["money-back-guarantee"]),
    ("change of mind, new customer, day 15", facts(15, reason="change_of_mind",
     customer_since=NOW - 16 * DAY), "deny", 0,
     ["change-of-mind-late", "money-back-guarantee"]),
    ("change of mind, old customer", facts(reason="change_of_mind"), "deny", 0,
     ["money-back-guarantee"]),
    ("change of mind, tenure unknown", facts(reason="change_of_mind", customer_since=None),
     "agent_review", 2900, ["money-back-guarantee"]),
    # service not working: evidence, proration, full if unused, window
    ("technical, used, ticket", facts(reason="technical_issue", documents=["Ticket 4411"]),
     "approve", 1933, ["service-not-working", "refund-window", "prorated-refunds"]),
    ("technical, not used, ticket", facts(reason="technical_issue", product_used=False,
     documents=["screenshot.png"]), "approve", 2900, ["service-not-working", "refund-window"]),
    ("technical, no evidence", facts(reason="technical_issue"), "need_info", 0,
     ["support-evidence"]),
    ("technical, day 31", facts(31, period_days=365, reason="technical_issue",
     documents=["ticket"]), "deny", 0, ["refund-window"]),
    ("technical, prorated share already refunded", facts(25, reason="technical_issue",
     amount_refunded=1500, documents=["ticket"]), "deny", 0,
     ["service-not-working", "refund-window", "prorated-refunds"]),
    # not as described: unused share of the quota
    ("not as described, 25% used", facts(reason="not_as_described", usage_fraction=0.25),
     "approve", 2175, ["not-as-described", "refund-window", "prorated-refunds"]),
    ("not as described, nothing used", facts(reason="not_as_described", usage_fraction=0.0,
     product_used=None), "approve", 2900, ["not-as-described", "refund-window"]),
    # unused subscription
    ("unused, not used", facts(product_used=False), "approve", 2900,
     ["unused-subscription", "refund-window"]),
    ("unused, but used", facts(product_used=True), "deny", 0, ["unused-subscription"]),
    ("unused, usage unknown", facts(product_used=None), "agent_review", 2900,
     ["unused-subscription"]),
    ("unused, above auto-approve limit", facts(product_used=False, charge_amount=50000),
     "agent_review", 50000, ["unused-subscription", "refund-window", "approval-limits"]),
    # billing errors
    ("billing error confirmed, day 100", facts(100, reason="billing_error",
     billing_error_confirmed=True, charge_amount=90000), "approve", 90000,
     ["billing-errors", "billing-error-window"]),
    ("billing error confirmed, day 121", facts(121, reason="billing_error",
     billing_error_confirmed=True), "deny", 0, ["billing-error-window"]),
    ("duplicate, unconfirmed, no statement", facts(reason="duplicate_charge"), "need_info", 0,
     ["statement-evidence"]),
    ("duplicate, unconfirmed, statement", facts(reason="duplicate_charge",
     documents=["bank_statement.pdf"]), "agent_review", 2900,
     ["billing-errors", "billing-error-window"]),
    ("duplicate confirmed, two-approver amount", facts(reason="duplicate_charge",
     billing_error_confirmed=True, charge_amount=150000), "agent_review", 150000,
     ["billing-errors", "billing-error-window", "approval-limits"]),
    ("billing error confirmed despite prior refunds", facts(reason="billing_error",
     billing_error_confirmed=True, prior_refunds=9), "approve", 2900,
     ["billing-errors", "billing-error-window"]),
    # other requests
    ("other, receipt", facts(reason="other", documents=["receipt-0042.pdf"]),
     "agent_review", 1933, ["other-requests", "refund-window", "prorated-refunds"]),
    ("other, no receipt", facts(reason="other"), "need_info", 0, ["proof-of-purchase"]),
    # exclusions
    ("already refunded", facts(product_used=False, already_fully_refunded=True,
     amount_refunded=2900), "deny", 0, ["already-refunded"]),
    ("disputed", facts(product_used=False, disputed=True), "deny", 0, ["disputed-charges"]),
    ("terms violation", facts(product_used=False, terms_violation=True), "deny", 0,
     ["misuse"]),
    # review triggers
    ("email mismatch", facts(product_used=False, findings=["email_mismatch"]),
     "agent_review", 2900, ["details-mismatch"]),
    ("asks for more than refundable", facts(product_used=False, amount_refunded=2000,
     requested_amount=2900), "agent_review", 900, ["details-mismatch"]),
    ("fraud reported", facts(reason="fraud_suspected"), "agent_review", 2900,
     ["unauthorised-charges"]),
    ("high risk", facts(product_used=False, risk="high", risk_reasons=["elevated_radar"]),
     "agent_review", 2900, ["risk-review"]),
    ("repeat refunds", facts(product_used=False, prior_refunds=3), "agent_review", 2900,
     ["repeat-refunds"]),
    ("currency not in policy", facts(product_used=False, currency="chf"), "agent_review",
     2900, ["currency-review"]),
]


@pytest.mark.parametrize(("row", "case", "outcome", "amount", "clauses"), TABLE,
                         ids=[t[0] for t in TABLE])
def test_default_policy_table(row: str, case: PolicyFacts, outcome: str, amount: int,
                              clauses: list[str]) -> None:
    decision = evaluate(case, POLICY, NOW)
    assert (decision.outcome, decision.amount, decision.clause_ids) == (outcome, amount,
                                                                         clauses)
    assert decision.policy_version == "2026-11-23"
    assert decision.currency == case.currency
    if outcome == "deny":  # the alternatives of the clause it cites first
        assert decision.alternatives == POLICY.alternatives_for(clauses[0])
        assert clauses[0] in decision.citable_clause_ids  # its own denial fits the facts
    else:
        assert decision.alternatives == []
    assert bool(decision.questions) == (outcome == "need_info")
    assert clauses[0] in decision.explanation


def test_every_clause_of_the_default_policy_is_exercised() -> None:
    cited = {c for row in TABLE for c in row[4]}
    assert {c.id for c in POLICY.clauses} - cited == set()


def test_need_info_asks_the_policy_questions() -> None:
    d = evaluate(facts(reason="technical_issue"), POLICY, NOW)
    assert d.questions == [POLICY.documents["support_evidence"].question]
    assert "support ticket" in d.questions[0]


def test_approvers_required_follows_the_currency_threshold() -> None:
    big = evaluate(facts(reason="billing_error", billing_error_confirmed=True,
                         charge_amount=100000), POLICY, NOW)
    small = evaluate(facts(reason="billing_error", billing_error_confirmed=True,
                           charge_amount=99999), POLICY, NOW)
    assert (big.outcome, big.approvers_required) == ("agent_review", 2)
    assert (small.outcome, small.approvers_required) == ("approve", 1)


def test_requested_amount_caps_the_refund() -> None:
    d = evaluate(facts(product_used=False, requested_amount=1000), POLICY, NOW)
    assert (d.outcome, d.amount) == ("approve", 1000)
    prorated = evaluate(facts(reason="technical_issue", documents=["ticket"],
                              requested_amount=2500), POLICY, NOW)
    assert prorated.amount == 1933


def test_window_counts_from_the_renewal_for_subscriptions() -> None:
    # Customer since last year, renewed 5 days ago: inside the 30-day window.
    renewed = NOW - 5 * DAY
    case = facts(400, reason="technical_issue", documents=["ticket"],
                 period_start=renewed, period_end=renewed + 30 * DAY)
    assert evaluate(case, POLICY, NOW).outcome == "approve"
    # Change of mind counts from the purchase itself.
    late = facts(20, reason="change_of_mind", customer_since=NOW - 20 * DAY)
    assert evaluate(late, POLICY, NOW).outcome == "deny"


def test_naive_datetimes_are_read_as_utc() -> None:
    naive = facts(product_used=False, purchased_at=datetime(2026, 11, 10),
                  period_start=datetime(2026, 11, 10), period_end=datetime(2026, 12, 10))
    assert evaluate(naive, POLICY, NOW.replace(tzinfo=None)).outcome == "approve"


def test_unlisted_reason_goes_to_an_agent() -> None:
    reasons = {k: v for k, v in POLICY.reasons.items() if k != "other"}
    policy = POLICY.model_copy(update={"reasons": reasons})
    d = evaluate(facts(reason="other", documents=["receipt"]), policy, NOW)
    assert (d.outcome, d.clause_ids) == ("agent_review", ["other-requests"])


def test_explanation_is_one_readable_paragraph() -> None:
    d = evaluate(facts(reason="technical_issue", documents=["ticket"]), POLICY, NOW)
    assert "\n" not in d.explanation
    assert d.explanation.startswith("Approve a refund of 19.33 USD")
    assert "Service not working" in d.explanation and "2026-11-23" in d.explanation


# --- currencies with zero and three decimals ------------------------------------------


@pytest.mark.parametrize(
    ("currency", "charge", "expected", "shown"),
    [
        ("jpy", 980, 653, "653 JPY"),         # 980 * 2/3 = 653.33 yen
        ("krw", 9900, 6600, "6600 KRW"),      # 9900 * 2/3, exact won
        ("jpy", 1000, 667, "667 JPY"),        # 666.67 rounds to 667
        # 9.500 KWD * 2/3 = 6.3333: Stripe refunds three-decimal currencies in 10 fils
        ("kwd", 9500, 6330, "6.330 KWD"),
        ("kwd", 9580, 6390, "6.390 KWD"),     # 6.38667 rounds half-up to 6.390
        ("usd", 2900, 1933, "19.33 USD"),
    ],
)
def test_prorated_amounts_round_in_the_currency_minor_unit(
        currency: str, charge: int, expected: int, shown: str) -> None:
    case = facts(reason="technical_issue", documents=["ticket"], currency=currency,
                 charge_amount=charge)
    d = evaluate(case, POLICY, NOW)
    assert (d.outcome, d.amount, d.currency) == ("approve", expected, currency)
    assert shown in d.explanation


def test_zero_decimal_thresholds_are_in_yen_and_won() -> None:
    # 30,000 JPY is the automatic limit; 30,001 yen goes to an agent, 150,000 needs two.
    ok = evaluate(facts(product_used=False, currency="jpy", charge_amount=30000), POLICY, NOW)
    over = evaluate(facts(product_used=False, currency="jpy", charge_amount=30001), POLICY,
                    NOW)
    two = evaluate(facts(product_used=False, currency="krw", charge_amount=1500000), POLICY,
                   NOW)
    assert (ok.outcome, ok.amount) == ("approve", 30000)
    assert (over.outcome, over.approvers_required) == ("agent_review", 1)
    assert (two.outcome, two.approvers_required) == ("agent_review", 2)
    assert "300000 KRW" not in ok.explanation and "30000 JPY" in ok.explanation


def test_upper_case_currency_is_accepted() -> None:
    d = evaluate(facts(product_used=False, currency="USD"), POLICY, NOW)
    assert (d.outcome, d.currency) == ("approve", "usd")


@pytest.mark.parametrize(
    ("rounding", "expected"), [("half_up", 3), ("down", 2), ("up", 3)]
)
def test_rounding_modes(rounding: str, expected: int) -> None:
    from fractions import Fraction

    assert prorate(5, Fraction(1, 2), rounding) == expected
    assert prorate(5, Fraction(1, 5), rounding) == 1
    assert prorate(7, Fraction(1, 3), "up") == 3


def test_unused_time_share_is_clamped_to_the_period() -> None:
    case = facts(10)
    assert unused_time_share(case, NOW) == pytest.approx(2 / 3)
    assert unused_time_share(case, NOW + 40 * DAY) == 0
    assert unused_time_share(case, NOW - 20 * DAY) == 1
    assert unused_time_share(facts(period_start=None), NOW) is None


def test_three_decimal_requested_amounts_are_rounded_down_to_a_refundable_step() -> None:
    d = evaluate(facts(product_used=False, currency="kwd", charge_amount=9500,
                       requested_amount=6333), POLICY, NOW)
    assert (d.outcome, d.amount) == ("approve", 6330)


@pytest.mark.parametrize(("used", "charge", "expected"), [
    (0.1, 5, 5),     # 4.5 rounds half-up to 5 (the binary float 0.1 would give 4)
    (0.1, 15, 14),   # 13.5 -> 14
    (0.3, 2900, 2030),
])
def test_usage_share_is_read_as_the_decimal_written(used: float, charge: int,
                                                     expected: int) -> None:
    d = evaluate(facts(reason="not_as_described", usage_fraction=used, product_used=None,
                       charge_amount=charge), POLICY, NOW)
    assert (d.outcome, d.amount) == ("approve", expected)


@pytest.mark.parametrize(("kw", "why"), [
    ({"period_end": NOW - 20 * DAY}, "the billing period ends before it starts"),
    ({"amount_refunded": 3000}, "more is refunded than was charged"),
    ({"charge_amount": 0}, "the charge amount is zero"),
])
def test_records_that_contradict_themselves_go_to_an_agent(kw: dict[str, Any],
                                                           why: str) -> None:
    """Never a full refund from a broken period, never 'already refunded' from bad data."""
    d = evaluate(facts(reason="technical_issue", documents=["ticket"], **kw), POLICY, NOW)
    assert (d.outcome, d.clause_ids) == ("agent_review", ["details-mismatch"])
    assert why in d.explanation


@pytest.mark.parametrize(("document", "satisfies"), [
    ("ticket-4411", True), ("Screenshot1.png", True), ("error_logs.txt", True),
    ("support", True), ("catalog.pdf", False), ("dialog.png", False), ("tickets", True),
])
def test_documents_match_whole_words_only(document: str, satisfies: bool) -> None:
    d = evaluate(facts(reason="technical_issue", documents=[document]), POLICY, NOW)
    assert (d.outcome != "need_info") is satisfies
