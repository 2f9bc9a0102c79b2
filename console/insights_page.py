"""Insights (the trend report of `starter.py report`, as charts over a chosen period) and
the policy simulation page (`policy simulate --from-cases`, run from the browser). Both
read the cases from Temporal; the counting is cli.report's and policies.simulate's."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response

from api.deps import get_client
from api.temporal import temporal_call
from cli.report import TrendReport, summarize
from console import charts, web
from console.auth import CheckedForm, User
from console.session import flash
from core.case_client import CaseClient
from core.case_history import STATE_TIMEOUT, PinnedPolicies, cases_for_simulation, cases_query
from policies.loader import PolicyError, parse_policy
from policies.simulate import simulate

router = APIRouter(prefix="/console")
DEFAULT_DAYS = 7
MAX_POLICY_BYTES = 256 * 1024
SAMPLE = 20  # changed cases listed


def period(start: str, end: str) -> tuple[date, date, list[str]]:
    """The chosen days (UTC, both included), last 7 by default; problems as messages."""
    problems = []
    today = datetime.now(UTC).date()
    try:
        last = date.fromisoformat(end) if end else today
    except ValueError:
        problems.append(f"{end!r} is not a date (YYYY-MM-DD)")
        last = today
    try:
        first = date.fromisoformat(start) if start else last - timedelta(days=DEFAULT_DAYS - 1)
    except ValueError:
        problems.append(f"{start!r} is not a date (YYYY-MM-DD)")
        first = last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        problems.append("the period starts after it ends: dates swapped")
        first, last = last, first
    return first, last, problems


def reasons_over_time(report: TrendReport, first: date, last: date
                      ) -> tuple[list[str], dict[str, list[int]]]:
    """Requests per reason per day of the period (per week beyond two months)."""
    weekly = (last - first).days > 62
    buckets: list[str] = []
    day = first
    while day <= last:
        key = (day - timedelta(days=day.weekday())) if weekly else day
        if not buckets or buckets[-1] != key.isoformat():
            buckets.append(key.isoformat())
        day += timedelta(days=1)
    counts: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    for day_text, reasons in report.by_reason_per_day.items():
        d = date.fromisoformat(day_text)
        key = (d - timedelta(days=d.weekday())) if weekly else d
        for reason, n in reasons.items():
            counts[reason][key.isoformat()] += n
    series = {reason: [counts[reason][b] for b in buckets] for reason in report.by_reason}
    return buckets, series


def insight_charts(report: TrendReport, first: date, last: date) -> dict[str, Any]:
    labels, series = reasons_over_time(report, first, last)
    decisions = [(f"{kind} by {who}", float(n)) for kind, by in report.decisions.items()
                 for who, n in sorted(by.items())]
    return {
        "reasons": charts.columns(labels, series, "Requests by reason over time"),
        "statuses": charts.bars([(k.replace("_", " "), float(v))
                                 for k, v in report.by_status.items()], "Cases by status"),
        "decisions": charts.bars(decisions, "Decisions and who made them"),
        "sla": charts.bars([(k.replace("_", " "), v * 100)
                            for k, v in report.sla_attainment.items()], "SLA attainment",
                           maximum=100, value_text=lambda v: f"{v:.1f}%"),
        "to_decision": charts.histogram(report.hours_to_decision, "Time to decision"),
        "to_refund": charts.histogram(report.hours_to_refund, "Time to refund"),
        "root_causes": charts.bars([(k.replace("_", " "), float(v))
                                    for k, v in report.root_causes.items()],
                                   "Billing-error root causes"),
        "ratings": charts.bars([(f"{r} ★", float(n)) for r, n in report.feedback_ratings.items()],
                               "Feedback ratings", value_text=lambda v: f"{v:.0f}"),
        "bins_decision": charts.binned(report.hours_to_decision),
        "bins_refund": charts.binned(report.hours_to_refund),
    }


@router.get("/insights", include_in_schema=False)
async def insights(request: Request, user: User, start: str = "", end: str = "") -> Response:
    first, last, problems = period(start, end)
    for problem in problems:
        flash(request, "error", problem)
    since = datetime.combine(first, time(0), UTC)
    until = datetime.combine(last + timedelta(days=1), time(0), UTC)
    query = (f"{cases_query(since, request.app.state.task_queue)} AND StartTime < "
             f"'{until.strftime('%Y-%m-%dT%H:%M:%SZ')}'")
    client = await get_client(request)
    async with temporal_call("read the cases"):
        found = await CaseClient(client, rpc_timeout=STATE_TIMEOUT).states(query)
    report = summarize(found.states)
    return web.page(request, "insights.html", {
        "report": report, "first": first, "last": last, "skipped": found.skipped,
        "charts": insight_charts(report, first, last),
    })


@router.get("/simulate", include_in_schema=False)
async def simulate_form(request: Request, user: User) -> Response:
    return web.page(request, "simulate.html", {"sim": None, "since": "", "policy_name": "",
                                               "ran": False})


@router.post("/simulate", include_in_schema=False)
async def simulate_run(request: Request, user: User, form: CheckedForm,
                       policy: Annotated[UploadFile | None, File()] = None,
                       policy_text: Annotated[str, Form(max_length=MAX_POLICY_BYTES)] = "",
                       since: Annotated[str, Form(max_length=20)] = "") -> Response:
    """Decide the cases started since `since` under the uploaded policy, each compared
    with the version it pinned."""
    text, name = policy_text, "the pasted policy"
    if policy is not None and policy.filename:
        raw = await policy.read(MAX_POLICY_BYTES + 1)
        if len(raw) > MAX_POLICY_BYTES:
            return _simulate_error(request, "the policy file is larger than 256 KB", since)
        text, name = raw.decode("utf-8", "replace"), policy.filename
    if not text.strip():
        return _simulate_error(request, "choose a policy file (YAML) or paste one", since)
    try:
        new = parse_policy(text, name)
    except PolicyError as exc:
        return _simulate_error(request, "the policy is not valid:\n" + str(exc), since)
    start = None
    if since:
        try:
            start = datetime.combine(date.fromisoformat(since), time(0), UTC)
        except ValueError:
            return _simulate_error(request, f"{since!r} is not a date (YYYY-MM-DD)", since)
    client = await get_client(request)
    book: PinnedPolicies = request.app.state.console_policies
    async with temporal_call("read the cases"):
        past = await cases_for_simulation(client, request.app.state.settings.REFUND_POLICY_FILE,
                                          start, task_queue=request.app.state.task_queue,
                                          pinned=book)
    sim = simulate(past.cases, new, sample=SAMPLE) if past.cases else None
    return web.page(request, "simulate.html", {
        "sim": sim, "past": past, "since": since, "policy_name": name, "ran": True})


def _simulate_error(request: Request, message: str, since: str) -> Response:
    flash(request, "error", message)
    return web.page(request, "simulate.html", {"sim": None, "since": since, "policy_name": "",
                                               "ran": False}, status_code=422)
