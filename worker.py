"""The worker: hosts the RefundCase and BillingIncident workflows and every activity they
call, in two Temporal workers of one process:

- on `refund-cases`: the workflows, the policy, email and incident activities;
- on `refund-cases-stripe`: the Stripe activities. Each request they make waits for a
  token of the process's one pacer (activities/stripe_pacing.py), at a share of
  STRIPE_MAX_REQUESTS_PER_SECOND (activities/stripe_models.py): the limit is kept per
  PROCESS, so several Stripe worker processes must split the setting between them.
  Temporal also caps the queue's dispatch rate for all its workers together.

    python worker.py        # connects with core.client.connect() to TEMPORAL_ADDRESS

`build_worker` is shared by this script, the local stack supervisor and the tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from temporalio.client import Client
from temporalio.worker import Interceptor, UnsandboxedWorkflowRunner, Worker

from activities.email_activities import EmailActivities
from activities.incident_activities import IncidentActivities
from activities.policy_activities import PolicyActivities
from activities.stripe_activities import StripeActivities
from activities.stripe_models import (
    STRIPE_WORKER_SLOTS,
    stripe_dispatch_rate,
    stripe_task_queue,
)
from core.client import connect
from core.config import ConfigError, Settings, get_settings
from core.connection import TemporalConnectError
from core.contract import TASK_QUEUE
from core.tracing import configure_tracing
from core.worker_metrics import DomainMetricsInterceptor, prometheus_runtime
from policies import library as policy_library
from workflows.billing_incident import BillingIncident
from workflows.refund_case import RefundCase

# The production worker runs the workflows without the SDK's sandbox. The sandbox checked
# nothing of ours here any more: the workflows package is passed through it (imported once,
# since it holds no state at module level), and the sandbox restricts only what it imports
# itself, so `datetime.now()` in workflows/ ran unchecked. What it still cost was work on
# every payload of every workflow task: entering the sandbox to find the payload's
# serialization context (bench/case_throughput.py, README "Where a case stands now"). The
# workflow tests and the replay of every recorded history run in the SDK's full sandbox,
# where a nondeterministic call in workflows/ fails.
WORKFLOW_RUNNER = UnsandboxedWorkflowRunner()


def activity_name(fn: Callable[..., Any]) -> str:
    """The name an activity is registered under (@activity.defn(name=...))."""
    definition = getattr(fn, "__temporal_activity_definition", None)
    if definition is None:
        raise TypeError(f"{fn!r} is not an activity (missing @activity.defn)")
    return str(definition.name)


def real_activities(settings: Settings,
                    stripe_acts: StripeActivities) -> list[Callable[..., Any]]:
    """The activities of the workflows' queue, wired to the configured backends. All are
    async (blocking SDK calls run in threads), so no activity executor is needed. The
    Stripe ones are here too for cases started before the Stripe queue existed; they are
    `stripe_acts`, the process's one instance, so they wait on its one pacer."""
    email_acts = EmailActivities(settings)
    return [
        *PolicyActivities(settings).activities(),
        *stripe_acts.activities(),
        email_acts.send_email,
        email_acts.notify_ops,
        email_acts.send_ops_report,
    ]


class Workers:
    """The workers of one task queue and of its Stripe queue, run and stopped together
    (`async with build_worker(...)`, or `await build_worker(...).run()`)."""

    def __init__(self, *workers: Worker,
                 closing: Callable[[], Awaitable[None]] | None = None) -> None:
        self.workers = workers
        self._closing = closing  # once the workers have stopped: the Stripe connections

    async def __aenter__(self) -> Workers:
        for worker in self.workers:
            await worker.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        for worker in reversed(self.workers):
            await worker.__aexit__(exc_type, exc, tb)
        await self._close()

    async def run(self) -> None:
        try:
            await asyncio.gather(*(worker.run() for worker in self.workers))
        finally:
            await self._close()

    async def _close(self) -> None:
        if self._closing is not None:
            await self._closing()


def build_worker(
    client: Client,
    settings: Settings,
    *,
    activity_overrides: Sequence[Callable[..., Any]] | None = None,
    task_queue: str = TASK_QUEUE,
    interceptors: Sequence[Interceptor] = (),
) -> Workers:
    """The workers for `task_queue` and its Stripe queue. `activity_overrides` replace
    real activities of the same name (tests inject failures this way)."""
    overrides = {activity_name(fn): fn for fn in activity_overrides or ()}

    def chosen(activities: list[Callable[..., Any]]) -> list[Callable[..., Any]]:
        names = {activity_name(fn) for fn in activities}
        return [*(fn for fn in activities if activity_name(fn) not in overrides),
                *(fn for name, fn in overrides.items() if name in names)]

    # Cases pin their policy by hash: this worker holds every version beside the file in force.
    policy_library.hold_folder(settings.REFUND_POLICY_FILE.parent)
    # One instance for both workers: one pacer, so the process keeps Stripe's rate.
    stripe_acts = StripeActivities(settings)
    main = Worker(
        client, task_queue=task_queue, workflows=[RefundCase, BillingIncident],
        workflow_runner=WORKFLOW_RUNNER,
        activities=chosen([*real_activities(settings, stripe_acts),
                           *IncidentActivities(
                               client, task_queue,
                               settings.CUSTOMER_REF_KEY.get_secret_value()).activities()]),
        interceptors=[DomainMetricsInterceptor(), *interceptors],
        max_cached_workflows=settings.WORKER_MAX_CACHED_WORKFLOWS,
        max_concurrent_activities=settings.WORKER_MAX_CONCURRENT_ACTIVITIES)
    stripe = Worker(
        client, task_queue=stripe_task_queue(task_queue),
        activities=chosen(stripe_acts.activities()),
        interceptors=[DomainMetricsInterceptor(), *interceptors],  # Stripe's metrics, traces
        # The server-side cap across all processes; each request is paced in-process too.
        max_task_queue_activities_per_second=stripe_dispatch_rate(
            settings.STRIPE_MAX_REQUESTS_PER_SECOND),
        # A few at a time: a task dispatched is a request paid for now, so a worker that
        # stalls must not hold many to run them in one burst later.
        max_concurrent_activities=STRIPE_WORKER_SLOTS)
    chosen_queues = {"all": (main, stripe), "cases": (main,), "stripe": (stripe,)}
    return Workers(*chosen_queues[settings.WORKER_QUEUES], closing=stripe_acts.close)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    configure_tracing(settings, "refund-desk-worker")
    address = settings.WORKER_METRICS_ADDRESS
    runtime = prometheus_runtime(address) if address else None
    client = await connect(settings, runtime=runtime)
    workers = build_worker(client, settings)
    polled = " and ".join(w.task_queue for w in workers.workers)
    logging.info("worker polling %s (at most %s Stripe requests/s) on %s; metrics %s",
                 polled, settings.STRIPE_MAX_REQUESTS_PER_SECOND,
                 client.service_client.config.target_host,
                 f"http://{address}/metrics" if address else "off")
    await workers.run()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (ConfigError, TemporalConnectError) as err:
        print(f"worker: {err}", file=sys.stderr, flush=True)
        os._exit(1)  # the SDK runtime can abort a normal exit (sdk-python issue 300)
