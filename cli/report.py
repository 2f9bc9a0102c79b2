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
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field
from temporalio.client import Client

from core import money
from core.case_client import CaseClient
from core.client import connect
from core.contract import CaseState

DECIDED = {"approved", "refunding", "denied"}
COMMENTS_KEPT = 100


class FeedbackComment(BaseModel):
    case_id: str
    rating: int
    comment: str


class TrendReport(BaseModel):
    cases: int
    by_reason: dict[str, int]
    by_reason_per_day: dict[str, dict[str, int]] = Field(
        description="Day the request was received (UTC, YYYY-MM-DD) -> reason -> cases.")
    by_status: dict[str, int]
    by_outcome: dict[str, int] = Field(description="The policy's last decision per case.")
    decided_by: dict[str, int] = Field(description="policy (automatic) or agent")
    decisions: dict[str, dict[str, int]] = Field(
        description="approved / denied -> who decided (policy or agent) -> cases.")
    sla_attainment: dict[str, float] = Field(description="Share of cases with no breach.")
    sla_breaches: dict[str, int]
    median_hours_to_decision: float | None
    hours_to_decision: list[float] = Field(description="Each decided case, received -> "
                                                       "first decision.")
    median_hours_to_refund: float | None
    hours_to_refund: list[float] = Field(description="Each refunded case, received -> "
                                                     "refund succeeded.")
    refunded: dict[str, str] = Field(description="Refunded total per currency.")
    refunded_minor: dict[str, int] = Field(description="The same in minor units.")
    root_causes: dict[str, int] = Field(description="Billing-error root causes by kind.")
    feedback_count: int
    feedback_average: float | None
    feedback_ratings: dict[str, int]
    feedback_comments: list[FeedbackComment] = Field(
        description=f"Ratings with a comment (at most {COMMENTS_KEPT}).")


def summarize(states: Iterable[CaseState]) -> TrendReport:
    states = list(states)
    breaches: Counter[str] = Counter()
    refunded: defaultdict[str, int] = defaultdict(int)
    hours: list[float] = []
    refund_hours: list[float] = []
    decided_by: Counter[str] = Counter()
    decisions: defaultdict[str, Counter[str]] = defaultdict(Counter)
    per_day: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for case in states:
        breaches.update(set(case.sla_breaches))
        if case.refund and case.refund.status == "succeeded":
            refunded[case.refund.currency] += case.refund.amount
        received = case.received_at  # the intake's receipt time, else the first entry
        if received is not None:
            per_day[received.astimezone(UTC).date().isoformat()][case.request.reason.value] += 1
        decided = _first_status(case, DECIDED)
        if decided is not None and received is not None:
            at, status = decided
            hours.append(_hours(at - received))
            who = "agent" if case.approvals or _agent_denied(case) else "policy"
            decided_by[who] += 1
            decisions["denied" if status == "denied" else "approved"][who] += 1
        refunded_at = _first_status(case, {"refunded"})
        if refunded_at is not None and received is not None:
            refund_hours.append(_hours(refunded_at[0] - received))
    ratings = [c.feedback.rating for c in states if c.feedback]
    comments = [FeedbackComment(case_id=c.case_id, rating=c.feedback.rating,
                                comment=c.feedback.comment)
                for c in states if c.feedback and c.feedback.comment.strip()]
    n = len(states)
    return TrendReport(
        cases=n,
        by_reason=dict(Counter(c.request.reason.value for c in states).most_common()),
        by_reason_per_day={day: dict(per_day[day]) for day in sorted(per_day)},
        by_status=dict(Counter(c.status.value for c in states).most_common()),
        by_outcome=dict(Counter(c.decision.outcome for c in states if c.decision).most_common()),
        decided_by=dict(decided_by),
        decisions={kind: dict(who) for kind, who in sorted(decisions.items())},
        sla_attainment={
            name: round(1 - breaches[name] / n, 4) if n else 1.0
            for name in sorted({"acknowledge", "agent_decision", *breaches})
        },
        sla_breaches=dict(breaches),
        median_hours_to_decision=_median(hours),
        hours_to_decision=sorted(round(h, 4) for h in hours),
        median_hours_to_refund=_median(refund_hours),
        hours_to_refund=sorted(round(h, 4) for h in refund_hours),
        refunded={cur: money.plain(amount, cur) for cur, amount in sorted(refunded.items())},
        refunded_minor=dict(sorted(refunded.items())),
        root_causes=dict(Counter(root_cause_kind(c.root_cause)
                                 for c in states if c.root_cause).most_common()),
        feedback_count=len(ratings),
        feedback_average=round(statistics.mean(ratings), 2) if ratings else None,
        feedback_ratings={str(r): ratings.count(r) for r in range(1, 6)},
        feedback_comments=comments[-COMMENTS_KEPT:],
    )


def root_cause_kind(root_cause: str) -> str:
    """'duplicate_charge: the customer was charged ...' -> 'duplicate_charge'."""
    return root_cause.split(":", 1)[0].strip() or root_cause


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _first_status(case: CaseState, statuses: set[str]) -> tuple[datetime, str] | None:
    """When the case first reached one of `statuses`, and which."""
    for entry in case.timeline:
        if entry.kind == "status" and entry.data.get("to") in statuses:
            return entry.at, str(entry.data["to"])
    return None


def _agent_denied(case: CaseState) -> bool:
    return bool(case.denial and case.denial.by.startswith("agent:"))


async def fetch_states(client: Client, query: str, limit: int | None) -> list[CaseState]:
    """The cases a visibility query finds (up to `limit`), read with the `state` query."""
    found = await CaseClient(client).states(query, limit=limit)
    for case_id, why in found.skipped:
        print(f"skipped {case_id}: {why}", file=sys.stderr)
    return found.states


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
    hours = report.median_hours_to_refund
    lines.append(f"Median time to refund: {'n/a' if hours is None else f'{hours} h'}")
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
