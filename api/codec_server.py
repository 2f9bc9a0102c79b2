"""The codec server under `/codec`: the Temporal Codec Server protocol (`POST /encode`,
`POST /decode`, a JSON body `{"payloads": [...]}` in and out) with the same keys as the
worker, so people with access read decrypted payloads in the Temporal UI (its
`codecEndpoint`) and in `temporal workflow show --codec-endpoint`; everyone else sees
ciphertext.

Who has access: a bearer token of AGENT_TOKENS (any role: whoever may read a case through
the API may read its history), sent as `Authorization: Bearer <token>` (the CLI's
`--codec-auth`), or the session cookie that `/codec/session` sets after asking for such a
token (the Temporal UI sends cookies when `codec.includeCredentials` is on). CORS lets the
configured UI origins (CODEC_CORS_ORIGINS) call it with credentials."""

from __future__ import annotations

import hashlib
import hmac
import html
import time

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from api.deps import identify
from api.logging import annotate
from core.codec import CodecError, EncryptionCodec
from core.config import AgentIdentity, Settings

COOKIE = "refund_desk_codec"
SESSION_SECONDS = 8 * 3600
MAX_BODY_BYTES = 4 * 1024 * 1024  # Temporal's own payload limit is 2 MB a payload


def create_codec_app(settings: Settings, codec: EncryptionCodec) -> FastAPI:
    """The sub-application mounted at /codec (its own CORS policy)."""
    app = FastAPI(title="Refund Desk codec server", docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.CODEC_CORS_ORIGINS,
        allow_credentials=True,
        allow_methods=["POST"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
        max_age=600,
    )

    def authorised(request: Request) -> AgentIdentity:
        identity = _from_bearer(request, settings) or _from_cookie(request, settings)
        if identity is None:
            annotate(request, outcome="unauthorized")
            raise HTTPException(401, "a bearer token of AGENT_TOKENS or a codec session is "
                                     "required", headers={"WWW-Authenticate": "Bearer"})
        annotate(request, agent=identity.agent)
        return identity

    async def payloads_of(request: Request) -> Payloads:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body too large (limit {MAX_BODY_BYTES} bytes)")
        try:
            return json_format.Parse(body or b"{}", Payloads(), ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise HTTPException(400, f'expected {{"payloads": [...]}}: {exc}') from None

    def answer(payloads: list[Payload]) -> JSONResponse:
        return JSONResponse(json_format.MessageToDict(Payloads(payloads=payloads)))

    @app.post("/decode")
    async def decode(request: Request) -> JSONResponse:
        authorised(request)
        payloads = await payloads_of(request)
        try:
            decoded = await codec.decode(payloads.payloads)
        except CodecError as exc:
            annotate(request, outcome="undecodable")
            raise HTTPException(422, str(exc)) from None
        annotate(request, outcome="decoded")
        return answer(decoded)

    @app.post("/encode")
    async def encode(request: Request) -> JSONResponse:
        authorised(request)
        payloads = await payloads_of(request)
        annotate(request, outcome="encoded")
        return answer(await codec.encode(payloads.payloads))

    @app.get("/session", response_class=HTMLResponse)
    async def session_form() -> HTMLResponse:
        return HTMLResponse(_page("Decode Refund Desk payloads in the Temporal UI", _FORM))

    @app.post("/session", response_class=HTMLResponse)
    async def session_start(request: Request, token: str = Form(...)) -> HTMLResponse:
        identity = identify(settings.AGENT_TOKENS, token.strip())
        if identity is None:
            annotate(request, outcome="unauthorized")
            return HTMLResponse(_page("Unknown token", _FORM), status_code=401)
        annotate(request, agent=identity.agent, outcome="session")
        expires = int(time.time()) + SESSION_SECONDS
        response = HTMLResponse(_page(
            "Signed in", f"<p>{html.escape(identity.agent)} can decode payloads in the "
            "Temporal UI for the next 8 hours (on this browser).</p>"))
        secure = request.url.scheme == "https"
        response.set_cookie(
            COOKIE, _session_value(identity.agent, expires, token.strip()),
            max_age=SESSION_SECONDS, path=request.scope.get("root_path") or "/codec",
            httponly=True, secure=secure, samesite="none" if secure else "lax")
        return response

    return app


def _from_bearer(request: Request, settings: Settings) -> AgentIdentity | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return identify(settings.AGENT_TOKENS, token.strip())


# --- the session cookie: "<agent>.<expires>.<hmac>" keyed by the agent's own token, so
# removing a token from AGENT_TOKENS ends its sessions too.


def _session_value(agent: str, expires: int, token: str) -> str:
    message = f"{agent}.{expires}".encode()
    return f"{agent}.{expires}.{hmac.new(token.encode(), message, hashlib.sha256).hexdigest()}"


def _from_cookie(request: Request, settings: Settings) -> AgentIdentity | None:
    value = request.cookies.get(COOKIE, "")
    parts = value.split(".")
    if len(parts) < 3:
        return None
    signature, expires_text = parts[-1], parts[-2]
    agent = ".".join(parts[:-2])
    if not expires_text.isdigit() or int(expires_text) < time.time():
        return None
    found = None
    for token, identity in settings.AGENT_TOKENS.items():
        expected = _session_value(agent, int(expires_text), token).rsplit(".", 1)[1]
        if identity.agent == agent and hmac.compare_digest(expected, signature):
            found = identity
    return found


_FORM = """<form method="post">
  <label>Your Refund Desk token <input type="password" name="token" autocomplete="off"
  required></label>
  <button type="submit">Sign in</button>
</form>
<p>The Temporal UI must have this address as its codec endpoint with credentials
included (<code>TEMPORAL_CODEC_ENDPOINT</code>,
<code>TEMPORAL_CODEC_INCLUDE_CREDENTIALS=true</code>).</p>"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}"
            f"</title><body><h1>{html.escape(title)}</h1>{body}</body></html>")
