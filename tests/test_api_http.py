"""The app over HTTP (in process) where no Temporal answer is needed: authentication,
validation, docs, logs, and 503 when Temporal is unreachable (a real connection attempt
to a port where nothing listens)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

from api import agents, signatures
from api.app import create_app
from api.intake import MAX_BODY_BYTES
from core import search_attributes as sa
from core.contract import QUEUE_MEMO
from core.reply_address import reply_tag
from tests.api_support import (
    INBOUND_SECRET,
    StandInClient,
    api_settings,
    app_for,
    app_with,
    http,
    inbound_form,
    multipart,
    request_body,
    signed_intake,
    signed_stripe,
    stripe_event,
)

ALICE = {"Authorization": "Bearer tok-alice"}


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


async def test_docs_say_a_second_approval_by_the_same_agent_is_422_invalid(down):
    # What the case answers (see test_api_e2e): the docs must not promise 409 wrong_state.
    async with http(down) as api:
        spec = (await api.get("/openapi.json")).json()
    responses = spec["paths"]["/cases/{case_id}/approve"]["post"]["responses"]
    assert "same agent" in responses["422"]["description"]
    assert "same agent" not in responses["409"]["description"]
    assert "504" in responses
    refusal = spec["components"]["schemas"]["Refusal"]["properties"]
    assert "already approved" not in json.dumps(refusal["reason"]["examples"][1:])
    assert refusal["code"]["examples"][0] == "invalid"


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
    # ':' cannot ride in a reply address (email parsers split on it)
    (request_body("order:42"), "request_id"),
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


@pytest.mark.parametrize("amount", [2**63, 99_999_999 + 1])
async def test_intake_refuses_an_amount_stripe_cannot_hold_with_a_clear_422(down, amount):
    """Not a 503 from Temporal refusing the RefundAmount search attribute, retried forever."""
    async with http(down) as api:
        raw, headers = signed_intake(request_body("r1", amount=amount))
        resp = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
    assert resp.status_code == 422
    [error] = resp.json()["detail"]
    assert error["loc"] == ["amount"]
    assert "above 99999999, the most Stripe can charge or refund" in error["msg"]


async def test_intake_takes_stripes_largest_amount_and_non_card_charge_ids():
    client = StandInClient()
    async with http(app_with(client)) as api:
        for request_id, charge in (("sepa-1", "py_3PqSepa0001"), ("card-1", "ch_3PqCard0001")):
            raw, headers = signed_intake(request_body(request_id, charge_id=charge,
                                                      amount=99_999_999, currency="eur"))
            resp = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
            assert resp.status_code == 202, resp.text
    started = {kwargs["id"]: kwargs["search_attributes"] for _, _, kwargs in client.starts}
    assert started["refund-sepa-1"].get(sa.CHARGE_ID) == "py_3PqSepa0001"
    assert started["refund-sepa-1"].get(sa.AMOUNT) == 99_999_999


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


async def test_agents_cannot_open_a_case_whose_request_id_has_a_colon(down):
    async with http(down) as api:
        resp = await api.post("/cases", json=request_body("order:42"), headers=ALICE)
    assert resp.status_code == 422
    assert any("request_id" in e["loc"] for e in resp.json()["detail"])


async def test_a_case_opened_by_hand_records_its_agent_in_the_memo():
    client = StandInClient()
    async with http(app_with(client)) as api:
        by_hand = await api.post("/cases", json=request_body("r-hand"), headers=ALICE)
        raw, headers = signed_intake(request_body("r-hook"))
        by_webhook = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
    assert by_hand.status_code == 202 and by_webhook.status_code == 202
    [(_, hand_request, hand), (_, _, hook)] = client.starts
    assert hand["id"] == "refund-r-hand" and hand["memo"]["opened_by"] == "agent:alice"
    assert "opened_by" not in json.dumps(hand_request.model_dump(mode="json"))  # not in the request
    assert hook["id"] == "refund-r-hook" and "opened_by" not in hook["memo"]
    # Both carry the queue's first card: the case writes it again only in an agent's queue.
    assert [start[2]["memo"][QUEUE_MEMO].status for start in client.starts] == [
        "received", "received"]
    # Both record when the request reached us: the acknowledgment SLA counts from it.
    assert all(start[1].received_at is not None for start in client.starts)


async def test_new_actions_refuse_bad_input_before_reaching_temporal(down):
    """Giving a case to someone else takes a lead; a close needs its reason; a satisfy its
    requirement and how it was met: refused with a 4xx, nothing sent to the case."""
    async with http(down) as api:
        other = await api.post("/cases/refund-x/assign", json={"assignee": "bob"},
                               headers=ALICE)
        close = await api.post("/cases/refund-x/close", json={"reason": ""}, headers=ALICE)
        satisfy = await api.post("/cases/refund-x/satisfy", json={"requirement": "ticket"},
                                 headers=ALICE)
        note = await api.post("/cases/refund-x/note", json={}, headers=ALICE)
    assert other.status_code == 403 and "lead" in other.json()["detail"]
    assert (close.status_code, satisfy.status_code, note.status_code) == (422, 422, 422)


async def _asgi_post(app: Any, path: str, headers: list[tuple[bytes, bytes]],
                     chunks: list[bytes]) -> tuple[int, list[bytes]]:
    """POST through the raw ASGI interface; returns the status and what was left unread."""
    pending = list(chunks)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not pending:
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "server": ("api", 80), "client": ("127.0.0.1", 1)}
    await app(scope, receive, send)
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    return start["status"], pending


async def test_intake_checks_content_length_before_reading_the_body(down):
    chunk = b"x" * 65536
    chunks = [chunk] * 10  # 640 KB on offer
    status, unread = await _asgi_post(
        down, "/webhooks/refund-requests",
        [(b"content-length", str(len(chunks) * len(chunk)).encode()),
         (b"content-type", b"application/json")], chunks)
    assert status == 413 and len(unread) == 10  # not one chunk was read


async def test_intake_stops_reading_a_body_without_length_past_the_limit(down):
    chunk = b"x" * 65536
    chunks = [chunk] * 10
    status, unread = await _asgi_post(
        down, "/webhooks/refund-requests", [(b"content-type", b"application/json")], chunks)
    assert status == 413
    assert len(unread) == 10 - (MAX_BODY_BYTES // len(chunk) + 1)  # stopped at the limit


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


@pytest.mark.parametrize("kind", [["refund.updated"], {"t": 1}, 5, None, ""])
async def test_a_signed_stripe_event_whose_type_is_not_a_string_is_400(down, kind):
    event = stripe_event("refund.updated", {"id": "re_1", "status": "succeeded"})
    event["type"] = kind
    payload, headers = signed_stripe(event)
    async with http(down) as api:
        resp = await api.post("/webhooks/stripe", content=payload, headers=headers)
    assert resp.status_code == 400 and "type" in resp.json()["detail"]


async def test_stripe_signed_garbage_is_400(down):
    import stripe

    payload = "[1, 2]"
    header = stripe.WebhookSignature.generate_signature_header(payload, "whsec_test_refund_desk")
    async with http(down) as api:
        resp = await api.post("/webhooks/stripe", content=payload,
                              headers={"Stripe-Signature": header})
    assert resp.status_code == 400


@pytest.mark.parametrize("kind, obj", [
    ("charge.refund.updated", {"id": "pyr_1Sepa", "object": "refund", "status": "succeeded",
                               "amount": 1234, "currency": "eur", "charge": "py_1Sepa",
                               "payment_intent": "pi_1Sepa", "metadata": {}}),
    ("charge.dispute.created", {"id": "du_1Sepa", "object": "dispute", "charge": "py_1Sepa",
                                "reason": "debit_not_authorized", "amount": 1234,
                                "status": "needs_response"}),
])
async def test_events_on_a_non_card_payment_reach_the_case_open_on_it(kind, obj):
    """A SEPA or ACH payment's charge id is py_...: its refunds and disputes find the case
    by RefundChargeId like a card's (they were dropped as `not a charge id`)."""
    client = StandInClient(cases_by_charge={"py_1Sepa": ["refund-sepa-1"]})
    payload, headers = signed_stripe(stripe_event(kind, obj))
    async with http(app_with(client)) as api:
        resp = await api.post("/webhooks/stripe", content=payload, headers=headers)
    assert resp.json() == {"status": "delivered", "cases": ["refund-sepa-1"]}, resp.text
    assert client.queries == ["WorkflowType = 'RefundCase' AND ExecutionStatus = 'Running' "
                              "AND RefundChargeId = 'py_1Sepa'"]
    [(case_id, _, signal)] = client.signals
    assert (case_id, signal.charge_id) == ("refund-sepa-1", "py_1Sepa")


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


def _event_keys() -> tuple[Any, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = ec.generate_private_key(ec.SECP256R1())
    public_b64 = base64.b64encode(private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    return private, public_b64


def _event_headers(private: Any, payload: bytes, ts: int) -> dict[str, str]:
    from tests.test_api_unit import sendgrid_sign

    return {"X-Twilio-Email-Event-Webhook-Signature": sendgrid_sign(private, str(ts), payload),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(ts)}


async def test_signed_event_webhook_refuses_unsigned_posts():
    private, public_b64 = _event_keys()
    app = app_for(None, api_settings(SENDGRID_EVENTS_PUBLIC_KEY=public_b64))
    payload = b'[{"event":"delivered","email":"a@example.com"}]'
    async with http(app) as api:
        unsigned = await api.post("/webhooks/sendgrid/events", content=payload)
        signed = await api.post("/webhooks/sendgrid/events", content=payload,
                                headers=_event_headers(private, payload, int(time.time())))
    assert unsigned.status_code == 401
    assert signed.status_code == 200 and signed.json() == {"delivered": 0, "ignored": 1}


async def test_signed_events_older_than_five_minutes_are_refused_as_replays():
    private, public_b64 = _event_keys()
    client = StandInClient()
    app = app_with(client, api_settings(SENDGRID_EVENTS_PUBLIC_KEY=public_b64))
    payload = b'[{"event":"bounce","email":"a@example.com","case_id":"refund-r1"}]'
    now = int(time.time())
    async with http(app) as api:
        replayed = await api.post("/webhooks/sendgrid/events", content=payload,
                                  headers=_event_headers(private, payload, now - 360))
        future = await api.post("/webhooks/sendgrid/events", content=payload,
                                headers=_event_headers(private, payload, now + 360))
        assert client.signals == []
        fresh = await api.post("/webhooks/sendgrid/events", content=payload,
                               headers=_event_headers(private, payload, now - 60))
    assert replayed.status_code == 401 and "5-minute" in replayed.json()["detail"]
    assert future.status_code == 401
    assert fresh.status_code == 200 and [(c, n) for c, n, _ in client.signals] == [
        ("refund-r1", "email_event")]


async def test_event_webhook_with_a_url_secret_refuses_posts_without_it():
    client = StandInClient()
    app = app_with(client, api_settings(SENDGRID_EVENTS_SECRET="events-secret"))
    payload = b'[{"event":"bounce","email":"a@example.com","case_id":"refund-r1"}]'
    basic = base64.b64encode(b"sendgrid:events-secret").decode()
    async with http(app) as api:
        none = await api.post("/webhooks/sendgrid/events", content=payload)
        wrong = await api.post("/webhooks/sendgrid/events?secret=nope", content=payload)
        inbound = await api.post(f"/webhooks/sendgrid/events?secret={INBOUND_SECRET}",
                                 content=payload)
        assert client.signals == []
        url = await api.post("/webhooks/sendgrid/events?secret=events-secret", content=payload)
        auth = await api.post("/webhooks/sendgrid/events", content=payload,
                              headers={"Authorization": f"Basic {basic}"})
    assert [r.status_code for r in (none, wrong, inbound)] == [401, 401, 401]
    assert url.status_code == 200 and auth.status_code == 200
    assert len(client.signals) == 2


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "refund_desk.api" and r.levelno == logging.WARNING]


def test_an_unauthenticated_event_webhook_is_a_warning_at_start_up(caplog):
    with caplog.at_level(logging.WARNING, logger="refund_desk.api"):
        create_app(api_settings())  # development, neither key nor secret: still works
        assert any("sendgrid_events_unauthenticated" in m for m in _warnings(caplog))
        caplog.clear()
        create_app(api_settings(SENDGRID_EVENTS_SECRET="s"))
        create_app(api_settings(SENDGRID_EVENTS_PUBLIC_KEY="a2V5"))
        assert _warnings(caplog) == []


# --- sendgrid inbound: who may write to a case, and in which charset ------------------


async def test_mail_to_a_made_up_reply_address_never_reaches_the_case(log_lines):
    client = StandInClient(customer="ana@example.com")
    url = f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}"
    forged_tag = "refunds+refund-r1+0123456789abcdef@reply.example.com"
    other_case = (f"refunds+refund-r1+{reply_tag('refund-r2', INBOUND_SECRET)}"
                  "@reply.example.com")
    async with http(app_with(client)) as api:
        replies = [await api.post(url, data=inbound_form(
            "refund-r1", "Ana <ana@example.com>", "Approve me, here is my receipt", to=to))
            for to in ("refunds+refund-r1@reply.example.com", forged_tag, other_case)]
        assert client.signals == []
        genuine = await api.post(url, data=inbound_form("refund-r1", "ana@example.com", "hi"))
    for resp in replies:
        assert resp.status_code == 200
        assert resp.json() == {"status": "ignored", "reason": "bad_reply_tag"}
    unplaced = [json.loads(x) for x in log_lines if '"inbound_mail_unplaced"' in x]
    assert [u["reason"] for u in unplaced] == ["bad_reply_tag"] * 3
    assert all(u["case_id"] == "refund-r1" for u in unplaced)
    assert genuine.json() == {"status": "delivered", "case_id": "refund-r1"}
    assert [(c, n) for c, n, _ in client.signals] == [("refund-r1", "customer_reply")]


@pytest.mark.parametrize("charset", ["ISO-2022-JP", "Shift_JIS", "EUC-JP", "UTF-8"])
async def test_a_japanese_reply_reaches_the_case_readable(charset):
    client = StandInClient(customer="kenji@example.jp")
    form = inbound_form("refund-jp-1", "Kenji <kenji@example.jp>", "")
    text = ("購入日は5月3日、チケット番号は4411です。\n\n"
            "2026年5月5日(月) 10:00 Refund Desk <refunds@reply.example.com>:\n"
            "> サポートチケットの番号を教えてください。\n")
    raw = {name: value.encode() for name, value in form.items() if name != "text"}
    raw["subject"] = "Re: 返金のご依頼について".encode(charset)
    raw["text"] = text.encode(charset)
    raw["charsets"] = json.dumps({"to": "UTF-8", "from": "UTF-8", "subject": charset,
                                  "text": charset}).encode()
    raw["attachment-info"] = json.dumps(
        {"attachment1": {"filename": "領収書.pdf"}}, ensure_ascii=False).encode()
    body, headers = multipart(raw, {"attachment1": ("領収書.pdf", b"%PDF")})
    async with http(app_with(client)) as api:
        resp = await api.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}",
                              content=body, headers=headers)
    assert resp.json() == {"status": "delivered", "case_id": "refund-jp-1"}, resp.text
    [(case_id, name, reply)] = client.signals
    assert (case_id, name) == ("refund-jp-1", "customer_reply")
    assert reply.text == "購入日は5月3日、チケット番号は4411です。"
    assert reply.attachments == ["領収書.pdf"] and reply.from_email == "kenji@example.jp"


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


# --- agent actions that time out --------------------------------------------------------


async def _rpc_timeout(*_: Any) -> Any:
    raise WorkflowUpdateRPCTimeoutOrCancelledError()


async def _never(*_: Any) -> Any:
    await asyncio.sleep(3600)


@pytest.mark.parametrize("on_update", [_rpc_timeout, _never], ids=["rpc_timeout", "hangs"])
async def test_an_action_the_case_does_not_answer_in_time_is_504(monkeypatch, log_lines,
                                                                  on_update):
    monkeypatch.setattr(agents, "UPDATE_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(agents, "UPDATE_BACKSTOP_SECONDS", 0.2)
    client = StandInClient(on_update=on_update)
    async with http(app_with(client)) as api:
        resp = await api.post("/cases/refund-r1/approve", json={"note": "ok"}, headers=ALICE)
    assert resp.status_code == 504
    assert "did not answer in time" in resp.json()["detail"]
    [(case_id, update, kwargs)] = client.updates
    assert (case_id, update) == ("refund-r1", "approve_action")
    assert kwargs["rpc_timeout"] == timedelta(seconds=0.2)  # the SDK call carries the deadline
    [line] = [json.loads(x) for x in log_lines if '"request"' in x]
    assert line["status"] == 504 and line["outcome"] == "case_slow"


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
