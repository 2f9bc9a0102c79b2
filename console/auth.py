"""Who is using the console, and what they may do.

Two ways in:
- **token** (default): the agent signs in with their token from AGENT_TOKENS and gets a
  session cookie (console.session); the role comes from the token's entry, read again on
  every request.
- **trusted header** (CONSOLE_TRUSTED_HEADER set, e.g. `X-Forwarded-Email` behind
  oauth2-proxy): the SSO proxy in front signs people in and names them in that header;
  the console believes it only from CONSOLE_TRUSTED_PROXIES and maps the name to an agent
  and role with CONSOLE_SSO_USERS (unknown users: CONSOLE_SSO_DEFAULT_ROLE). Token sign-in
  is then off.

Every POST carries the session's CSRF token (and, when the browser sends Origin, it must be
this site); a viewer sees everything and can do nothing.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.datastructures import FormData

from api.deps import identify
from api.logging import annotate
from console import web
from console.session import Sessions, csrf_ok, fingerprint
from core.config import AgentIdentity, Settings

router = APIRouter(prefix="/console")
HOME = "/console/queue"
_SAFE_NEXT = re.compile(r"^/console(/[A-Za-z0-9._~/%-]*)?(\?[^\s\\]*)?$")


class ConsoleUser(BaseModel):
    agent: str
    role: Literal["agent", "lead", "viewer"]
    via: Literal["token", "sso"]

    @property
    def can_act(self) -> bool:
        return self.role in ("agent", "lead")

    @property
    def is_lead(self) -> bool:
        return self.role == "lead"


class SignInRequired(Exception):
    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class Forbidden(Exception):
    """Signed in, but not allowed (a viewer acting, a forged form, an unknown SSO user)."""


class Auth:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions = Sessions(settings)
        self._by_fingerprint = {fingerprint(token): identity
                                for token, identity in settings.AGENT_TOKENS.items()}
        self.header = settings.CONSOLE_TRUSTED_HEADER
        self._proxies = [ipaddress.ip_network(n, strict=False)
                         for n in settings.CONSOLE_TRUSTED_PROXIES]

    def user(self, request: Request) -> ConsoleUser | None:
        """The signed-in user, or None; raises Forbidden for an SSO user without access."""
        session = self.sessions.of(request)
        if self.header:
            name = self._trusted_name(request)
            if name is None:
                return None
            identity = self._sso_identity(name)
            if identity is None:
                raise Forbidden(f"{name} is signed in through single sign-on but has no "
                                "access to the console (CONSOLE_SSO_USERS)")
            if session.key != f"sso:{name}":
                self.sessions.start(request, f"sso:{name}")
            return ConsoleUser(agent=identity.agent, role=identity.role, via="sso")
        identity = self._by_fingerprint.get(session.key or "")
        if identity is None:
            return None
        return ConsoleUser(agent=identity.agent, role=identity.role, via="token")

    def _trusted_name(self, request: Request) -> str | None:
        assert self.header is not None
        value = request.headers.get(self.header, "").strip()
        host = request.client.host if request.client else ""
        try:
            trusted = any(ipaddress.ip_address(host) in net for net in self._proxies)
        except ValueError:
            trusted = False
        return value if value and trusted else None

    def _sso_identity(self, name: str) -> AgentIdentity | None:
        identity = self.settings.CONSOLE_SSO_USERS.get(name) or \
            self.settings.CONSOLE_SSO_USERS.get(name.lower())
        if identity is not None:
            return identity
        if self.settings.CONSOLE_SSO_DEFAULT_ROLE == "viewer":
            agent = re.sub(r"[^A-Za-z0-9._@-]", "_", name)[:100]
            return AgentIdentity(agent=agent, role="viewer")
        return None


def auth_of(request: Request) -> Auth:
    return request.app.state.console_auth  # type: ignore[no-any-return]  # set by mount()


def current_user(request: Request) -> ConsoleUser:
    """Dependency: the signed-in user; otherwise the browser goes to sign-in."""
    user = auth_of(request).user(request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target if request.method == "GET" else HOME)
    request.state.console_user = user
    annotate(request, agent=user.agent)
    return user


def acting_user(user: Annotated[ConsoleUser, Depends(current_user)]) -> ConsoleUser:
    if not user.can_act:
        raise Forbidden(f"{user.agent} is a viewer: viewers see cases but cannot act")
    return user


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token (and Origin, when sent) check out."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("the form came from another site")
    form = await request.form()
    token = form.get("csrf_token")
    if not csrf_ok(auth_of(request).sessions.of(request), token if isinstance(token, str)
                   else None):
        annotate(request, outcome="csrf_refused")
        raise Forbidden("the form is missing its security token or it has expired: reload "
                        "the page and try again")
    return form


User = Annotated[ConsoleUser, Depends(current_user)]
Actor = Annotated[ConsoleUser, Depends(acting_user)]
CheckedForm = Annotated[FormData, Depends(checked_form)]


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if value and _SAFE_NEXT.match(value) and "//" not in value:
        return value
    return HOME


# --- routes ------------------------------------------------------------------------------


@router.get("", include_in_schema=False)
async def console_home(request: Request) -> Response:
    return web.redirect(request, HOME)


@router.get("/sign-in", include_in_schema=False)
async def sign_in_page(request: Request, next: str | None = None) -> Response:
    auth = auth_of(request)
    if auth.user(request) is not None:
        return web.redirect(request, safe_next(next))
    return web.page(request, "sign_in.html", {"next": safe_next(next), "sso": auth.header,
                                              "error": None},
                    status_code=401 if auth.header else 200)


@router.post("/sign-in", include_in_schema=False)
async def sign_in(request: Request, form: CheckedForm,
                  token: Annotated[str, Form(max_length=500)] = "",
                  next: Annotated[str, Form(max_length=2000)] = HOME) -> Response:
    auth = auth_of(request)
    if auth.header:
        return web.redirect(request, safe_next(next))
    identity = identify(auth.settings.AGENT_TOKENS, token.strip())
    if identity is None:
        annotate(request, outcome="sign_in_refused")
        return web.page(request, "sign_in.html", {
            "next": safe_next(next), "sso": None,
            "error": "That token is not valid. Ask your lead for yours."}, status_code=401)
    auth.sessions.start(request, fingerprint(token.strip()))
    annotate(request, agent=identity.agent, outcome="signed_in")
    return web.redirect(request, safe_next(next))


@router.post("/sign-out", include_in_schema=False)
async def sign_out(request: Request, form: CheckedForm) -> Response:
    auth = auth_of(request)
    target = auth.settings.CONSOLE_SIGN_OUT_URL if auth.header else None
    response = web.redirect(request, target or "/console/sign-in")
    Sessions.clear(response)
    return response


def sign_in_url(next_url: str) -> str:
    return "/console/sign-in?next=" + quote(safe_next(next_url), safe="/")
