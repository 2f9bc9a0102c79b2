"""The local Stripe stand-in's state file: localstripe's objects and the idempotency
records, written off the request path.

localstripe pickles its whole store after every write, so each request costs time in
proportion to everything it holds (a third of its CPU in the throughput benchmark, and
development slows down as data accumulates). Here a write only marks the state dirty; the
file is written when the server stops (SIGTERM or SIGINT, as `make run` and the tests stop
it) and at checkpoints while it runs, so a SIGKILL loses at most the last checkpoint
interval. A checkpoint waits at least 20 times as long as the last one took, which keeps
its share of the server's time under 5 % however large the store grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from stack.stripe_idempotency import IdempotencyRecords

FORMAT = "refund-desk-localstripe/2"
CHECKPOINT_SECONDS = 10.0
_SPACING = 20  # checkpoint at most 1/20 of the time

log = logging.getLogger("localstripe.state")


class LocalstripeState:
    def __init__(self, path: Path, objects: dict[str, Any],
                 records: IdempotencyRecords) -> None:
        self.path = path
        self.objects = objects  # localstripe's store, a dict it mutates in place
        self.records = records
        self.dirty = False
        self._write_lock = threading.RLock()

    def mark_dirty(self) -> None:
        self.dirty = True

    def load(self) -> None:
        """Read the file if there is one. A file written by localstripe itself (its store
        as a plain dict) is read too, so an existing .data/ keeps its charges."""
        try:
            with self.path.open("rb") as f:
                saved = pickle.load(f)
        except FileNotFoundError:
            return
        if isinstance(saved, dict) and saved.get("format") == FORMAT:
            objects, idempotency = saved["objects"], saved["idempotency"]
        else:
            objects, idempotency = saved, OrderedDict()
        self.objects.clear()
        self.objects.update(objects)
        self.records.saved = idempotency

    def snapshot(self) -> bytes:
        """The whole state as bytes, taken on the event loop so no request changes it
        midway; the state is clean from here on until the next write."""
        self.dirty = False
        return pickle.dumps(
            {"format": FORMAT, "objects": dict(self.objects),
             "idempotency": self.records.saved},
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    def write(self, data: bytes) -> None:
        """Replace the file atomically: a crash mid-write leaves the previous one."""
        with self._write_lock:
            tmp = self.path.with_name(self.path.name + ".tmp")
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)

    def save(self) -> None:
        """Write what changed, after any checkpoint still being written."""
        with self._write_lock:
            if self.dirty:
                self.write(self.snapshot())

    def install(self, app: web.Application,
                every: float = CHECKPOINT_SECONDS) -> None:
        """Checkpoint while `app` runs and save once more when it stops."""

        async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(self._checkpoints(every))
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.save()

        app.cleanup_ctx.append(lifecycle)

    async def _checkpoints(self, every: float) -> None:
        wait = every
        while True:
            await asyncio.sleep(wait)
            if not self.dirty:
                continue
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.write, self.snapshot())
            except OSError:
                log.exception("checkpoint of %s failed; retrying later", self.path)
                self.dirty = True
            wait = max(every, _SPACING * (time.perf_counter() - started))
