"""Properties of `evaluate` over generated facts (hypothesis): what must hold for every
request, not just the ones we thought of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from core.models import RefundReason
from core.money import refund_step
from policies.evaluate import evaluate, prorate
from policies.facts import PolicyFacts
from policies.loader import load_policy

POLICY = load_policy()
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# chf and isk are not in the policy (isk: Stripe refunds it in whole krónur, 100 a step)
CURRENCIES = ["usd", "eur", "gbp", "jpy", "krw", "kwd", "chf", "isk"]
DOC_NAMES = ["receipt.pdf", "ticket 17", "bank statement", "photo.jpg"]
rarely = st.integers(0, 9).map(lambda n: n == 0)


@st.composite
def any_facts(draw: st.DrawFn) -> PolicyFacts:
    charge = draw(st.integers(0, 30_000) | st.integers(0, 5_000_000))
    # Now and then records that contradict themselves: more refunded than charged.
    refunded = draw(st.integers(0, charge) | st.integers(0, charge + 500))
    bought = NOW - timedelta(seconds=draw(st.integers(-86400, 200 * 86400)))
    period = draw(st.sampled_from([None, 30, 365, 0]))  # 0: a period that ends at its start
    # A renewal: the billing period began before (or at) the charge.
    renewed = bought - timedelta(days=draw(st.sampled_from([0, 0, 3, 40])))
    requested = draw(st.none() | st.integers(1, max(1, charge)) | st.integers(1, 6_000_000))
    return PolicyFacts(
        reason=draw(st.sampled_from(list(RefundReason))),
        currency=draw(st.sampled_from(CURRENCIES)),
        charge_amount=charge,
        amount_refunded=refunded,
        requested_amount=requested,
        purchased_at=bought,
        period_start=renewed if period is not None else None,
        period_end=renewed + timedelta(days=period) if period is not None else None,
        usage_fraction=draw(st.none() | st.floats(0, 1)),
        product_used=draw(st.none() | st.booleans()),
        customer_since=draw(st.none() | st.just(bought - timedelta(days=draw(
            st.integers(0, 900))))),
        prior_refunds=draw(st.sampled_from([0, 0, 0, 1, 2, 3, 5])),
        disputed=draw(rarely),
        already_fully_refunded=draw(st.booleans()) and refunded == charge,
        billing_error_confirmed=draw(st.booleans()),
        risk=draw(st.sampled_from(["low", "low", "medium", "high"])),
        documents=draw(st.lists(st.sampled_from(DOC_NAMES), max_size=2)),
        findings=["email_mismatch"] if draw(rarely) else [],
        terms_violation=draw(rarely),
    )


@settings(max_examples=250, deadline=None)
@given(any_facts())
def test_amount_never_exceeds_what_is_still_refundable(facts: PolicyFacts) -> None:
    d = evaluate(facts, POLICY, NOW)
    assert 0 <= d.amount <= facts.refundable
    assert d.amount % refund_step(facts.currency) == 0  # an amount Stripe accepts
    if facts.requested_amount is not None:
        assert d.amount <= facts.requested_amount
    if d.outcome in ("deny", "need_info"):
        assert d.amount == 0


@settings(max_examples=250, deadline=None)
@given(any_facts())
def test_every_decision_cites_clauses_that_exist(facts: PolicyFacts) -> None:
    d = evaluate(facts, POLICY, NOW)
    assert d.clause_ids, d
    assert all(POLICY.has_clause(c) for c in d.clause_ids)
    if d.outcome == "need_info":
        assert d.questions
    if d.outcome == "deny":  # the alternatives its clause offers; a clause the facts fit
        assert d.alternatives == POLICY.alternatives_for(d.clause_ids[0])
        assert d.clause_ids[0] in d.citable_clause_ids, d


@settings(max_examples=200, deadline=None)
@given(any_facts(), st.integers(-10 * 86400, 200 * 86400))
def test_same_input_same_decision(facts: PolicyFacts, offset: int) -> None:
    now = NOW + timedelta(seconds=offset)
    first = evaluate(facts, POLICY, now)
    again = evaluate(PolicyFacts.model_validate_json(facts.model_dump_json()), POLICY, now)
    assert first == again
    assert first.model_dump_json() == evaluate(facts, POLICY, now).model_dump_json()


@settings(max_examples=300, deadline=None)
@given(
    charge=st.integers(1, 3_000_000),
    refunded_share=st.fractions(0, 1, max_denominator=10),
    currency=st.sampled_from(CURRENCIES[:6]),
    period_days=st.sampled_from([7, 30, 365]),
    t1=st.integers(0, 400 * 86400),
    t2=st.integers(0, 400 * 86400),
)
def test_prorated_amount_never_grows_as_unused_time_shrinks(
        charge: int, refunded_share: Fraction, currency: str, period_days: int,
        t1: int, t2: int) -> None:
    start = NOW - timedelta(days=400)
    facts = PolicyFacts(
        reason="technical_issue", currency=currency, charge_amount=charge,
        amount_refunded=int(charge * refunded_share), purchased_at=start,
        period_start=start, period_end=start + timedelta(days=period_days),
        product_used=True, documents=["ticket 1"],
    )
    # Window counted from the period start would deny most; widen it so proration shows.
    rule = POLICY.reasons["technical_issue"]
    wide = rule.model_copy(update={"window": rule.window.model_copy(update={"days": 999})})
    policy = POLICY.model_copy(update={"reasons": {**POLICY.reasons, "technical_issue": wide}})
    early, late = sorted((t1, t2))
    a_early = evaluate(facts, policy, start + timedelta(seconds=early)).amount
    a_late = evaluate(facts, policy, start + timedelta(seconds=late)).amount
    assert a_late <= a_early


@settings(max_examples=300, deadline=None)
@given(
    charge=st.integers(1, 3_000_000),
    currency=st.sampled_from(CURRENCIES[:6]),
    u1=st.floats(0, 1),
    u2=st.floats(0, 1),
)
def test_prorated_amount_never_grows_as_more_of_the_quota_is_used(
        charge: int, currency: str, u1: float, u2: float) -> None:
    facts = PolicyFacts(reason="not_as_described", currency=currency, charge_amount=charge,
                        purchased_at=NOW - timedelta(days=3), usage_fraction=min(u1, u2))
    more_used = facts.model_copy(update={"usage_fraction": max(u1, u2)})
    assert evaluate(more_used, POLICY, NOW).amount <= evaluate(facts, POLICY, NOW).amount


@given(st.integers(0, 10**9), st.fractions(0, 1), st.fractions(0, 1),
       st.sampled_from(["half_up", "down", "up"]), st.sampled_from([1, 10, 100]))
def test_prorate_is_monotone_and_bounded(amount: int, s1: Fraction, s2: Fraction,
                                         rounding: str, step: int) -> None:
    lo, hi = sorted((s1, s2))
    low, high = prorate(amount, lo, rounding, step), prorate(amount, hi, rounding, step)
    assert 0 <= low <= high
    assert low % step == 0 and high % step == 0
    assert high <= amount + step - 1  # a step rounded up never passes the next step
