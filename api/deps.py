"""The API's FastAPI dependencies, in one place: the settings, the Temporal client and the
agent behind a bearer token. Route modules take them from here; everything else under
api/ is plain Python that a test can call without an app."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from api.logging import annotate
from api.temporal import RPC_TIMEOUT, ClientProvider
from core.case_client import CaseClient
from core.config import AgentIdentity, Settings

ACTING_ROLES = frozenset({"agent", "lead"})
bearer = HTTPBearer(auto_error=False, description="A token from AGENT_TOKENS")


def app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(app_settings)]


async def get_client(request: Request) -> Client:
    """The shared Temporal client, connected on first use; TemporalUnavailable (503)
    when it cannot connect. Handlers call it after authenticating and validating, so
    a bad request is a 4xx even while Temporal is down."""
    provider: ClientProvider = request.app.state.clients
    return await provider.get()


async def get_cases(request: Request) -> CaseClient:
    """The CaseClient over the shared client (same 503 rule as get_client)."""
    settings: Settings = request.app.state.settings
    return CaseClient(await get_client(request), task_queue=request.app.state.task_queue,
                      rpc_timeout=RPC_TIMEOUT,
                      customer_ref_key=settings.CUSTOMER_REF_KEY.get_secret_value())


def identify(tokens: dict[str, AgentIdentity], given: str) -> AgentIdentity | None:
    """The identity of `given`, comparing with every configured token in constant time
    (no early exit, so timing says nothing about which token was close)."""
    found = None
    given_bytes = given.encode()
    for token, identity in tokens.items():
        if hmac.compare_digest(token.encode(), given_bytes):
            found = identity
    return found


async def current_agent(
    request: Request,
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> AgentIdentity:
    """The agent of the bearer token; 401 without a known one."""
    identity = identify(settings.AGENT_TOKENS, credentials.credentials) if credentials else None
    if identity is None:
        annotate(request, outcome="unauthorized")
        raise HTTPException(401, "missing or unknown bearer token",
                            headers={"WWW-Authenticate": "Bearer"})
    annotate(request, agent=identity.agent)
    return identity


async def acting_agent(
    request: Request, identity: Annotated[AgentIdentity, Depends(current_agent)]
) -> AgentIdentity:
    """An agent who may act (agent or lead); 403 for a viewer."""
    if identity.role not in ACTING_ROLES:
        annotate(request, outcome="forbidden")
        raise HTTPException(403, f"role {identity.role!r} can only read cases")
    return identity


Agent = Annotated[AgentIdentity, Depends(current_agent)]
Actor = Annotated[AgentIdentity, Depends(acting_agent)]
