"""Email activities: render a repository template and send it through SendGrid, or write
it to the outbox folder when no SendGrid key is set (development).

The sendgrid SDK is synchronous (urllib), so the async activities run the blocking part
with `asyncio.to_thread`: the worker needs no activity executor (a cancelled attempt's
thread still ends within the 20 s HTTP timeout). The SDK does not retry;
Temporal does, guided by the error type: `EmailTransient` (429, 5xx, connection,
timeout) or `EmailPermanent` (other 4xx, unknown template, missing context key).

Delivery is at-least-once with SendGrid (it has no idempotency key); the outbox file is
named after case id + step and replaced atomically, so a retried activity overwrites it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.error import URLError
from urllib.parse import quote

from temporalio import activity

from activities import email_render
from activities.email_models import (
    EMAIL_PERMANENT,
    EMAIL_TRANSIENT,
    HTTP_TIMEOUT_SECONDS,
    NOTIFY_OPS,
    SEND_EMAIL,
    SEND_OPS_REPORT,
    EmailInput,
    EmailSent,
    OpsNotice,
    OpsReport,
)
from activities.errors import permanent, transient
from core.reply_address import reply_address

if TYPE_CHECKING:  # core.config resolves paths at import, which the workflow sandbox refuses
    from core.config import Settings

_TRANSIENT_STATUS = frozenset({408, 429})


def outbox_message_id(case_id: str, step: str) -> str:
    """Deterministic, so a retried outbox write reports the same id."""
    digest = hashlib.sha1(f"{case_id}\n{step}".encode()).hexdigest()
    return f"outbox-{digest[:16]}"


def outbox_path(outbox_dir: Path, case_id: str, step: str) -> Path:
    return outbox_dir / f"{_safe_name(case_id)}--{_safe_name(step)}.json"


def case_links(case_id: str, settings: Settings) -> dict[str, str]:
    """Where ops open the case: its workflow in the Temporal UI, its page in the agent
    console and its state in the HTTP API."""
    ui = settings.TEMPORAL_UI_URL.rstrip("/")
    api = settings.API_PUBLIC_URL.rstrip("/")
    case = quote(case_id, safe="")
    return {
        "temporal_url": f"{ui}/namespaces/{quote(settings.TEMPORAL_NAMESPACE, safe='')}"
                        f"/workflows/{case}",
        "console_url": f"{api}/console/cases/{case}",
        "api_url": f"{api}/cases/{case}",
    }


def _safe_name(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", value)


class EmailActivities:
    """`send_email` and `notify_ops`. The backend follows the settings: SendGrid when
    SENDGRID_API_KEY is set, else the outbox folder."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @property
    def backend(self) -> Literal["sendgrid", "outbox"]:
        return "sendgrid" if self._settings.SENDGRID_API_KEY else "outbox"

    @activity.defn(name=SEND_EMAIL)
    async def send_email(self, email: EmailInput) -> EmailSent:
        return await asyncio.to_thread(self.deliver, email)

    @activity.defn(name=NOTIFY_OPS)
    async def notify_ops(self, notice: OpsNotice) -> EmailSent:
        email = EmailInput(
            case_id=notice.case_id,
            template="ops_escalation",
            to=self._settings.OPS_EMAIL,
            locale="en",
            context={"kind": notice.kind, "message": notice.message,
                     **case_links(notice.case_id, self._settings)},
            step=f"ops-{notice.step}",  # never collides with a customer email's step
        )
        return await asyncio.to_thread(self.deliver, email)

    @activity.defn(name=SEND_OPS_REPORT)
    async def send_ops_report(self, report: OpsReport) -> EmailSent:
        email = EmailInput(
            case_id=report.subject_id, template=report.template, to=self._settings.OPS_EMAIL,
            locale="en", context=report.context, step=f"ops-{report.step}")
        return await asyncio.to_thread(self.deliver, email)

    # --- blocking part (runs in a worker thread) -----------------------------------

    def deliver(self, email: EmailInput) -> EmailSent:
        """Render and send one email; raises EmailTransient / EmailPermanent."""
        try:
            rendered = email.render()
        except email_render.RenderError as exc:
            raise permanent(
                EMAIL_PERMANENT, str(exc), template=email.template, step=email.step
            ) from None
        if self.backend == "sendgrid":
            message_id = self._send_sendgrid(email, rendered)
        else:
            message_id = self._write_outbox(email, rendered)
        return EmailSent(
            message_id=message_id,
            backend=self.backend,
            template=email.template,
            to=email.to,
            subject=rendered.subject,
        )

    def _custom_args(self, email: EmailInput) -> dict[str, str]:
        return {"case_id": email.case_id, "template": email.template, "step": email.step}

    def _send_sendgrid(self, email: EmailInput, rendered: email_render.RenderedEmail) -> str:
        # Imported here: workflows import this module for its models, and the sendgrid
        # package pulls in `cryptography`, which the workflow sandbox cannot load.
        import sendgrid
        from python_http_client.exceptions import HTTPError
        from sendgrid.helpers.mail import Category, CustomArg, Header, Mail, ReplyTo

        settings = self._settings
        mail = Mail(
            from_email=settings.EMAIL_FROM,
            to_emails=email.to,
            subject=rendered.subject,
            plain_text_content=rendered.text,
            html_content=rendered.html,
        )
        mail.reply_to = ReplyTo(reply_address(email.case_id, settings))
        mail.custom_arg = [CustomArg(k, v) for k, v in self._custom_args(email).items()]
        mail.category = Category(email.template)
        mail.header = Header("X-Refund-Template", email.template)

        client = sendgrid.SendGridAPIClient(
            api_key=settings.SENDGRID_API_KEY, host=settings.SENDGRID_API_HOST
        )
        client.client.timeout = HTTP_TIMEOUT_SECONDS  # the SDK default is no timeout
        try:
            response = client.send(mail)
        except HTTPError as exc:
            raise _map_http_error(exc, email) from None
        except (URLError, OSError) as exc:  # refused, reset, DNS, timeout
            reason = getattr(exc, "reason", exc)
            raise transient(
                EMAIL_TRANSIENT, f"SendGrid unreachable: {reason}", step=email.step
            ) from None
        return response.headers.get("X-Message-Id") or ""

    def _write_outbox(self, email: EmailInput, rendered: email_render.RenderedEmail) -> str:
        settings = self._settings
        message_id = outbox_message_id(email.case_id, email.step)
        record = {
            "message_id": message_id,
            "to": email.to,
            "from": settings.EMAIL_FROM,
            "reply_to": reply_address(email.case_id, settings),
            "subject": rendered.subject,
            "text": rendered.text,
            "html": rendered.html,
            "template": email.template,
            "locale": email.locale,
            "custom_args": self._custom_args(email),
        }
        target = outbox_path(Path(settings.OUTBOX_DIR), email.case_id, email.step)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Write a temporary file and rename it over the target: readers never see
            # half a file, and a retry replaces the earlier attempt's file.
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    json.dump(record, handle, ensure_ascii=False, indent=2)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise transient(
                EMAIL_TRANSIENT, f"cannot write outbox {target}: {exc}", step=email.step
            ) from None
        return message_id


def _map_http_error(exc: Any, email: EmailInput) -> Exception:
    """429 / 408 / 5xx: a later attempt may succeed. Other 4xx (bad request, auth,
    payload too large): no retry can fix it."""
    status = int(exc.status_code)
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body)
    message = f"SendGrid answered {status}: {body[:500]}"
    if status in _TRANSIENT_STATUS or status >= 500:
        return transient(EMAIL_TRANSIENT, message, status=status, step=email.step)
    return permanent(EMAIL_PERMANENT, message, status=status, step=email.step)
