"""Worker memory with many parked cases: the RefundCase worker's RSS when idle, then after
parking N cases that wait for an agent, against a bare worker parking bare workflows, on
one dev server (SQLite file, as `make run` runs it).

    .venv/bin/python bench/worker_memory.py [--cases 1200] [--bare-cases 600]
        [--max-cached-workflows N] [--max-concurrent-activities N]

The defaults fit in about five minutes on a 2-core machine and park more cases than the
SDK's default cache holds; the 10,000 of the target take `--cases 10000 --bare-cases 0`
(about 25 minutes at 7 parked per second).

A parked case: change_of_mind for a 500.00 USD charge, above the default policy's automatic
limit, so it waits for an agent (RefundStatus awaiting_agent) after its policy load,
acknowledgment and Stripe look-up (all real: localstripe, outbox emails). The bare worker
parks bare_workflows.BenchBareParked (the same three activities as no-ops, then a timer).
The sticky cache holds at most --max-cached-workflows of them, so past that number RSS
should stop growing. The two options become the case worker's settings
WORKER_MAX_CACHED_WORKFLOWS and WORKER_MAX_CONCURRENT_ACTIVITIES (defaults 500 and 100;
the bare worker takes the SDK's, 1000 and 100); the values in effect are printed. Each
worker runs in a child process; RSS is VmRSS from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bare_workflows
import bench_stack
from bench_stack import BenchStack, Child

from core.contract import TASK_QUEUE
from core.models import CaseStatus
from stack.stripe_seed import SeededCharge

BARE_QUEUE = "bench-bare-parked"
AGENT_AMOUNT = 50_000  # above the automatic limit (20000 USD cents): an agent decides


@dataclass
class Parked:
    label: str
    cases: int
    warmup: int
    idle: float  # MiB, worker built and polling, no workflow yet
    warm: float  # after the warm-up cases
    final: float  # after parking `cases` more, once the worker is idle
    peak: float
    seconds: float
    tunables: dict[str, int]
    curve: list[tuple[int, float]] = field(default_factory=list)  # (parked, RSS MiB)


def _rss_curve(worker: Child, curve: list[tuple[int, float]], offset: int, total: int,
               points: int = 10):
    """An on_poll that adds (parked, RSS) to `curve` (which starts with the warm point)
    at every 1/points of the way."""
    show = bench_stack.progress("parked", total, offset)

    def on_poll(count: int) -> None:
        show(count)
        parked = max(0, count - offset)
        last = curve[-1][0]
        if parked != last and (parked >= last + total / points or parked >= total):
            curve.append((parked, worker.rss()))
    return on_poll


async def _park(stack: BenchStack, kind: str, n: int, warmup: int, charge: SeededCharge | None,
                tunables: dict[str, int | None]) -> Parked:
    run = uuid.uuid4().hex[:6]
    is_case = kind == "case"
    workflow = bench_stack.CASE_WORKFLOW if is_case else bare_workflows.BARE_PARKED
    queue = TASK_QUEUE if is_case else BARE_QUEUE
    query = (f"WorkflowType = '{workflow}' AND "
             f"RefundStatus = '{CaseStatus.awaiting_agent.value}'")
    requests = [bench_stack.request_for(f"park-{kind}-{run}-{i}", charge)
                for i in range(warmup + n)]
    worker = await stack.start_worker(kind, queue, **tunables)
    try:
        await asyncio.sleep(1)
        idle = worker.rss()
        await bench_stack.start_all(stack.client, workflow, requests[:warmup], queue)
        await bench_stack.wait_count(stack.client, query, warmup, timeout=120, alive=[worker])
        await bench_stack.wait_idle([worker])
        warm = worker.rss()
        curve: list[tuple[int, float]] = [(0, warm)]
        began = time.monotonic()
        starting = asyncio.create_task(
            bench_stack.start_all(stack.client, workflow, requests[warmup:], queue))
        parked = await bench_stack.wait_count(
            stack.client, query, warmup + n, timeout=max(600, n), alive=[worker],
            interval=1.0, on_poll=_rss_curve(worker, curve, warmup, n))
        await starting
        await bench_stack.wait_idle([worker])
        seconds = time.monotonic() - began
        final = worker.rss()
        peak = max([final, *(rss for _, rss in curve)])
    finally:
        worker.stop()
    if parked < warmup + n:
        raise RuntimeError(f"only {parked - warmup} of {n} {workflow} parked in time")
    label = workflow if is_case else f"bare ({workflow})"
    in_effect = {k: v for k, v in worker.info.items() if k != "ready"}
    return Parked(label, n, warmup, idle, warm, final, peak, seconds, in_effect, curve)


def _report(results: list[Parked]) -> None:
    print("worker memory: RSS of the worker process (MiB), parked workflows wait on a timer")
    print(f"  {'':<26}{'parked':>8}{'idle':>8}{'warm':>8}{'parked':>8}{'growth':>8}"
          f"{'peak':>8}{'KiB/cached':>11}{'s':>6}  cache / activity slots")
    per_cached = []
    for r in results:
        # The cache holds at most max_cached_workflows (warm-up cases included).
        cached = min(r.cases + r.warmup, int(r.tunables.get("max_cached_workflows") or 0)
                     or r.cases + r.warmup)
        per = (r.final - r.idle) * 1024 / cached
        per_cached.append(per)
        slots = (f"{r.tunables.get('max_cached_workflows')} / "
                 f"{r.tunables.get('max_concurrent_activities')}")
        print(f"  {r.label:<26}{r.cases:>8}{r.idle:>8.1f}{r.warm:>8.1f}{r.final:>8.1f}"
              f"{r.final - r.idle:>8.1f}{r.peak:>8.1f}{per:>11.0f}{r.seconds:>6.0f}  {slots}")
    for r in results:
        points = "  ".join(f"{n}:{rss:.0f}" for n, rss in r.curve)
        print(f"  {r.label} RSS along the way (parked:MiB): {points}")
    if len(results) == 2 and per_cached[1] > 0:
        print(f"growth per cached workflow, RefundCase / bare: "
              f"{per_cached[0] / per_cached[1]:.2f}")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1200, help="RefundCase cases to park")
    parser.add_argument("--bare-cases", type=int, default=600,
                        help="bare workflows to park (0: skip the bare worker)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--max-cached-workflows", type=int, help="sticky cache size")
    parser.add_argument("--max-concurrent-activities", type=int, help="activity slots")
    args = parser.parse_args(argv)
    tunables = {"max_cached_workflows": args.max_cached_workflows,
                "max_concurrent_activities": args.max_concurrent_activities}

    results: list[Parked] = []
    async with BenchStack() as stack:
        # One charge serves every parked case: nothing is refunded while they wait.
        charge = (await asyncio.to_thread(stack.seed_charges, 1, AGENT_AMOUNT))[0]
        results.append(await _park(stack, "case", args.cases, args.warmup, charge, tunables))
        if args.bare_cases:
            results.append(await _park(stack, "bare", args.bare_cases, args.warmup, None,
                                       tunables))
    _report(results)
    return 0


if __name__ == "__main__":
    bench_stack.run_main(main)
