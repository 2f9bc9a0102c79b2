"""Pure pieces of the API: the intake signature scheme, quoted-history stripping, the
Stripe and SendGrid event mappings, visibility queries and token lookup."""

from __future__ import annotations

import base64
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import HTTPException
from sendgrid.helpers.eventwebhook import EventWebhook

from api import signatures
from api.agents import cases_query, identify
from api.sendgrid import (
    attachment_names,
    bare_address,
    case_id_from_addresses,
    email_event_deliveries,
    recipients,
    strip_quoted,
    verify_event_signature,
)
from api.stripe_events import map_event, open_cases_query
from core.config import AgentIdentity
from core.models import DisputeOpenedSignal, RefundUpdateSignal

BODY = b'{"request_id":"req_1"}'
SECRET = "s3cret"

# --- intake signatures ------------------------------------------------------------------


def test_signed_body_verifies_and_returns_timestamp():
    now = 1_767_225_600
    header = signatures.sign(BODY, SECRET, timestamp=now)
    assert header.startswith(f"t={now},v1=")
    assert signatures.verify(BODY, header, SECRET, now=now + 10) == now


def test_any_of_several_v1_signatures_passes_for_rotation():
    now = int(time.time())
    header = signatures.sign(BODY, ["old-secret", SECRET], timestamp=now)
    assert header.count("v1=") == 2
    assert signatures.verify(BODY, header, SECRET) == now
    # and a receiver holding both secrets accepts a sender still on the old one
    old_only = signatures.sign(BODY, "old-secret", timestamp=now)
    assert signatures.verify(BODY, old_only, ["new-secret", "old-secret"]) == now


@pytest.mark.parametrize("header, message", [
    (None, "missing"),
    ("", "missing"),
    ("garbage", "malformed"),
    ("t=abc,v1=00", "bad timestamp"),
    ("v1=00", "no timestamp"),
    ("t=1,v0=00", "no v1"),
    ("t=1,t=2,v1=00", "bad timestamp"),
    ("t=١٢٣,v1=00", "bad timestamp"),  # non-ASCII digits are not a timestamp
])
def test_malformed_headers_are_refused_with_a_reason(header, message):
    with pytest.raises(signatures.SignatureError, match=message):
        signatures.verify(BODY, header, SECRET)


def test_wrong_secret_tampered_body_and_stale_or_future_timestamps_fail():
    now = 1_767_225_600
    good = signatures.sign(BODY, SECRET, timestamp=now)
    with pytest.raises(signatures.SignatureError, match="no valid signature"):
        signatures.verify(BODY, good, "other", now=now)
    with pytest.raises(signatures.SignatureError, match="no valid signature"):
        signatures.verify(BODY + b" ", good, SECRET, now=now)
    with pytest.raises(signatures.SignatureError, match="tolerance"):
        signatures.verify(BODY, good, SECRET, now=now + 301)
    with pytest.raises(signatures.SignatureError, match="tolerance"):
        signatures.verify(BODY, good, SECRET, now=now - 301)
    assert signatures.verify(BODY, good, SECRET, now=now + 300) == now


@pytest.mark.parametrize("secrets", ["", [""], []])
def test_an_unset_secret_refuses_even_a_body_signed_with_the_empty_key(secrets):
    # HMAC with an empty key is computable by anyone: it must never authenticate.
    forged = signatures.sign(BODY, "")
    with pytest.raises(signatures.SignatureError, match="no intake secret"):
        signatures.verify(BODY, forged, secrets)


def test_non_ascii_candidate_signature_never_matches():
    now = int(time.time())
    with pytest.raises(signatures.SignatureError, match="no valid signature"):
        signatures.verify(BODY, f"t={now},v1=é", SECRET)


# --- quoted history ---------------------------------------------------------------------


def test_strip_quoted_drops_gt_lines_and_everything_after_attribution():
    text = (
        "I bought it on 3 May.\r\n"
        "Receipt attached.\r\n"
        "\r\n"
        "On Mon, 5 May 2026 at 10:00, Refund Desk <refunds+refund-r1@reply.example.com> wrote:\r\n"
        "> Which export failed?\r\n"
        "> Thanks\r\n"
        "More history that is not quoted\r\n"
    )
    assert strip_quoted(text) == "I bought it on 3 May.\nReceipt attached."


def test_strip_quoted_handles_wrapped_attribution_and_inline_quotes():
    text = (
        "> earlier line\n"
        "Answer one.\n"
        "On Mon, 5 May 2026 at 10:00 Refund Desk <\n"
        "refunds+refund-r1@reply.example.com> wrote:\n"
        "old text\n"
    )
    assert strip_quoted(text) == "Answer one."


@pytest.mark.parametrize("separator", [
    "-----Original Message-----",
    "________________________________",
    "2026年5月5日(月) 10:00 Refund Desk <refunds@reply.example.com>:",
    "2026/05/05 10:00、Refund Desk <refunds@reply.example.com>のメール:",
    "2026년 5월 5일 (월) 오전 10:00, Refund Desk <refunds@reply.example.com>님이 작성:",
])
def test_strip_quoted_knows_other_clients_separators(separator):
    assert strip_quoted(f"New text\n{separator}\nold text") == "New text"


def test_on_without_wrote_is_ordinary_text():
    assert strip_quoted("On Monday the export failed.\nThanks") == (
        "On Monday the export failed.\nThanks")


# --- SendGrid inbound helpers -----------------------------------------------------------


def test_case_id_from_recipient_address_and_envelope():
    form = {"to": "Support <support@example.com>, "
                  "Refund Desk <refunds+refund-req_1042@Reply.Example.com>",
            "envelope": '{"to": ["x@example.com"], "from": "ana@example.com"}'}
    assert case_id_from_addresses(recipients(form), "reply.example.com") == "refund-req_1042"
    only_envelope = {"to": "undisclosed-recipients:;",
                     "envelope": '{"to": ["refunds+refund-r.2@reply.example.com"]}'}
    assert case_id_from_addresses(recipients(only_envelope), "reply.example.com") == "refund-r.2"


@pytest.mark.parametrize("to", [
    "refunds+refund-req_1@elsewhere.com",  # wrong domain
    "refunds@reply.example.com",  # no case
    "refunds+not-a-case@reply.example.com",
    "refunds+refund-'; drop@reply.example.com",
    "",
])
def test_no_case_id_from_foreign_addresses(to):
    assert case_id_from_addresses(recipients({"to": to, "envelope": "not json"}),
                                  "reply.example.com") is None


def test_bare_address_lowercases_and_strips_names():
    assert bare_address("Ana Example <Ana@Example.COM>") == "ana@example.com"
    assert bare_address("not an address") is None
    assert bare_address(None) is None


def test_attachment_names_prefer_attachment_info():
    info = '{"attachment2": {"filename": "b.png"}, "attachment1": {"filename": "receipt.pdf"}}'
    assert attachment_names(info, []) == ["receipt.pdf", "b.png"]
    assert attachment_names("[]", []) == []


# --- SendGrid events --------------------------------------------------------------------


def test_email_events_keep_undelivered_mail_of_our_cases():
    events = [
        {"event": "bounce", "email": "ana@example.com", "case_id": "refund-r1",
         "template": "info_request", "reason": "550 no such user", "sg_event_id": "e1"},
        {"event": "bounce", "type": "blocked", "email": "ana@example.com",
         "case_id": "refund-r1"},
        {"event": "delivered", "email": "ana@example.com", "case_id": "refund-r1"},
        {"event": "dropped", "email": "bob@example.com"},  # not ours: no case id
        {"event": "spamreport", "email": "ana@example.com", "case_id": "evil' OR 1=1"},
        "not an object",
    ]
    deliveries, ignored = email_event_deliveries(events)
    assert [(c, s.event, s.reason) for c, s in deliveries] == [
        ("refund-r1", "bounce", "550 no such user"),
        ("refund-r1", "blocked", "blocked"),
    ]
    assert deliveries[0][1].template == "info_request"
    assert ignored == 4


def _sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def sendgrid_sign(private: ec.EllipticCurvePrivateKey, timestamp: str, payload: bytes) -> str:
    return base64.b64encode(
        private.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))).decode()


def test_sendgrid_event_signature_matches_the_sdk_verifier():
    private, public_b64 = _sendgrid_keys()
    payload = b'[{"event":"bounce","case_id":"refund-r1","email":"a@example.com"}]'
    signature = sendgrid_sign(private, "1767225600", payload)
    assert EventWebhook(public_b64).verify_signature(payload.decode(), signature, "1767225600")
    assert verify_event_signature(public_b64, payload, signature, "1767225600")
    assert not verify_event_signature(public_b64, payload + b" ", signature, "1767225600")
    assert not verify_event_signature(public_b64, payload, signature, "1767225601")
    assert not verify_event_signature(public_b64, payload, "%%%", "1767225600")
    assert not verify_event_signature(public_b64, payload, None, "1767225600")
    assert not verify_event_signature(public_b64, payload, base64.b64encode(b"x").decode(),
                                      "1767225600")


# --- Stripe events ----------------------------------------------------------------------


def _refund(**over):
    return {"id": "re_1", "object": "refund", "status": "succeeded", "amount": 4900,
            "currency": "USD", "charge": "ch_1", "metadata": {"case_id": "refund-req_1"},
            "destination_details": {"card": {"reference": "ARN123"}}, **over}


def test_refund_event_maps_to_refund_update_for_the_metadata_case():
    [d] = map_event({"id": "evt_1", "type": "refund.updated", "data": {"object": _refund()}})
    assert d.signal == "refund_update" and d.case_id == "refund-req_1" and d.charge_id == "ch_1"
    assert d.payload == RefundUpdateSignal(
        refund_id="re_1", status="succeeded", amount=4900, currency="usd", charge_id="ch_1",
        acquirer_reference="ARN123", case_id="refund-req_1", event_id="evt_1",
        source="webhook")


def test_refund_made_outside_refund_desk_is_routed_by_charge():
    [d] = map_event({"id": "evt_2", "type": "refund.created",
                     "data": {"object": _refund(metadata={}, charge={"id": "ch_9"})}})
    assert d.case_id is None and d.charge_id == "ch_9"
    assert d.payload.case_id is None


def test_charge_refunded_signals_each_refund_of_the_charge():
    charge = {"id": "ch_5", "object": "charge", "refunds": {"data": [
        _refund(id="re_a", charge=None, status="pending"),
        _refund(id="re_b", charge="ch_5", metadata={}, status="failed",
                failure_reason="expired_or_canceled_card"),
        {"id": "re_c", "status": "weird"},  # unusable: skipped
    ]}}
    found = map_event({"id": "evt_3", "type": "charge.refunded", "data": {"object": charge}})
    assert [(d.payload.refund_id, d.payload.status, d.charge_id, d.case_id) for d in found] == [
        ("re_a", "pending", "ch_5", "refund-req_1"),
        ("re_b", "failed", "ch_5", None),
    ]
    assert found[1].payload.failure_reason == "expired_or_canceled_card"


def test_dispute_maps_to_dispute_opened_by_charge():
    dispute = {"id": "dp_1", "object": "dispute", "charge": "ch_7", "reason": "fraudulent",
               "amount": 4900}
    [d] = map_event({"id": "evt_4", "type": "charge.dispute.created",
                     "data": {"object": dispute}})
    assert d.signal == "dispute_opened" and d.case_id is None and d.charge_id == "ch_7"
    assert d.payload == DisputeOpenedSignal(dispute_id="dp_1", charge_id="ch_7",
                                            reason="fraudulent", amount=4900, event_id="evt_4")


def test_unknown_and_malformed_events():
    assert map_event({"type": "customer.created", "data": {"object": {}}}) is None
    assert map_event({"type": "refund.updated", "data": {"object": "nope"}}) == []
    assert map_event({"type": "refund.updated"}) == []
    assert map_event({"type": "charge.refunded", "data": {"object": {"refunds": 5}}}) == []
    bad_case = _refund(metadata={"case_id": "x' OR 1=1"})
    [d] = map_event({"type": "refund.updated", "data": {"object": bad_case}})
    assert d.case_id is None


def test_charge_lookup_query_refuses_anything_but_a_charge_id():
    assert open_cases_query("ch_1") == ("WorkflowType = 'RefundCase' AND ExecutionStatus = "
                                        "'Running' AND RefundChargeId = 'ch_1'")
    with pytest.raises(ValueError):
        open_cases_query("ch_1' OR RefundChargeId != '")


# --- agents -----------------------------------------------------------------------------


def test_cases_query_filters_and_quoting():
    assert cases_query() == "WorkflowType = 'RefundCase'"
    assert cases_query(status="awaiting_agent", customer="ana@example.com", risk="high",
                       sla_breached=True, open_only=True) == (
        "WorkflowType = 'RefundCase' AND RefundStatus = 'awaiting_agent' AND "
        "RefundCustomer = 'ana@example.com' AND RefundRisk = 'high' AND "
        "RefundSlaBreached = true AND ExecutionStatus = 'Running'")
    with pytest.raises(HTTPException) as err:
        cases_query(customer="o'brien@example.com")
    assert err.value.status_code == 422


def test_identify_maps_tokens_to_agents():
    tokens = {"tok-a": AgentIdentity(agent="alice"),
              "tok-v": AgentIdentity(agent="vic", role="viewer")}
    assert identify(tokens, "tok-a").agent == "alice"
    assert identify(tokens, "tok-v").role == "viewer"
    assert identify(tokens, "tok-") is None
    assert identify(tokens, "tok-aé") is None
