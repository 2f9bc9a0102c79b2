"""Scale out: two worker processes and two API processes against one Temporal dev server
share 200 cases with no duplicate refund and no duplicate email.

Every refund request is delivered to both APIs at once (a billing system retrying against a
load balancer): one start wins, the other answers `duplicate`. Emails go through the real
sendgrid SDK to the local capture (no idempotency there: a second send would be seen), the
refunds to localstripe. Cases run to their end with the policy's waits cut to seconds.
SCALE_CASES changes N (the suite's default is the 200 of the issue)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import stripe
import yaml
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import WorkflowEnvironment

from core.config import ROOT
from policies.loader import DEFAULT_POLICY
from stack.net import free_port, wait_for_port
from stack.stripe_seed import SeededCharge, seed_charge
from tests.api_support import INBOUND_SECRET, INTAKE_SECRET, STRIPE_SECRET, request_body
from tests.api_support import signed_intake as sign
from tests.sendgrid_capture import SendGridCapture

pytest_plugins = ["tests.sendgrid_capture"]

N = int(os.environ.get("SCALE_CASES", "200"))
STRIPE_KEY = "sk_test_refund_desk_scale"
TOKENS = '{"tok-scale": {"agent": "ops", "role": "viewer"}}'
EXPECTED_STEPS = {"ack", "approval", "refund_completed"}


def fast_policy(path: Path) -> Path:
    data = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    data["sla"].update({"acknowledge": "120s", "follow_up_delay": "1s", "feedback_wait": "1s",
                        "refund_settle_poll": "5s"})
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class Processes:
    """Child processes with their output in files, stopped (and reaped) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.children.append((name, proc))

    def check_alive(self) -> None:
        for name, proc in self.children:
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text()[-2000:]
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, proc in self.children:
            proc.terminate()
        for _, proc in self.children:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture()
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


async def test_two_workers_and_two_apis_share_the_cases_without_duplicates(
        dev_env: WorkflowEnvironment, localstripe_url: str, sendgrid_capture: SendGridCapture,
        processes: Processes, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    base = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    env = {
        **base, "PYTHONUNBUFFERED": "1",
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": dev_env.client.namespace,
        "STRIPE_API_BASE": localstripe_url, "STRIPE_API_KEY": STRIPE_KEY,
        "SENDGRID_API_KEY": "SG.scale-test", "SENDGRID_API_HOST": sendgrid_capture.host,
        "REFUND_POLICY_FILE": str(fast_policy(tmp_path / "policy.yaml")),
        "INTAKE_WEBHOOK_SECRET": INTAKE_SECRET, "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        "SENDGRID_INBOUND_SECRET": INBOUND_SECRET, "AGENT_TOKENS": TOKENS,
    }
    worker_metrics = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    api_ports = [free_port() for _ in range(2)]
    for i, address in enumerate(worker_metrics):
        processes.start(f"worker-{i}", [sys.executable, "worker.py"],
                        {**env, "WORKER_METRICS_ADDRESS": address})
    for i, port in enumerate(api_ports):
        processes.start(f"api-{i}", [sys.executable, "-m", "uvicorn", "api.app:app",
                                     "--host", "127.0.0.1", "--port", str(port),
                                     "--no-access-log", "--log-level", "warning"], env)

    charges = await _seed(localstripe_url, run)
    for port in api_ports:
        await asyncio.to_thread(wait_for_port, port, 60)
    processes.check_alive()
    apis = [f"http://127.0.0.1:{port}" for port in api_ports]

    started = time.monotonic()
    answers = await _deliver_everything_twice(apis, charges, run)
    delivered = time.monotonic() - started
    statuses = Counter(a for pair in answers for a in pair)
    assert statuses == {"started": N, "duplicate": N}, statuses
    assert all(sorted(pair) == ["duplicate", "started"] for pair in answers)

    prefix = f"refund-scale-{run}-"
    done_query = (f"WorkflowType = 'RefundCase' AND WorkflowId STARTS_WITH '{prefix}' "
                  "AND ExecutionStatus = 'Completed'")
    deadline = time.monotonic() + 360
    while (await dev_env.client.count_workflows(done_query)).count < N:
        processes.check_alive()
        assert time.monotonic() < deadline, "cases did not all complete within 6 minutes"
        await asyncio.sleep(1)
    finished = time.monotonic() - started
    print(f"\n{N} cases: delivered twice in {delivered:.1f}s, all completed after "
          f"{finished:.1f}s")

    # Each case refunded exactly once, for its whole amount.
    refunds = _refunds_by_case(localstripe_url, prefix)
    assert set(refunds) == {f"{prefix}{i}" for i in range(N)}
    assert all(len(r) == 1 for r in refunds.values()), {k: v for k, v in refunds.items()
                                                          if len(v) != 1}
    assert {r[0] for r in refunds.values()} == {1500}

    # Each email sent once: one request per (case, step) to SendGrid.
    sent = Counter((m.body["custom_args"]["case_id"], m.body["custom_args"]["step"])
                   for m in sendgrid_capture.requests
                   if m.body.get("custom_args", {}).get("case_id", "").startswith(prefix))
    assert max(sent.values()) == 1, [k for k, v in sent.items() if v > 1][:5]
    steps: dict[str, set[str]] = {}
    for case_id, step in sent:
        steps.setdefault(case_id, set()).add(step)
    assert len(steps) == N and all(s >= EXPECTED_STEPS for s in steps.values()), \
        next(iter(steps.values()))

    # Both workers and both APIs did part of the work.
    async with httpx.AsyncClient() as http:
        worker_emails = [_sum(await _text(http, f"http://{a}/metrics"),
                              "refund_desk_emails_sent_total") for a in worker_metrics]
        api_starts = [_sum(await _text(http, f"{api}/metrics"),
                           "refund_desk_cases_opened_total") for api in apis]
    assert all(n > 0 for n in worker_emails) and sum(worker_emails) == len(sent), worker_emails
    assert all(n > 0 for n in api_starts) and sum(api_starts) == N, api_starts


async def _seed(localstripe_url: str, run: str) -> list[SeededCharge]:
    limit = asyncio.Semaphore(8)

    async def one(i: int) -> SeededCharge:
        async with limit:
            return await asyncio.to_thread(seed_charge, localstripe_url, STRIPE_KEY,
                                           email=f"scale-{run}-{i}@example.com", amount=1500,
                                           currency="usd")
    return list(await asyncio.gather(*(one(i) for i in range(N))))


async def _deliver_everything_twice(apis: list[str], charges: list[SeededCharge],
                                    run: str) -> list[tuple[str, str]]:
    limit = asyncio.Semaphore(16)

    async def post(http: httpx.AsyncClient, api: str, raw: bytes,
                   headers: dict[str, str]) -> str:
        resp = await http.post(f"{api}/webhooks/refund-requests", content=raw, headers=headers)
        assert resp.status_code in (200, 202), resp.text
        return str(resp.json()["status"])

    async def both(http: httpx.AsyncClient, i: int, charge: SeededCharge) -> tuple[str, str]:
        body = request_body(f"scale-{run}-{i}", customer_email=charge.email,
                            charge_id=charge.charge_id, reason="change_of_mind",
                            amount=1500, message="")
        raw, headers = sign(body)
        async with limit:
            first, second = await asyncio.gather(post(http, apis[0], raw, headers),
                                                 post(http, apis[1], raw, headers))
        return first, second

    async with httpx.AsyncClient(timeout=60) as http:
        return list(await asyncio.gather(*(both(http, i, c) for i, c in enumerate(charges))))


def _refunds_by_case(localstripe_url: str, prefix: str) -> dict[str, list[int]]:
    client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": localstripe_url},
                                 max_network_retries=0)
    found: dict[str, list[int]] = {}
    for refund in client.v1.refunds.list({"limit": 100}).auto_paging_iter():
        case_id = (refund.metadata.to_dict() if refund.metadata else {}).get("case_id", "")
        if case_id.startswith(prefix):
            found.setdefault(case_id, []).append(refund.amount)
    return found


async def _text(http: httpx.AsyncClient, url: str) -> str:
    resp = await http.get(url)
    assert resp.status_code == 200, url
    return resp.text


def _sum(text: str, name: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == name)
