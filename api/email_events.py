"""SendGrid Event Webhook events to `email_event` signals: which events concern one of our
cases (the case id rides in the custom args of every email we send) and say the email
did not arrive. Pure: no FastAPI, no Temporal."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.models import CASE_ID, UNDELIVERABLE_EMAIL_EVENTS, EmailEventSignal

FORWARDED_EVENTS = UNDELIVERABLE_EMAIL_EVENTS | {"spamreport"}


def email_event_deliveries(events: Any) -> tuple[list[tuple[str, EmailEventSignal]], int]:
    """(case id, signal) for each undelivered-mail event of one of our emails, and the
    number of events ignored (other kinds, no case id, malformed)."""
    out: list[tuple[str, EmailEventSignal]] = []
    ignored = 0
    for item in events if isinstance(events, list) else []:
        kind = item.get("event") if isinstance(item, dict) else None
        if not isinstance(kind, str):  # e.g. a list: not hashable, not an event
            ignored += 1
            continue
        if kind == "bounce" and item.get("type") == "blocked":
            kind = "blocked"
        case_id = item.get("case_id") if isinstance(item, dict) else None
        if kind not in FORWARDED_EVENTS or not isinstance(case_id, str) \
                or not CASE_ID.match(case_id):
            ignored += 1
            continue
        try:
            signal = EmailEventSignal(
                event=kind,
                email=item.get("email"),
                template=_text(item.get("template")),
                reason=_reason(item),
                sg_event_id=_text(item.get("sg_event_id")),
            )
        except ValidationError:
            ignored += 1
            continue
        out.append((case_id, signal))
    return out, ignored


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _reason(item: dict[str, Any]) -> str | None:
    for key in ("reason", "response", "bounce_classification", "type"):
        value = item.get(key)
        if isinstance(value, str) and value:
            return value[:1000]
    return None
