"""Acknowledgment latency at a steady request rate, RefundCase against the bare floor, on one
dev server (SQLite file, as `make run` runs it).

    .venv/bin/python bench/ack_latency.py [--rate 5] [--seconds 40]

Requests are started open-loop at `--rate` per second for `--seconds`: first bare workflows
(bare_workflows.BenchBareCase: policy load, then the acknowledgment, as no-op activities),
then RefundCase on the auto-approve path with the real activities (localstripe, outbox
emails), each with its worker in a child process. A request's acknowledgment latency is
read from its history: from WorkflowExecutionStarted to the completion of its first
`send_email` activity (the acknowledgment). Prints p50/p90/p99/max and p99/p99_bare, and
the CPU seconds other processes of the (shared) machine used while the requests were sent.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bare_workflows
import bench_stack
from bench_stack import BenchStack
from temporalio.client import Client

from core.contract import TASK_QUEUE
from core.models import CaseStatus, RefundRequest
from stack.stripe_seed import SeededCharge

BARE_QUEUE = "bench-bare"
AUTO_APPROVE_AMOUNT = 4900  # change_of_mind, new customer: the policy approves at once
PAST_ACK = ", ".join(f"'{s}'" for s in (CaseStatus.assessing, CaseStatus.approved,
                                         CaseStatus.refunding, CaseStatus.refunded,
                                         CaseStatus.completed))


@dataclass
class Latencies:
    label: str
    values: list[float]  # seconds
    sent_rate: float
    other_cpu: float  # s, used by processes outside the benchmark while sending

    def pct(self, q: float) -> float:
        return bench_stack.percentile(self.values, q)


async def _open_loop(client: Client, workflow: str, requests: list[RefundRequest],
                     queue: str, rate: float) -> float:
    """Start one request every 1/rate s whatever the others do; the rate achieved."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    starts = []
    for i, request in enumerate(requests):
        await asyncio.sleep(max(0.0, began + i / rate - loop.time()))
        starts.append(asyncio.create_task(
            bench_stack.start_one(client, workflow, request, queue)))
    await asyncio.gather(*starts)
    elapsed = loop.time() - began
    return (len(requests) - 1) / elapsed if elapsed > 0 else float("nan")


async def _phase(stack: BenchStack, kind: str, count: int, warmup: int, rate: float,
                 charges: list[SeededCharge]) -> Latencies:
    run = uuid.uuid4().hex[:6]
    is_case = kind == "case"
    workflow = bench_stack.CASE_WORKFLOW if is_case else bare_workflows.BARE_CASE
    queue = TASK_QUEUE if is_case else BARE_QUEUE
    # Counted once past the acknowledgment (bare: completed, which comes after it).
    query = (f"WorkflowType = '{workflow}' AND RefundStatus IN ({PAST_ACK})" if is_case
             else f"WorkflowType = '{workflow}' AND ExecutionStatus = 'Completed'")
    requests = [bench_stack.request_for(f"ack-{kind}-{run}-{i}",
                                        charges[i] if is_case else None)
                for i in range(warmup + count)]
    worker = await stack.start_worker(kind, queue)
    try:
        await bench_stack.start_all(stack.client, workflow, requests[:warmup], queue)
        await bench_stack.wait_count(stack.client, query, warmup, timeout=120, alive=[worker])
        await bench_stack.wait_idle([worker])
        watched = [c for c in (stack.temporal, stack.stripe, worker) if c]
        before = bench_stack.cpu_snapshot(watched)
        sent_rate = await _open_loop(stack.client, workflow, requests[warmup:], queue, rate)
        other = bench_stack.cpu_used(before, bench_stack.cpu_snapshot(watched))["other"]
        done = await bench_stack.wait_count(
            stack.client, query, warmup + count, timeout=300, alive=[worker],
            on_poll=bench_stack.progress(f"{workflow} acknowledged", count, warmup))
        if done < warmup + count:
            raise RuntimeError(f"only {done - warmup} of {count} {workflow} were "
                               "acknowledged in time")
        stones, _ = await bench_stack.settled_milestones(
            stack.client, [r.case_id for r in requests[warmup:]],
            lambda s: s.first_completion(bare_workflows.SEND_EMAIL) is not None)
    finally:
        worker.stop()
    values = []
    for s in stones:
        ack = s.first_completion(bare_workflows.SEND_EMAIL)
        assert ack is not None
        values.append((bench_stack.event_time(ack) - s.started).total_seconds())
    return Latencies(workflow if is_case else f"bare ({workflow})", values, sent_rate, other)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long to send")
    parser.add_argument("--warmup", type=int, default=5, help="of each kind, not measured")
    args = parser.parse_args(argv)
    count = max(2, round(args.rate * args.seconds))

    async with BenchStack() as stack:
        charges = await asyncio.to_thread(stack.seed_charges, count + args.warmup,
                                          AUTO_APPROVE_AMOUNT)
        bare = await _phase(stack, "bare", count, args.warmup, args.rate, charges)
        case = await _phase(stack, "case", count, args.warmup, args.rate, charges)

    print(f"acknowledgment latency: {count} requests of each at {args.rate:g}/s "
          f"({args.seconds:g} s, open loop, after {args.warmup} warm-up), one temporal dev "
          "server (SQLite file); start -> acknowledgment activity completed")
    print(f"  {'':<24}{'sent/s':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'other CPU s':>13}")
    for lat in (bare, case):
        print(f"  {lat.label:<24}{lat.sent_rate:>8.2f}{lat.pct(0.5) * 1000:>9.0f}"
              f"{lat.pct(0.9) * 1000:>9.0f}{lat.pct(0.99) * 1000:>9.0f}"
              f"{max(lat.values) * 1000:>9.0f}{lat.other_cpu:>13.1f}")
    print(f"p99 / p99_bare: {case.pct(0.99) / bare.pct(0.99):.2f}   "
          f"p50 / p50_bare: {case.pct(0.5) / bare.pct(0.5):.2f}")
    return 0


if __name__ == "__main__":
    bench_stack.run_main(main)
