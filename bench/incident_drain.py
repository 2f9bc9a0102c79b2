"""A billing incident drained against a Stripe stand-in that enforces Stripe's rate limit,
while ordinary refund requests keep arriving. Real components: a Temporal dev server,
the real worker (`python worker.py`, its Stripe queue limited to
STRIPE_MAX_REQUESTS_PER_SECOND), localstripe behind tests/stripe_rate_limit_proxy (429
`rate_limit` above N requests/s; a token bucket as Stripe's, or `--limiter window`),
emails to an outbox folder.

    .venv/bin/python bench/incident_drain.py --charges 2000 [--rate 25] [--ordinary 2]

Prints up front the counts it uses and the expected drain time (the Stripe requests the
drain should make, divided by the rate). At the end, the four figures: the drain time
(approval to the incident's end) divided by the time Stripe's limit needs for the requests
made meanwhile (requests / rate: 1.0 is the limit itself, target <= 1.1); the 429s seen
(0 expected); refunds per incident charge (exactly 1 each); the p99 acknowledgment time of
the ordinary requests sent during the drain (SLA 30 s). `--trace` adds where the time
went: requests per second, requests by Stripe endpoint, CPU seconds of each process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import stripe
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from activities.stripe_models import STRIPE_RATE_SHARE  # noqa: E402
from core import binaries, search_attributes  # noqa: E402
from core.case_client import CaseClient  # noqa: E402
from core.codec import codec_from_settings, data_converter  # noqa: E402
from core.config import get_settings  # noqa: E402
from core.contract import (  # noqa: E402
    CaseState,
    IncidentReport,
    IncidentRequest,
    IncidentUpdate,
    LeadAction,
    RefundReason,
    RefundRequest,
)
from core.incident_client import IncidentClient  # noqa: E402
from stack import dev_server  # noqa: E402
from stack.net import free_port, wait_for_port  # noqa: E402
from stack.stripe_seed import seed_charge  # noqa: E402
from tests.stripe_rate_limit_proxy import SeenCall, StripeRateLimitProxy  # noqa: E402

API_KEY = "sk_test_incident_bench"
ACK_SLA_SECONDS = 30.0  # the default policy's acknowledgment SLA
# Stripe requests the drain makes per incident charge: the look-up again (1), the case's
# facts (3: the charge, the customer's charges, its refunds) and its refund (3: the
# charge, its refunds, the refund). An ordinary request (a new customer's change of mind,
# 49.00 USD: the policy approves it at once) gathers facts and refunds too: 6. At 2 a
# second they take half of Stripe's 25/s, and the incident drains in what is left.
REQUESTS_PER_CHARGE = 7
REQUESTS_PER_ORDINARY = 6


def seed(upstream: str, n: int, prefix: str) -> list[str]:
    """n paid charges, one customer each, made straight in localstripe (not throttled)."""
    def one(i: int) -> str:
        return seed_charge(upstream, API_KEY, email=f"{prefix}{i}@example.com",
                           amount=4900, currency="usd").charge_id
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(n)))


def refunds_per_charge(upstream: str, charges: list[str]) -> Counter[int]:
    client = stripe.StripeClient(API_KEY, base_addresses={"api": upstream},
                                 max_network_retries=0).v1

    def count(charge: str) -> int:
        return len(client.refunds.list({"charge": charge, "limit": 10}).data)
    with ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(count, charges))


def start_workers(address: str, proxy_url: str, rate: float, outbox: Path, logs: Path,
                  queues: list[str]) -> list[subprocess.Popen[bytes]]:
    """`python worker.py` once per entry of `queues` (WORKER_QUEUES: all, cases, stripe)."""
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "STRIPE_API_BASE": proxy_url,
           "STRIPE_API_KEY": API_KEY, "STRIPE_MAX_REQUESTS_PER_SECOND": str(rate),
           "OUTBOX_DIR": str(outbox), "PYTHONPATH": str(ROOT)}
    env.pop("SENDGRID_API_KEY", None)
    workers = []
    for queues_of_one in queues:
        with (logs / f"worker-{queues_of_one}.log").open("wb") as out:
            workers.append(subprocess.Popen(
                [sys.executable, "worker.py"], cwd=ROOT, stdout=out, stderr=out,
                env={**env, "WORKER_QUEUES": queues_of_one}))
    return workers


async def send_ordinary(cases: CaseClient, charges: list[str], per_second: float,
                        stop: asyncio.Event, sent: list[str]) -> None:
    """Ordinary refund requests at a steady pace until `stop` (or the charges run out)."""
    started = time.monotonic()
    for i, charge in enumerate(charges):
        if stop.is_set():
            return
        request = RefundRequest(request_id=f"ord-{uuid.uuid4().hex[:10]}",
                                customer_email=f"ord{i}@example.com", charge_id=charge,
                                reason=RefundReason.change_of_mind)
        await cases.start(request)
        sent.append(request.case_id)
        pause = started + (i + 1) / per_second - time.monotonic()
        with contextlib.suppress(TimeoutError):  # the pace, unless stopped
            await asyncio.wait_for(stop.wait(), max(0.0, pause))


async def ack_seconds(client: Client, case_id: str) -> float | None:
    """From the start of the case to its acknowledgment email."""
    handle = client.get_workflow_handle(case_id)
    started = (await handle.describe()).start_time
    state: CaseState = await handle.query("state", result_type=CaseState)
    sent = [t.at for t in state.timeline if t.kind == "email_sent"
            and t.data.get("template") == "acknowledgment"]
    return (sent[0] - started).total_seconds() if sent else None


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- where the time goes (--trace) ------------------------------------------------------


def cpu_seconds_of_children() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and its child processes."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    out = {"bench (this process)": sum(os.times()[:2])}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != me:
                continue
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            name = ("workers" if "worker.py" in cmd else "localstripe" if "localstripe" in cmd
                    else "temporal server" if "temporal" in cmd else cmd[:40])
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def endpoint(call: SeenCall) -> str:
    """`GET /v1/charges/ch_123/refunds` -> `GET /v1/charges/{id}/refunds`, no query."""
    path = re.sub(r"/(ch|cus|re|pi|in|dp|py)_[A-Za-z0-9]+", "/{id}", call.path.split("?")[0])
    return f"{call.method} {path}"


def print_trace(proxy: StripeRateLimitProxy, cpu_before: dict[str, float], drain: float
                ) -> None:
    print(f"  requests forwarded per second: {proxy.per_second()}")
    calls = proxy.log()
    for name, count in Counter(endpoint(c) for c in calls if c.status != 429).most_common():
        print(f"  {count:6d}  {name}")
    cpu_after = cpu_seconds_of_children()
    for name, seconds in sorted(cpu_after.items()):
        used = seconds - cpu_before.get(name, 0.0)
        print(f"  CPU {name}: {used:.1f} s ({100 * used / drain:.0f} % of one core)")


# --- the run ----------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    n, rate = args.charges, args.rate
    dispatch = rate * STRIPE_RATE_SHARE
    drain_requests = n * REQUESTS_PER_CHARGE
    # The ordinary cases share the queue: the incident gets what they leave.
    incident_rate = dispatch - args.ordinary * REQUESTS_PER_ORDINARY
    expected = drain_requests / incident_rate
    print(f"N = {n} incident charges; Stripe limit {rate:g} requests/s (the worker's queue "
          f"dispatches {dispatch:g}/s); ordinary requests {args.ordinary:g}/s; in flight "
          f"{args.in_flight}, batch {args.batch}; stand-in limiter: {args.limiter}; "
          f"Stripe queue worker in its own process: {args.stripe_process}")
    print(f"expected: dry run {n} requests, about {n / dispatch:.0f} s; drain about "
          f"{drain_requests} incident requests + {REQUESTS_PER_ORDINARY} per ordinary "
          f"request, about {expected:.0f} s ({expected / 60:.1f} min) at the limit; "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
          flush=True)

    work = Path(tempfile.mkdtemp(prefix="incident-bench-"))
    ls_port = free_port()
    localstripe = subprocess.Popen(
        [*binaries.localstripe_command(ls_port, work / "localstripe.pickle"), "--from-scratch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(ls_port, timeout=30)
    upstream = f"http://127.0.0.1:{ls_port}"
    proxy = StripeRateLimitProxy(upstream, rate, limiter=args.limiter,
                                 log_requests=args.trace).start()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binaries.temporal_cli(),
        dev_server_startup_timeout=binaries.SERVER_STARTUP,
        search_attributes=search_attributes.ALL,
        # as the worker: payloads encrypted with the configured (development) key
        data_converter=data_converter(codec_from_settings(get_settings())),
        dev_server_extra_args=[
            *dev_server.KEEP_SEARCH_ATTRIBUTE_CACHE,  # as `make run` keeps it
            # as in production: the Stripe queue in one partition
            "--dynamic-config-value", f"matching.numTaskqueueReadPartitions={args.partitions}",
            "--dynamic-config-value", f"matching.numTaskqueueWritePartitions={args.partitions}"])
    address = env.client.service_client.config.target_host
    workers = start_workers(address, proxy.url, rate, work / "outbox", work,
                            ["cases", "stripe"] if args.stripe_process else ["all"])
    try:
        t = time.monotonic()
        charges = await asyncio.to_thread(seed, upstream, n, "inc")
        ordinary_charges = await asyncio.to_thread(
            seed, upstream, int(expected * args.ordinary * 1.5) + 20, "ord")
        print(f"seeded {len(charges)} incident charges and {len(ordinary_charges)} ordinary "
              f"ones in {time.monotonic() - t:.0f} s", flush=True)
        incidents = IncidentClient(env.client)
        request = IncidentRequest(
            incident_id=f"bench-{uuid.uuid4().hex[:6]}", opened_by="carol",
            root_cause="bench: a pricing job charged every customer twice",
            explanation={"en": "A pricing error charged you twice."}, charges=charges,
            in_flight=args.in_flight, batch=args.batch)
        proxy.reset()
        t = time.monotonic()
        await incidents.start(request)
        while (await incidents.progress(request.incident_id)).phase == "dry_run":
            await asyncio.sleep(1)
        dry = time.monotonic() - t
        stats = proxy.stats()
        print(f"dry run: {n} look-ups in {dry:.1f} s ({stats.forwarded} requests, "
              f"{stats.forwarded / dry:.1f}/s, {stats.rate_limited} 429s)", flush=True)

        proxy.reset()
        cpu_before = cpu_seconds_of_children()
        load_before = os.getloadavg()[0]
        stop, sent = asyncio.Event(), list[str]()
        sender = asyncio.create_task(send_ordinary(CaseClient(env.client), ordinary_charges,
                                                   args.ordinary, stop, sent))
        handle = env.client.get_workflow_handle(request.workflow_id,
                                                result_type=IncidentReport)
        t0 = time.monotonic()
        await incidents.act(request.incident_id, IncidentUpdate.approve,
                            LeadAction(lead="dave"))
        # The incident's end is its result; progress is asked now and then only (a query
        # is a workflow task on the worker, and replays the run when it is not cached).
        result = asyncio.create_task(handle.result())
        while not result.done():
            await asyncio.wait([result], timeout=args.progress_every)
            if not result.done():
                asked = time.monotonic()
                progress = await incidents.progress(request.incident_id)
                print(f"  {time.monotonic() - t0:5.0f} s: done {progress.done} of {n}, in "
                      f"flight {progress.in_flight}, {proxy.stats().forwarded} requests, "
                      f"{proxy.stats().rate_limited} 429s (progress query answered in "
                      f"{time.monotonic() - asked:.2f} s)", flush=True)
        report = result.result()
        drain = time.monotonic() - t0
        stop.set()
        await sender
        stats = proxy.stats()
        load_after = os.getloadavg()[0]
        if args.trace:
            print("where the time went:")
            print_trace(proxy, cpu_before, drain)
        gate = asyncio.Semaphore(16)  # thousands of cases after a 2,000-charge run

        async def ack(case_id: str) -> float | None:
            async with gate:
                return await ack_seconds(env.client, case_id)
        acks = [a for a in await asyncio.gather(*(ack(c) for c in sent)) if a is not None]
        per_charge = await asyncio.to_thread(refunds_per_charge, upstream, charges)
        c = report.counts
        ideal = stats.forwarded / rate
        print(f"incident {report.phase}: refunded {c.refunded}, to agents {c.to_agent}, "
              f"failed {c.failed}, skipped {c.skipped}; {report.runs} workflow runs; "
              f"{len(sent)} ordinary requests sent during the drain; load average "
              f"{load_before:.1f} at approval, {load_after:.1f} at the end")
        print(f"drain time {drain:.1f} s; Stripe requests during the drain "
              f"{stats.forwarded} (incident and ordinary cases), needing "
              f"{ideal:.1f} s at {rate:g}/s")
        print("RESULTS")
        print(f"  1. drain time / (Stripe requests / {rate:g}) = {drain / ideal:.3f} "
              "(target <= 1.1)")
        print(f"  2. 429s seen during the drain: {stats.rate_limited} (0 expected; "
              f"peak {proxy.peak_per_second()} requests forwarded in one second)")
        print(f"  3. refunds per incident charge: {dict(sorted(per_charge.items()))} "
              f"(exactly 1 each expected: {{1: {n}}})")
        if acks:
            print(f"  4. ordinary acknowledgment p99 {p(acks, 0.99):.2f} s (SLA "
                  f"{ACK_SLA_SECONDS:g} s; p50 {p(acks, 0.5):.2f} s, max {max(acks):.2f} s, "
                  f"{len(acks)} of {len(sent)} acknowledged, sent at {args.ordinary:g}/s)")
        else:
            print(f"  4. no ordinary request was acknowledged ({len(sent)} sent)")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        await env.shutdown()
        proxy.stop()
        localstripe.terminate()
        localstripe.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charges", type=int, default=300, help="incident charges (N)")
    parser.add_argument("--rate", type=float, default=25.0, help="Stripe requests/s")
    parser.add_argument("--ordinary", type=float, default=2.0, help="ordinary requests/s")
    parser.add_argument("--in-flight", type=int, default=300, help="cases refunding at once")
    parser.add_argument("--batch", type=int, default=20,
                        help="charges looked up and started at once")
    parser.add_argument("--stripe-process", action=argparse.BooleanOptionalAction,
                        default=True, help="the Stripe queue's worker in a process of its "
                        "own (WORKER_QUEUES=stripe), the cases' in another")
    parser.add_argument("--partitions", type=int, default=1, help="task-queue partitions")
    parser.add_argument("--limiter", choices=["bucket", "window"], default="bucket",
                        help="the stand-in's limiter (bucket: Stripe's algorithm)")
    parser.add_argument("--progress-every", type=float, default=30.0,
                        help="seconds between progress lines (queries) during the drain")
    parser.add_argument("--trace", action="store_true",
                        help="also print requests per second and by endpoint, and CPU")
    args = parser.parse_args()
    asyncio.run(run(args))
    sys.stdout.flush()
    os._exit(0)  # the Temporal client's threads can abort at exit (sdk-python issue 300)


if __name__ == "__main__":
    main()
