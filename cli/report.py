"""`python starter.py report`: trend analysis over refund cases — reasons, decisions, SLA
attainment, refunded totals, root causes of billing errors and customer feedback.

Cases are found through Temporal visibility and read with the `state` query, so the report
needs no database of its own. `summarize` is pure and does the counting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime

from pydantic import BaseModel, Field
from temporalio.client import Client

from core import money
from core.client import connect
from core.contract import CaseState

DECIDED = {"approved", "refunding", "denied"}


class TrendReport(BaseModel):
    cases: int
    by_reason: dict[str, int]
    by_status: dict[str, int]
    by_outcome: dict[str, int] = Field(description="The policy's first decision per case.")
    decided_by: dict[str, int] = Field(description="policy (automatic) or agent")
    sla_attainment: dict[str, float] = Field(description="Share of cases with no breach.")
    sla_breaches: dict[str, int]
    median_hours_to_decision: float | None
    refunded: dict[str, str] = Field(description="Refunded total per currency.")
    root_causes: dict[str, int]
    feedback_count: int
    feedback_average: float | None
    feedback_ratings: dict[str, int]


def summarize(states: Iterable[CaseState]) -> TrendReport:
    states = list(states)
    breaches: Counter[str] = Counter()
    refunded: defaultdict[str, int] = defaultdict(int)
    hours: list[float] = []
    decided_by: Counter[str] = Counter()
    for case in states:
        breaches.update(set(case.sla_breaches))
        if case.refund and case.refund.status == "succeeded":
            refunded[case.refund.currency] += case.refund.amount
        decided = _decided_at(case)
        if decided is not None and case.timeline:
            hours.append((decided - case.timeline[0].at).total_seconds() / 3600)
            decided_by["agent" if case.approvals or _agent_denied(case) else "policy"] += 1
    ratings = [c.feedback.rating for c in states if c.feedback]
    n = len(states)
    return TrendReport(
        cases=n,
        by_reason=dict(Counter(c.request.reason.value for c in states).most_common()),
        by_status=dict(Counter(c.status.value for c in states).most_common()),
        by_outcome=dict(Counter(c.decision.outcome for c in states if c.decision).most_common()),
        decided_by=dict(decided_by),
        sla_attainment={
            name: round(1 - breaches[name] / n, 4) if n else 1.0
            for name in sorted({"acknowledge", "agent_decision", *breaches})
        },
        sla_breaches=dict(breaches),
        median_hours_to_decision=round(statistics.median(hours), 2) if hours else None,
        refunded={cur: money.plain(amount, cur) for cur, amount in sorted(refunded.items())},
        root_causes=dict(Counter(c.root_cause for c in states if c.root_cause).most_common()),
        feedback_count=len(ratings),
        feedback_average=round(statistics.mean(ratings), 2) if ratings else None,
        feedback_ratings={str(r): ratings.count(r) for r in range(1, 6)},
    )


def _decided_at(case: CaseState) -> datetime | None:
    """When the case first reached a decision (approval, denial or refund)."""
    for entry in case.timeline:
        if entry.kind == "status" and entry.data.get("to") in DECIDED:
            return entry.at
    return None


def _agent_denied(case: CaseState) -> bool:
    return bool(case.denial and case.denial.by.startswith("agent:"))


async def fetch_states(client: Client, query: str, limit: int) -> list[CaseState]:
    """Read up to `limit` cases matching a visibility query, a few queries at a time."""
    ids = []
    async for wf in client.list_workflows(query, limit=limit):
        ids.append(wf.id)
    gate = asyncio.Semaphore(8)

    async def one(case_id: str) -> CaseState | None:
        async with gate:
            try:
                state: CaseState = await client.get_workflow_handle(case_id).query(
                    "state", result_type=CaseState
                )
                return state
            except Exception as exc:  # a case the worker cannot answer for is skipped
                print(f"skipped {case_id}: {exc}", file=sys.stderr)
                return None

    results = await asyncio.gather(*(one(i) for i in ids))
    return [r for r in results if r is not None]


def render(report: TrendReport) -> str:
    def table(title: str, counts: Mapping[str, object]) -> list[str]:
        rows = [f"{title}:"] + [f"  {k:<24} {v}" for k, v in counts.items()]
        return rows if counts else [f"{title}: none"]

    lines = [f"Refund Desk report — {report.cases} case(s)"]
    lines += table("By reason", report.by_reason)
    lines += table("By status", report.by_status)
    lines += table("Policy outcome", report.by_outcome)
    lines += table("Decided by", report.decided_by)
    lines += table("SLA attainment", {k: f"{v:.1%}" for k, v in report.sla_attainment.items()})
    hours = report.median_hours_to_decision
    lines.append(f"Median time to decision: {'n/a' if hours is None else f'{hours} h'}")
    lines += table("Refunded", report.refunded)
    lines += table("Billing-error root causes", report.root_causes)
    avg = report.feedback_average
    lines.append(f"Feedback: {report.feedback_count} rating(s), average "
                 f"{'n/a' if avg is None else f'{avg}/5'}")
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> TrendReport:
    query = "WorkflowType = 'RefundCase'"
    if args.days:
        query += f" AND StartTime > '{_days_ago(args.days)}'"
    client = await connect()
    return summarize(await fetch_states(client, query, args.limit))


def _days_ago(days: int) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="starter.py report", description=__doc__)
    parser.add_argument("--days", type=int, default=0, help="only cases started this recently")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many cases")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    report = asyncio.run(_run(args))
    print(json.dumps(report.model_dump(), indent=2) if args.json else render(report))
    return 0
