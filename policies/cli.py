"""`python starter.py policy check FILE` and `policy simulate ...`.

check:    validate a policy file and print what it says, or the problems (exit 1).
simulate: decide every case of a JSONL file (one PolicyFacts object a line, plus an
          optional "now") under a new policy and a baseline, and print how outcomes and
          refunded totals per currency would change, with a sample of changed cases.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from core.money import plain
from policies.evaluate import evaluate
from policies.facts import PolicyDecision, PolicyFacts
from policies.loader import DEFAULT_POLICY, PolicyError, load_policy
from policies.model import Policy

OUTCOMES = ("approve", "agent_review", "need_info", "deny")
_NOW = TypeAdapter(datetime | None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="starter.py policy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a policy file and summarise it")
    check.add_argument("file")
    sim = sub.add_parser("simulate", help="compare two policies on a file of cases")
    sim.add_argument("--policy", required=True, help="the new policy file")
    sim.add_argument("--baseline", default=str(DEFAULT_POLICY),
                     help="the policy to compare with (default: policies/default.yaml)")
    sim.add_argument("--cases", required=True, help="JSONL: one PolicyFacts a line")
    sim.add_argument("--sample", type=int, default=5, help="changed cases to show")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            print(summary(load_policy(args.file)))
            return 0
        return simulate(args.policy, args.baseline, args.cases, args.sample)
    except PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def summary(policy: Policy) -> str:
    """What a policy owner wants to see at a glance."""
    lines = [f"policy {policy.version}: {policy.name} - OK",
             f"  {len(policy.clauses)} clauses, currencies: "
             f"{', '.join(c.upper() for c in policy.currencies)}, rounding {policy.rounding}",
             "  reasons:"]
    for reason, rule in policy.reasons.items():
        extras = [f"{rule.window.days} days from {rule.window.counted_from}",
                  f"amount {rule.amount.basis}" + (" (full if unused)"
                                                   if rule.amount.full_if_unused else "")]
        if rule.documents:
            extras.append("needs " + ", ".join(rule.documents))
        if rule.new_customer_days is not None:
            extras.append(f"customers of <= {rule.new_customer_days} days")
        if rule.requires_unused:
            extras.append("only if unused")
        if rule.fast_track_when_confirmed:
            extras.append("confirmed errors refunded at once")
        if rule.agent_review:
            extras.append("agent decides")
        lines.append(f"    {reason.value:<17} [{rule.clause}] " + "; ".join(extras))
    lines.append("  approval (auto-approve up to / two approvers from):")
    for c in policy.currencies:
        lines.append(f"    {c.upper()}: {plain(policy.approval.auto_approve_limit[c], c)}"
                     f" / {plain(policy.approval.two_approver_threshold[c], c)}")
    lines.append(f"  always to an agent: risk {', '.join(policy.review.risk_levels) or '-'}, "
                 f"more than {policy.review.max_prior_refunds} prior refunds, fraud reports, "
                 "assessment findings")
    lines.append("  alternatives on denial: " + (", ".join(a.id for a in policy.alternatives)
                                                 or "none"))
    lines.append("  sla: " + ", ".join(f"{k} {_duration(v)}" for k, v in policy.sla))
    return "\n".join(lines)


def _duration(td: timedelta) -> str:
    """30s, 3d, 24h: the way the policy file writes them."""
    seconds = int(td.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{td.total_seconds():g}s"


@dataclass
class _Case:
    line: int
    facts: PolicyFacts
    now: datetime


def read_cases(path: str | Path, default_now: datetime) -> list[_Case]:
    """Parse the JSONL case file; a bad line is an error naming the line."""
    cases: list[_Case] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise PolicyError(path, [f"cannot read the cases file ({e.strerror or e})"]) from e
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("a case is a JSON object")
            now = _NOW.validate_python(data.pop("now", None)) or default_now
            cases.append(_Case(number, PolicyFacts.model_validate(data), now))
        except (ValueError, ValidationError) as e:
            raise PolicyError(path, [f"line {number}: not a valid case: {e}"]) from e
    return cases


def simulate(policy_file: str, baseline_file: str, cases_file: str, sample: int = 5) -> int:
    new, old = load_policy(policy_file), load_policy(baseline_file)
    cases = read_cases(cases_file, datetime.now(UTC))
    before = [evaluate(c.facts, old, c.now) for c in cases]
    after = [evaluate(c.facts, new, c.now) for c in cases]
    print(compare(cases, before, after, old, new, sample))
    return 0


def compare(cases: list[_Case], before: list[PolicyDecision], after: list[PolicyDecision],
            old: Policy, new: Policy, sample: int) -> str:
    n = len(cases)
    lines = [f"{n} cases: baseline {old.version} -> new {new.version}", "",
             f"  {'outcome':<13}{'baseline':>10}{'new':>10}{'change':>10}"]
    b_count = Counter[str](d.outcome for d in before)
    a_count = Counter[str](d.outcome for d in after)
    for o in OUTCOMES:
        lines.append(f"  {o:<13}{b_count[o]:>10}{a_count[o]:>10}{a_count[o] - b_count[o]:>+10}")
    lines += ["", "  approved automatically, per currency:"]
    b_total, a_total = _totals(before, "approve"), _totals(after, "approve")
    b_review, a_review = _totals(before, "agent_review"), _totals(after, "agent_review")
    for cur in sorted(set(b_total) | set(a_total) | set(b_review) | set(a_review)):
        b, a = b_total[cur], a_total[cur]
        lines.append(f"    {cur.upper()}: {plain(b, cur)} -> {plain(a, cur)} "
                     f"({'+' if a >= b else '-'}{plain(abs(a - b), cur)}); proposed for "
                     f"agent review {plain(b_review[cur], cur)} -> {plain(a_review[cur], cur)}")
    changed = [i for i in range(n) if _key(before[i]) != _key(after[i])]
    moves = Counter(f"{before[i].outcome} -> {after[i].outcome}" for i in changed)
    lines += ["", f"  {len(changed)} cases change"
              + (f" ({100 * len(changed) / n:.1f}%)" if n else "") + ":"]
    lines += [f"    {m}: {k}" for m, k in sorted(moves.items(), key=lambda x: (-x[1], x[0]))]
    if changed and sample > 0:
        lines += ["", f"  sample of changed cases (first {min(sample, len(changed))}):"]
        for i in changed[:sample]:
            c, was, now = cases[i], before[i], after[i]
            lines.append(f"    line {c.line}: {c.facts.reason.value} "
                         f"{plain(c.facts.charge_amount, was.currency)}: "
                         f"{was.outcome} {plain(was.amount, was.currency)} "
                         f"[{', '.join(was.clause_ids)}] -> {now.outcome} "
                         f"{plain(now.amount, now.currency)} [{', '.join(now.clause_ids)}]")
    return "\n".join(lines)


def _key(d: PolicyDecision) -> tuple[str, int, tuple[str, ...]]:
    return d.outcome, d.amount, tuple(d.clause_ids)


def _totals(decisions: list[PolicyDecision], outcome: str) -> Counter[str]:
    totals: Counter[str] = Counter()
    for d in decisions:
        if d.outcome == outcome:
            totals[d.currency] += d.amount
    return totals


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
