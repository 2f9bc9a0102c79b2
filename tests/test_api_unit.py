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
from api.agents import cases_query
from api.deps import identify
from api.email_events import email_event_deliveries
from api.inbound_mail import (
    bare_address,
    case_from_addresses,
    decode_field,
    decode_fields,
    extract_reply,
    form_attachments,
    recipients,
)
from api.signatures import event_timestamp_fresh, verify_event_signature
from api.stripe_mapping import map_event, open_cases_query
from core.config import AgentIdentity, load_settings
from core.models import DisputeOpenedSignal, RefundUpdateSignal
from core.reply_address import parse_reply_address, reply_address, reply_tag, verify_tag

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


def test_extract_reply_drops_gt_lines_and_everything_after_attribution():
    text = (
        "I bought it on 3 May.\r\n"
        "Receipt attached.\r\n"
        "\r\n"
        "On Mon, 5 May 2026 at 10:00, Refund Desk <refunds+refund-r1@reply.example.com> wrote:\r\n"
        "> Which export failed?\r\n"
        "> Thanks\r\n"
        "More history that is not quoted\r\n"
    )
    assert extract_reply(text) == "I bought it on 3 May.\nReceipt attached."


def test_extract_reply_handles_wrapped_attribution_and_inline_quotes():
    text = (
        "> earlier line\n"
        "Answer one.\n"
        "On Mon, 5 May 2026 at 10:00 Refund Desk <\n"
        "refunds+refund-r1@reply.example.com> wrote:\n"
        "old text\n"
    )
    assert extract_reply(text) == "Answer one."


@pytest.mark.parametrize("separator", [
    "-----Original Message-----",
    "________________________________",
    "2026年5月5日(月) 10:00 Refund Desk <refunds@reply.example.com>:",
    "2026/05/05 10:00、Refund Desk <refunds@reply.example.com>のメール:",
    "2026년 5월 5일 (월) 오전 10:00, Refund Desk <refunds@reply.example.com>님이 작성:",
])
def test_extract_reply_knows_other_clients_separators(separator):
    assert extract_reply(f"New text\n{separator}\nold text") == "New text"


def test_on_without_wrote_is_ordinary_text():
    assert extract_reply("On Monday the export failed.\nThanks") == (
        "On Monday the export failed.\nThanks")


# --- SendGrid inbound helpers -----------------------------------------------------------


KEY = "reply-key"


def _tagged(case_id: str, domain: str = "reply.example.com") -> str:
    return f"refunds+{case_id}+{reply_tag(case_id, KEY)}@{domain}"


def test_case_from_tagged_recipient_address_and_envelope():
    form = {"to": "Support <support@example.com>, "
                  f"Refund Desk <{_tagged('refund-req_1042', 'Reply.Example.com')}>",
            "envelope": '{"to": ["x@example.com"], "from": "ana@example.com"}'}
    assert case_from_addresses(recipients(form), "reply.example.com", KEY) == (
        "refund-req_1042", True)
    only_envelope = {"to": "undisclosed-recipients:;",
                     "envelope": f'{{"to": ["{_tagged("refund-r.2")}"]}}'}
    assert case_from_addresses(recipients(only_envelope), "reply.example.com", KEY) == (
        "refund-r.2", True)


@pytest.mark.parametrize("to", [
    "refunds+refund-req_1@reply.example.com",  # the old untagged form: guessable
    f"refunds+refund-req_1+{'0' * 16}@reply.example.com",  # made-up tag
    f"refunds+refund-req_1+{reply_tag('refund-req_2', KEY)}@reply.example.com",  # other case's
    f"refunds+refund-req_1+{reply_tag('refund-req_1', 'other-key')}@reply.example.com",
    f"refunds+refund-req_1+{reply_tag('refund-req_1', KEY)[:-1]}@reply.example.com",
])
def test_a_case_address_without_a_valid_tag_is_not_trusted(to):
    assert case_from_addresses(recipients({"to": to}), "reply.example.com", KEY) == (
        "refund-req_1", False)


def test_a_tagged_address_wins_over_an_untagged_one():
    form = {"to": "refunds+refund-a@reply.example.com", "cc": _tagged("refund-b")}
    assert case_from_addresses(recipients(form), "reply.example.com", KEY) == ("refund-b", True)


@pytest.mark.parametrize("to", [
    "refunds+refund-req_1@elsewhere.com",  # wrong domain
    _tagged("refund-req_1", "elsewhere.com"),
    "refunds@reply.example.com",  # no case
    "refunds+not-a-case@reply.example.com",
    "refunds+refund-'; drop@reply.example.com",
    "refunds+refund-a+b+c@reply.example.com",
    "",
])
def test_no_case_from_foreign_addresses(to):
    assert case_from_addresses(recipients({"to": to, "envelope": "not json"}),
                               "reply.example.com", KEY) is None


def test_reply_address_carries_a_tag_only_its_key_can_make():
    settings = load_settings(SENDGRID_INBOUND_SECRET="inbound", REPLY_DOMAIN="r.example.com")
    address = reply_address("refund-req_7", settings)
    local, domain = address.split("@")
    prefix, case_id, tag = local.split("+")
    assert (prefix, case_id, domain) == ("refunds", "refund-req_7", "r.example.com")
    assert len(tag) == 16 and tag == tag.lower()
    assert verify_tag("refund-req_7", tag, "inbound")
    assert verify_tag("refund-req_7", tag.upper(), "inbound")  # a mail system folded case
    assert not verify_tag("refund-req_8", tag, "inbound")
    assert not verify_tag("refund-req_7", tag, "")
    assert not verify_tag("refund-req_7", None, "inbound")
    parsed = parse_reply_address(address, "R.Example.com")
    assert parsed is not None and (parsed.case_id, parsed.tag) == ("refund-req_7", tag)
    # a dedicated key, when set, replaces the inbound secret
    dedicated = load_settings(SENDGRID_INBOUND_SECRET="inbound", REPLY_ADDRESS_SECRET="own")
    assert reply_address("refund-req_7", dedicated).split("+")[2].split("@")[0] == (
        reply_tag("refund-req_7", "own"))


# --- inbound charsets -------------------------------------------------------------------

JA_REPLY = "購入は5月3日です。チケット番号は4411です。"


@pytest.mark.parametrize("charset, text", [
    ("ISO-2022-JP", JA_REPLY),
    ("Shift_JIS", JA_REPLY),
    ("shift_jis", "①番の請求です"),  # cp932 extension labelled as plain Shift_JIS
    ("EUC-KR", "환불 요청에 대한 답장입니다."),
    ("ks_c_5601-1987", "환불 요청에 대한 답장입니다."),
    ("UTF-8", JA_REPLY),
])
def test_fields_decode_with_the_listed_charset(charset, text):
    try:
        raw = text.encode(charset)
    except UnicodeEncodeError:
        raw = text.encode("cp932")
    assert decode_field(raw, charset) == text


def test_decode_fields_reads_the_charsets_field_and_defaults_to_utf8():
    raw = {"charsets": b'{"text": "iso-2022-jp", "subject": "UTF-8", "from": 5}',
           "text": JA_REPLY.encode("iso-2022-jp"), "subject": "Re: 返金".encode(),
           "from": b"ana@example.com", "html": "<p>é</p>".encode()}
    fields = decode_fields(raw)
    assert fields["text"] == JA_REPLY and fields["subject"] == "Re: 返金"
    assert fields["from"] == "ana@example.com" and fields["html"] == "<p>é</p>"


@pytest.mark.parametrize("charset", [None, "", "no-such-charset", "base64", "rot13", "\x00"])
def test_unknown_or_non_text_charsets_fall_back_to_utf8(charset):
    assert decode_field("返金".encode(), charset) == "返金"
    assert decode_field(b"\xff\xfe ok", charset).endswith(" ok")  # never raises


def test_bare_address_lowercases_and_strips_names():
    assert bare_address("Ana Example <Ana@Example.COM>") == "ana@example.com"
    assert bare_address("not an address") is None
    assert bare_address(None) is None


def test_attachment_names_prefer_attachment_info():
    info = '{"attachment2": {"filename": "b.png"}, "attachment1": {"filename": "receipt.pdf"}}'
    assert [a.name for a in form_attachments(info, [])] == ["receipt.pdf", "b.png"]
    assert form_attachments("[]", []) == []


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
        {"event": ["bounce"], "email": "ana@example.com", "case_id": "refund-r1"},
        "not an object",
    ]
    deliveries, ignored = email_event_deliveries(events)
    assert [(c, s.event, s.reason) for c, s in deliveries] == [
        ("refund-r1", "bounce", "550 no such user"),
        ("refund-r1", "blocked", "blocked"),
    ]
    assert deliveries[0][1].template == "info_request"
    assert ignored == 5


def _sendgrid_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def sendgrid_sign(private: ec.EllipticCurvePrivateKey, timestamp: str, payload: bytes) -> str:
    return base64.b64encode(
        private.sign(timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))).decode()


def test_event_timestamps_older_or_newer_than_five_minutes_are_stale():
    now = 1_767_225_600
    assert event_timestamp_fresh(str(now), now=now)
    assert event_timestamp_fresh(str(now - 300), now=now)
    assert not event_timestamp_fresh(str(now - 301), now=now)
    assert not event_timestamp_fresh(str(now + 301), now=now)
    for bad in (None, "", "abc", "-5", "１２３", "1.5"):
        assert not event_timestamp_fresh(bad, now=now)


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
    for kind in (["refund.updated"], {"a": 1}, None, 5):
        assert map_event({"type": kind, "data": {"object": _refund()}}) is None
    assert map_event({"type": "refund.updated", "data": {"object": _refund(status=["x"])}}) == []


def test_charge_lookup_query_refuses_anything_but_a_charge_id():
    assert open_cases_query("ch_1") == ("WorkflowType = 'RefundCase' AND ExecutionStatus = "
                                        "'Running' AND RefundChargeId = 'ch_1'")
    # SEPA Direct Debit, ACH and other non-card payments have py_ charge ids
    assert open_cases_query("py_1Sepa").endswith("RefundChargeId = 'py_1Sepa'")
    for not_a_charge in ("pi_1", "pyr_1", "py_", "py_1' OR '1'='1"):
        with pytest.raises(ValueError):
            open_cases_query(not_a_charge)
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
    # quotes and backslashes are escaped: the value stays one string literal
    assert cases_query(customer="o'brien@example.com") == (
        "WorkflowType = 'RefundCase' AND RefundCustomer = 'o\\'brien@example.com'")
    assert cases_query(customer="x'OR'1'='1@example.com").endswith(
        "RefundCustomer = 'x\\'OR\\'1\\'=\\'1@example.com'")
    assert cases_query(customer="a\\@example.com").endswith(
        "RefundCustomer = 'a\\\\@example.com'")  # doubled: it cannot escape the quote
    with pytest.raises(HTTPException) as err:
        cases_query(customer="a\x00b@example.com")
    assert err.value.status_code == 422


def _literal_end(query: str) -> int:
    """Where the first '...' literal ends, reading \\x escapes as Temporal's parser does."""
    start = query.index("'", query.index("RefundCustomer")) + 1
    i = start
    while query[i] != "'":
        i += 2 if query[i] == "\\" else 1
    return i


@pytest.mark.parametrize("value", ["o'brien@example.com", "a\\'@b.c", "'\\'\\\\@x.y",
                                   "x\\@y.z"])
def test_a_quoted_filter_value_never_ends_its_literal_early(value):
    query = cases_query(customer=value)
    assert _literal_end(query) == len(query) - 1  # the closing quote is the last character


def test_identify_maps_tokens_to_agents():
    tokens = {"tok-a": AgentIdentity(agent="alice"),
              "tok-v": AgentIdentity(agent="vic", role="viewer")}
    assert identify(tokens, "tok-a").agent == "alice"
    assert identify(tokens, "tok-v").role == "viewer"
    assert identify(tokens, "tok-") is None
    assert identify(tokens, "tok-aé") is None
