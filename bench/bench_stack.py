"""What the workflow benchmarks share: a Temporal dev server on a SQLite file, started the
way `make run` starts it (stack/supervisor.py), localstripe, workers in child processes (so
their CPU time and memory are read apart from everything else), and the readings: CPU
seconds and RSS from /proc, history events and bytes, event times.

Only the public surface is used (DESIGN.md): the workflow type "RefundCase", the task
queue, core.models.RefundRequest, core.case_client.CaseClient (as intake starts a case),
worker.build_worker.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from temporalio.api.enums.v1 import EventType  # noqa: E402
from temporalio.api.history.v1 import History, HistoryEvent  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.converter import DataConverter  # noqa: E402
from temporalio.service import RPCError  # noqa: E402

from core import binaries  # noqa: E402
from core.case_client import CaseClient  # noqa: E402
from core.codec import codec_from_settings, data_converter  # noqa: E402
from core.config import DEV_CUSTOMER_REF_KEY, load_settings  # noqa: E402
from core.models import RefundReason, RefundRequest  # noqa: E402
from stack import dev_server  # noqa: E402
from stack.net import free_port, wait_for_port  # noqa: E402
from stack.stripe_seed import SeededCharge, seed_charge  # noqa: E402

CASE_WORKFLOW = "RefundCase"
STRIPE_KEY = "sk_test_refund_desk_bench"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def stack_converter() -> DataConverter:
    """The converter `make run` uses: pydantic, with the payload codec (its compression
    and encryption), so histories have the sizes, and workers the CPU, they have there."""
    return data_converter(codec_from_settings(load_settings()))


# --- /proc readings ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # the name may hold spaces; fields follow ')'
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine has used (all cores), from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def cpu_snapshot(children: Sequence[Child]) -> dict[str, float]:
    """CPU seconds so far of each child, of this process ("client") and of the machine."""
    own = os.times()
    reading = {c.name: c.cpu() for c in children}
    reading["client"] = own.user + own.system
    reading["machine"] = machine_busy_seconds()
    return reading


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds between two snapshots; "other" is what processes outside the benchmark
    used meanwhile (the machine is shared: a large figure makes the run unreliable)."""
    used = {name: after[name] - before[name] for name in before}
    machine = used.pop("machine")
    used["other"] = max(0.0, machine - sum(used.values()))
    return used


# --- processes -----------------------------------------------------------------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> float:
        return rss_mib(self.pid)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; end of "
                               f"{self.log}:\n" + "\n".join(tail))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class BenchStack:
    """Servers in a temporary directory; `async with` starts them, stops them and removes
    the directory."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="refund-bench-")
        self.dir = Path(self._tmp.name)
        self.children: list[Child] = []
        self.temporal: Child | None = None
        self.stripe: Child | None = None
        self.address = ""
        self.stripe_base = ""
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        assert self._client is not None, "start() first"
        return self._client

    def _spawn(self, name: str, argv: Sequence[str], **kwargs: Any) -> Child:
        log = self.dir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(list(argv), cwd=ROOT, stderr=out,
                                    stdout=kwargs.pop("stdout", out), **kwargs)
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    async def start(self) -> None:
        """The dev server as supervisor.py runs it (stack/dev_server.py: SQLite file, our
        search attributes, the UI on a port of its own), and localstripe with a fresh state file."""
        port, ui_port = free_port(), free_port()
        self.address = f"127.0.0.1:{port}"
        self.temporal = self._spawn("temporal", dev_server.argv(
            port=port, ui_port=ui_port, db_file=self.dir / "temporal.db",
            namespace="default"))
        stripe_port = free_port()
        self.stripe_base = f"http://127.0.0.1:{stripe_port}"
        self.stripe = self._spawn("localstripe", [
            *binaries.localstripe_command(stripe_port, self.dir / "localstripe.pickle"),
            "--from-scratch"])
        await asyncio.to_thread(wait_for_port, stripe_port, 30)
        await asyncio.to_thread(wait_for_port, port, 60)
        deadline = time.monotonic() + 60
        while True:
            try:
                self._client = await Client.connect(self.address, namespace="default",
                                                    data_converter=stack_converter())
                await self._client.count_workflows("")
                return
            except Exception:
                self.temporal.check_alive()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    def case_settings(self) -> dict[str, Any]:
        """Settings of the RefundCase worker: these servers, emails to an outbox folder,
        the default policy (given explicitly, so a developer's .env changes nothing)."""
        return {
            "TEMPORAL_ADDRESS": self.address, "TEMPORAL_NAMESPACE": "default",
            "STRIPE_API_BASE": self.stripe_base, "STRIPE_API_KEY": STRIPE_KEY,
            "SENDGRID_API_KEY": None, "OUTBOX_DIR": str(self.dir / "outbox"),
            "REFUND_POLICY_FILE": str(ROOT / "policies" / "default.yaml"),
            # Stripe's own limit (25 requests/s in test mode) would cap cases at about 4
            # a second (6 requests each) and measure Stripe, not Temporal: the stand-in
            # has none, and the queue's limit is set far above what runs here.
            "STRIPE_MAX_REQUESTS_PER_SECOND": 10000,
        }

    async def start_worker(self, kind: str, task_queue: str, **tunables: int | None) -> Child:
        """A worker process (`case` or `bare`), returned once it has built its worker."""
        argv = [sys.executable, str(BENCH / "worker_process.py"), "--kind", kind,
                "--address", self.address, "--task-queue", task_queue]
        if kind == "case":
            argv += ["--settings", json.dumps(self.case_settings())]
        for name, value in tunables.items():
            if value is not None:
                argv += [f"--{name.replace('_', '-')}", str(value)]
        child = self._spawn(f"worker-{kind}", argv, stdout=subprocess.PIPE)
        assert child.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.proc.stdout.readline), 60)
        if not line:
            child.proc.wait(10)
            child.check_alive()
        child.info = json.loads(line)
        return child

    def seed_charges(self, count: int, amount: int, currency: str = "usd",
                     threads: int = 4) -> list[SeededCharge]:
        """`count` paid charges, each of a new customer (as stack/stripe_seed makes them)."""
        from concurrent.futures import ThreadPoolExecutor

        def one(i: int) -> SeededCharge:
            return seed_charge(self.stripe_base, STRIPE_KEY, email=f"bench{i}@example.com",
                               amount=amount, currency=currency)

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, range(count)))

    async def __aenter__(self) -> BenchStack:
        try:
            await self.start()
        except BaseException as exc:
            await self.__aexit__(type(exc))
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Stop every child; keep the directory (the servers' logs) when the run failed."""
        for child in reversed(self.children):
            child.stop()
        if exc_type is None:
            self._tmp.cleanup()
        else:
            print(f"logs kept in {self.dir}", file=sys.stderr)


# --- requests and starts -------------------------------------------------------------


def request_for(request_id: str, charge: SeededCharge | None, *,
                reason: RefundReason = RefundReason.change_of_mind) -> RefundRequest:
    """A request for `charge` (a placeholder charge id for bare workflows, which look
    nothing up)."""
    return RefundRequest(
        request_id=request_id,
        customer_email=charge.email if charge else "bare@example.com",
        charge_id=charge.charge_id if charge else "ch_bench_bare",
        reason=reason, message="benchmark",
    )


async def start_one(client: Client, workflow: str, request: RefundRequest,
                    task_queue: str) -> None:
    """A case is started as intake starts it (CaseClient.start: its search attributes,
    the customer's reference and the queue's first card), a bare workflow with nothing but
    its input. Both by type name: the benchmark imports no workflow class."""
    if workflow == CASE_WORKFLOW:
        cases = CaseClient(client, task_queue=task_queue,
                           customer_ref_key=DEV_CUSTOMER_REF_KEY)
        started = await cases.start(request)
        if not started.started:
            raise RuntimeError(f"{request.case_id} was started before")
        return
    await client.start_workflow(workflow, request, id=request.case_id, task_queue=task_queue)


async def start_all(client: Client, workflow: str, requests: Iterable[RefundRequest],
                    task_queue: str, concurrency: int = 32) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(request: RefundRequest) -> None:
        async with gate:
            await start_one(client, workflow, request, task_queue)

    await asyncio.gather(*(one(r) for r in requests))


def progress(label: str, total: int, offset: int = 0) -> Callable[[int], None]:
    """An on_poll for wait_count: a counter on stderr when it is a terminal."""
    def show(count: int) -> None:
        if sys.stderr.isatty():
            end = "\n" if count - offset >= total else ""
            print(f"\r  {label}: {max(0, count - offset)}/{total}", end=end, file=sys.stderr,
                  flush=True)
    return show


async def wait_count(client: Client, query: str, expected: int, *, timeout: float,
                     on_poll: Callable[[int], None] | None = None,
                     alive: Sequence[Child] = (), interval: float = 0.5) -> int:
    """Poll a visibility count until it reaches `expected` (or `timeout`); the count."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            count = (await client.count_workflows(query)).count
        except RPCError:
            # A fresh dev server can briefly answer "namespace not found" to visibility.
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(interval)
            continue
        if on_poll is not None:
            on_poll(count)
        if count >= expected or time.monotonic() > deadline:
            return count
        for child in alive:
            child.check_alive()
        await asyncio.sleep(interval)


async def wait_idle(children: Sequence[Child], *, quiet: float = 0.05, window: float = 0.5,
                    timeout: float = 30) -> None:
    """Until the workers' CPU stays under `quiet` s per `window` s: in-flight tasks done."""
    deadline = time.monotonic() + timeout
    before = [c.cpu() for c in children]
    while time.monotonic() < deadline:
        await asyncio.sleep(window)
        after = [c.cpu() for c in children]
        if all(a - b < quiet for a, b in zip(after, before, strict=True)):
            return
        before = after


# --- histories -----------------------------------------------------------------------


def event_time(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime()


@dataclass
class Milestones:
    """One workflow's history read for the benchmarks."""

    started: datetime
    events: list[HistoryEvent]
    completed: dict[str, list[HistoryEvent]]  # activity type -> its completion events

    def first_completion(self, activity_type: str) -> HistoryEvent | None:
        done = self.completed.get(activity_type)
        return done[0] if done else None

    def prefix_size(self, last: HistoryEvent) -> tuple[int, int]:
        """(events, serialized bytes) of the history up to and including `last`."""
        prefix = [e for e in self.events if e.event_id <= last.event_id]
        return len(prefix), History(events=prefix).ByteSize()


async def milestones(client: Client, workflow_id: str) -> Milestones:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    events = list(history.events)
    scheduled: dict[int, str] = {}
    completed: dict[str, list[HistoryEvent]] = {}
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = attrs.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            kind = scheduled[event.activity_task_completed_event_attributes.scheduled_event_id]
            completed.setdefault(kind, []).append(event)
    return Milestones(started=event_time(events[0]), events=events, completed=completed)


async def all_milestones(client: Client, workflow_ids: Sequence[str],
                         concurrency: int = 16) -> list[Milestones]:
    gate = asyncio.Semaphore(concurrency)

    async def one(wid: str) -> Milestones:
        async with gate:
            return await milestones(client, wid)

    return await asyncio.gather(*(one(w) for w in workflow_ids))


async def settled_milestones(client: Client, workflow_ids: Sequence[str],
                             settled: Callable[[Milestones], bool], *,
                             timeout: float = 120) -> tuple[list[Milestones], int]:
    """Every workflow's milestones once `settled` holds for it (a workflow that is not yet
    there, e.g. an activity between retries, is fetched again each second), and how many
    needed more than the first look. Raises, naming a workflow and what it waits on, if
    some never settle."""
    stones = await all_milestones(client, workflow_ids)
    late = [i for i, s in enumerate(stones) if not settled(s)]
    first_late = len(late)
    deadline = time.monotonic() + timeout
    while late:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(late)} workflows never got there, e.g. "
                               f"{await _stuck(client, workflow_ids[late[0]])}")
        await asyncio.sleep(1)
        again = await all_milestones(client, [workflow_ids[i] for i in late])
        for i, s in zip(late, again, strict=True):
            stones[i] = s
        late = [i for i in late if not settled(stones[i])]
    return stones, first_late


async def _stuck(client: Client, workflow_id: str) -> str:
    desc = await client.get_workflow_handle(workflow_id).describe()
    pending = [f"{p.activity_type.name} attempt {p.attempt}: {p.last_failure.message}"
               for p in desc.raw_description.pending_activities]
    return f"{workflow_id} ({desc.status.name if desc.status else '?'}; pending: " \
           f"{'; '.join(pending) or 'no activity'})"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def run_main(main: Callable[[], Awaitable[int]]) -> None:
    """Run a benchmark's main and leave through os._exit after flushing: the SDK's runtime
    threads can abort interpreter finalization (sdk-python issue 300)."""
    code = asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
