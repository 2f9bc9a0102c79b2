"""The worker: hosts the RefundCase workflow and every activity it calls.

    python worker.py        # connects with core.client.connect() to TEMPORAL_ADDRESS

`build_worker` is shared by this script, the local stack supervisor and the tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker

from activities.email_activities import EmailActivities
from activities.policy_activities import PolicyActivities
from activities.stripe_activities import StripeActivities
from core.client import connect
from core.config import ConfigError, Settings, get_settings
from core.connection import TemporalConnectError
from core.contract import TASK_QUEUE
from core.tracing import configure_tracing
from core.worker_metrics import DomainMetricsInterceptor, prometheus_runtime
from policies import library as policy_library
from workflows.refund_case import RefundCase


def activity_name(fn: Callable[..., Any]) -> str:
    """The name an activity is registered under (@activity.defn(name=...))."""
    definition = getattr(fn, "__temporal_activity_definition", None)
    if definition is None:
        raise TypeError(f"{fn!r} is not an activity (missing @activity.defn)")
    return str(definition.name)


def real_activities(settings: Settings) -> list[Callable[..., Any]]:
    """Every activity RefundCase calls, wired to the configured Stripe and email backend.
    All are async (blocking SDK calls run in threads), so no activity executor is needed."""
    stripe_acts = StripeActivities(settings)
    email_acts = EmailActivities(settings)
    return [
        *PolicyActivities(settings).activities(),
        *stripe_acts.activities(),
        email_acts.send_email,
        email_acts.notify_ops,
    ]


def build_worker(
    client: Client,
    settings: Settings,
    *,
    activity_overrides: Sequence[Callable[..., Any]] | None = None,
    task_queue: str = TASK_QUEUE,
    interceptors: Sequence[Interceptor] = (),
) -> Worker:
    """A worker for RefundCase. `activity_overrides` replace real activities of the same
    name (tests inject failures this way). Domain metrics are always recorded (on the
    client's runtime; nowhere when it has no metrics endpoint); tracing comes with the
    client's interceptors (core.client)."""
    overrides = {activity_name(fn): fn for fn in activity_overrides or ()}
    activities = [fn for fn in real_activities(settings) if activity_name(fn) not in overrides]
    # Cases pin their policy by hash: this worker holds every version beside the file in force.
    policy_library.hold_folder(settings.REFUND_POLICY_FILE.parent)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[RefundCase],
        activities=[*activities, *overrides.values()],
        interceptors=[DomainMetricsInterceptor(), *interceptors],
        max_cached_workflows=settings.WORKER_MAX_CACHED_WORKFLOWS,
        max_concurrent_activities=settings.WORKER_MAX_CONCURRENT_ACTIVITIES,
    )


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    configure_tracing(settings, "refund-desk-worker")
    address = settings.WORKER_METRICS_ADDRESS
    runtime = prometheus_runtime(address) if address else None
    client = await connect(settings, runtime=runtime)
    worker = build_worker(client, settings)
    logging.info("worker polling %s on %s; metrics %s", TASK_QUEUE,
                 client.service_client.config.target_host,
                 f"http://{address}/metrics" if address else "off")
    await worker.run()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (ConfigError, TemporalConnectError) as err:
        print(f"worker: {err}", file=sys.stderr, flush=True)
        os._exit(1)  # the SDK runtime can abort a normal exit (sdk-python issue 300)
