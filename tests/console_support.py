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

import httpx
import uvicorn
from temporalio.client import Client

from api.app import create_app
from core.config import Settings
from stack.net import free_port
from stack.stripe_seed import SeededCharge, seed_charge
from tests.api_support import api_settings, eventually, request_body, signed_intake
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
