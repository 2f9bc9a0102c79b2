"""The shape of api/: the integration code (signatures, inbound mail, email events, Stripe
event mapping, case signalling) imports no FastAPI, so it is called and tested as plain
Python; FastAPI's dependencies (settings, client, agent) live in api.deps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from fastapi import FastAPI

from api import deps
from core.config import AgentIdentity
from tests.api_support import TOKENS, api_settings

REPO = Path(__file__).resolve().parents[1]
PURE_MODULES = ["api.signatures", "api.inbound_mail", "api.email_events", "api.stripe_mapping",
                "api.cases", "api.temporal"]


def test_integration_modules_import_no_web_framework():
    code = (f"import sys; import {', '.join(PURE_MODULES)}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'starlette')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_identify_maps_tokens_to_agents_in_constant_time_over_all_tokens():
    tokens = {t: AgentIdentity(**v) for t, v in TOKENS.items()}
    assert deps.identify(tokens, "tok-alice") == tokens["tok-alice"]
    assert deps.identify(tokens, "tok-alic") is None and deps.identify(tokens, "") is None


async def test_agent_dependencies_authenticate_and_authorise():
    app = FastAPI()
    app.state.settings = api_settings()

    @app.get("/read")
    async def read(agent: deps.Agent, settings: deps.AppSettings) -> dict[str, str]:
        return {"agent": agent.agent, "domain": settings.REPLY_DOMAIN}

    @app.post("/act")
    async def act(agent: deps.Actor) -> dict[str, str]:
        return {"agent": agent.agent}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as api:
        read_ok = await api.get("/read", headers={"Authorization": "Bearer tok-vic"})
        no_token = await api.get("/read")
        viewer_acts = await api.post("/act", headers={"Authorization": "Bearer tok-vic"})
        agent_acts = await api.post("/act", headers={"Authorization": "Bearer tok-bob"})
    assert read_ok.json() == {"agent": "vic", "domain": "reply.example.com"}
    assert no_token.status_code == 401 and no_token.headers["www-authenticate"] == "Bearer"
    assert viewer_acts.status_code == 403
    assert agent_acts.json() == {"agent": "bob"}
