"""`make run` / `python starter.py dev`: bring up the whole local stack on its embedded
defaults and supervise it until Ctrl-C.

Started in order, each waited for before the next: the Temporal dev server (UI on
TEMPORAL_UI_PORT, state in DATA_DIR/temporal.db so cases survive a restart, our search
attributes registered), localstripe (state in DATA_DIR/localstripe.pickle), the cases'
worker (until it polls `refund-cases`), the Stripe queue's worker in a process of its own
(until it polls `refund-cases-stripe`), the HTTP API (until /healthz answers 200).

If any child dies, the supervisor stops all the others and exits non-zero with a message
naming the child and the end of its log. It does not restart it: on a developer machine a
crash is a bug to see, not to hide behind a restart loop (docker-compose restarts in
production).

Ctrl-C (SIGINT, SIGTERM, SIGHUP) stops every child in turn, the last started first. The
signal handler only records the request, which the supervisor acts on between steps, so a
second or third Ctrl-C can never interrupt a stop half-way and leave a child (the Temporal
dev server holding its ports) behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from activities.stripe_models import stripe_task_queue
from core import binaries
from core.config import ROOT, ConfigError, Settings, load_settings
from core.contract import TASK_QUEUE
from stack import dev_server
from stack.net import port_open

STOP_GRACE_SECONDS = 10
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StackError(RuntimeError):
    """The stack could not start; the message says which part and why."""


class StopRequested(Exception):
    """A stop signal arrived: raised by the supervisor at a safe point, never from the
    signal handler itself."""


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            # A session of its own: Ctrl-C reaches only the supervisor, which then stops
            # every child in order instead of leaving them to race.
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env}, start_new_session=True,
            )

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        """SIGTERM to the child's whole process group, SIGKILL after the grace period."""
        if self.proc is None or self.proc.poll() is not None:
            return
        _signal_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _say(fd: int, line: str) -> None:
    """Write from a signal handler: unbuffered, and never raising into the main code."""
    with contextlib.suppress(OSError):
        os.write(fd, (line + "\n").encode())


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group has just exited
        os.killpg(pgid, signum)


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.stop_signal: int | None = None  # set by the signal handler, nothing else
        self._told_busy = False
        self.data = settings.DATA_DIR
        self.logs = self.data / "logs"
        self.children: list[Child] = []
        self.temporal_address = f"127.0.0.1:{settings.TEMPORAL_PORT}"
        self.stripe_base = f"http://127.0.0.1:{settings.LOCALSTRIPE_PORT}"

    # -- what runs --------------------------------------------------------------------

    def _app_env(self) -> dict[str, str]:
        """The worker and API talk to the local servers this stack started."""
        return {
            "TEMPORAL_ADDRESS": self.temporal_address,
            "STRIPE_API_BASE": self.stripe_base,
            "OUTBOX_DIR": str(self.s.OUTBOX_DIR),
            "PYTHONUNBUFFERED": "1",
        }

    def _temporal(self) -> Child:
        argv = dev_server.argv(port=self.s.TEMPORAL_PORT, ui_port=self.s.TEMPORAL_UI_PORT,
                               db_file=self.data / "temporal.db",
                               namespace=self.s.TEMPORAL_NAMESPACE)
        return Child("temporal", argv, self.logs / "temporal.log")

    def _localstripe(self) -> Child:
        argv = binaries.localstripe_command(
            self.s.LOCALSTRIPE_PORT, self.data / "localstripe.pickle"
        )
        return Child("localstripe", argv, self.logs / "localstripe.log")

    def _worker(self) -> Child:
        """The cases' worker (workflows and every activity but Stripe's)."""
        return Child("worker", [sys.executable, "worker.py"], self.logs / "worker.log",
                     {**self._app_env(), "WORKER_QUEUES": "cases"})

    def _stripe_worker(self) -> Child:
        """The Stripe queue's worker, in a process of its own: its requests go out when
        Temporal dispatches them, however busy the cases' worker is."""
        return Child("stripe-worker", [sys.executable, "worker.py"],
                     self.logs / "stripe-worker.log",
                     {**self._app_env(), "WORKER_QUEUES": "stripe"})

    def _api(self) -> Child:
        # No uvicorn access log: it writes query strings, and the SendGrid webhook URLs
        # carry their secret in one. The app logs every request itself, without them.
        argv = [sys.executable, "-m", "uvicorn", "api.app:app",
                "--host", self.s.API_HOST, "--port", str(self.s.API_PORT), "--no-access-log"]
        return Child("api", argv, self.logs / "api.log", self._app_env())

    # -- lifecycle --------------------------------------------------------------------

    def check_ports(self) -> None:
        busy = [
            f"{name} port {port} is already in use (another `make run`? set {var})"
            for name, port, var in [
                ("Temporal", self.s.TEMPORAL_PORT, "TEMPORAL_PORT"),
                ("Temporal UI", self.s.TEMPORAL_UI_PORT, "TEMPORAL_UI_PORT"),
                ("localstripe", self.s.LOCALSTRIPE_PORT, "LOCALSTRIPE_PORT"),
                ("API", self.s.API_PORT, "API_PORT"),
            ]
            if port_open(port)
        ]
        if busy:
            raise StackError("; ".join(busy))

    def start(self) -> None:
        self.check_ports()
        self.data.mkdir(parents=True, exist_ok=True)

        temporal = self._launch(self._temporal())
        self._wait(temporal, lambda: port_open(self.s.TEMPORAL_PORT), 60, "gRPC port")
        self._wait(temporal, lambda: _http_ok(self._ui_url()), 60, "Web UI")

        stripe = self._launch(self._localstripe())
        self._wait(stripe, lambda: port_open(self.s.LOCALSTRIPE_PORT), 30, "port")

        worker = self._launch(self._worker())
        self._wait(worker, lambda: self._polled(TASK_QUEUE, "workflow"), 60,
                   f"a poller on {TASK_QUEUE}")
        stripe_queue = stripe_task_queue(TASK_QUEUE)
        stripe_worker = self._launch(self._stripe_worker())
        self._wait(stripe_worker, lambda: self._polled(stripe_queue, "activity"), 60,
                   f"a poller on {stripe_queue}")

        api = self._launch(self._api())
        self._wait(api, lambda: _http_ok(self._api_url() + "/healthz"), 60, "/healthz")

    def _launch(self, child: Child) -> Child:
        self._check_stop()
        self.children.append(child)
        child.start()
        return child

    def _check_stop(self) -> None:
        if self.stop_signal is not None:
            raise StopRequested

    def request_stop(self, signum: int) -> None:
        """The signal handler: record the first request and say so, once; say once that
        later ones change nothing. Written with os.write: print could re-enter a write
        the main code is in the middle of."""
        if self.stop_signal is None:
            self.stop_signal = signum
            _say(1, "\nStopping Refund Desk...")
        elif not self._told_busy:
            self._told_busy = True
            _say(2, f"Still stopping Refund Desk: each process is stopped in turn (up to "
                    f"{STOP_GRACE_SECONDS} s each), please wait.")

    def _wait(self, child: Child, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._check_stop()
            code = child.exited()
            if code is not None:
                raise StackError(
                    f"{child.name} exited with code {code} while starting; "
                    f"end of {child.log}:\n{child.tail()}"
                )
            if time.monotonic() > deadline:
                raise StackError(f"{child.name}: no {what} after {timeout:.0f}s; see {child.log}")
            time.sleep(0.25)

    def _polled(self, task_queue: str, kind: str) -> bool:
        """True once `task_queue` has a poller of `kind` (workflow, activity), asked
        through the CLI so that the supervisor needs no event loop."""
        out = subprocess.run(
            [binaries.temporal_cli(), "task-queue", "describe", "--task-queue", task_queue,
             "--task-queue-type", kind,
             "--address", self.temporal_address, "--namespace", self.s.TEMPORAL_NAMESPACE,
             "--output", "json"],
            capture_output=True, text=True, timeout=10, check=False,
        )
        if out.returncode != 0:
            return False
        try:
            return bool(json.loads(out.stdout).get("pollers"))
        except ValueError:
            return False

    def watch(self) -> str:
        """Block until a child dies (return a message naming it) or a stop is requested
        (raise StopRequested)."""
        while True:
            self._check_stop()
            for child in self.children:
                code = child.exited()
                if code is not None:
                    return (f"{child.name} exited with code {code}; stopping the stack. "
                            f"End of {child.log}:\n{child.tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop every child, the last started first; one that fails to stop does not keep
        the others running."""
        for child in reversed(self.children):
            try:
                child.stop()
            except OSError as exc:
                print(f"could not stop {child.name}: {exc}", file=sys.stderr, flush=True)

    def _ui_url(self) -> str:
        return f"http://127.0.0.1:{self.s.TEMPORAL_UI_PORT}"

    def _api_url(self) -> str:
        host = "127.0.0.1" if self.s.API_HOST in ("0.0.0.0", "::") else self.s.API_HOST
        return f"http://{host}:{self.s.API_PORT}"

    def banner(self) -> str:
        return "\n".join([
            "Refund Desk is up.",
            f"  Temporal UI    {self._ui_url()}/namespaces/{self.s.TEMPORAL_NAMESPACE}/workflows",
            f"  Temporal gRPC  {self.temporal_address}",
            f"  API            {self._api_url()}  (docs: {self._api_url()}/docs)",
            f"  Agent console  {self._api_url()}/console  (sign in with a token of "
            "AGENT_TOKENS; in development: dev-alice, dev-bob, dev-carol)",
            f"  Stripe (local) {self.stripe_base}",
            f"  Outbox         {self.s.OUTBOX_DIR}",
            f"  Logs           {self.logs}",
            "Try: python starter.py demo    Stop: Ctrl-C",
        ])


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="starter.py dev", description=__doc__).parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    stack = Stack(settings)

    # Installed explicitly: a shell without job control starts background jobs with SIGINT
    # ignored. The handler raises nothing (see the module docstring).
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda signum, _frame: stack.request_stop(signum))
    started = time.monotonic()
    try:
        stack.start()
        print(stack.banner() + f"\n(ready in {time.monotonic() - started:.1f}s)", flush=True)
        message = stack.watch()
        print(message, file=sys.stderr, flush=True)
        return 1
    except StackError as exc:
        print(f"Refund Desk did not start: {exc}", file=sys.stderr, flush=True)
        return 1
    except StopRequested:  # the handler has said "Stopping"
        return 0
    finally:
        stack.stop()
        # Nothing is left to stop: a late Ctrl-C must not turn a clean exit into 130.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        print("Stopped.", flush=True)
