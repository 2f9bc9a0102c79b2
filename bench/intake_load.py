"""Sustained intake: N signed refund-request webhooks over loopback into the real API
(uvicorn, one process) backed by a real Temporal dev server. No worker is needed: intake
only starts workflows. Prints requests/s, p50/p99 latency and the status counts.

    .venv/bin/python bench/intake_load.py [--requests 10000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api import signatures  # noqa: E402
from core import binaries, search_attributes  # noqa: E402
from stack.net import free_port  # noqa: E402

SECRET = "bench-intake-secret"


def _body(run: str, i: int) -> bytes:
    return json.dumps({
        "request_id": f"bench-{run}-{i}", "customer_email": f"c{i}@example.com",
        "charge_id": f"ch_bench{i}", "reason": "technical_issue", "amount": 4900,
        "currency": "usd", "message": "load test",
    }).encode()


def _start_api(temporal_address: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEMPORAL_ADDRESS": temporal_address,
           "INTAKE_WEBHOOK_SECRET": SECRET, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning"]
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)


async def _wait_healthy(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base) as http:
        while True:
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the API never became healthy")
            await asyncio.sleep(0.2)


async def _load(base: str, n: int, concurrency: int) -> tuple[list[float], Counter[int], float]:
    run = uuid.uuid4().hex[:8]
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    next_index = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as http:
        async def worker() -> None:
            for i in next_index:
                body = _body(run, i)
                headers = {signatures.HEADER: signatures.sign(body, SECRET),
                           "content-type": "application/json"}
                start = time.perf_counter()
                try:
                    resp = await http.post("/webhooks/refund-requests", content=body,
                                           headers=headers)
                    statuses[resp.status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1
                latencies.append(time.perf_counter() - start)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return latencies, statuses, elapsed


async def _settled_count(env: WorkflowEnvironment, expected: int, timeout: float = 30) -> int:
    """Started RefundCase workflows, once visibility has caught up (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        count = (await env.client.count_workflows("WorkflowType = 'RefundCase'")).count
        if count >= expected or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.5)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binaries.temporal_cli(),
        dev_server_startup_timeout=binaries.SERVER_STARTUP,
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
        dev_server_log_level="error",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"intake_load_api_{port}.log"
    api = _start_api(env.client.service_client.config.target_host, port, log)
    try:
        await _wait_healthy(base)
        if args.warmup:
            await _load(base, args.warmup, min(args.concurrency, args.warmup))
        latencies, statuses, elapsed = await _load(base, args.requests, args.concurrency)
        started = await _settled_count(env, args.warmup + args.requests)
    finally:
        api.terminate()
        api.wait(timeout=15)
        await env.shutdown()

    print(f"intake load: {args.requests} signed POST /webhooks/refund-requests, "
          f"concurrency {args.concurrency}, loopback, 1 uvicorn process, Temporal dev server")
    print(f"  throughput  {args.requests / elapsed:8.1f} requests/s  ({elapsed:.1f} s)")
    print(f"  latency     p50 {_pct(latencies, 0.50):.1f} ms   p90 {_pct(latencies, 0.90):.1f} ms"
          f"   p99 {_pct(latencies, 0.99):.1f} ms   max {max(latencies) * 1000:.1f} ms"
          f"   mean {statistics.fmean(latencies) * 1000:.1f} ms")
    print(f"  statuses    {dict(sorted(statuses.items()))}  (202 = case started)")
    print(f"  workflows   {started} RefundCase started on the server "
          f"(incl. {args.warmup} warm-up)")
    print(f"  API log     {log}")
    return 0 if statuses.get(202) == args.requests else 1


if __name__ == "__main__":
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalization: the SDK's runtime threads can abort it ("Fatal Python
    # error: PyGILState_Release") after the figures are printed, failing `make bench`.
    os._exit(code)
