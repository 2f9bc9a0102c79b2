"""Rendering for the console: the Jinja2 templates and their filters, the security headers
every page carries, and the pages for errors (sign-in needed, forbidden, Temporal down)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from activities.email_render import RenderError, format_money
from console.session import Sessions, take_flashes

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# Pages load only the console's own files; forms post only to the console; nothing
# frames the console. Emails are shown inline, sanitized, their style attributes allowed
# by hash (console.email_view); an email alone, from its own URL, has its own policy.
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")
EMAIL_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
             "frame-ancestors 'self'; base-uri 'none'; form-action 'none'")


def security_headers(response: Response, csp: str = CSP) -> Response:
    response.headers["Content-Security-Policy"] = csp
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    if "frame-ancestors 'none'" in csp:
        response.headers["X-Frame-Options"] = "DENY"
    return response


def sessions(request: Request) -> Sessions:
    return request.app.state.console_sessions  # type: ignore[no-any-return]  # set by mount()


def page(request: Request, template: str, context: dict[str, Any], *,
         status_code: int = 200, style_sources: str = "") -> HTMLResponse:
    """A full page (or a fragment) with the signed-in user, the CSRF token and the
    messages waiting to be shown; the session cookie is written when it changed."""
    session = sessions(request).of(request)
    values = {"request": request, "csrf_token": session.csrf,
              "flashes": take_flashes(request), "user": getattr(request.state,
                                                                "console_user", None),
              **context}
    response = templates.TemplateResponse(request, template, values, status_code=status_code)
    sessions(request).save(request, response)
    csp = CSP.replace("style-src 'self'", f"style-src 'self' {style_sources}") \
        if style_sources else CSP
    return security_headers(response, csp)  # type: ignore[return-value]  # same object


def redirect(request: Request, url: str) -> RedirectResponse:
    """303 to `url` (after a form), keeping the session's changes (e.g. a message)."""
    response = RedirectResponse(url, status_code=303)
    sessions(request).save(request, response)
    security_headers(response)
    return response


def error_page(request: Request, status_code: int, title: str, message: str) -> HTMLResponse:
    return page(request, "error.html", {"title": title, "message": message},
                status_code=status_code)


# --- filters -----------------------------------------------------------------------------


def money(amount: int | None, currency: str | None) -> str:
    if amount is None or not currency:
        return "—"
    try:
        return format_money(int(amount), currency, "en")
    except RenderError:
        return f"{amount} {currency.upper()} (minor units)"


def when(value: datetime | None) -> Markup:
    """A moment as UTC text in a <time> element (the page script shows it in the agent's
    own time zone)."""
    if value is None:
        return Markup("—")
    moment = value.astimezone(UTC)
    return Markup('<time datetime="{iso}">{text}</time>').format(
        iso=moment.isoformat(timespec="seconds"),
        text=moment.strftime("%Y-%m-%d %H:%M:%S UTC"))


def due(value: datetime | None, now: datetime | None = None) -> Markup:
    """'in 3 h' or '2 h overdue', with the exact moment."""
    if value is None:
        return Markup('<span class="muted">no deadline</span>')
    now = now or datetime.now(UTC)
    seconds = (value - now).total_seconds()
    text = _span(abs(seconds))
    css, label = ("overdue", f"{text} overdue") if seconds < 0 else ("due", f"in {text}")
    return Markup('<span class="{css}" title="{exact}">{label}</span>').format(
        css=css, exact=value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), label=label)


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def hours(value: float | None) -> str:
    """A duration given in hours, in the unit that reads best."""
    if value is None:
        return "—"
    if value < 1 / 60:
        return f"{value * 3600:.0f} s"
    if value < 1:
        return f"{value * 60:.0f} min"
    if value < 48:
        return f"{value:.1f} h"
    return f"{value / 24:.1f} d"


def label(value: object) -> str:
    """awaiting_agent -> awaiting agent."""
    return str(value).replace("_", " ") if value is not None else "—"


templates.env.filters.update(money=money, when=when, due=due, label=label, hours=hours)
