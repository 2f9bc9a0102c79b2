"""The console's session: a signed cookie (itsdangerous), HttpOnly, SameSite=Lax, Secure in
production, scoped to /console, that expires after CONSOLE_SESSION_HOURS. It holds who
signed in (a fingerprint of their token, or the SSO user), the CSRF token every form
carries, and the one-shot messages shown after an action. It never holds the token
itself, and the identity is looked up again on every request, so removing a token from
AGENT_TOKENS (or changing its role) takes effect at once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Literal

from fastapi import Request
from fastapi.responses import Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import BaseModel, Field, ValidationError

from core.config import Settings

COOKIE = "refund_desk_console"
COOKIE_PATH = "/console"


class Flash(BaseModel):
    kind: Literal["ok", "error"]
    text: str


class Session(BaseModel):
    key: str | None = Field(None, description="token fingerprint, or sso:<user>")
    csrf: str = Field(default_factory=lambda: secrets.token_urlsafe(32))
    flashes: list[Flash] = Field(default_factory=list)


def fingerprint(token: str) -> str:
    """What the session keeps instead of the token."""
    return "tok:" + hashlib.sha256(token.encode()).hexdigest()[:32]


class Sessions:
    def __init__(self, settings: Settings) -> None:
        self._serializer = URLSafeTimedSerializer(settings.CONSOLE_SESSION_SECRET,
                                                  salt="refund-desk-console-session")
        self._max_age = int(settings.CONSOLE_SESSION_HOURS * 3600)
        self._secure = settings.console_cookie_secure

    def of(self, request: Request) -> Session:
        """The request's session (a new, anonymous one when the cookie is missing, forged
        or expired), loaded once per request."""
        session: Session | None = getattr(request.state, "console_session", None)
        if session is None:
            session = self._load(request.cookies.get(COOKIE)) or Session()
            request.state.console_session = session
            request.state.console_session_saved = self.dump(session)
        return session

    def _load(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self._max_age)
            return Session.model_validate(data)
        except (BadSignature, ValidationError, TypeError, ValueError):
            return None

    def dump(self, session: Session) -> str:
        return str(self._serializer.dumps(session.model_dump(mode="json")))

    def save(self, request: Request, response: Response) -> None:
        """Write the cookie when the session changed during the request."""
        session: Session | None = getattr(request.state, "console_session", None)
        if session is None:
            return
        value = self.dump(session)
        if value == getattr(request.state, "console_session_saved", None) and \
                COOKIE in request.cookies:
            return
        response.set_cookie(COOKIE, value, max_age=self._max_age, path=COOKIE_PATH,
                            httponly=True, samesite="lax", secure=self._secure)

    def start(self, request: Request, key: str) -> Session:
        """A fresh session for a new sign-in (new CSRF token: no fixation)."""
        session = Session(key=key)
        request.state.console_session = session
        request.state.console_session_saved = None
        return session

    @staticmethod
    def clear(response: Response) -> None:
        response.delete_cookie(COOKIE, path=COOKIE_PATH)


def csrf_ok(session: Session, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(session.csrf.encode(), str(given).encode())


def flash(request: Request, kind: Literal["ok", "error"], text: str) -> None:
    session: Session = request.state.console_session
    session.flashes = [*session.flashes[-4:], Flash(kind=kind, text=text)]


def take_flashes(request: Request) -> list[Flash]:
    session: Session | None = getattr(request.state, "console_session", None)
    if session is None or not session.flashes:
        return []
    flashes, session.flashes = session.flashes, []
    return flashes
