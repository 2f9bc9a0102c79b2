"""Paces the Stripe requests of one worker process to Stripe's rate limit.

A token bucket that every request awaits before it goes out (the Stripe activities' HTTP
client calls `acquire`). It holds one token by default: requests leave at most one per
1/rate seconds, even after an idle spell or a stalled event loop, when a larger bucket
would let a burst through that Stripe's own bucket may refuse. Waiters go in arrival
order (an asyncio.Lock wakes them first come, first served), and a waiter cancelled
while it waits takes no token and blocks no one: it only ever holds the lock, which
`async with` releases.

The bucket is per process: several processes must share Stripe's rate between them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Float slack: a sleep of exactly the missing time may leave the bucket a hair short.
_EPSILON = 1e-9


class RequestPacer:
    """At most `rate` acquisitions a second, `capacity` at once after an idle spell.
    `clock` (monotonic seconds) and `sleep` are injectable so tests run on fake time."""

    def __init__(self, rate: float, *, capacity: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = capacity
        self._updated: float | None = None  # when _tokens was last refilled
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for a token and take it. The one waiter holding the lock sleeps until
        its token is due; the others queue behind it in order."""
        async with self._lock:
            while True:
                self._refill()
                if self._tokens >= 1 - _EPSILON:
                    self._tokens = max(0.0, self._tokens - 1)
                    return
                await self._sleep((1 - self._tokens) / self.rate)

    def _refill(self) -> None:
        now = self._clock()
        if self._updated is not None:
            elapsed = max(0.0, now - self._updated)
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now
