"""The console over HTTP for tests: the API app (console included) served by uvicorn on a
free port, with its own worker and task queue on the shared dev server, localstripe for
Stripe and an outbox folder for emails; helpers to open cases and sign in."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import httpx
import uvicorn
from aiohttp import web
from temporalio.client import Client

from api.app import create_app
from core.config import Settings
from stack.net import free_port
from stack.stripe_seed import SeededCharge, seed_charge
from tests.api_support import (
    api_settings,
    eventually,
    request_body,
    signed_intake,
    signed_stripe,
)
from worker import build_worker

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).parent / "artifacts" / "console"
TOKENS = {"tok-alice": "alice", "tok-bob": "bob", "tok-vic": "vic"}
STRIPE_KEY = "sk_test_console"


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None. `make test` installs Debian's
    chromium when it is missing and it runs as root."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        return (f"{CHROMIUM} is not installed (Debian package chromium: `apt-get install -y "
                "chromium`, which `make test` runs as root)")
    return None


@dataclass
class ConsoleDesk:
    url: str
    client: Client
    stripe_url: str
    outbox: Path
    settings: Settings
    task_queue: str

    def seed(self, amount: int, currency: str = "usd") -> SeededCharge:
        email = f"c-{uuid.uuid4().hex[:8]}@example.com"
        return seed_charge(self.stripe_url, STRIPE_KEY, email=email, amount=amount,
                           currency=currency)

    async def open_case(self, charge: SeededCharge, **over: Any) -> str:
        body = request_body(f"con-{uuid.uuid4().hex[:10]}", customer_email=charge.email,
                            charge_id=charge.charge_id, amount=charge.amount,
                            currency=charge.currency, **over)
        raw, headers = signed_intake(body)
        async with httpx.AsyncClient(base_url=self.url) as http:
            resp = await http.post("/webhooks/refund-requests", content=raw, headers=headers)
        assert resp.status_code == 202, resp.text
        return str(resp.json()["case_id"])

    async def state(self, case_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url) as http:
            resp = await http.get(f"/cases/{case_id}",
                                  headers={"Authorization": "Bearer tok-vic"})
        assert resp.status_code == 200, resp.text
        return resp.json()  # type: ignore[no-any-return]

    async def stripe(self, event: dict[str, Any]) -> httpx.Response:
        """Deliver a Stripe webhook event, signed as Stripe signs it."""
        payload, headers = signed_stripe(event)
        async with httpx.AsyncClient(base_url=self.url) as http:
            return await http.post("/webhooks/stripe", content=payload, headers=headers)

    async def reaches(self, case_id: str, *statuses: str, timeout: float = 30) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            state = await self.state(case_id)
            return state if state["status"] in statuses else None
        return await eventually(check, timeout=timeout)  # type: ignore[no-any-return]


async def serve_desk(client: Client, localstripe_url: str, tmp: Path
                     ) -> AsyncIterator[ConsoleDesk]:
    """Yield a running desk (uvicorn + worker); stops both and ends its open cases."""
    settings = api_settings(STRIPE_API_BASE=localstripe_url, STRIPE_API_KEY=STRIPE_KEY,
                            OUTBOX_DIR=tmp / "outbox", SENDGRID_API_KEY=None)
    task_queue = f"console-{uuid.uuid4().hex[:8]}"

    async def factory() -> Client:
        return client

    app = create_app(settings, factory, task_queue=task_queue)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False,
                                           lifespan="off"))
    serving = asyncio.get_running_loop().create_task(server.serve())
    worker = build_worker(client, settings, task_queue=task_queue)
    try:
        async with worker:
            while not server.started:
                await asyncio.sleep(0.05)
            yield ConsoleDesk(f"http://127.0.0.1:{port}", client, localstripe_url,
                              tmp / "outbox", settings, task_queue)
            query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
            async for wf in client.list_workflows(query):
                await client.get_workflow_handle(wf.id).terminate("test finished")
    finally:
        server.should_exit = True
        await serving


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def signed_in(http: httpx.AsyncClient, token: str) -> None:
    """Sign `http` in with `token` the way a browser does (page, then form)."""
    page = await http.get("/console/sign-in")
    resp = await http.post("/console/sign-in", data={
        "token": token, "csrf_token": csrf_of(page.text), "next": "/console/queue"})
    assert resp.status_code == 303, resp.text


class HeldRefunds:
    """An HTTP stand-in between the desk and localstripe for refunds that fail, which
    localstripe cannot do (its refunds succeed at once): a refund created on a charge in
    `held` is not made in localstripe but answered `pending`, as Stripe answers a refund
    it settles later; the test then delivers Stripe's `failed` webhook. Everything else
    is forwarded unchanged."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.port = free_port()
        self.held: set[str] = set()  # charge ids
        self.made: dict[str, dict[str, Any]] = {}  # case id -> the pending refund answered
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> HeldRefunds:
        self._http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._http is not None
        await self._runner.cleanup()
        await self._http.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        body = await request.read()
        if request.method == "POST" and request.path == "/v1/refunds":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            if form.get("charge") in self.held:
                return web.json_response(self._pending(form))
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length")}
        async with self._http.request(request.method, self.target + request.path_qs,
                                      data=body, headers=headers) as answer:
            return web.Response(body=await answer.read(), status=answer.status,
                                content_type=answer.content_type)

    def _pending(self, form: dict[str, str]) -> dict[str, Any]:
        case_id = form.get("metadata[case_id]", "")
        refund = {"id": f"re_held{uuid.uuid4().hex[:12]}", "object": "refund",
                  "amount": int(form["amount"]), "currency": "usd", "charge": form["charge"],
                  "status": "pending", "created": 1_790_000_000,
                  "metadata": {"case_id": case_id}}
        self.made[case_id] = refund
        return refund

    def failed(self, case_id: str, reason: str = "lost_or_stolen_card") -> dict[str, Any]:
        """The held refund of the case as Stripe's `failed` webhook carries it."""
        return {**self.made[case_id], "status": "failed", "failure_reason": reason}
