"""Stripe calls from a workflow, paid for in Stripe requests on the rate-limited queue.

Stripe limits requests a second; Temporal limits the dispatches a second of a task queue
(`max_task_queue_activities_per_second`, enforced by the server across all workers). So
every Stripe activity runs on the Stripe queue `<task queue>-stripe`, and one dispatch
there stands for one Stripe request: before an activity that makes n requests, the
workflow dispatches n - 1 `stripe_permit` activities (they make no request) on the same
queue, and waits for them. An activity that turns out to make more requests than usual
(gather facts: an invoice, disputes, more pages) says so in its result, and the rest is
paid right after, before the workflow's next step. Ordinary cases go first: incident cases
run at a lower task priority, which their activities inherit.

The permits are scheduled in the same workflow task as the activity, just before it
(patch `stripe-permits-alongside`), so the queue dispatches them next to it and the
requests are made when their tokens are spent. Paid first and waited for, they were
dispatched seconds before the activity when the queue had a backlog: the activity's
requests then came in a burst among other tasks' dispatches (up to 46 requests in one
second at 25/s, and 429s; bench/incident_drain.py).

Cases started since patch `stripe-paced-in-worker` pay no permits: the Stripe worker
paces every request it makes (activities/stripe_pacing.py), which counts each request
exactly, extra pages included, and costs the history nothing. Each permit was two dozen
bytes of rate accounting and three events, and a case paid four (issue 12). The queue's
dispatch rate stays, a cap across Stripe worker processes; the permit path stays for
cases that started before, so their histories replay.

Used by RefundCase (gather facts, refund, poll) and BillingIncident (look-ups, lists).
Deterministic: only workflow APIs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.stripe_models import (
        STRIPE_PERMIT,
        STRIPE_PERMIT_START_TO_CLOSE,
        STRIPE_QUEUE_RETRY_POLICY,
        STRIPE_RATE_LIMITED,
        STRIPE_REQUESTS,
        STRIPE_START_TO_CLOSE,
        rate_limit_backoff,
        stripe_task_queue,
    )

T = TypeVar("T")
# One run of an activity: with this retry policy, within this schedule-to-close deadline
# and picked up within this schedule-to-start timeout (None: none); and how a caller makes
# the runs (RefundCase's CaseRuntime.first_alone).
Attempts = Callable[[RetryPolicy, timedelta | None, timedelta | None], Awaitable[T]]
Runner = Callable[[Attempts[T], RetryPolicy, timedelta | None], Awaitable[T]]

PERMITS_ALONGSIDE = "stripe-permits-alongside"  # permits in the activity's workflow task


def queue() -> str:
    """The Stripe queue of this workflow's task queue (refund-cases -> refund-cases-stripe)."""
    return stripe_task_queue(workflow.info().task_queue)


def _permits(requests: int, why: str) -> list[workflow.ActivityHandle[Any]]:
    """Schedule `requests` permits on the Stripe queue now (this workflow task)."""
    return [workflow.start_activity(
                STRIPE_PERMIT, task_queue=queue(),
                start_to_close_timeout=STRIPE_PERMIT_START_TO_CLOSE,
                retry_policy=STRIPE_QUEUE_RETRY_POLICY,
                summary=f"Stripe rate limit: request {i + 2} of {why}")
            for i in range(max(0, requests))]


async def pay(requests: int, why: str) -> None:
    """Dispatch `requests` permits on the Stripe queue (all at once) and wait for them."""
    if requests <= 0:
        return
    await asyncio.gather(*_permits(requests, why))


async def call(activity: str, arg: Any, *, result_type: type[T], summary: str,
               extra_requests: int = 0, deadline: timedelta | None = None,
               paced: bool = False, runner: Runner[T] | None = None) -> T:
    """Run a Stripe activity on the Stripe queue once its requests (its usual count
    from STRIPE_REQUESTS, plus `extra_requests`) are paid for. A 429 comes back here:
    after Stripe's back-off the next attempt is paid for in full, as many times as it
    takes (a 429 is never a failure). `paced`: the Stripe worker paces each request
    itself (activities/stripe_pacing.py), so nothing is paid in permits. `runner` runs
    each try (by default with the queue's retry policy, as it is)."""
    requests = 1 if paced else STRIPE_REQUESTS[activity] + extra_requests
    alongside = not paced and workflow.patched(PERMITS_ALONGSIDE)
    limited = 0

    def run(policy: RetryPolicy, left: timedelta | None, pick_up: timedelta | None
            ) -> Awaitable[T]:
        return workflow.execute_activity(
            activity, arg, result_type=result_type, task_queue=queue(),
            start_to_close_timeout=STRIPE_START_TO_CLOSE, schedule_to_close_timeout=left,
            schedule_to_start_timeout=pick_up, retry_policy=policy, summary=summary)

    while True:
        if alongside:  # the permits, then the activity, in this workflow task
            permits = _permits(requests - 1, summary)
        else:
            await pay(requests - 1, summary)
            permits = []
        try:
            if runner is None:
                return await run(STRIPE_QUEUE_RETRY_POLICY, deadline, None)
            return await runner(run, STRIPE_QUEUE_RETRY_POLICY, deadline)
        except ActivityError as err:
            cause = err.cause
            if not (isinstance(cause, ApplicationError) and cause.type == STRIPE_RATE_LIMITED):
                raise
        finally:
            if permits:  # spent whatever the activity did; a failed permit fails the call
                await asyncio.gather(*permits)
        limited += 1
        await workflow.sleep(rate_limit_backoff(limited, workflow.random().random()),
                             summary=f"Stripe said 429: back off ({summary})")


def expected(activity: str, *, extra_requests: int = 0) -> int:
    """The requests `call` pays for before the activity runs."""
    return STRIPE_REQUESTS[activity] + extra_requests
