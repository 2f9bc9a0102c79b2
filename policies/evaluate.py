"""`evaluate(facts, policy, now)`: the policy's decision on one refund request.

Pure and deterministic (no I/O, no clock: `now` is an argument), so the workflow can call
it directly with `workflow.now()`. Checks run in a fixed order and the first that decides
wins:

1. assessment findings (records disagree with the request)  -> agent_review
2. currency the policy does not accept                      -> agent_review
3. already fully refunded / disputed / terms violation      -> deny
4. fraud reported, risky charge, repeat refunds             -> agent_review
5. the reason's rule: window, confirmed billing error fast track, eligibility criteria,
   documents (-> need_info), always-agent reasons, amount, approval limits.

Every decision cites the clauses that produced it, most specific first. `amount` is
what to refund on approve, the proposed amount on agent_review (what an agent's approval
without an amount pays), and 0 on deny / need_info; it never exceeds what is still
refundable nor the amount the customer asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from core.models import BILLING_REASONS, RefundReason
from core.money import plain, refund_step, round_down_to_step
from policies.facts import Outcome, PolicyDecision, PolicyFacts
from policies.model import Policy, ReasonRule


@dataclass
class _Draft:
    outcome: Outcome
    clause_ids: list[str]
    why: str
    amount: int = 0
    questions: list[str] = field(default_factory=list)


def evaluate(facts: PolicyFacts, policy: Policy, now: datetime) -> PolicyDecision:
    """Decide one request under `policy` at time `now`."""
    now = _aware(now)
    draft = _decide(facts, policy, now)
    currency = facts.currency.lower()
    # Never above what is refundable, and in a step Stripe accepts (KWD: whole 10 fils).
    amount = round_down_to_step(min(draft.amount, _cap(facts)), currency) \
        if draft.outcome in ("approve", "agent_review") else 0
    return PolicyDecision(
        outcome=draft.outcome,
        amount=amount,
        currency=currency,
        clause_ids=list(dict.fromkeys(draft.clause_ids)),
        questions=draft.questions,
        alternatives=list(policy.alternatives_for(draft.clause_ids[0]))
        if draft.outcome == "deny" else [],
        approvers_required=policy.approvers_required(amount, currency) if amount else 1,
        explanation=_explain(facts, policy, draft, amount, currency),
        policy_version=policy.version,
        citable_clause_ids=[c for c, why in denial_grounds(facts, policy, now).items()
                            if why is None],
    )


def denial_grounds(facts: PolicyFacts, policy: Policy, now: datetime) -> dict[str, str | None]:
    """Every clause of the policy -> None when an agent may cite it to deny this request,
    else why the facts contradict it. A clause plays roles in the policy (a reason's
    eligibility or window, a document, an exclusion, a review trigger); it may be cited
    when any of its roles fits the facts. A clause with no role (judgement only) always
    may; one that says how much or who approves never does."""
    now = _aware(now)
    roles: dict[str, list[str | None]] = {c.id: [] for c in policy.clauses}
    other_reasons: dict[str, list[str]] = {c.id: [] for c in policy.clauses}

    def role(clause_id: str | None, why_not: str | None) -> None:
        if clause_id in roles:
            roles[clause_id].append(why_not)

    for name, rule in policy.reasons.items():
        bound = [rule.window.clause, rule.window.late_clause, rule.clause,
                 *(policy.documents[k].clause for k in rule.documents)]
        if name != facts.reason:  # the reason's own clauses fit only its requests
            for clause_id in dict.fromkeys(c for c in bound if c in other_reasons):
                other_reasons[clause_id].append(name.value.replace("_", " "))
            continue
        start = _window_start(facts, rule)
        late = now > start + timedelta(days=rule.window.days)
        since = "the payment" if start == _aware(facts.purchased_at) else "the period began"
        in_window = (f"the request came {(now - start).days} day(s) after {since}, within "
                     f"the {rule.window.days}-day window")
        for window_clause in dict.fromkeys([rule.window.clause, rule.window.late_clause]):
            role(window_clause, None if late else in_window)
        role(rule.clause, _eligibility_contradicted(facts, rule))
        for kind in rule.documents:
            doc = policy.documents[kind]
            role(doc.clause, "the customer sent it" if doc.satisfied_by(kind, facts.documents)
                 else None)
    for rule in policy.reasons.values():
        if rule.amount.clause:
            role(rule.amount.clause, "it says how a refund is calculated, not whether")
    excl, review = policy.exclusions, policy.review
    role(excl.already_refunded, None if facts.already_fully_refunded or facts.refundable == 0
         else "part of the payment is still refundable")
    role(excl.disputed, None if facts.disputed else "the payment is not disputed")
    role(excl.terms_violation, None)  # an agent's finding; the facts hold no view of it
    role(review.findings, None if facts.findings or _records_problem(facts)
         else "the request matches our records")
    role(review.fraud, None if facts.reason == RefundReason.fraud_suspected
         else "the customer does not report the charge as unauthorised")
    role(review.risk, None if facts.risk in review.risk_levels
         else f"the charge's risk is {facts.risk}")
    role(review.repeat_refunds, None if facts.prior_refunds > review.max_prior_refunds
         else f"the customer had {facts.prior_refunds} earlier refund(s)")
    role(review.unsupported_currency, None if not policy.accepts(facts.currency)
         else f"the policy covers {facts.currency.upper()}")
    role(review.unlisted_reason, None if facts.reason not in policy.reasons
         else "the policy has a rule for this reason")
    role(policy.approval.clause, "it says who approves larger refunds, not whether")
    out: dict[str, str | None] = {}
    for clause_id, whys in roles.items():
        others = other_reasons[clause_id]
        if (not whys and not others) or None in whys:
            out[clause_id] = None
            continue
        parts = list(dict.fromkeys(w for w in whys if w))
        if others:
            parts.append(f"it applies to {_join(others)} requests, this one is "
                         f"{facts.reason.value.replace('_', ' ')}")
        out[clause_id] = "; ".join(parts)
    return out


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _eligibility_contradicted(facts: PolicyFacts, rule: ReasonRule) -> str | None:
    """Why the facts show the customer meets the reason's conditions, or None."""
    if rule.fast_track_when_confirmed and facts.billing_error_confirmed:
        return "our records confirm the billing error"
    if rule.new_customer_days is not None and facts.customer_since is not None:
        tenure = _aware(facts.purchased_at) - _aware(facts.customer_since)
        if tenure <= timedelta(days=rule.new_customer_days):
            return (f"the customer had been with us {tenure.days} day(s) at purchase, a new "
                    f"customer under the policy (up to {rule.new_customer_days} days)")
    if rule.requires_unused and _used(facts) is False:
        return "the product was not used"
    return None


def _decide(facts: PolicyFacts, policy: Policy, now: datetime) -> _Draft:
    review, excl = policy.review, policy.exclusions
    proposed = _cap(facts)
    findings = list(facts.findings)
    if facts.requested_amount is not None and facts.requested_amount > facts.refundable \
            and "amount_exceeds_refundable" not in findings:
        findings.append("amount_exceeds_refundable")
    if findings:
        return _Draft("agent_review", [review.findings],
                      f"the request and our records disagree ({', '.join(findings)})",
                      amount=proposed)
    problem = _records_problem(facts)
    if problem:
        return _Draft("agent_review", [review.findings],
                      f"our records do not add up ({problem})", amount=proposed)
    if not policy.accepts(facts.currency):
        return _Draft("agent_review", [review.unsupported_currency],
                      f"the policy has no rules for {facts.currency.upper()} charges",
                      amount=proposed)
    if facts.already_fully_refunded or facts.refundable == 0:
        return _Draft("deny", [excl.already_refunded], "the charge is already fully refunded")
    if facts.disputed:
        return _Draft("deny", [excl.disputed],
                      "the charge is disputed with the card issuer, which will decide it")
    if facts.terms_violation:
        return _Draft("deny", [excl.terms_violation],
                      "the account broke the terms of service")
    if facts.reason == RefundReason.fraud_suspected:
        return _Draft("agent_review", [review.fraud],
                      "the customer reports the charge as unauthorised", amount=proposed)
    if facts.risk in review.risk_levels:
        why = f"the charge's risk level is {facts.risk}"
        if facts.risk_reasons:
            why += f" ({', '.join(facts.risk_reasons)})"
        return _Draft("agent_review", [review.risk], why, amount=proposed)
    confirmed_billing = facts.billing_error_confirmed and facts.reason in BILLING_REASONS
    if facts.prior_refunds > review.max_prior_refunds and not confirmed_billing:
        return _Draft("agent_review", [review.repeat_refunds],
                      f"the customer already had {facts.prior_refunds} refunds "
                      f"(the policy reviews more than {review.max_prior_refunds})",
                      amount=proposed)
    rule = policy.reasons.get(facts.reason)
    if rule is None:
        return _Draft("agent_review", [review.unlisted_reason],
                      f"the policy has no rule for reason {facts.reason}", amount=proposed)
    return _apply_rule(facts, policy, rule, now)


def _apply_rule(facts: PolicyFacts, policy: Policy, rule: ReasonRule, now: datetime) -> _Draft:
    start = _window_start(facts, rule)
    deadline = start + timedelta(days=rule.window.days)
    if now > deadline:
        cited = [c for c in (rule.window.late_clause, rule.window.clause) if c]
        since = "purchase" if start == _aware(facts.purchased_at) else "the period began"
        return _Draft("deny", cited,
                      f"the request came {(now - start).days} days after {since}, past the "
                      f"{rule.window.days}-day window")
    in_window = [rule.clause, rule.window.clause]
    if rule.fast_track_when_confirmed and facts.billing_error_confirmed:
        return _route(facts, policy, in_window, _cap(facts),
                      "our records confirm the billing error, so it is refunded in full at "
                      "once", skip_auto_limit=True)
    if rule.new_customer_days is not None:
        if facts.customer_since is None:
            return _Draft("agent_review", [rule.clause],
                          "the customer's start date is unknown, so the new-customer "
                          "condition cannot be checked", amount=_cap(facts))
        tenure = _aware(facts.purchased_at) - _aware(facts.customer_since)
        if tenure > timedelta(days=rule.new_customer_days):
            return _Draft("deny", [rule.clause],
                          f"the customer had been with us {tenure.days} days at purchase; "
                          f"this reason applies to the first {rule.new_customer_days} days")
    if rule.requires_unused and _used(facts) is not False:
        if _used(facts) is None:
            return _Draft("agent_review", [rule.clause],
                          "it is unknown whether the product was used", amount=_cap(facts))
        return _Draft("deny", [rule.clause], "the product was used in this billing period")
    missing = [k for k in rule.documents if k not in facts.requirements_met
               and not policy.documents[k].satisfied_by(k, facts.documents)]
    if missing:
        docs = [policy.documents[k] for k in missing]
        return _Draft("need_info", [d.clause for d in docs],
                      f"documents are missing: {', '.join(missing)}",
                      questions=[d.question for d in docs])
    amount, amount_why, prorated = _amount(facts, policy, rule, now)
    cited = [*in_window, *([rule.amount.clause] if rule.amount.clause and prorated else [])]
    if amount == 0:
        return _Draft("deny", cited, f"{amount_why}, nothing is left to refund")
    if rule.agent_review:
        return _Draft("agent_review", cited, f"this reason is always decided by an agent; "
                      f"{amount_why}", amount=amount)
    return _route(facts, policy, cited, amount, amount_why)


def _route(facts: PolicyFacts, policy: Policy, cited: list[str], amount: int, why: str,
           skip_auto_limit: bool = False) -> _Draft:
    """Approve on the policy's own authority, or hand large amounts to agents."""
    currency = facts.currency.lower()
    amount = min(amount, _cap(facts))
    limit = policy.auto_approve_limit(currency) or 0
    if policy.approvers_required(amount, currency) == 2:
        return _Draft("agent_review", [*cited, policy.approval.clause],
                      f"{why}; the amount needs two approvers", amount=amount)
    if not skip_auto_limit and amount > limit:
        return _Draft("agent_review", [*cited, policy.approval.clause],
                      f"{why}; the amount is above the automatic approval limit of "
                      f"{plain(limit, currency)}", amount=amount)
    return _Draft("approve", cited, why, amount=amount)


def _amount(facts: PolicyFacts, policy: Policy, rule: ReasonRule, now: datetime
            ) -> tuple[int, str, bool]:
    """Refund due under the rule, why, and whether it was prorated (before the approval
    limits)."""
    basis = rule.amount.basis
    if rule.amount.full_if_unused and _used(facts) is False:
        basis = "full"
    share, why = Fraction(1), "a full refund"
    if basis == "unused_quota" and facts.usage_fraction is not None:
        # From the decimal as written (0.1, not the binary float 0.1000000000000000055),
        # so that half-up rounding lands where a person computing it by hand would.
        share = 1 - Fraction(repr(facts.usage_fraction))
        why = f"a refund of the unused {_pct(share)} of the plan's quota"
    elif basis in ("unused_time", "unused_quota"):
        unused = unused_time_share(facts, now)
        if unused is not None:
            share = unused
            why = f"a refund of the unused {_pct(share)} of the billing period"
    if share == 1:
        return _cap(facts), why, False
    due = prorate(facts.charge_amount, share, policy.rounding,
                  refund_step(facts.currency)) - facts.amount_refunded
    return max(0, min(due, _cap(facts))), why, True


def unused_time_share(facts: PolicyFacts, now: datetime) -> Fraction | None:
    """Share of the billing period still ahead at `now` (0..1); None without a period."""
    if facts.period_start is None or facts.period_end is None:
        return None
    start, end = _aware(facts.period_start), _aware(facts.period_end)
    total = end - start
    if total <= timedelta(0):
        return None
    left = min(max(end - now, timedelta(0)), total)
    return Fraction(_micros(left), _micros(total))


def prorate(amount: int, share: Fraction, rounding: str = "half_up", step: int = 1) -> int:
    """`amount` (minor units) times `share`, rounded to a multiple of `step` minor units: a
    cent, a yen or won for zero-decimal currencies, 10 fils for KWD (the refund step of
    `core.money.refund_step`). Monotone in `share`."""
    exact = amount * share / step
    floor = exact.numerator // exact.denominator
    if rounding == "down" or exact == floor:
        return floor * step
    if rounding == "up":
        return (floor + 1) * step
    return (floor + 1 if exact - floor >= Fraction(1, 2) else floor) * step


def _records_problem(facts: PolicyFacts) -> str | None:
    """Facts that contradict each other: an agent looks before any money moves."""
    if facts.charge_amount == 0:
        return "the charge amount is zero"
    if facts.amount_refunded > facts.charge_amount:
        return "more is refunded than was charged"
    if facts.period_start is not None and facts.period_end is not None and \
            _aware(facts.period_end) <= _aware(facts.period_start):
        return "the billing period ends before it starts"
    return None


def _cap(facts: PolicyFacts) -> int:
    """Never more than is still refundable, nor more than the customer asked for."""
    cap = facts.refundable
    if facts.requested_amount is not None:
        cap = min(cap, facts.requested_amount)
    return cap


def _used(facts: PolicyFacts) -> bool | None:
    if facts.product_used is not None:
        return facts.product_used
    if facts.usage_fraction is not None:
        return facts.usage_fraction > 0
    return None


def _window_start(facts: PolicyFacts, rule: ReasonRule) -> datetime:
    if rule.window.counted_from == "period_start" and facts.period_start is not None:
        return _aware(facts.period_start)
    return _aware(facts.purchased_at)


def _aware(dt: datetime) -> datetime:
    """Naive datetimes are UTC (policy files and case files may omit the offset)."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)


def _micros(td: timedelta) -> int:
    return (td.days * 86400 + td.seconds) * 1_000_000 + td.microseconds


def _pct(share: Fraction) -> str:
    return f"{float(share) * 100:.0f}%"


_VERBS = {
    "approve": "Approve a refund of {amount}",
    "agent_review": "Send to an agent (proposed refund {amount})",
    "deny": "Deny the refund",
    "need_info": "Ask the customer for more information",
}


def _explain(facts: PolicyFacts, policy: Policy, draft: _Draft, amount: int,
             currency: str) -> str:
    """One paragraph an agent can read: what, why, which clauses, which policy."""
    head = _VERBS[draft.outcome].format(amount=plain(amount, currency))
    charge = (f"The {facts.reason.value.replace('_', ' ')} request concerns a charge of "
              f"{plain(facts.charge_amount, currency)}")
    if facts.amount_refunded:
        charge += f" of which {plain(facts.amount_refunded, currency)} is already refunded"
    if facts.requested_amount is not None:
        charge += f"; the customer asked for {plain(facts.requested_amount, currency)}"
    titles = ", ".join(
        f"{c} ({policy.clause(c).title})" if policy.has_clause(c) else c
        for c in dict.fromkeys(draft.clause_ids)
    )
    text = f"{head}: {draft.why}. {charge}. Clauses: {titles}. Policy {policy.version}."
    if draft.questions:
        text += " Questions: " + " ".join(draft.questions)
    return text
