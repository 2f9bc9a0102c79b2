"""Stripe's idempotent requests, for the local Stripe stand-in (localstripe ignores them).

Real Stripe saves the status and body of the first POST made with an `Idempotency-Key`
and answers every later request with that key, for at least 24 hours, with the same
response (`Idempotent-Replayed: true`) instead of acting again. A retry after a lost
response therefore refunds once. Stripe also refuses a key reused on another endpoint or
with other parameters (400 `idempotency_error`), and a request whose key is still in use
by one being executed (409 `idempotency_key_in_use`, which its SDKs retry). Without this,
development and tests would see double refunds that Stripe never makes.

The records live in `IdempotencyRecords`, which the server persists with localstripe's
objects (see `stack.localstripe_state`), so a restart keeps them as Stripe would.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

KEY_HEADER = "Idempotency-Key"
RETENTION_SECONDS = 24 * 3600  # Stripe prunes keys once they are at least 24 hours old
# Not saved, as at Stripe: the request never reached an endpoint (a bad API key). Unknown
# routes never return here: aiohttp raises them as exceptions, which are not saved either.
_NOT_EXECUTED = frozenset({401})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class SavedResponse:
    """The first answer given for one key, and what it answered."""

    method: str
    path: str
    params_digest: str
    saved_at: float  # wall clock: records outlive a restart
    status: int
    content_type: str
    body: bytes


@dataclass
class IdempotencyRecords:
    """Saved responses by key, oldest first, and the keys of requests still executing."""

    saved: OrderedDict[str, SavedResponse] = field(default_factory=OrderedDict)
    in_flight: set[str] = field(default_factory=set)
    on_change: Callable[[], None] = lambda: None

    def get(self, key: str, now: float) -> SavedResponse | None:
        self._prune(now)
        return self.saved.get(key)

    def save(self, key: str, response: SavedResponse) -> None:
        self.saved[key] = response
        self.on_change()

    def _prune(self, now: float) -> None:
        while self.saved:
            oldest = next(iter(self.saved.values()))
            if now - oldest.saved_at < RETENTION_SECONDS:
                return
            self.saved.popitem(last=False)
            self.on_change()


def _error(status: int, message: str, *, error_type: str, code: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    error = {"type": error_type, "message": message}
    if code:
        error["code"] = code
    return web.json_response({"error": error}, status=status, headers=headers)


def _params_digest(request: web.Request, body: bytes) -> str:
    return hashlib.sha256(request.query_string.encode() + b"\0" + body).hexdigest()


def _replay(saved: SavedResponse) -> web.Response:
    return web.Response(status=saved.status, body=saved.body,
                        content_type=saved.content_type,
                        headers={"Idempotent-Replayed": "true"})


def _body_bytes(response: web.Response) -> bytes:
    body = response.body
    return bytes(body) if isinstance(body, bytes | bytearray) else b""


def idempotency_middleware(records: IdempotencyRecords,
                           clock: Callable[[], float] = time.time) -> Any:
    """An aiohttp middleware giving POST requests Stripe's idempotency; put it first so
    it sees every answer, errors included."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get(KEY_HEADER)
        if request.method != "POST" or not key:  # Stripe ignores keys on GET and DELETE
            return await handler(request)
        if key in records.in_flight:
            return _error(
                409, f"There is currently another in-progress request using the "
                f"idempotency key {key!r}. Try again once it has finished.",
                error_type="invalid_request_error", code="idempotency_key_in_use")
        records.in_flight.add(key)
        try:
            digest = _params_digest(request, await request.read())
            saved = records.get(key, clock())
            if saved is not None:
                return _answer_repeat(key, saved, request, digest)
            response = await handler(request)
            if isinstance(response, web.Response) and response.status not in _NOT_EXECUTED:
                records.save(key, SavedResponse(
                    method=request.method, path=request.path, params_digest=digest,
                    saved_at=clock(), status=response.status,
                    content_type=response.content_type, body=_body_bytes(response),
                ))
            return response
        finally:
            records.in_flight.discard(key)

    return middleware


def _answer_repeat(key: str, saved: SavedResponse, request: web.Request,
                   digest: str) -> web.Response:
    if (saved.method, saved.path) != (request.method, request.path):
        return _error(400, f"Keys for idempotent requests can only be used for the same "
                      f"endpoint they were first used for ({saved.method} {saved.path}). "
                      f"Try a key other than {key!r} for a different request.",
                      error_type="idempotency_error")
    if saved.params_digest != digest:
        return _error(400, f"Keys for idempotent requests can only be used with the same "
                      f"parameters they were first used with. Try a key other than "
                      f"{key!r} for a different request.", error_type="idempotency_error")
    return _replay(saved)

