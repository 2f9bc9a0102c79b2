"""Messages, names and schedule options of the email activities, kept apart from the
activity code so the workflow sandbox imports them without the sendgrid SDK."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal, get_args

from pydantic import Field, field_validator
from temporalio.common import RetryPolicy

from activities import email_render
from core.models import Locale, Strict

# Activity names: the workflow and its test doubles use these strings.
SEND_EMAIL = "send_email"
NOTIFY_OPS = "notify_ops"
SEND_OPS_REPORT = "send_ops_report"

# Error types raised by the activities (ApplicationError.type).
EMAIL_TRANSIENT = "EmailTransient"
EMAIL_PERMANENT = "EmailPermanent"

# Schedule options, the one definition the workflow uses: one attempt ends within the
# HTTP timeout.
HTTP_TIMEOUT_SECONDS = 20.0
EMAIL_START_TO_CLOSE = timedelta(seconds=30)
EMAIL_RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=0,  # unlimited: EMAIL_DEADLINE ends the retries
    non_retryable_error_types=[EMAIL_PERMANENT],
)
# Retried against a deadline, not a count: a SendGrid outage shorter than this loses no
# email; past it the case records the failure and tells ops (an email is never a decision).
EMAIL_DEADLINE = timedelta(hours=1)

TemplateName = Literal[
    "acknowledgment",
    "info_request",
    "reminder",
    "approval",
    "denial",
    "refund_completed",
    "nothing_left",
    "billing_error_apology",
    "abandoned",
    "refund_failed",
    "ops_escalation",
    "dispute_opened",
]
TEMPLATE_NAMES: tuple[str, ...] = get_args(TemplateName)
REQUIRED_CONTEXT = email_render.REQUIRED_CONTEXT  # template -> required context keys
# Reports for the ops address only, in English (customers never get them).
OpsTemplateName = Literal["incident_report"]
OPS_TEMPLATE_NAMES: tuple[str, ...] = get_args(OpsTemplateName)

def _check_jsonable(value: Any, where: str) -> None:
    """Context crosses the workflow boundary and the sendgrid SDK's json.dumps: plain JSON
    types only (a Decimal or datetime would change type on the way)."""
    if value is None or isinstance(value, str | int | float | bool):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_jsonable(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, got {key!r}")
            _check_jsonable(item, f"{where}.{key}")
        return
    raise ValueError(
        f"{where}: {type(value).__name__} is not JSON (send money as int minor units, "
        "dates as ISO strings)"
    )


class EmailInput(Strict):
    """One email of a case. `step` is a stable name (e.g. "ack", "info-1"): it names the
    outbox file and tags the SendGrid message, so a retry is the same email."""

    case_id: str = Field(min_length=1)
    template: TemplateName | OpsTemplateName
    to: str = Field(min_length=3)
    locale: Locale = "en"
    context: dict[str, Any] = Field(default_factory=dict)
    step: str = Field(min_length=1)
    timezone: str | None = Field(
        None, description="The customer's IANA time zone; None: the locale's default.")

    @field_validator("context")
    @classmethod
    def _jsonable(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_jsonable(value, "context")
        return value

    def render(self) -> email_render.RenderedEmail:
        """The email as the recipient reads it (the activity sends this; the agent console
        shows it again from the activity's input in the case's history)."""
        context = {"customer_email": self.to, **self.context, "case_id": self.case_id}
        return email_render.render(self.template, self.locale, context, self.timezone)


class EmailSent(Strict):
    message_id: str
    backend: Literal["sendgrid", "outbox"]
    template: TemplateName | OpsTemplateName
    to: str
    subject: str


class OpsNotice(Strict):
    """An escalation for the ops address (SLA breach, permanent failure, ...)."""

    case_id: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    message: str
    step: str = Field(min_length=1)


class OpsReport(Strict):
    """A report for the ops address (e.g. a billing incident's, when it ends). `subject_id`
    is the workflow it is about; `step` names the email as for a case's emails."""

    subject_id: str = Field(min_length=1)
    template: OpsTemplateName
    context: dict[str, Any] = Field(default_factory=dict)
    step: str = Field(min_length=1)

    @field_validator("context")
    @classmethod
    def _jsonable(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_jsonable(value, "context")
        return value
