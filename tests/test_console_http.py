"""The console's sign-in, session, CSRF and SSO rules over HTTP, in process (no browser, no
worker): what a browser or a forger can and cannot do. `/console/simulate` (GET) is the
signed-in page that needs no Temporal."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from console.session import COOKIE
from tests.api_support import StandInClient, api_settings, app_for, app_with
from tests.console_support import csrf_of

PAGE = "/console/simulate"


def browser(app: FastAPI, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://desk.test")


async def sign_in(http: httpx.AsyncClient, token: str, next_url: str = "/console/queue"
                  ) -> httpx.Response:
    page = await http.get("/console/sign-in")
    return await http.post("/console/sign-in", data={
        "token": token, "csrf_token": csrf_of(page.text), "next": next_url})


@pytest.fixture
def app() -> FastAPI:
    return app_with(StandInClient())


async def test_signing_in_sets_a_signed_httponly_samesite_cookie_without_the_token(app):
    async with browser(app) as http:
        assert (await http.get(PAGE)).status_code == 303
        resp = await sign_in(http, "tok-alice")
        assert resp.status_code == 303 and resp.headers["location"] == "/console/queue"
        cookie = resp.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # development over http://localhost
        assert "tok-alice" not in cookie
        page = await http.get(PAGE)
        assert page.status_code == 200 and "alice" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"


async def test_the_cookie_is_secure_in_production_settings():
    app = app_with(StandInClient(), api_settings(CONSOLE_COOKIE_SECURE=True))
    async with browser(app) as http:
        resp = await sign_in(http, "tok-bob")
        assert "Secure" in resp.headers["set-cookie"]


async def test_a_wrong_token_or_a_missing_csrf_token_signs_nobody_in(app):
    async with browser(app) as http:
        wrong = await sign_in(http, "tok-mallory")
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert (await http.get(PAGE)).status_code == 303
        forged = await http.post("/console/sign-in", data={"token": "tok-alice"})
        assert forged.status_code == 403
        assert (await http.get(PAGE)).status_code == 303


async def test_a_tampered_cookie_is_no_session(app):
    async with browser(app) as http:
        await sign_in(http, "tok-alice")
        value = http.cookies[COOKIE]
        http.cookies.clear()
        http.cookies.set(COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"),
                         domain="desk.test", path="/console")
        resp = await http.get(PAGE)
        assert resp.status_code == 303
        assert resp.headers["location"] == "/console/sign-in?next=/console/simulate"


async def test_a_removed_token_or_a_changed_role_takes_effect_at_once():
    first = app_with(StandInClient())
    async with browser(first) as http:
        await sign_in(http, "tok-alice")
        cookie = http.cookies[COOKIE]
    tokens: dict[str, Any] = {"tok-bob": {"agent": "bob", "role": "agent"}}
    revoked = app_with(StandInClient(), api_settings(AGENT_TOKENS=tokens))
    demoted = app_with(StandInClient(), api_settings(AGENT_TOKENS={
        "tok-alice": {"agent": "alice", "role": "viewer"}}))
    async with browser(revoked) as http:
        http.cookies.set(COOKIE, cookie, domain="desk.test", path="/console")
        assert (await http.get(PAGE)).status_code == 303
    async with browser(demoted) as http:
        http.cookies.set(COOKIE, cookie, domain="desk.test", path="/console")
        page = await http.get(PAGE)
        assert page.status_code == 200 and "viewer" in page.text
        resp = await http.post("/console/cases/refund-x/approve",
                               data={"csrf_token": csrf_of(page.text), "mode": "full"})
        assert resp.status_code == 403 and "viewer" in resp.text


@pytest.mark.parametrize("target", ["//evil.example/console", "https://evil.example/",
                                    "/console\\@evil", "javascript:alert(1)", "/elsewhere"])
async def test_sign_in_never_sends_the_browser_off_the_console(app, target):
    async with browser(app) as http:
        resp = await sign_in(http, "tok-alice", target)
        assert resp.headers["location"] == "/console/queue"


async def test_a_form_from_another_site_is_refused_even_with_the_token(app):
    async with browser(app) as http:
        await sign_in(http, "tok-alice")
        page = await http.get(PAGE)
        resp = await http.post("/console/sign-out", data={"csrf_token": csrf_of(page.text)},
                               headers={"origin": "https://evil.example"})
        assert resp.status_code == 403
        assert (await http.get(PAGE)).status_code == 200  # still signed in
        out = await http.post("/console/sign-out", data={"csrf_token": csrf_of(page.text)},
                              headers={"origin": "http://desk.test"})
        assert out.status_code == 303 and out.headers["location"] == "/console/sign-in"
        assert f'{COOKIE}=""' in out.headers["set-cookie"]
        assert (await http.get(PAGE)).status_code == 303


SSO = {"CONSOLE_TRUSTED_HEADER": "X-Forwarded-Email",
       "CONSOLE_SSO_USERS": {"ana@corp.example": {"agent": "ana", "role": "lead"}}}


async def test_trusted_header_mode_believes_only_the_proxy():
    app = app_with(StandInClient(), api_settings(**SSO))
    header = {"X-Forwarded-Email": "ana@corp.example"}
    async with browser(app) as http:
        page = await http.get(PAGE, headers=header)
        assert page.status_code == 200 and "ana" in page.text and "lead" in page.text
        assert (await http.get(PAGE)).status_code == 303  # no header, no user
        sign_in_page = await http.get("/console/sign-in")
        assert sign_in_page.status_code == 401 and "single sign-on" in sign_in_page.text
        assert 'name="token"' not in sign_in_page.text
        token = await http.post("/console/sign-in", data={
            "token": "tok-alice", "csrf_token": csrf_of(page.text)})
        assert token.status_code == 303
        assert (await http.get(PAGE)).status_code == 303  # tokens do not sign in here
        stranger = await http.get(PAGE, headers={"X-Forwarded-Email": "eve@corp.example"})
        assert stranger.status_code == 403 and "no access" in stranger.text
    async with browser(app, ip="10.9.8.7") as http:  # not the proxy: header ignored
        assert (await http.get(PAGE, headers=header)).status_code == 303


async def test_trusted_header_mode_can_let_unknown_users_view():
    app = app_with(StandInClient(), api_settings(**SSO, CONSOLE_SSO_DEFAULT_ROLE="viewer",
                                                 CONSOLE_SIGN_OUT_URL="/oauth2/sign_out"))
    header = {"X-Forwarded-Email": "eve@corp.example"}
    async with browser(app) as http:
        page = await http.get(PAGE, headers=header)
        assert page.status_code == 200 and "viewer" in page.text
        out = await http.post("/console/sign-out", headers=header,
                              data={"csrf_token": csrf_of(page.text)})
        assert out.headers["location"] == "/oauth2/sign_out"


async def test_console_pages_say_when_temporal_is_unreachable():
    app = app_for(None)
    async with browser(app) as http:
        await sign_in(http, "tok-alice")
        resp = await http.get("/console/queue")
        assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
        assert "text/html" in resp.headers["content-type"]
        assert "The cases cannot be read right now" in resp.text
        api = await http.get("/cases", headers={"Authorization": "Bearer tok-alice"})
        assert api.status_code == 503 and api.json()["detail"]["error"] == \
            "temporal_unavailable"


async def test_api_docs_load_their_assets_from_this_server(app):
    async with browser(app) as http:
        docs = await http.get("/docs")
        assert docs.status_code == 200
        assert "/docs-assets/swagger-ui-bundle.js" in docs.text
        assert "cdn" not in docs.text.lower() and "https://" not in docs.text
        redoc = await http.get("/redoc")
        assert "/docs-assets/redoc.standalone.js" in redoc.text
        assert "fonts.googleapis" not in redoc.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
            resp = await http.get(f"/docs-assets/{asset}")
            assert resp.status_code == 200 and len(resp.content) > 100_000
        assert (await http.get("/console/static/console.css")).status_code == 200
