"""The console's queue page with thousands of open cases: time to render its first page.

A dev server holds N open RefundCase executions on `refund-cases` (no worker: they only
need to be listed) with the search attributes and the queue card (memo) the workflow keeps
for the console, deadlines spread over six days around now. The real API (uvicorn, one
process) serves the console; a signed-in client GETs the first page of the queue, which
finds its deadline window with count queries, lists it and renders it. Repeated requests
start from the window end found last time; the last line times the visibility work in
process with that memory cleared each time (a query's first request). Prints the figures;
asserts nothing.

    .venv/bin/python bench/console_queue.py [--cases 5000] [--runs 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core import binaries  # noqa: E402
from core import search_attributes as sa  # noqa: E402
from core.config import DEV_CUSTOMER_REF_KEY  # noqa: E402
from core.contract import QUEUE_MEMO, TASK_QUEUE, WORKFLOW_TYPE, QueueCard  # noqa: E402
from core.customer_ref import customer_ref  # noqa: E402
from stack.net import free_port  # noqa: E402

REASONS = ("technical_issue", "unused", "change_of_mind", "billing_error", "not_as_described")
STATUSES = ("awaiting_agent", "awaiting_agent", "awaiting_info", "refund_failed")


async def seed(client: Client, n: int) -> None:
    rnd = random.Random(5)
    now = datetime.now(UTC)
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        status = rnd.choice(STATUSES)
        deadline = now + timedelta(seconds=rnd.randint(-2 * 86400, 4 * 86400))
        attrs: list[SearchAttributePair[Any]] = [
            SearchAttributePair(sa.STATUS, status),
            SearchAttributePair(sa.REASON, rnd.choice(REASONS)),
            SearchAttributePair(sa.CUSTOMER, customer_ref(f"customer{i}@example.com",
                                                          DEV_CUSTOMER_REF_KEY)),
            SearchAttributePair(sa.AMOUNT, rnd.randint(500, 200_000)),
            SearchAttributePair(sa.CURRENCY, "usd"),
            SearchAttributePair(sa.RISK, rnd.choice(("low", "low", "medium", "high"))),
            SearchAttributePair(sa.SLA_BREACHED, deadline < now),
            SearchAttributePair(sa.DEADLINE, deadline)]
        if i % 4 == 0:
            attrs.append(SearchAttributePair(sa.ASSIGNEE, "alice"))
        card = QueueCard(status=status, customer=f"customer{i}@example.com",
                         waiting_for="an agent's decision", deadline=deadline,
                         approvals=i % 2, approvers_required=2)
        async with gate:
            await client.start_workflow(
                WORKFLOW_TYPE, {"request_id": f"bench-{i}"}, id=f"refund-bench-{i}",
                task_queue=TASK_QUEUE, search_attributes=TypedSearchAttributes(attrs),
                memo={QUEUE_MEMO: card.model_dump(mode="json")})

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    print(f"started {n} open cases in {time.perf_counter() - started:.1f} s")
    while (await client.count_workflows(f"TaskQueue = '{TASK_QUEUE}'")).count < n:
        await asyncio.sleep(0.5)


def start_api(address: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEMPORAL_ADDRESS": address, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning"]
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)


async def signed_in(base: str) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=base, timeout=30)
    deadline = time.monotonic() + 60
    while True:
        try:
            if (await http.get("/healthz")).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the API did not come up")
        await asyncio.sleep(0.2)
    page = await http.get("/console/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    resp = await http.post("/console/sign-in", data={"token": "dev-alice",
                                                     "csrf_token": token.group(1)})
    assert resp.status_code == 303, resp.text
    return http


async def timed(http: httpx.AsyncClient, url: str, runs: int) -> list[float]:
    await http.get(url)  # warm: connection, templates, the client's channel
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        resp = await http.get(url)
        out.append((time.perf_counter() - started) * 1000)
        assert resp.status_code == 200, resp.status_code
    return out


async def cold(client: Client, runs: int) -> list[float]:
    """The page's visibility work alone (no HTTP, no template) when no window end is
    remembered: the first request for a query, or after a minute."""
    from console import queue

    out = []
    for _ in range(runs):
        queue._HINTS.clear()
        started = time.perf_counter()
        page = await queue.queue_page(client, queue.QueueFilters(), "alice", queue.Cursor(),
                                      task_queue=TASK_QUEUE)
        out.append((time.perf_counter() - started) * 1000)
        assert len(page.rows) == queue.PAGE_SIZE
    return out


def report(name: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
    print(f"{name:<44} p50 {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms   "
          f"min {ms[0]:6.1f}   max {ms[-1]:6.1f}   ({len(ms)} runs)")


async def main(args: argparse.Namespace) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binaries.temporal_cli(),
        dev_server_startup_timeout=binaries.SERVER_STARTUP,
        data_converter=pydantic_data_converter, search_attributes=sa.ALL)
    api = None
    try:
        await seed(env.client, args.cases)
        port = free_port()
        log = Path(os.environ.get("TMPDIR", "/tmp")) / "console_queue_api.log"
        api = start_api(env.client.service_client.config.target_host, port, log)
        http = await signed_in(f"http://127.0.0.1:{port}")
        first = await http.get("/console/queue")
        rows = first.text.count("<tr class=")
        print(f"first page: {rows} rows of {args.cases} open cases (soonest deadline first)")
        report("queue, first page (waiting for people)", await timed(
            http, "/console/queue", args.runs))
        report("queue, first page, status=awaiting_agent", await timed(
            http, "/console/queue?status=awaiting_agent", args.runs))
        report("queue, first page, mine", await timed(http, "/console/queue?mine=1",
                                                      args.runs))
        report("queue, rows only (the 20 s refresh)", await timed(
            http, "/console/queue?fragment=rows", args.runs))
        report("queue, customer = a whole address (hash)", await timed(
            http, "/console/queue?status=open&customer=customer7%40example.com", args.runs))
        report("queue, customer = part of an address", await timed(
            http, "/console/queue?status=open&customer=er123", args.runs))
        await http.aclose()
        report("in process, first page, no window hint", await cold(env.client, args.runs))
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=10)
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=30)
    asyncio.run(main(parser.parse_args()))
    sys.stdout.flush()
    os._exit(0)  # sdk-python issue 300: no interpreter teardown with the client's threads
