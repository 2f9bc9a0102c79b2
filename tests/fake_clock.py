"""A fake monotonic clock and its sleep, for code that takes `clock` and `sleep`
(activities/stripe_pacing.py): time moves only when a sleeper asks for it (`auto`) or the
test advances it, so tests assert on time without waiting for it."""

from __future__ import annotations

import asyncio


class FakeClock:
    """`auto=True`: a sleep moves the clock on by its length at once. `auto=False`: a
    sleep waits until the test calls `advance` past its end."""

    def __init__(self, *, auto: bool = True) -> None:
        self.now = 0.0
        self.auto = auto
        self.sleeps: list[float] = []  # every sleep asked for, in order
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.auto:
            self.now += seconds
            await asyncio.sleep(0)
            return
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, woken))
        await woken

    async def advance(self, seconds: float) -> None:
        """Move the clock on, wake the sleepers now due, and let them run."""
        self.now += seconds
        for wake_at, woken in list(self._sleepers):
            if wake_at <= self.now + 1e-9:
                self._sleepers.remove((wake_at, woken))
                if not woken.done():
                    woken.set_result(None)
        await settle()

    @property
    def sleeping(self) -> int:
        return sum(1 for _, woken in self._sleepers if not woken.done())


async def settle() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(20):
        await asyncio.sleep(0)
