"""What a new policy would change: decide the same cases under a baseline and under the
new policy, and count outcomes, refunded totals per currency, the clauses cited, and the
cases that move. Pure (no I/O): the CLI feeds it a file of facts or past cases read from
Temporal; the agent console renders the same `Simulation` as a page."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from core.money import plain
from policies.evaluate import evaluate
from policies.facts import PolicyDecision, PolicyFacts
from policies.model import Policy

OUTCOMES = ("approve", "agent_review", "need_info", "deny")


@dataclass
class SimCase:
    """One case to decide: its facts at the moment it was decided. `baseline`: the policy
    to compare with for this case (the version it pinned), else the run's baseline;
    `recorded`: the decision the case actually got, to check the baseline reproduces it."""

    label: str
    facts: PolicyFacts
    now: datetime
    baseline: Policy | None = None
    recorded: PolicyDecision | None = None


class OutcomeRow(BaseModel):
    outcome: str
    baseline: int
    new: int


class CurrencyRow(BaseModel):
    currency: str
    approved_baseline: int
    approved_new: int
    review_baseline: int
    review_new: int


class ClauseRow(BaseModel):
    clause_id: str
    title: str
    baseline: int
    new: int


class ChangedCase(BaseModel):
    label: str
    reason: str
    charge: str
    before: str
    after: str


class Simulation(BaseModel):
    cases: int
    baseline: str
    new: str
    outcomes: list[OutcomeRow]
    currencies: list[CurrencyRow]
    clauses: list[ClauseRow]
    changed: int
    moves: dict[str, int]
    sample: list[ChangedCase]
    reproduced: int = 0
    checked: int = 0
    not_reproduced: list[ChangedCase] = []

    @property
    def changed_share(self) -> str:
        return f"{100 * self.changed / self.cases:.1f}%" if self.cases else ""


def simulate(cases: list[SimCase], new: Policy, baseline: Policy | None = None,
             sample: int = 5) -> Simulation:
    """Each case under its baseline and under `new`; a case without its own baseline uses
    `baseline` (one of the two must be there)."""
    before, after = [], []
    for case in cases:
        old = case.baseline or baseline
        if old is None:
            raise ValueError(f"{case.label}: no baseline policy to compare with")
        before.append(evaluate(case.facts, old, case.now))
        after.append(evaluate(case.facts, new, case.now))
    changed = [i for i in range(len(cases)) if _key(before[i]) != _key(after[i])]
    checked = [i for i, c in enumerate(cases) if c.recorded is not None]
    missed = [i for i in checked if _key(before[i]) != _key(cases[i].recorded)]  # type: ignore[arg-type]  # checked: recorded is set
    return Simulation(
        cases=len(cases),
        baseline=baseline.version if baseline is not None and not any(
            c.baseline for c in cases) else _pinned_label(cases),
        new=new.version,
        outcomes=_outcomes(before, after),
        currencies=_currencies(before, after),
        clauses=_clauses(before, after, [new, baseline, *(c.baseline for c in cases)]),
        changed=len(changed),
        moves=dict(sorted(Counter(f"{before[i].outcome} -> {after[i].outcome}"
                                  for i in changed).items(), key=lambda x: (-x[1], x[0]))),
        sample=[_changed(cases[i], before[i], after[i]) for i in changed[:max(0, sample)]],
        reproduced=len(checked) - len(missed),
        checked=len(checked),
        not_reproduced=[_changed(cases[i], cases[i].recorded, before[i])  # type: ignore[arg-type]  # checked: recorded is set
                        for i in missed],
    )


def _pinned_label(cases: list[SimCase]) -> str:
    versions = Counter(c.baseline.version for c in cases if c.baseline is not None)
    if not versions:
        return "none"
    return "pinned (" + ", ".join(f"{v}: {n}" for v, n in sorted(versions.items())) + ")"


def _outcomes(before: list[PolicyDecision], after: list[PolicyDecision]) -> list[OutcomeRow]:
    b = Counter[str](d.outcome for d in before)
    a = Counter[str](d.outcome for d in after)
    return [OutcomeRow(outcome=o, baseline=b[o], new=a[o]) for o in OUTCOMES]


def _currencies(before: list[PolicyDecision], after: list[PolicyDecision]
                ) -> list[CurrencyRow]:
    b_total, a_total = _totals(before, "approve"), _totals(after, "approve")
    b_review, a_review = _totals(before, "agent_review"), _totals(after, "agent_review")
    return [CurrencyRow(currency=cur, approved_baseline=b_total[cur], approved_new=a_total[cur],
                        review_baseline=b_review[cur], review_new=a_review[cur])
            for cur in sorted(set(b_total) | set(a_total) | set(b_review) | set(a_review))]


def _clauses(before: list[PolicyDecision], after: list[PolicyDecision],
             policies: Iterable[Policy | None]) -> list[ClauseRow]:
    """Cases citing each clause, under each policy."""
    b = Counter(c for d in before for c in dict.fromkeys(d.clause_ids))
    a = Counter(c for d in after for c in dict.fromkeys(d.clause_ids))
    titles: dict[str, str] = {}
    for policy in policies:
        for clause in policy.clauses if policy is not None else []:
            titles.setdefault(clause.id, clause.title)
    return [ClauseRow(clause_id=c, title=titles.get(c, ""), baseline=b[c], new=a[c])
            for c in sorted(set(b) | set(a), key=lambda c: (-abs(a[c] - b[c]), c))]


def _changed(case: SimCase, was: PolicyDecision, now: PolicyDecision) -> ChangedCase:
    return ChangedCase(label=case.label, reason=case.facts.reason.value,
                       charge=plain(case.facts.charge_amount, was.currency),
                       before=_decision(was), after=_decision(now))


def _decision(d: PolicyDecision) -> str:
    return f"{d.outcome} {plain(d.amount, d.currency)} [{', '.join(d.clause_ids)}]"


def _key(d: PolicyDecision) -> tuple[str, int, tuple[str, ...]]:
    return d.outcome, d.amount, tuple(d.clause_ids)


def _totals(decisions: list[PolicyDecision], outcome: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for d in decisions:
        if d.outcome == outcome:
            totals[d.currency] += d.amount
    return totals


def render(sim: Simulation) -> str:
    """The simulation as the CLI prints it."""
    lines = [f"{sim.cases} cases: baseline {sim.baseline} -> new {sim.new}", "",
             f"  {'outcome':<13}{'baseline':>10}{'new':>10}{'change':>10}"]
    for row in sim.outcomes:
        lines.append(f"  {row.outcome:<13}{row.baseline:>10}{row.new:>10}"
                     f"{row.new - row.baseline:>+10}")
    lines += ["", "  approved automatically, per currency:"]
    for c in sim.currencies:
        cur, b, a = c.currency, c.approved_baseline, c.approved_new
        lines.append(f"    {cur.upper()}: {plain(b, cur)} -> {plain(a, cur)} "
                     f"({'+' if a >= b else '-'}{plain(abs(a - b), cur)}); proposed for "
                     f"agent review {plain(c.review_baseline, cur)} -> "
                     f"{plain(c.review_new, cur)}")
    lines += ["", "  cases citing each clause (baseline -> new):"]
    lines += [f"    {c.clause_id:<28}{c.baseline:>6} ->{c.new:>6}"
              + (f" ({c.new - c.baseline:+d})" if c.new != c.baseline else "")
              for c in sim.clauses]
    lines += ["", f"  {sim.changed} cases change"
              + (f" ({sim.changed_share})" if sim.cases else "") + ":"]
    lines += [f"    {m}: {k}" for m, k in sim.moves.items()]
    if sim.sample:
        lines += ["", f"  sample of changed cases (first {len(sim.sample)}):"]
        lines += [f"    {c.label}: {c.reason} {c.charge}: {c.before} -> {c.after}"
                  for c in sim.sample]
    if sim.checked:
        lines += ["", f"  the baseline reproduces the recorded decision of {sim.reproduced} "
                      f"of {sim.checked} cases"]
        lines += [f"    {c.label}: recorded {c.before}, baseline now {c.after}"
                  for c in sim.not_reproduced]
    return "\n".join(lines)
