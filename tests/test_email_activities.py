"""The email activities through the real sendgrid SDK to a local HTTP capture server
(checking the JSON SendGrid would receive and the error mapping), and the outbox backend
used when no SendGrid key is set."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.email_activities import EmailActivities, outbox_message_id
from activities.email_models import EMAIL_PERMANENT, EMAIL_TRANSIENT, EmailInput, OpsNotice
from core.config import Settings
from core.reply_address import reply_address
from stack.net import free_port

if TYPE_CHECKING:
    from tests.sendgrid_capture import SendGridCapture

pytest_plugins = ["tests.sendgrid_capture"]

API_KEY = "SG.test-key"


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "SENDGRID_API_KEY": None,
        "EMAIL_FROM": "Refund Desk <refunds@example.com>",
        "REPLY_DOMAIN": "reply.example.com",
        "OPS_EMAIL": "ops@example.com",
        "OUTBOX_DIR": tmp_path / "outbox",
    }
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]


def _sendgrid_acts(tmp_path: Path, host: str) -> EmailActivities:
    return EmailActivities(_settings(tmp_path, SENDGRID_API_KEY=API_KEY, SENDGRID_API_HOST=host))


def _approval(step: str = "approval") -> EmailInput:
    return EmailInput(
        case_id="refund-req_42",
        template="approval",
        to="jane@example.com",
        locale="en",
        context={"amount": 12345, "currency": "usd", "next_steps_by": "2025-03-06T12:00:00Z"},
        step=step,
    )


async def test_send_email_posts_what_sendgrid_expects(tmp_path, sendgrid_capture):
    acts = _sendgrid_acts(tmp_path, sendgrid_capture.host)

    sent = await ActivityEnvironment().run(acts.send_email, _approval())

    assert sent.backend == "sendgrid"
    assert sent.message_id.startswith("capture-")  # the X-Message-Id header
    assert sent.subject == "Your refund of $123.45 has been approved"
    assert (sent.template, sent.to) == ("approval", "jane@example.com")

    [request] = sendgrid_capture.requests
    assert request.path == "/v3/mail/send"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    body = request.body
    assert body["personalizations"] == [{"to": [{"email": "jane@example.com"}]}]
    assert body["from"] == {"email": "refunds@example.com", "name": "Refund Desk"}
    assert body["reply_to"] == {"email": reply_address("refund-req_42", acts._settings)}
    assert body["reply_to"]["email"].startswith("refunds+refund-req_42+")  # tagged
    assert body["subject"] == sent.subject
    contents = {c["type"]: c["value"] for c in body["content"]}
    assert set(contents) == {"text/plain", "text/html"}
    assert "$123.45" in contents["text/plain"]
    assert "<strong>$123.45</strong>" in contents["text/html"]
    assert "March 6, 2025" in contents["text/plain"]  # next steps "by when"
    assert body["custom_args"] == {
        "case_id": "refund-req_42",
        "template": "approval",
        "step": "approval",
    }
    assert body["categories"] == ["approval"]
    assert body["headers"] == {"X-Refund-Template": "approval"}


async def test_message_id_comes_from_sendgrid_header(tmp_path, sendgrid_capture):
    acts = _sendgrid_acts(tmp_path, sendgrid_capture.host)
    first = await ActivityEnvironment().run(acts.send_email, _approval("a"))
    second = await ActivityEnvironment().run(acts.send_email, _approval("b"))
    assert first.message_id.startswith("capture-")
    assert first.message_id != second.message_id


async def test_notify_ops_sends_escalation_to_ops_address(tmp_path, sendgrid_capture):
    acts = _sendgrid_acts(tmp_path, sendgrid_capture.host)
    notice = OpsNotice(case_id="refund-req_7", kind="ack_sla_breached",
                       message="Acknowledgment sent 12 s after its deadline.", step="ack-sla")

    sent = await ActivityEnvironment().run(acts.notify_ops, notice)

    assert sent.to == "ops@example.com"
    assert sent.template == "ops_escalation"
    [request] = sendgrid_capture.requests
    assert request.body["personalizations"] == [{"to": [{"email": "ops@example.com"}]}]
    assert request.body["custom_args"] == {
        "case_id": "refund-req_7", "template": "ops_escalation", "step": "ops-ack-sla",
    }
    assert "ack_sla_breached" in request.body["subject"]
    text = next(c["value"] for c in request.body["content"] if c["type"] == "text/plain")
    assert "Acknowledgment sent 12 s after its deadline." in text


@pytest.mark.parametrize(
    ("status", "error_type", "non_retryable"),
    [
        (429, EMAIL_TRANSIENT, False),
        (500, EMAIL_TRANSIENT, False),
        (400, EMAIL_PERMANENT, True),
        (401, EMAIL_PERMANENT, True),
    ],
)
async def test_sendgrid_errors_are_typed(
    tmp_path, sendgrid_capture: SendGridCapture, status, error_type, non_retryable
):
    acts = _sendgrid_acts(tmp_path, sendgrid_capture.host)
    sendgrid_capture.fail_next(status)

    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.send_email, _approval())

    assert err.value.type == error_type
    assert err.value.non_retryable is non_retryable
    assert err.value.details[0]["status"] == status
    assert len(sendgrid_capture.requests) == 1  # the SDK does not retry; Temporal does


async def test_transient_error_then_retry_succeeds(tmp_path, sendgrid_capture):
    acts = _sendgrid_acts(tmp_path, sendgrid_capture.host)
    sendgrid_capture.fail_next(429)
    with pytest.raises(ApplicationError):
        await ActivityEnvironment().run(acts.send_email, _approval())
    sent = await ActivityEnvironment().run(acts.send_email, _approval())
    assert sent.message_id.startswith("capture-")
    assert len(sendgrid_capture.requests) == 2


async def test_unreachable_sendgrid_is_transient(tmp_path):
    acts = _sendgrid_acts(tmp_path, f"http://127.0.0.1:{free_port()}")  # nothing listens
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.send_email, _approval())
    assert err.value.type == EMAIL_TRANSIENT
    assert err.value.non_retryable is False


async def test_missing_context_key_is_permanent_and_sends_nothing(tmp_path, sendgrid_capture):
    acts = _sendgrid_acts(tmp_path, sendgrid_capture.host)
    email = _approval().model_copy(update={"context": {"amount": 100, "currency": "usd"}})

    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.send_email, email)

    assert err.value.type == EMAIL_PERMANENT
    assert err.value.non_retryable is True
    assert "next_steps_by" in str(err.value)
    assert sendgrid_capture.requests == []


async def test_unknown_template_is_permanent(tmp_path):
    acts = EmailActivities(_settings(tmp_path))
    # Bypasses validation as a payload from an older/newer workflow might.
    email = EmailInput.model_construct(**{**_approval().model_dump(), "template": "nope"})
    with pytest.raises(ApplicationError) as err:
        await ActivityEnvironment().run(acts.send_email, email)
    assert err.value.type == EMAIL_PERMANENT
    assert err.value.non_retryable is True


def test_email_input_refuses_non_json_context():
    with pytest.raises(ValidationError, match="Decimal"):
        EmailInput(case_id="c", template="approval", to="a@example.com", step="s",
                   context={"amount": Decimal("1.00")})


async def test_outbox_writes_one_file_and_a_retry_overwrites_it(tmp_path):
    settings = _settings(tmp_path)
    acts = EmailActivities(settings)

    first = await ActivityEnvironment().run(acts.send_email, _approval())
    second = await ActivityEnvironment().run(acts.send_email, _approval())

    files = sorted(p.name for p in settings.OUTBOX_DIR.iterdir())
    assert files == ["refund-req_42--approval.json"]  # no temporary files left either
    assert first == second
    assert first.backend == "outbox"
    assert first.message_id == outbox_message_id("refund-req_42", "approval")
    record = json.loads((settings.OUTBOX_DIR / files[0]).read_text())
    assert record["to"] == "jane@example.com"
    assert record["from"] == "Refund Desk <refunds@example.com>"
    assert record["reply_to"] == reply_address("refund-req_42", settings)
    assert record["subject"] == "Your refund of $123.45 has been approved"
    assert "$123.45" in record["text"] and "$123.45" in record["html"]
    assert (record["template"], record["locale"]) == ("approval", "en")
    assert record["custom_args"] == {
        "case_id": "refund-req_42", "template": "approval", "step": "approval",
    }
    assert record["message_id"] == first.message_id


async def test_outbox_keeps_one_file_per_step(tmp_path):
    settings = _settings(tmp_path)
    acts = EmailActivities(settings)
    await ActivityEnvironment().run(acts.send_email, _approval("approval"))
    await ActivityEnvironment().run(acts.send_email, _approval("approval-2"))
    await ActivityEnvironment().run(
        acts.notify_ops, OpsNotice(case_id="refund-req_42", kind="k", message="m", step="approval")
    )
    assert sorted(p.name for p in settings.OUTBOX_DIR.iterdir()) == [
        "refund-req_42--approval-2.json",
        "refund-req_42--approval.json",
        "refund-req_42--ops-approval.json",
    ]

