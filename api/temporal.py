"""The API's Temporal client, connected lazily (the API starts even when Temporal is still
coming up) and injectable for tests, plus one rule for errors: anything that means
"Temporal did not take it" becomes 503, so webhook senders retry and nothing is lost.
No FastAPI here: the dependency that hands the client to handlers is api.deps.get_client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.case_client import is_not_found

__all__ = ["ClientProvider", "TemporalUnavailable", "is_not_found", "temporal_call"]

ClientFactory = Callable[[], Awaitable[Client]]

CONNECT_TIMEOUT_SECONDS = 5.0
RPC_TIMEOUT = timedelta(seconds=10)


class TemporalUnavailable(Exception):
    """Temporal could not be reached; answered 503 with the reason."""


class ClientProvider:
    """Connects once, on first use; a failed attempt is retried by the next request."""

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(
                        self._factory(), CONNECT_TIMEOUT_SECONDS
                    )
                except TimeoutError:
                    raise TemporalUnavailable("connecting to Temporal timed out") from None
                except Exception as exc:
                    raise TemporalUnavailable(f"cannot connect to Temporal: {exc}") from None
            return self._client




@contextlib.asynccontextmanager
async def temporal_call(what: str) -> AsyncIterator[None]:
    """Turn transport-level failures into TemporalUnavailable (-> 503). NOT_FOUND and
    workflow-level errors pass through for the caller to map."""
    try:
        yield
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise
        status = exc.status.name if exc.status else "UNKNOWN"
        raise TemporalUnavailable(f"{what}: {status} {exc}") from None
    except TimeoutError:
        raise TemporalUnavailable(f"{what}: timed out") from None
