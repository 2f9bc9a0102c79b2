"""`python starter.py policy check FILE` and `policy simulate ...`.

check:    validate a policy file and print what it says, or the problems (exit 1).
simulate: decide cases under a new policy and a baseline, and print how outcomes, refunded
          totals per currency and the clauses cited would change, with a sample of changed
          cases. The cases come from a JSONL file (`--cases`: one PolicyFacts object a
          line, plus an optional "now"), or from Temporal (`--from-cases [--since DATE]`:
          the facts of past cases when they were decided, each compared with the policy
          version it pinned, which must reproduce its recorded decision).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from pydantic import TypeAdapter, ValidationError
from temporalio.service import RPCError

from core.money import plain
from policies.facts import PolicyFacts
from policies.loader import DEFAULT_POLICY, PolicyError, load_policy
from policies.model import Policy
from policies.simulate import SimCase, render, simulate

_NOW = TypeAdapter(datetime | None)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="starter.py policy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate a policy file and summarise it")
    check.add_argument("file")
    sim = sub.add_parser("simulate", help="compare two policies on a file of cases, or on "
                                           "the cases Temporal holds")
    sim.add_argument("--policy", required=True, help="the new policy file")
    sim.add_argument("--baseline", default=None,
                     help="the policy to compare with (default: policies/default.yaml with "
                          "--cases, the version each case pinned with --from-cases)")
    source = sim.add_mutually_exclusive_group(required=True)
    source.add_argument("--cases", help="JSONL: one PolicyFacts a line")
    source.add_argument("--from-cases", action="store_true",
                        help="the facts of past cases, read from Temporal")
    sim.add_argument("--since", type=_date, default=None,
                     help="with --from-cases: cases started on or after this date "
                          "(YYYY-MM-DD, UTC)")
    sim.add_argument("--task-queue", default=None,
                     help="with --from-cases: the desk's task queue (default refund-cases)")
    sim.add_argument("--sample", type=int, default=5, help="changed cases to show")
    args = parser.parse_args(argv)
    if args.command == "simulate" and not args.from_cases and (
            args.since is not None or args.task_queue is not None):
        parser.error("--since and --task-queue go with --from-cases")
    try:
        if args.command == "check":
            print(summary(load_policy(args.file)))
            return 0
        if args.from_cases:
            return simulate_history(args.policy, args.baseline, args.since, args.sample,
                                    args.task_queue)
        return simulate_file(args.policy, args.baseline or str(DEFAULT_POLICY), args.cases,
                             args.sample)
    except PolicyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (RPCError, RuntimeError, OSError) as e:  # Temporal unreachable or refusing
        print(f"error: cannot read the cases from Temporal: {e}", file=sys.stderr)
        return 1


def _date(value: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(value), time(0), UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def summary(policy: Policy) -> str:
    """What a policy owner wants to see at a glance."""
    lines = [f"policy {policy.version}: {policy.name} - OK",
             f"  {len(policy.clauses)} clauses, currencies: "
             f"{', '.join(c.upper() for c in policy.currencies)}, rounding {policy.rounding}",
             f"  customers written to in: {', '.join(policy.locales)} (every text in each)",
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
    rules = policy.reply_rules
    answers = "; ".join(
        f"{kind} by " + " or ".join(filter(None, [
            f"{len(a.patterns)} text pattern(s)" if a.patterns else "",
            "files of type " + " ".join(a.attachment_types) if a.attachment_types else "",
            f"a statement of {a.statement_min_words}+ words" if a.statement_min_words else ""]))
        for kind, a in rules.answers.items()) or "file names only"
    lines.append(f"  replies: answers: {answers}")
    return "\n".join(lines)


def _duration(td: timedelta) -> str:
    """30s, 3d, 24h: the way the policy file writes them."""
    seconds = int(td.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{td.total_seconds():g}s"


def read_cases(path: str | Path, default_now: datetime) -> list[SimCase]:
    """Parse the JSONL case file; a bad line is an error naming the line."""
    cases: list[SimCase] = []
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
            cases.append(SimCase(f"line {number}", PolicyFacts.model_validate(data), now))
        except (ValueError, ValidationError) as e:
            raise PolicyError(path, [f"line {number}: not a valid case: {e}"]) from e
    return cases


def simulate_file(policy_file: str, baseline_file: str, cases_file: str, sample: int = 5
                  ) -> int:
    new, old = load_policy(policy_file), load_policy(baseline_file)
    cases = read_cases(cases_file, datetime.now(UTC))
    print(render(simulate(cases, new, old, sample)))
    return 0


def simulate_history(policy_file: str, baseline_file: str | None, since: datetime | None,
                     sample: int = 5, task_queue: str | None = None) -> int:
    """The cases Temporal holds (started since `since`), each compared with the policy
    version it pinned, or with `baseline_file`."""
    new = load_policy(policy_file)
    baseline = load_policy(baseline_file) if baseline_file else None
    from core.case_history import cases_for_simulation
    from core.client import connect
    from core.config import get_settings
    from core.contract import TASK_QUEUE

    async def run() -> int:
        settings = get_settings()
        client = await connect(settings)
        past = await cases_for_simulation(client, settings.REFUND_POLICY_FILE, since,
                                          task_queue=task_queue or TASK_QUEUE,
                                          with_pinned=baseline is None)
        if not past.cases:
            print(f"no decided case found{past.since_text}: nothing to simulate"
                  + (f" ({len(past.skipped)} skipped)" if past.skipped else ""))
            return 0
        print(render(simulate(past.cases, new, baseline, sample)))
        print(past.skipped_text())
        return 0

    return asyncio.run(run())
