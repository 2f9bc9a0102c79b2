"""The agent console: server-rendered pages under /console, served by the API process.

`mount(app, settings)` adds its routes, its static files (the console's own stylesheet and
script, shipped in this package) and what its pages share: sessions, the policies cases
pinned, the workflow's known handlers. The pages work without JavaScript; the script
only refreshes the queue, shows times in the agent's zone and tidies forms.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from console import actions, auth, case_page, insights_page, queue_page, web
from console.handlers import KnownHandlers
from core.case_history import PinnedPolicies
from core.config import Settings

CONSOLE_PATH = "/console"


def mount(app: FastAPI, settings: Settings) -> None:
    app.state.console_auth = auth.Auth(settings)
    app.state.console_sessions = app.state.console_auth.sessions
    app.state.console_handlers = KnownHandlers()
    app.state.console_policies = PinnedPolicies(settings.REFUND_POLICY_FILE)
    app.mount(f"{CONSOLE_PATH}/static", StaticFiles(directory=web.HERE / "static"),
              name="console-static")
    for module in (auth, queue_page, case_page, actions, insights_page):
        app.include_router(module.router)

    @app.exception_handler(auth.SignInRequired)
    async def _sign_in(request: Request, exc: auth.SignInRequired) -> Response:
        return web.redirect(request, auth.sign_in_url(exc.next_url))

    @app.exception_handler(auth.Forbidden)
    async def _forbidden(request: Request, exc: auth.Forbidden) -> Response:
        return web.error_page(request, 403, "Not allowed", str(exc))


def unavailable(request: Request, reason: str) -> Response:
    """The page shown while Temporal (or a case's worker) does not answer; the API
    answers 503 JSON."""
    response = web.error_page(request, 503, "The cases cannot be read right now",
                              f"Temporal did not answer: {reason}. If only some cases "
                              "fail, their worker may be down. Try again in a moment.")
    response.headers["Retry-After"] = "5"
    return response
