"""Which actions the running workflow can take: the update handlers its code defines, read
with Temporal's built-in `__temporal_workflow_metadata` query. The console offers an action
only when the workflow handles it, so an action the workflow does not know yet (the
console is ahead of the worker, or the worker was rolled back) shows as not available
instead of failing when an agent uses it."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from temporalio.api.sdk.v1 import WorkflowMetadata

from core.case_client import CaseClient

METADATA_QUERY = "__temporal_workflow_metadata"
FRESH_SECONDS = 60.0


async def update_handlers(cases: CaseClient, case_id: str) -> frozenset[str] | None:
    """The update names case `case_id`'s workflow handles; None when it cannot say (no
    worker answering)."""
    try:
        meta: WorkflowMetadata = await cases.handle(case_id).query(
            METADATA_QUERY, result_type=WorkflowMetadata, rpc_timeout=timedelta(seconds=5))
    except Exception:  # no worker, or a worker too old to answer: unknown, not an error
        return None
    return frozenset(d.name for d in meta.definition.update_definitions)


class KnownHandlers:
    """The update handlers of the workers' RefundCase (the same for every case a worker
    runs), as last seen, for pages that list many cases (the queue's claim buttons)."""

    def __init__(self) -> None:
        self.names: frozenset[str] | None = None
        self._seen_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    def learn(self, names: frozenset[str] | None) -> None:
        if names is not None:
            self.names, self._seen_at = names, time.monotonic()

    def has(self, update: str) -> bool:
        return self.names is not None and update in self.names

    def refresh_soon(self, cases: CaseClient, case_id: str) -> None:
        """Ask one case in the background when what is known is older than a minute (the
        page being rendered does not wait)."""
        if time.monotonic() - self._seen_at < FRESH_SECONDS or (
                self._refreshing is not None and not self._refreshing.done()):
            return

        async def ask() -> None:
            self.learn(await update_handlers(cases, case_id))

        self._refreshing = asyncio.get_running_loop().create_task(ask())
