"""Helpers for the API tests: settings, an in-process HTTP client for the app, and
signing for each webhook the way its real sender does."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import stripe
from fastapi import FastAPI
from temporalio.client import Client
from temporalio.common import TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from api import signatures
from api.app import create_app
from core.client import connect
from core.config import Settings, load_settings
from core.reply_address import reply_address
from stack.net import free_port

INTAKE_SECRET = "test-intake-secret"
STRIPE_SECRET = "whsec_test_refund_desk"
INBOUND_SECRET = "test-inbound-secret"
TOKENS = {
    "tok-alice": {"agent": "alice", "role": "agent"},
    "tok-bob": {"agent": "bob", "role": "agent"},
    "tok-vic": {"agent": "vic", "role": "viewer"},
}


def api_settings(**over: Any) -> Settings:
    values: dict[str, Any] = {
        "INTAKE_WEBHOOK_SECRET": INTAKE_SECRET,
        "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
        "SENDGRID_INBOUND_SECRET": INBOUND_SECRET,
        "AGENT_TOKENS": TOKENS,
        "REPLY_DOMAIN": "reply.example.com",
    }
    values.update(over)
    return load_settings(**values)


def app_for(client: Client | None, settings: Settings | None = None) -> FastAPI:
    """The app talking to `client`; None: a Temporal address where nothing listens."""
    settings = settings or api_settings()
    if client is None:
        dead = f"127.0.0.1:{free_port()}"

        async def factory() -> Client:
            return await connect(settings, address=dead)
    else:
        async def factory() -> Client:
            return client
    return create_app(settings, factory)


def http(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def request_body(request_id: str, **over: Any) -> dict[str, Any]:
    body = {"request_id": request_id, "customer_email": "ana@example.com",
            "charge_id": "ch_test1", "reason": "technical_issue", "message": "broken",
            "amount": 4900, "currency": "usd"}
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


def signed_intake(body: bytes | dict[str, Any], *, secret: str = INTAKE_SECRET,
                  timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    header = signatures.sign(raw, secret, timestamp=timestamp)
    return raw, {signatures.HEADER: header, "content-type": "application/json"}


def signed_stripe(event: dict[str, Any], *, secret: str = STRIPE_SECRET) -> tuple[
        str, dict[str, str]]:
    """Signed with the stripe SDK's own helper, as Stripe signs deliveries."""
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret)
    return payload, {"Stripe-Signature": header, "content-type": "application/json"}


def stripe_event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {"id": event_id or f"evt_{time.time_ns()}", "object": "event", "type": kind,
            "api_version": "2024-06-20", "created": int(time.time()),
            "data": {"object": obj}}


def inbound_form(case_id: str, sender: str, text: str, *, to: str | None = None,
                 **extra: str) -> dict[str, str]:
    """A SendGrid Inbound Parse form for a reply to the case's tagged reply address
    (the one the email activity writes), or to `to`."""
    to = to or reply_address(case_id, api_settings())
    form = {"to": f"Refund Desk <{to}>", "from": sender, "subject": "Re: your refund",
            "text": text, "envelope": json.dumps({"to": [to], "from": sender})}
    form.update(extra)
    return form


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 30.0,
                     interval: float = 0.2) -> Any:
    """Poll `check` until it returns a truthy value (the case moves asynchronously)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


def outbox(path: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(path.glob("*.json"))]


class StandInHandle:
    """A workflow handle that records signals and answers `state` with a customer."""

    def __init__(self, client: StandInClient, workflow_id: str) -> None:
        self.client, self.id = client, workflow_id

    async def signal(self, name: str, arg: Any = None, **_: Any) -> None:
        self.client.signals.append((self.id, name, arg))

    async def query(self, name: str, *_: Any, **__: Any) -> dict[str, Any]:
        return {"request": {"customer_email": self.client.customer}}

    async def describe(self, **_: Any) -> _Listed:
        """Only the cases started here or listed on a charge have a run to describe."""
        started = {kwargs.get("id") for _, _, kwargs in self.client.starts}
        listed = {i for ids in self.client.cases_by_charge.values() for i in ids}
        if self.id not in started | listed:
            raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
        return _Listed(self.id)

    async def execute_update(self, name: str, arg: Any = None, **kwargs: Any) -> Any:
        self.client.updates.append((self.id, name, kwargs))
        return await self.client.on_update(self.id, name, kwargs)


class _Listed:
    def __init__(self, workflow_id: str) -> None:
        self.id = workflow_id
        self.start_time = datetime(2026, 1, 1, tzinfo=UTC)
        self.typed_search_attributes = TypedSearchAttributes.empty


class StandInClient:
    """A Temporal client stand-in for HTTP tests of what the API sends to a case; every
    case exists and belongs to `customer`; `cases_by_charge` are the open cases a
    visibility query on RefundChargeId finds. `on_update` decides how updates end."""

    def __init__(self, customer: str = "ana@example.com",
                 on_update: Callable[[str, str, dict[str, Any]], Awaitable[Any]] | None = None,
                 cases_by_charge: dict[str, list[str]] | None = None) -> None:
        self.customer = customer
        self.signals: list[tuple[str, str, Any]] = []
        self.updates: list[tuple[str, str, dict[str, Any]]] = []
        self.starts: list[tuple[str, Any, dict[str, Any]]] = []
        self.queries: list[str] = []
        self.cases_by_charge = cases_by_charge or {}
        self.on_update = on_update or self._no_update

    async def list_workflows(self, query: str, **_: Any) -> AsyncIterator[_Listed]:
        self.queries.append(query)
        charge = re.search(r"RefundChargeId = '([^']*)'", query)
        for workflow_id in self.cases_by_charge.get(charge.group(1) if charge else "", []):
            yield _Listed(workflow_id)

    @staticmethod
    async def _no_update(*_: Any) -> Any:
        raise AssertionError("no update expected")

    def get_workflow_handle(self, workflow_id: str) -> StandInHandle:
        return StandInHandle(self, workflow_id)

    async def start_workflow(self, workflow: str, arg: Any, **kwargs: Any) -> None:
        self.starts.append((workflow, arg, kwargs))


def app_with(client: Any, settings: Settings | None = None) -> FastAPI:
    """The app talking to a stand-in client."""
    async def factory() -> Any:
        return client
    return create_app(settings or api_settings(), factory)


def multipart(fields: dict[str, bytes],
              files: dict[str, tuple[str, bytes] | tuple[str, bytes, str]] | None = None
              ) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body from raw field bytes, the way SendGrid posts Inbound
    Parse (each text field in its own charset, named in `charsets`; files as
    (name, content[, content type]))."""
    boundary = "xYzZY-refund-desk"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
                     f"\r\n\r\n".encode() + value + b"\r\n")
    for name, file in (files or {}).items():
        filename, content = file[0], file[1]
        content_type = file[2] if len(file) == 3 else "application/octet-stream"
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                     f'filename="{filename}"\r\nContent-Type: {content_type}'
                     f"\r\n\r\n".encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}
