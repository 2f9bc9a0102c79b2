"""Case throughput against the bare-Temporal ceiling, on one dev server (SQLite file, as
`make run` runs it): N bare workflows that run the five activities a case runs up to its
Stripe refund as no-ops, then N RefundCase workflows on the auto-approve path with the real
activities (localstripe, emails to an outbox folder), then N bare workflows again. Prints
completions per second, the ratio RefundCase/bare (bare: the mean of its two phases, so the
case is compared on the database it ran on, which grows with every phase), history events
and bytes up to the refund, and CPU seconds per case of the Temporal server, the worker
and localstripe.

    .venv/bin/python bench/case_throughput.py [--cases 300] [--warmup 10]

A bare workflow counts when it completes; a case when its refund is created (the
completion of its `stripe_create_refund` activity). Rates come from the server's event
times: N / (last counted - first started). CPU is read from /proc between the first start
and the moment the worker is idle again, so warm-up and start-up are not in it. The worker
runs in a child process, one per phase: the case's is build_worker with its defaults, the
bare one runs on the same workflow runner (worker.WORKFLOW_RUNNER). Cases are started as
intake starts them (CaseClient.start).

All N are started at once, so a backlog forms; a workflow task that waits in the worker's
sticky queue longer than its schedule-to-start timeout times out and is retried on the
normal queue with the whole history (more CPU for both). The table counts those timeouts:
a run with many of them measured that cliff more than the case.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bare_workflows
import bench_stack
from bench_stack import BenchStack, Child, Milestones
from temporalio.api.enums.v1 import EventType

from core.contract import TASK_QUEUE
from core.models import CaseStatus, RefundReason
from stack.stripe_seed import SeededCharge

BARE_QUEUE = "bench-bare"
# change_of_mind from a new customer within 14 days, under the automatic limit: the
# default policy's money-back guarantee approves it at once (as `starter.py demo` does).
AUTO_APPROVE_AMOUNT = 4900
REACHED_REFUND = ", ".join(f"'{s}'" for s in (CaseStatus.refunding, CaseStatus.refunded,
                                               CaseStatus.completed))


@dataclass
class Phase:
    label: str
    cases: int
    rate: float  # counted per second
    events: float  # history events up to the refund, mean per case
    size: float  # serialized history bytes up to the refund, mean per case
    server_cpu: float  # CPU s per case
    worker_cpu: float
    stripe_cpu: float | None
    wall: float
    other_cpu: float  # s, by processes outside the benchmark during the window
    task_timeouts: float = 0  # workflow task timeouts to the refund, per case
    full_events: float = 0  # whole history (bare only: the case goes on)
    full_size: float = 0


async def _phase(stack: BenchStack, kind: str, n: int, warmup: int,
                 charges: list[SeededCharge]) -> Phase:
    run = uuid.uuid4().hex[:6]
    is_case = kind == "case"
    workflow = bench_stack.CASE_WORKFLOW if is_case else bare_workflows.BARE_CASE
    queue = TASK_QUEUE if is_case else BARE_QUEUE
    query = (f"WorkflowType = '{workflow}' AND RefundStatus IN ({REACHED_REFUND})" if is_case
             else f"WorkflowType = '{workflow}' AND ExecutionStatus = 'Completed'")
    requests = [
        bench_stack.request_for(f"{kind}-{run}-{i}", charges[i] if is_case else None,
                                reason=RefundReason.change_of_mind)
        for i in range(warmup + n)
    ]
    worker = await stack.start_worker(kind, queue)
    watched: list[Child] = [c for c in (stack.temporal, worker, stack.stripe) if c]
    try:
        await bench_stack.start_all(stack.client, workflow, requests[:warmup], queue)
        await bench_stack.wait_count(stack.client, query, warmup, timeout=120, alive=[worker])
        await bench_stack.wait_idle([worker])

        before = bench_stack.cpu_snapshot(watched)
        began = time.monotonic()
        await bench_stack.start_all(stack.client, workflow, requests[warmup:], queue)
        reached = await bench_stack.wait_count(
            stack.client, query, warmup + n, timeout=max(300, n), alive=[worker],
            on_poll=bench_stack.progress(f"{workflow} reached the refund" if is_case
                              else f"{workflow} completed", n, warmup))
        await bench_stack.wait_idle([worker])
        after = bench_stack.cpu_snapshot(watched)
        wall = time.monotonic() - began
        if reached < warmup + n:
            raise RuntimeError(f"only {reached - warmup} of {n} {workflow} got there in "
                               "time")
        # Read with the worker still running: a refund between retries still lands.
        stones, late = await bench_stack.settled_milestones(
            stack.client, [r.case_id for r in requests[warmup:]],
            lambda s: s.first_completion(bare_workflows.CREATE_REFUND) is not None)
    finally:
        worker.stop()
    if late:
        print(f"  note: {late} {workflow} reached the refund only after the worker went idle "
              "(an activity retried); the CPU they used afterwards is not counted",
              file=sys.stderr)
    cpu = bench_stack.cpu_used(before, after)
    return _summarise(kind, workflow, n, stones, cpu, worker.name, wall)


def _summarise(kind: str, workflow: str, n: int, stones: list[Milestones],
               cpu: dict[str, float], worker_name: str, wall: float) -> Phase:
    sizes, ends, full = [], [], []
    timeouts = 0
    for s in stones:
        refund = s.first_completion(bare_workflows.CREATE_REFUND)
        if refund is None:
            raise RuntimeError(f"a {workflow} history has no {bare_workflows.CREATE_REFUND} "
                               "completion")
        sizes.append(s.prefix_size(refund))
        timeouts += sum(1 for e in s.events if e.event_id <= refund.event_id
                        and e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT)
        if kind == "case":
            ends.append(bench_stack.event_time(refund))
        else:
            last = s.events[-1]
            if last.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                raise RuntimeError(f"a {workflow} did not complete")
            ends.append(bench_stack.event_time(last))
            full.append(s.prefix_size(last))
    span = (max(ends) - min(s.started for s in stones)).total_seconds()
    return Phase(
        label=workflow if kind == "case" else f"bare ({workflow})", cases=n, rate=n / span,
        events=sum(e for e, _ in sizes) / n, size=sum(b for _, b in sizes) / n,
        server_cpu=cpu["temporal"] / n, worker_cpu=cpu[worker_name] / n,
        stripe_cpu=cpu["localstripe"] / n if kind == "case" else None, wall=wall,
        other_cpu=cpu["other"], task_timeouts=timeouts / n,
        full_events=sum(e for e, _ in full) / n if full else 0,
        full_size=sum(b for _, b in full) / n if full else 0,
    )


def _mean(before: Phase, after: Phase) -> Phase:
    """The bare phases run before and after the case's: the server's database grows with
    each phase, and its cost per workflow with it, so their mean is what the bare
    workflow costs on the database the case ran on."""
    mean = {f.name: (getattr(before, f.name) + getattr(after, f.name)) / 2
            for f in dataclasses.fields(Phase) if f.name not in ("label", "stripe_cpu")}
    return dataclasses.replace(before, **mean)


def _table(bare: Phase, case: Phase) -> str:
    def row(name: str, b: float | None, c: float | None, fmt: str, ratio: bool = True) -> str:
        bs = format(b, fmt) if b is not None else "-"
        cs = format(c, fmt) if c is not None else "-"
        r = f"{c / b:.2f}" if ratio and b and c is not None else ""
        return f"  {name:<34}{bs:>12}{cs:>12}{r:>10}"

    lines = [
        f"  {'':<34}{'bare':>12}{'RefundCase':>12}{'ratio':>10}",
        row("completions per second", bare.rate, case.rate, ".2f"),
        row("history events to the refund", bare.events, case.events, ".1f"),
        row("history bytes to the refund", bare.size, case.size, ",.0f"),
        row("server CPU ms per case", bare.server_cpu * 1000, case.server_cpu * 1000, ".1f"),
        row("worker CPU ms per case", bare.worker_cpu * 1000, case.worker_cpu * 1000, ".1f"),
        row("localstripe CPU ms per case", None,
            case.stripe_cpu * 1000 if case.stripe_cpu is not None else None, ".1f", False),
        row("workflow task timeouts per case", bare.task_timeouts, case.task_timeouts, ".2f",
            False),
        row("wall time s (start to idle)", bare.wall, case.wall, ".1f", False),
        row("CPU s of other processes meanwhile", bare.other_cpu, case.other_cpu, ".1f",
            False),
    ]
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300, help="workflows of each kind")
    parser.add_argument("--warmup", type=int, default=10, help="of each kind, not measured")
    args = parser.parse_args(argv)

    async with BenchStack() as stack:
        print(f"seeding {args.cases + args.warmup} charges in localstripe...", file=sys.stderr)
        charges = await asyncio.to_thread(stack.seed_charges, args.cases + args.warmup,
                                          AUTO_APPROVE_AMOUNT)
        before = await _phase(stack, "bare", args.cases, args.warmup, charges)
        case = await _phase(stack, "case", args.cases, args.warmup, charges)
        after = await _phase(stack, "bare", args.cases, args.warmup, charges)
    bare = _mean(before, after)

    print(f"case throughput: {args.cases} of each (after {args.warmup} warm-up), one "
          "temporal dev server (SQLite file), workers in child processes; bare before and "
          f"after the case: {before.rate:.2f} and {after.rate:.2f} per second, the mean below")
    print(_table(bare, case))
    print(f"  bare whole history: {bare.full_events:.0f} events, {bare.full_size:,.0f} bytes")
    print(f"RefundCase/bare throughput ratio: {case.rate / bare.rate:.2f}; history bytes "
          f"ratio: {case.size / bare.size:.2f}")
    return 0


if __name__ == "__main__":
    bench_stack.run_main(main)
