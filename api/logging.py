"""Structured request logs: one JSON line per request with method, path, status,
duration_ms and, when a handler learnt them, the case id and the agent.

Only what handlers put in `request.state.log` is added: never headers and never the query
string (the SendGrid inbound secret may ride in it), so a token or secret cannot leak."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("refund_desk.api")

_LOG_KEY = "log"


def setup_logging() -> None:
    """JSON lines on stderr, unless the host process configured logging itself."""
    if logger.handlers or logging.getLogger().handlers:
        logger.setLevel(logging.INFO)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def annotate(request: Request, **fields: Any) -> None:
    """Add fields (case_id, agent, outcome...) to this request's log line."""
    request.state.log = {**getattr(request.state, _LOG_KEY, {}), **fields}


def event(message: str, **fields: Any) -> None:
    """A structured log line that is not a request line (e.g. mail that cannot be placed)."""
    logger.info(json.dumps({"event": message, **fields}, default=str))


def warning(message: str, **fields: Any) -> None:
    """A structured WARNING line (e.g. an unauthenticated webhook at start-up)."""
    logger.warning(json.dumps({"event": message, "level": "warning", **fields}, default=str))


class RequestLogMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the intake hot path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            line = {
                "event": "request",
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 2),
            }
            extra = state.get(_LOG_KEY)
            if isinstance(extra, dict):
                line.update(extra)
            logger.info(json.dumps(line, default=str))
