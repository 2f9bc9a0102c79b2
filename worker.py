"""The worker: hosts the RefundCase workflow and every activity it calls.

    python worker.py        # connects with core.client.connect() to TEMPORAL_ADDRESS

`build_worker` is shared by this script, the local stack supervisor and the tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.email_activities import EmailActivities
from activities.policy_activities import PolicyActivities
from activities.stripe_activities import StripeActivities
from core.client import connect
from core.config import Settings, get_settings
from core.contract import TASK_QUEUE
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
) -> Worker:
    """A worker for RefundCase. `activity_overrides` replace real activities of the same
    name (tests inject failures this way)."""
    overrides = {activity_name(fn): fn for fn in activity_overrides or ()}
    activities = [fn for fn in real_activities(settings) if activity_name(fn) not in overrides]
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[RefundCase],
        activities=[*activities, *overrides.values()],
    )


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    client = await connect(settings)
    worker = build_worker(client, settings)
    logging.info("worker polling %s on %s", TASK_QUEUE, settings.TEMPORAL_ADDRESS)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
