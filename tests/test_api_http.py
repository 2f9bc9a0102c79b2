"""The app over HTTP (in process) where no Temporal answer is needed: authentication,
validation, docs, logs, and 503 when Temporal is unreachable (a real connection attempt
to a port where nothing listens)."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest

from api import signatures
from tests.api_support import (
    INBOUND_SECRET,
    api_settings,
    app_for,
    http,
    inbound_form,
    request_body,
    signed_intake,
    signed_stripe,
    stripe_event,
)


@pytest.fixture
def down():
    """The app with Temporal unreachable."""
    return app_for(None)


@pytest.fixture
def log_lines():
    """Every JSON line the API logs during the test."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("refund_desk.api")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


async def test_healthz_is_503_with_the_reason_when_temporal_is_unreachable(down):
    async with http(down) as api:
        resp = await api.get("/healthz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["temporal"] == "unreachable" and "connect" in body["reason"]


async def test_docs_and_openapi_carry_examples(down):
    async with http(down) as api:
        docs = await api.get("/docs")
        spec = (await api.get("/openapi.json")).json()
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    intake = spec["paths"]["/webhooks/refund-requests"]["post"]
    assert intake["requestBody"]["content"]["application/json"]["examples"]
    assert any(p["name"] == signatures.HEADER for p in intake["parameters"])
    assert "RefundRequest" in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["ApproveBody"]["examples"]


# --- intake ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers, reason", [
    ({}, "missing"),
    ({signatures.HEADER: "t=1,v1=abc"}, "tolerance"),
    ({signatures.HEADER: "v1=abc"}, "malformed"),
])
async def test_intake_refuses_unsigned_requests(down, headers, reason):
    async with http(down) as api:
        resp = await api.post("/webhooks/refund-requests",
                              content=json.dumps(request_body("r1")), headers=headers)
    assert resp.status_code == 401 and reason in resp.json()["detail"]


async def test_intake_refuses_wrong_secret_and_expired_signature(down):
    async with http(down) as api:
        raw, headers = signed_intake(request_body("r1"), secret="wrong")
        wrong = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
        raw, headers = signed_intake(request_body("r1"), timestamp=int(time.time()) - 301)
        expired = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
    assert wrong.status_code == 401 and "no valid signature" in wrong.json()["detail"]
    assert expired.status_code == 401 and "tolerance" in expired.json()["detail"]


@pytest.mark.parametrize("body, field", [
    (b"{not json", None),
    (b"[]", None),
    (request_body("r1", amount=-5), "amount"),
    (request_body("r1", reason="bored"), "reason"),
    (request_body("r1", customer_email="nobody"), "customer_email"),
    (request_body("r1", extra="x"), "extra"),
    (request_body("r1", charge_id=None), None),
    # Above Temporal's 2 KB search attribute cap: a 503 (retried forever) before the bound.
    (request_body("r1", charge_id="ch_" + "a" * 3000), "charge_id"),
    (request_body("r1", charge_id=None, payment_intent_id="pi_" + "a" * 3000),
     "payment_intent_id"),
])
async def test_intake_refuses_invalid_bodies_with_field_errors(down, body, field):
    async with http(down) as api:
        raw, headers = signed_intake(body)
        resp = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
    assert resp.status_code == 422
    errors = resp.json()["detail"]
    assert errors and all("msg" in e for e in errors)
    if field:
        assert any(field in e["loc"] for e in errors)


async def test_intake_is_503_when_temporal_is_unreachable(down):
    async with http(down) as api:
        raw, headers = signed_intake(request_body("r1"))
        resp = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
    assert resp.status_code == 503
    assert resp.json()["detail"]["error"] == "temporal_unavailable"


async def test_intake_refuses_huge_bodies(down):
    async with http(down) as api:
        raw, headers = signed_intake(b"x" * (300 * 1024))
        resp = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
    assert resp.status_code == 413


# --- stripe ---------------------------------------------------------------------------


async def test_stripe_bad_signature_is_400(down):
    payload, headers = signed_stripe(stripe_event("refund.updated", {}), secret="whsec_other")
    async with http(down) as api:
        bad = await api.post("/webhooks/stripe", content=payload, headers=headers)
        missing = await api.post("/webhooks/stripe", content=payload)
    assert bad.status_code == 400 and "signature" in bad.json()["detail"]
    assert missing.status_code == 400


async def test_stripe_unknown_event_is_acknowledged_and_ignored(down):
    payload, headers = signed_stripe(stripe_event("customer.created", {"id": "cus_1"}))
    async with http(down) as api:
        resp = await api.post("/webhooks/stripe", content=payload, headers=headers)
    assert resp.status_code == 200 and resp.json()["status"] == "ignored"


async def test_stripe_event_without_a_usable_refund_is_acknowledged(down):
    charge = {"id": "ch_1", "object": "charge", "amount_refunded": 100}  # no refunds list
    payload, headers = signed_stripe(stripe_event("charge.refunded", charge))
    async with http(down) as api:
        resp = await api.post("/webhooks/stripe", content=payload, headers=headers)
    assert resp.status_code == 200 and resp.json()["status"] == "ignored"


async def test_stripe_event_is_503_not_2xx_when_temporal_is_unreachable(down):
    refund = {"id": "re_1", "object": "refund", "status": "succeeded", "amount": 100,
              "currency": "usd", "charge": "ch_1", "metadata": {"case_id": "refund-r1"}}
    payload, headers = signed_stripe(stripe_event("refund.updated", refund))
    async with http(down) as api:
        resp = await api.post("/webhooks/stripe", content=payload, headers=headers)
    assert resp.status_code == 503


async def test_stripe_signed_garbage_is_400(down):
    import stripe

    payload = "[1, 2]"
    header = stripe.WebhookSignature.generate_signature_header(payload, "whsec_test_refund_desk")
    async with http(down) as api:
        resp = await api.post("/webhooks/stripe", content=payload,
                              headers={"Stripe-Signature": header})
    assert resp.status_code == 400


# --- sendgrid -------------------------------------------------------------------------


async def test_inbound_needs_the_secret_in_url_or_basic_auth(down):
    form = inbound_form("refund-r1", "ana@example.com", "hello")
    basic = base64.b64encode(f"sendgrid:{INBOUND_SECRET}".encode()).decode()
    wrong = base64.b64encode(b"sendgrid:nope").decode()
    async with http(down) as api:
        none = await api.post("/webhooks/sendgrid/inbound", data=form)
        bad = await api.post("/webhooks/sendgrid/inbound?secret=nope", data=form)
        bad_basic = await api.post("/webhooks/sendgrid/inbound", data=form,
                                   headers={"Authorization": f"Basic {wrong}"})
        # authorised: Temporal is down, so placing the mail is 503 (SendGrid retries)
        url = await api.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}", data=form)
        with_basic = await api.post("/webhooks/sendgrid/inbound", data=form,
                                    headers={"Authorization": f"Basic {basic}"})
    assert [r.status_code for r in (none, bad, bad_basic)] == [401, 401, 401]
    assert url.status_code == 503 and with_basic.status_code == 503


async def test_inbound_mail_without_a_case_address_is_logged_and_acknowledged(down, log_lines):
    form = inbound_form("refund-r1", "ana@example.com", "hello")
    form["to"] = "support@example.com"
    form["envelope"] = json.dumps({"to": ["support@example.com"]})
    async with http(down) as api:
        resp = await api.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}", data=form,
                              files={"attachment1": ("r.pdf", b"%PDF", "application/pdf")})
    assert resp.status_code == 200 and resp.json()["reason"] == "no_case_address"
    assert any('"inbound_mail_unplaced"' in line for line in log_lines)
    assert not any(INBOUND_SECRET in line for line in log_lines)


async def test_signed_event_webhook_refuses_unsigned_posts():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests.test_api_unit import sendgrid_sign

    private = ec.generate_private_key(ec.SECP256R1())
    public_b64 = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    app = app_for(None, api_settings(SENDGRID_EVENTS_PUBLIC_KEY=public_b64))
    payload = b'[{"event":"delivered","email":"a@example.com"}]'
    ts = str(int(time.time()))
    async with http(app) as api:
        unsigned = await api.post("/webhooks/sendgrid/events", content=payload)
        signed = await api.post("/webhooks/sendgrid/events", content=payload, headers={
            "X-Twilio-Email-Event-Webhook-Signature": sendgrid_sign(private, ts, payload),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts})
    assert unsigned.status_code == 401
    assert signed.status_code == 200 and signed.json() == {"delivered": 0, "ignored": 1}


async def test_event_webhook_needs_a_json_array(down):
    async with http(down) as api:
        resp = await api.post("/webhooks/sendgrid/events", content=b'{"event": "bounce"}')
    assert resp.status_code == 400


# --- agents ---------------------------------------------------------------------------


async def test_agent_endpoints_need_a_known_token(down, log_lines):
    async with http(down) as api:
        none = await api.get("/cases")
        bad = await api.get("/cases", headers={"Authorization": "Bearer tok-mallory"})
        viewer_acts = await api.post("/cases/refund-r1/approve", json={"note": "ok"},
                                     headers={"Authorization": "Bearer tok-vic"})
        viewer_opens = await api.post("/cases", json=request_body("r1"),
                                      headers={"Authorization": "Bearer tok-vic"})
        bad_id = await api.get("/cases/not-a-case", headers={"Authorization": "Bearer tok-vic"})
    assert none.status_code == 401 and bad.status_code == 401
    assert viewer_acts.status_code == 403 and viewer_opens.status_code == 403
    assert bad_id.status_code == 404
    assert not any("tok-" in line for line in log_lines)
    agents = [json.loads(line).get("agent") for line in log_lines]
    assert "vic" in agents


async def test_agent_bodies_are_validated_and_the_agent_is_not_taken_from_the_body(down):
    auth = {"Authorization": "Bearer tok-alice"}
    async with http(down) as api:
        forged = await api.post("/cases/refund-r1/approve", json={"agent": "bob"}, headers=auth)
        negative = await api.post("/cases/refund-r1/approve", json={"amount": -1}, headers=auth)
        no_questions = await api.post("/cases/refund-r1/request-info", json={"questions": []},
                                      headers=auth)
        bad_filter = await api.get("/cases?status=nonsense", headers=auth)
    assert [r.status_code for r in (forged, negative, no_questions, bad_filter)] == [422] * 4


async def test_request_logs_are_json_with_method_path_status_duration(down, log_lines):
    async with http(down) as api:
        raw, headers = signed_intake(request_body("r1"))
        await api.post("/webhooks/refund-requests?secret=should-not-be-logged", content=raw,
                       headers=headers)
    [line] = [json.loads(x) for x in log_lines if '"request"' in x]
    assert line["method"] == "POST" and line["path"] == "/webhooks/refund-requests"
    assert line["status"] == 503 and line["case_id"] == "refund-r1"
    assert isinstance(line["duration_ms"], float)
    assert not any("should-not-be-logged" in x for x in log_lines)
