"""A billing incident drained against a Stripe stand-in that enforces Stripe's rate limit,
while ordinary refund requests keep arriving. Real components: a Temporal dev server,
the real worker (`python worker.py`, its Stripe queue limited to
STRIPE_MAX_REQUESTS_PER_SECOND), localstripe behind tests/stripe_rate_proxy_for_incidents
(429 `rate_limit` above N requests/s), emails to an outbox folder.

    .venv/bin/python bench/incident_drain.py [--charges 200] [--rate 25] [--ordinary 2]

Prints N; the drain time (approval to the incident's end) divided by the time Stripe's
limit needs for the requests made meanwhile (requests / rate: 1.0 is the limit itself,
target <= 1.1); the 429s seen; refunds per incident charge (exactly 1 each); and the p50 /
p99 acknowledgment time of the ordinary requests sent during the drain (SLA 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
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

from core import binaries, search_attributes  # noqa: E402
from core.case_client import CaseClient  # noqa: E402
from core.codec import codec_from_settings, data_converter  # noqa: E402
from core.config import get_settings  # noqa: E402
from core.contract import (  # noqa: E402
    CaseState,
    IncidentRequest,
    IncidentUpdate,
    LeadAction,
    RefundReason,
    RefundRequest,
)
from core.incident_client import IncidentClient  # noqa: E402
from stack.net import free_port, wait_for_port  # noqa: E402
from stack.stripe_seed import seed_charge  # noqa: E402
from tests.stripe_rate_proxy_for_incidents import StripeRateProxy  # noqa: E402

API_KEY = "sk_test_incident_bench"
ACK_SLA_SECONDS = 30.0  # the default policy's acknowledgment SLA


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


def start_worker(address: str, proxy_url: str, rate: float, outbox: Path, log: Path
                 ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "STRIPE_API_BASE": proxy_url,
           "STRIPE_API_KEY": API_KEY, "STRIPE_MAX_REQUESTS_PER_SECOND": str(rate),
           "OUTBOX_DIR": str(outbox), "PYTHONPATH": str(ROOT)}
    env.pop("SENDGRID_API_KEY", None)
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=env,
                                stdout=out, stderr=out)


async def send_ordinary(cases: CaseClient, charges: list[str], per_second: float,
                        stop: asyncio.Event, sent: list[str]) -> None:
    """Ordinary refund requests at a steady pace until `stop`."""
    for i, charge in enumerate(charges):
        if stop.is_set():
            return
        request = RefundRequest(request_id=f"ord-{uuid.uuid4().hex[:10]}",
                                customer_email=f"ord{i}@example.com", charge_id=charge,
                                reason=RefundReason.change_of_mind)
        await cases.start(request)
        sent.append(request.case_id)
        with contextlib.suppress(TimeoutError):  # the pace, unless stopped
            await asyncio.wait_for(stop.wait(), 1 / per_second)


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


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="incident-bench-"))
    ls_port = free_port()
    localstripe = subprocess.Popen(
        [*binaries.localstripe_command(ls_port, work / "localstripe.pickle"), "--from-scratch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(ls_port, timeout=30)
    upstream = f"http://127.0.0.1:{ls_port}"
    proxy = StripeRateProxy(upstream=upstream, rate=args.rate).start()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binaries.temporal_cli(),
        search_attributes=search_attributes.ALL,
        # as the worker: payloads encrypted with the configured (development) key
        data_converter=data_converter(codec_from_settings(get_settings())),
        dev_server_extra_args=[  # as in production: the Stripe queue in one partition
            "--dynamic-config-value", f"matching.numTaskqueueReadPartitions={args.partitions}",
            "--dynamic-config-value", f"matching.numTaskqueueWritePartitions={args.partitions}"])
    address = env.client.service_client.config.target_host
    worker = start_worker(address, proxy.url, args.rate, work / "outbox", work / "worker.log")
    try:
        t = time.monotonic()
        charges = await asyncio.to_thread(seed, upstream, args.charges, "inc")
        drain_secs = args.charges * 7 / args.rate
        ordinary_charges = await asyncio.to_thread(
            seed, upstream, int(drain_secs * args.ordinary * 1.5) + 10, "ord")
        print(f"seeded {len(charges)} incident charges and {len(ordinary_charges)} ordinary "
              f"ones in {time.monotonic() - t:.0f} s")
        incidents = IncidentClient(env.client)
        request = IncidentRequest(
            incident_id=f"bench-{uuid.uuid4().hex[:6]}", opened_by="carol",
            root_cause="bench: a pricing job charged every customer twice",
            explanation={"en": "A pricing error charged you twice."}, charges=charges,
            in_flight=args.in_flight, batch=args.batch)
        proxy.reset_counts()
        t = time.monotonic()
        await incidents.start(request)
        while (await incidents.progress(request.incident_id)).phase == "dry_run":
            await asyncio.sleep(0.5)
        dry = time.monotonic() - t
        print(f"dry run: {args.charges} look-ups in {dry:.1f} s, {proxy.forwarded} requests, "
              f"{proxy.refused} 429s")
        proxy.reset_counts()
        stop, sent = asyncio.Event(), []
        sender = asyncio.create_task(send_ordinary(CaseClient(env.client), ordinary_charges,
                                                   args.ordinary, stop, sent))
        t0 = time.monotonic()
        await incidents.act(request.incident_id, IncidentUpdate.approve,
                            LeadAction(lead="dave"))
        while (progress := await incidents.progress(request.incident_id)).phase == "draining":
            await asyncio.sleep(0.5)
        drain = time.monotonic() - t0
        stop.set()
        await sender
        requests, refused = proxy.forwarded, proxy.refused
        if args.trace:
            first = min(proxy.per_second)
            print("per second:", [proxy.per_second[first + i]
                                  for i in range(max(proxy.per_second) - first + 1)])
        report = await incidents.report(request.incident_id)
        acks = [a for a in [await ack_seconds(env.client, c) for c in sent] if a is not None]
        per_charge = await asyncio.to_thread(refunds_per_charge, upstream, charges)
        c = report.counts
        print(f"N = {args.charges} charges at {args.rate:g} Stripe requests/s "
              f"(in flight {args.in_flight}, batch {args.batch}); incident {progress.phase}: "
              f"refunded {c.refunded}, to agents {c.to_agent}, failed {c.failed}, "
              f"skipped {c.skipped}; {report.runs} workflow runs")
        print(f"drain time {drain:.1f} s; Stripe requests during the drain {requests} "
              f"(incl. the ordinary cases'); requests / rate = {requests / args.rate:.1f} s")
        print(f"drain time / (requests / {args.rate:g}) = {drain / (requests / args.rate):.3f} "
              "(target <= 1.1)")
        print(f"429s seen during the drain: {refused} (0 expected); peak "
              f"{proxy.peak_per_second()} requests in one second")
        print(f"refunds per incident charge: {dict(sorted(per_charge.items()))} "
              "(exactly 1 each expected)")
        if acks:
            print(f"ordinary requests during the drain: {len(sent)} at {args.ordinary:g}/s, "
                  f"{len(acks)} acknowledged; ack p50 {p(acks, 0.5):.2f} s, p99 "
                  f"{p(acks, 0.99):.2f} s, max {max(acks):.2f} s (SLA {ACK_SLA_SECONDS:g} s)")
        else:
            print("no ordinary request was acknowledged")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        await env.shutdown()
        proxy.stop()
        localstripe.terminate()
        localstripe.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charges", type=int, default=200)
    parser.add_argument("--rate", type=float, default=25.0, help="Stripe requests/s")
    parser.add_argument("--ordinary", type=float, default=2.0, help="ordinary requests/s")
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--partitions", type=int, default=1, help="task-queue partitions")
    parser.add_argument("--trace", action="store_true", help="print requests per second")
    args = parser.parse_args()
    asyncio.run(run(args))
    sys.stdout.flush()
    os._exit(0)  # the Temporal client's threads can abort at exit (sdk-python issue 300)


if __name__ == "__main__":
    main()
