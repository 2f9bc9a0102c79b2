"""`make run` end to end: the supervisor brings the stack up on free ports, everything is
healthy, cases and Stripe data survive a restart, and a dead worker or repeated Ctrl-C
stops the stack with no process or port left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import stripe
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from core import search_attributes
from core.client import connect
from core.config import DEV_INBOUND_SECRET, ROOT, load_settings
from core.contract import TASK_QUEUE
from stack.net import free_port, port_open
from stack.stripe_seed import seed_charge

pytestmark = pytest.mark.stack


class RunningStack:
    def __init__(self, tmp: Path, ports: dict[str, int] | None = None) -> None:
        self.ports = ports or {
            k: free_port()
            for k in ("TEMPORAL_PORT", "TEMPORAL_UI_PORT", "LOCALSTRIPE_PORT", "API_PORT")
        }
        self.env = {**os.environ, **{k: str(v) for k, v in self.ports.items()},
                    "DATA_DIR": str(tmp / "data"), "OUTBOX_DIR": str(tmp / "outbox"),
                    "TEMPORAL_ADDRESS": f"127.0.0.1:{self.ports['TEMPORAL_PORT']}"}
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 90) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "starter.py", "dev"], cwd=ROOT, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("Refund Desk is up."):
                return
            assert time.monotonic() < deadline, "".join(self.output)
        raise AssertionError("stack exited before ready:\n" + "".join(self.output))

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        assert self.proc is not None
        rest, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, "".join(self.output) + rest

    def child_pids(self, name: str) -> list[int]:
        """Processes started by the supervisor whose command line mentions `name`."""
        return [pid for pid, cmd in self.children().items() if name in cmd]

    def children(self) -> dict[int, str]:
        """The supervisor's child processes: pid -> command line."""
        assert self.proc is not None
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = _cmdline(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.proc.pid:
                found[int(entry.name)] = cmd
        return found

    def stop(self) -> None:
        """After a failed assertion: let the supervisor stop its children (they run in
        sessions of their own, so killing it first would leave the whole stack behind)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()

    def ports_closed(self) -> bool:
        return not any(port_open(p) for p in self.ports.values())

    def settings(self):
        return load_settings(TEMPORAL_ADDRESS=self.env["TEMPORAL_ADDRESS"])


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _still_running(pid: int, cmd: str) -> bool:
    """`pid` is still the process we saw (same command line) and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and _cmdline(pid) == cmd
    except (OSError, IndexError):
        return False


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read()


def _post_form(url: str, fields: dict[str, str]) -> int:
    data = urllib.parse.urlencode(fields).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _inbound_secrets_stay_out_of_the_api_log(stack: RunningStack) -> None:
    """SendGrid is told to post to /webhooks/sendgrid/inbound?secret=...: neither that
    secret nor a wrong one may reach .data/logs/api.log (uvicorn's access log would
    write the query string)."""
    base = f"http://127.0.0.1:{stack.ports['API_PORT']}/webhooks/sendgrid/inbound"
    wrong = "not-the-inbound-secret-4f1c"
    form = {"to": "support@example.com", "from": "ana@example.com", "text": "hi"}
    assert _post_form(f"{base}?secret={DEV_INBOUND_SECRET}", form) == 200
    assert _post_form(f"{base}?secret={wrong}", form) == 401
    log = Path(stack.env["DATA_DIR"]) / "logs" / "api.log"
    assert _wait_until(lambda: log.read_text().count('"/webhooks/sendgrid/inbound"') >= 2)
    text = log.read_text()
    assert DEV_INBOUND_SECRET not in text and wrong not in text
    assert "secret=" not in text


async def _check_temporal(settings) -> None:
    client = await connect(settings)
    attrs = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    for name, kind in search_attributes.indexed_types().items():
        assert attrs.custom_attributes.get(name) == kind, name
    queue = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=TASK_QUEUE),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    assert queue.pollers, "the worker does not poll refund-cases"
    # A workflow no worker serves: it stays open, so it must survive a restart.
    await client.start_workflow(
        "PersistenceProbe", id="probe-persisted", task_queue="nobody-polls-this"
    )


async def _probe_survived(settings) -> str:
    client = await connect(settings)
    desc = await client.get_workflow_handle("probe-persisted").describe()
    return desc.status.name


def _worker_queues(pid: int) -> str:
    """The WORKER_QUEUES a worker process was started with."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next(e.split(b"=", 1)[1].decode() for e in environ
                if e.startswith(b"WORKER_QUEUES="))


def _wait_until(predicate, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_stack_runs_survives_restart_and_stops_when_the_worker_dies(tmp_path):
    stack = RunningStack(tmp_path)
    stack.start()
    try:
        ui, _ = _get(f"http://127.0.0.1:{stack.ports['TEMPORAL_UI_PORT']}/")
        assert ui == 200
        status, body = _get(f"http://127.0.0.1:{stack.ports['API_PORT']}/healthz")
        assert status == 200
        assert json.loads(body)["temporal"] == "reachable"
        docs, _ = _get(f"http://127.0.0.1:{stack.ports['API_PORT']}/docs")
        assert docs == 200
        _inbound_secrets_stay_out_of_the_api_log(stack)
        asyncio.run(_check_temporal(stack.settings()))
        stripe_url = f"http://127.0.0.1:{stack.ports['LOCALSTRIPE_PORT']}"
        seeded = seed_charge(stripe_url, "sk_test_stack", email="kept@example.com",
                             amount=2500, currency="eur")

        workers = {_worker_queues(pid): pid for pid in stack.child_pids("worker.py")}
        assert set(workers) == {"cases", "stripe"}  # the Stripe queue in its own process
        os.kill(workers["cases"], signal.SIGKILL)
        code, out = stack.finish()
    finally:
        stack.stop()
    assert code == 1
    assert "worker exited with code -9; stopping the stack" in out
    assert _wait_until(stack.ports_closed), "a port is still bound after the stack stopped"

    # The second `make run` finds what the first one left in .data/.
    again = RunningStack(tmp_path, stack.ports)
    again.start()
    try:
        assert asyncio.run(_probe_survived(again.settings())) == "RUNNING"
        # localstripe's state was saved when the first stack stopped it.
        kept = stripe.StripeClient("sk_test_stack", base_addresses={"api": stripe_url},
                                   max_network_retries=0).v1.charges.retrieve(seeded.charge_id)
        assert (kept.amount, kept.currency) == (2500, "eur")
        again.proc.send_signal(signal.SIGINT)
        code, out = again.finish()
    finally:
        again.stop()
    assert code == 0, out
    assert "Stopped." in out
    assert _wait_until(again.ports_closed)
    # Temporal's file is written ahead (stack/dev_server.py), and stays so across restarts.
    with contextlib.closing(sqlite3.connect(tmp_path / "data" / "temporal.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_repeated_ctrl_c_during_shutdown_still_stops_every_child(tmp_path):
    """Ctrl-C pressed again and again while the stack stops: every child is still
    stopped (the Temporal dev server included) and every port is freed."""
    stack = RunningStack(tmp_path)
    stack.start()
    children = stack.children()
    try:
        names = " ".join(children.values())
        for part in ("temporal", "stack.localstripe_server", "worker.py", "uvicorn"):
            assert part in names, names
        deadline = time.monotonic() + 90
        while stack.proc.poll() is None and time.monotonic() < deadline:
            stack.proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
        code, out = stack.finish()
    finally:
        stack.stop()
        survivors = {pid: cmd for pid, cmd in children.items() if _still_running(pid, cmd)}
        for pid in survivors:  # never leave them behind for the next run
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    assert not survivors, f"left running: {survivors}\n{out}"
    assert code == 0, out
    assert out.count("Stopping Refund Desk...") == 1, out
    assert out.count("Still stopping Refund Desk") == 1, out
    assert "Stopped." in out.splitlines(), out
    assert _wait_until(stack.ports_closed), "a port is still bound after the stack stopped"
