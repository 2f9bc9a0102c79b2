"""The Stripe request pacer on a fake clock: strict pacing at its rate, no burst after an
idle spell, first come first served, and a cancelled waiter takes no token. And the one
pacer per process: the Stripe activities of both workers share it."""

from __future__ import annotations

import asyncio

import pytest

from activities.stripe_models import stripe_dispatch_rate
from activities.stripe_pacing import RequestPacer
from tests.fake_clock import FakeClock, settle

RATE = 4.0  # one request every 0.25 s


def _pacer(clock: FakeClock, rate: float = RATE) -> RequestPacer:
    return RequestPacer(rate, clock=clock, sleep=clock.sleep)


async def _acquire_at(pacer: RequestPacer, clock: FakeClock, times: list[float]) -> None:
    await pacer.acquire()
    times.append(clock.now)


async def test_n_acquisitions_take_n_minus_one_intervals() -> None:
    clock = FakeClock()
    pacer = _pacer(clock)
    times: list[float] = []
    await asyncio.gather(*(_acquire_at(pacer, clock, times) for _ in range(9)))
    assert times == pytest.approx([k / RATE for k in range(9)])
    assert clock.now == pytest.approx(8 / RATE)


async def test_after_a_long_idle_only_one_goes_at_once() -> None:
    clock = FakeClock()
    pacer = _pacer(clock)
    await pacer.acquire()
    clock.now += 3600.0  # idle for an hour (or an event loop stalled that long)
    times: list[float] = []
    await asyncio.gather(*(_acquire_at(pacer, clock, times) for _ in range(3)))
    assert times == pytest.approx([3600.0, 3600.0 + 1 / RATE, 3600.0 + 2 / RATE])


async def test_waiters_go_first_come_first_served() -> None:
    clock = FakeClock()
    pacer = _pacer(clock)
    order: list[int] = []

    async def waiter(i: int) -> None:
        await pacer.acquire()
        order.append(i)

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(waiter(i)))
        await asyncio.sleep(0)  # each one queued before the next arrives
    await asyncio.gather(*tasks)
    assert order == list(range(6))


async def test_a_cancelled_waiter_takes_no_token_and_blocks_no_one() -> None:
    clock = FakeClock(auto=False)
    pacer = _pacer(clock)
    await pacer.acquire()  # t=0: the bucket's one token
    cancelled = asyncio.create_task(pacer.acquire())
    await settle()
    assert clock.sleeping == 1  # it waits for the token due at 0.25
    behind = asyncio.create_task(pacer.acquire())
    await settle()

    cancelled.cancel()
    await settle()
    assert cancelled.cancelled() and not behind.done()

    await clock.advance(1 / RATE)
    assert behind.done()  # at 0.25: the token the cancelled one would have had
    last = asyncio.create_task(pacer.acquire())
    await settle()
    assert not last.done()  # that token is spent: the next is due at 0.5
    await clock.advance(1 / RATE)
    assert last.done() and clock.now == pytest.approx(2 / RATE)


def test_a_pacer_needs_a_rate_and_a_token() -> None:
    with pytest.raises(ValueError):
        RequestPacer(0)
    with pytest.raises(ValueError):
        RequestPacer(1, capacity=0.5)


def test_the_activities_pace_at_the_dispatch_rate_of_the_setting() -> None:
    from activities.stripe_activities import StripeActivities
    from core.config import load_settings

    settings = load_settings(STRIPE_MAX_REQUESTS_PER_SECOND=50)
    assert StripeActivities(settings).pacer.rate == stripe_dispatch_rate(50)


async def test_both_workers_of_a_process_share_one_pacer(time_env) -> None:
    """The Stripe activities of the cases' queue (cases started before the Stripe queue)
    and of the Stripe queue are one instance: one bucket for the process."""
    from activities.stripe_models import GATHER_FACTS
    from core.config import load_settings
    from worker import activity_name, build_worker

    workers = build_worker(time_env.client, load_settings(), task_queue="pacer-shared")
    owners = [fn.__self__ for worker in workers.workers  # type: ignore[attr-defined]
              for fn in worker.config()["activities"] if activity_name(fn) == GATHER_FACTS]
    assert len(owners) == 2 and owners[0] is owners[1]
