"""Helpers for the API tests: settings, an in-process HTTP client for the app, and
signing for each webhook the way its real sender does."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import stripe
from fastapi import FastAPI
from temporalio.client import Client

from api import signatures
from api.app import create_app
from core.client import connect
from core.config import Settings, load_settings
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


def inbound_form(case_id: str, sender: str, text: str, **extra: str) -> dict[str, str]:
    to = f"refunds+{case_id}@reply.example.com"
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
