"""Email rendering: repository templates (Jinja2) in en, ja and ko, money and dates
formatted for the locale with Babel. Called by the email activities only (it reads
template files); importing it does no I/O, so the workflow sandbox can load
`activities.email_activities`, which imports it, for the email models.

Layout: `templates/<locale>/<name>.subject.txt`, `<name>.txt`, `<name>.html`. HTML is
autoescaped (customer text is untrusted); the plain-text parts are not, because escaping
would corrupt text/plain, and the subject is collapsed to one line.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
from babel import Locale as BabelLocale
from babel.dates import format_date, format_time, get_timezone_name
from babel.numbers import format_currency

from core.money import normalize_currency, to_decimal

TEMPLATES_DIR = Path(__file__).parent / "templates"
LOCALES = ("en", "ja", "ko")

# Context keys each template needs besides the ones every template gets (case_id,
# customer_email, locale). Checked before rendering so a gap is reported by name.
REQUIRED_CONTEXT: dict[str, frozenset[str]] = {
    "acknowledgment": frozenset({"reason", "next_update_by"}),
    "info_request": frozenset({"questions", "reply_by"}),
    "reminder": frozenset({"questions", "reply_by"}),
    "approval": frozenset({"amount", "currency", "next_steps_by"}),
    "denial": frozenset({"clause_id", "clause_text", "alternatives", "note"}),
    "refund_completed": frozenset(
        {"amount", "currency", "acquirer_reference", "feedback_hint"}
    ),
    "billing_error_apology": frozenset({"amount", "currency", "root_cause", "next_steps_by"}),
    "abandoned": frozenset({"questions"}),
    "refund_failed": frozenset({"amount", "currency", "failure_reason"}),
    "nothing_left": frozenset({"amount", "currency", "refunded"}),
    "ops_escalation": frozenset({"kind", "message"}),
    "dispute_opened": frozenset({"amount", "currency"}),
}
COMMON_CONTEXT = frozenset({"case_id", "customer_email"})
# Reports for the ops address: English only, never sent to a customer.
OPS_REQUIRED_CONTEXT: dict[str, frozenset[str]] = {
    "incident_report": frozenset({
        "incident_id", "phase", "opened_by", "approved_by", "root_cause", "explanation",
        "amount_rule", "counts", "refunded_totals", "failures", "failures_unlisted",
        "skipped", "customers_emailed", "open_cases_joined"}),
}
OPS_LOCALES = ("en",)


class RenderError(Exception):
    """The email cannot be rendered (unknown template or locale, missing or bad context
    value). No retry can fix it."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def format_money(amount: int, currency: str, locale: str) -> str:
    """Minor units for the reader: 12345 usd en -> '$123.45', 5000 jpy ja -> '￥5,000'."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise RenderError(f"amount must be an integer in minor units, got {amount!r}")
    try:
        code = normalize_currency(str(currency))
    except ValueError as exc:
        raise RenderError(str(exc)) from None
    return format_currency(to_decimal(amount, code), code.upper(), locale=locale)


def parse_instant(value: str) -> datetime:
    """An ISO 8601 string as an aware datetime; a naive one is taken as UTC."""
    if not isinstance(value, str):
        raise RenderError(f"expected an ISO 8601 string, got {value!r}")
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise RenderError(f"{value!r} is not an ISO 8601 date-time") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


# Where a customer who gave no time zone most likely reads the email. English is read
# everywhere: UTC, named as such.
DEFAULT_ZONES = {"en": "UTC", "ja": "Asia/Tokyo", "ko": "Asia/Seoul"}


def customer_zone(timezone: str | None, locale: str) -> tzinfo:
    """The zone times are shown in: the request's, else the locale's default."""
    name = timezone or DEFAULT_ZONES.get(locale, "UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RenderError(f"unknown time zone {name!r}") from None


def format_instant(value: str, locale: str, timezone: str | None = None) -> str:
    """Date and time in the customer's zone, in the locale's long date + short time
    pattern and the zone's name in the locale: 'March 4, 2025, 3:30 PM UTC',
    '2025年3月5日 0:30 日本標準時', '2025년 3월 5일 0:30 대한민국 표준시' (Korean on a
    24-hour clock: CLDR's Korean short time reads 'PM 3:30')."""
    zone = customer_zone(timezone, locale)
    instant = parse_instant(value).astimezone(zone)
    date_part = format_date(instant, "long", locale=locale)
    time_part = f"{instant.hour}:{instant.minute:02d}" if locale == "ko" else \
        format_time(instant, "short", tzinfo=zone, locale=locale)
    pattern = BabelLocale.parse(locale).datetime_formats["long"]
    return f"{str(pattern).format(time_part, date_part)} {_zone_name(instant, locale)}"


def _zone_name(instant: datetime, locale: str) -> str:
    """'UTC' in English (readers know it); otherwise the zone's long name in the locale
    ('Japan Standard Time', '日本標準時', '협정 세계시')."""
    if locale == "en" and getattr(instant.tzinfo, "key", None) in ("UTC", "Etc/UTC"):
        return "UTC"
    return str(get_timezone_name(instant, "long", locale=locale))


def format_day(value: str, locale: str, timezone: str | None = None) -> str:
    """Just the date in the customer's zone, long form: 'March 4, 2025', '2025年3月4日',
    '2025년 3월 4일'."""
    return format_date(parse_instant(value).astimezone(customer_zone(timezone, locale)),
                       "long", locale=locale)


@jinja2.pass_context
def _money_filter(
    ctx: jinja2.runtime.Context, amount: int, currency: str, locale: str | None = None
) -> str:
    return format_money(amount, currency, locale or ctx["locale"])


@jinja2.pass_context
def _datetime_filter(ctx: jinja2.runtime.Context, value: str, locale: str | None = None) -> str:
    return format_instant(value, locale or ctx["locale"], ctx.get("timezone"))


@jinja2.pass_context
def _date_filter(ctx: jinja2.runtime.Context, value: str, locale: str | None = None) -> str:
    return format_day(value, locale or ctx["locale"], ctx.get("timezone"))


@functools.cache
def environment(root: Path = TEMPLATES_DIR) -> jinja2.Environment:
    """One shared environment (thread-safe for rendering; templates cached)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(root),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["money"] = _money_filter
    env.filters["datetime"] = _datetime_filter
    env.filters["date"] = _date_filter
    return env


def render(template: str, locale: str, context: Mapping[str, Any],
           timezone: str | None = None) -> RenderedEmail:
    """Subject, plain text and HTML of one email, times in `timezone` (an IANA name; the
    locale's default zone when None). Raises RenderError for an unknown template, locale
    or zone, a missing context key or a value the filters refuse."""
    required = REQUIRED_CONTEXT.get(template) or OPS_REQUIRED_CONTEXT.get(template)
    if required is None:
        raise RenderError(f"unknown email template {template!r}")
    locales = LOCALES if template in REQUIRED_CONTEXT else OPS_LOCALES
    if locale not in locales:
        raise RenderError(f"unsupported locale {locale!r} (have {', '.join(locales)})")
    missing = sorted((required | COMMON_CONTEXT) - context.keys())
    if missing:
        raise RenderError(f"template {template!r} is missing context keys: {missing}")
    customer_zone(timezone, locale)  # an unknown zone is refused before anything renders
    values = {**context, "locale": locale, "timezone": timezone}
    env = environment()
    try:
        subject = env.get_template(f"{locale}/{template}.subject.txt").render(values)
        text = env.get_template(f"{locale}/{template}.txt").render(values)
        html = env.get_template(f"{locale}/{template}.html").render(values)
    except jinja2.TemplateNotFound as exc:
        raise RenderError(f"template file missing: {exc}") from None
    except (jinja2.TemplateError, TypeError, ValueError) as exc:  # bad context values
        raise RenderError(f"template {template!r} ({locale}): {exc}") from None
    return RenderedEmail(subject=_one_line(subject), text=text.strip() + "\n", html=html)


def _one_line(subject: str) -> str:
    """Subjects are headers: no newlines, no runs of blanks."""
    return re.sub(r"\s+", " ", subject).strip()
