"""Every real-world inbound mail and Stripe event payload in ../shared/real-world (see its
SOURCES.md) through the API, adapted the way SOURCES.md says: only the ids that must
match a case change (recipient address, charge), everything else is posted as published.
The payloads stay in that folder (it is next to the repository here and in CI); the
project's own fixtures modelled on them are tests/mail_fixtures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import stripe
from starlette.requests import Request

from api.inbound_mail import InboundMail, read_inbound
from api.sendgrid import read_form
from core.reply_address import reply_address
from tests.api_support import (
    INBOUND_SECRET,
    STRIPE_SECRET,
    StandInClient,
    api_settings,
    app_with,
    http,
    multipart,
)
from tests.inbound_support import parsed_post, raw_post, split_multipart

REAL_WORLD = Path(__file__).resolve().parents[2] / "shared" / "real-world"
pytestmark = pytest.mark.skipif(not REAL_WORLD.is_dir(),
                                reason=f"{REAL_WORLD} is not next to the repository")
URL = f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}"
CASE = "refund-real-1"
TAGGED = reply_address(CASE, api_settings())

# --- SendGrid Inbound Parse -------------------------------------------------------------

# payload -> (its recipient, its sender, the reply the case gets (or how it starts and
# ends), attachments (name, type))
INBOUND: dict[str, tuple[str, str, str | tuple[str, str], list[tuple[str, str]]]] = {
    "sendgrid_python_default_data.txt": (
        "inbound@inbound.example.com", "test@example.com", "Hello Twilio SendGrid!", []),
    "sendgrid_python_raw_data.txt": (
        "inbound@inbound.inbound.com", "test@example.com", "Hello Twilio SendGrid!", []),
    "sendgrid_python_raw_data_with_attachments.txt": (
        "inbound@inbound.inbound.com", "test@example.com", "Hello Twilio SendGrid!",
        [("SendGrid.jpg", "image/jpeg")]),
    "sendgrid_go_raw_data_plaintext.txt": (
        "test_test_test123@gmail.com", "forwarding-noreply@google.com",
        (f"test_test@gmail.com has requested to automatically forward mail to your email\n"
         f"address {TAGGED}.\nConfirmation code: 123456789\n\n", "the top of any page. Then, "
         "click 'Contact Us' along the bottom of the\nHelp Center."), []),
    "anymail_inbound_basics.json": (
        "test@inbound.example.com", "from+test@example.org", "Test body plain", []),
    "anymail_inbound_mime.json": (
        "test@inbound.example.com", "test@example.org", "It's a body\u2026", []),
    "anymail_inbound_charsets.multipart": (
        "inbound@sg.example.com", "sender@example.com",
        "Test the ESP\u2019s inbound charset handling\u2026", []),
    "anymail_attachments.json": (
        "", "sender@example.com", "",
        [("test.txt", "text/plain"), ("image.png", "image/png"),
         ("forwarded.msg", "message/rfc822")]),
}


def test_every_inbound_payload_has_its_expectation():
    payloads = {p.name for p in (REAL_WORLD / "sendgrid_inbound").iterdir()}
    assert set(INBOUND) <= payloads
    assert payloads - set(INBOUND) == {"anymail_sample_image.png", "anymail_sample_email.txt"}


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _inbound_post(name: str) -> tuple[bytes, dict[str, str]]:
    folder = REAL_WORLD / "sendgrid_inbound"
    recipient, sender, _, _ = INBOUND[name]
    raw = (folder / name).read_bytes()
    if name.endswith((".txt", ".multipart")):  # a multipart body as SendGrid posts it
        body = _crlf(raw).replace(recipient.encode(), TAGGED.encode())
        return body, {"content-type": "multipart/form-data; boundary=xYzZY"}
    published: dict[str, Any] = json.loads(raw)
    files_spec = published.pop("_files", {})
    fields = {k: str(v).replace(recipient, TAGGED) if recipient else str(v)
              for k, v in published.items()}
    if not recipient:  # anymail_attachments: SendGrid always sends these; its test omits them
        fields.update({"to": TAGGED, "from": sender,
                       "envelope": json.dumps({"to": [TAGGED], "from": sender})})
    files = {}
    for key, spec in files_spec.items():
        content = (spec["content_text"].encode() if "content_text" in spec
                   else (folder / spec["content_file"]).read_bytes())
        files[key] = (spec["filename"], content, spec["content_type"])
    return multipart({k: v.encode() for k, v in fields.items()}, files)


MESSAGE_IDS = {  # the payloads whose headers carry a Message-ID (parsed or raw)
    "anymail_inbound_basics.json": "<CAEPk3R+4Zr@mail.example.org>",
    "anymail_inbound_mime.json": "<CAEPk3RKEx@mail.example.org>",
    "sendgrid_go_raw_data_plaintext.txt":
        "<CAF5GBptN93asLzEJvFTz_MLY0ftvfbVnaNNFdYdPcpX7qtnSgQ@mail.gmail.com>",
}


@pytest.mark.parametrize("name", sorted(INBOUND))
async def test_each_sendgrid_inbound_payload_reaches_its_case(name):
    _, sender, reply, attachments = INBOUND[name]
    client = StandInClient(customer=sender)
    body, headers = _inbound_post(name)
    async with http(app_with(client)) as api:
        resp = await api.post(URL, content=body, headers=headers)
    assert resp.json() == {"status": "delivered", "case_id": CASE}, resp.text
    [(case_id, signal_name, signal)] = client.signals
    assert (case_id, signal_name, signal.from_email) == (CASE, "customer_reply", sender)
    if isinstance(reply, tuple):
        assert signal.text.startswith(reply[0]) and signal.text.endswith(reply[1])
    else:
        assert signal.text == reply
    assert signal.attachments == [n for n, _ in attachments]
    # The mail's own Message-ID keys the reply (a redelivery is taken once); without one
    # (a forwarded message's inside does not count), its content does.
    assert signal.message_id == MESSAGE_IDS.get(name) or (
        name not in MESSAGE_IDS and signal.message_id.startswith("sha256:"))


async def _read(body: bytes, headers: dict[str, str]) -> InboundMail:
    """What the inbound webhook reads from a post (its form, then api.inbound_mail)."""
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}
    scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    return read_inbound(*await read_form(Request(scope, receive)))


@pytest.mark.parametrize("name", sorted(INBOUND))
async def test_each_sendgrid_inbound_payloads_attachments_keep_their_content_type(name):
    mail = await _read(*_inbound_post(name))
    expected_mode = "raw" if "raw" in name or "mime" in name else "parsed"
    assert mail.mode == expected_mode
    assert [(a.name, a.content_type) for a in mail.attachments] == INBOUND[name][3]


# --- real mail bodies, wrapped as SendGrid posts them -----------------------------------

BODIES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "talon_outlook.eml": ("Hello", []),
    "talon_yahoo.eml": ("Hello", []),
    "talon_gmail.eml": ("Hello", []),
    "talon_apple_mail_2.eml": ("Hello", []),
    "talon_hotmail.eml": ("Hello", []),
    "talon_iphone.eml": ("Hello", []),
    "talon_thunderbird.eml": ("Hello", []),  # written below the quote
    "mikel_mail_japanese_iso_2022.eml": ("すみません。", []),
    "mikel_mail_japanese_shift_jis.eml": (
        "あいうえお\n\nこのメールはテスト用のメールです。\n\n"
        "今後ともよろしくお願い申し上げます！", []),
    "mikel_mail_ks_c_5601-1987.eml": ("스티해", []),
    "mikel_mail_japanese_attachment.eml": ("testing", [("てすと.txt", "text/plain")]),
}
_FUSCE = ("Fusce bibendum, quam hendrerit sagittis tempor, dui turpis tempus erat, pharetra "
          "sodales ante sem sit amet metus.\nNulla malesuada, orci non vulputate lobortis, "
          "massa felis pharetra ex, convallis consectetur ex libero eget ante.\nNam vel turpis "
          "posuere, rhoncus ligula in, venenatis orci. Duis interdum venenatis ex a rutrum.\n"
          "Duis ut libero eu lectus consequat consequat ut vel lorem. Vestibulum convallis "
          "lectus urna,\net mollis ligula rutrum quis. Fusce sed odio id arcu varius aliquet "
          "nec nec nibh.")
TEXTS: dict[str, str] = {
    "crisp_email_gmail_split_line_from.txt": _FUSCE,
    "crisp_email_ios_outlook_en.txt": _FUSCE,
    # a "-Name" line stays: hyphen lines are kept as lists, not taken for signatures
    "github_erp_email_1_3.txt": "Oh thanks.\n\nHaving the function would be great.\n\n"
                                "-Abhishek Kona",
    "github_erp_email_2nd_paragraph_starting_with_on.txt": (
        "This emails tests that multiline header fix isn't catching things it shouldn't.\n\n"
        "On friday when I tried it didn't work as expect.\n\n"
        "This line would have been considered part of the header line."),
    "github_erp_email_multiline_quote_header_from_to_date_subject.txt": (
        "I have gained valuable experience from working with students from other cultures. "
        "They bring a significantly different perspective to the work we do. I have also had "
        "the opportunity to practice making myself very clear in discussion, so that everyone "
        "understands. I've also seen how different our culture is to them, in their reactions "
        "to what I think is a normal approach to assignments, and to life in general."),
    "github_erp_email_one_is_not_on.txt": (
        "Thank, this is really helpful.\n\nOne outstanding question I had:\n\n"
        "Locally (on development), when I run..."),
    "github_erp_greedy_on.txt": (
        "On your remote host you can run:\n\ntelnet 127.0.0.1 52698\n\nThis should connect to "
        "TextMate (on your Mac, via the tunnel). If that\nfails, the tunnel is not working."),
    "github_erp_outlook_email_with_team_mention.txt": (
        "Outlook email reply with a team mention in the email body."),
}


def test_every_mail_body_has_its_expectation():
    names = {p.name for p in (REAL_WORLD / "email_bodies").iterdir()}
    assert names == set(BODIES) | set(TEXTS) | {"willdurand_email_with_date_headers.txt",
                                                 "willdurand_date_headers.json"}


async def _post(client: StandInClient, body: bytes, headers: dict[str, str]) -> Any:
    async with http(app_with(client)) as api:
        resp = await api.post(URL, content=body, headers=headers)
    assert resp.json() == {"status": "delivered", "case_id": CASE}, resp.text
    [(_, _, signal)] = client.signals
    return signal


@pytest.mark.parametrize("mode", ["parsed", "raw"])
@pytest.mark.parametrize("name", sorted(BODIES))
async def test_each_real_mail_body_gives_the_new_text_only(name, mode):
    reply, attachments = BODIES[name]
    raw = (REAL_WORLD / "email_bodies" / name).read_bytes()
    post = raw_post(raw, TAGGED) if mode == "raw" else None
    body, headers = multipart(post) if post else multipart(*parsed_post(raw, TAGGED))
    sender = json.loads((post or parsed_post(raw, TAGGED)[0])["envelope"])["from"]
    client = StandInClient(customer=sender.rpartition("<")[2].rstrip(">").lower())
    signal = await _post(client, body, headers)
    assert (signal.text, signal.attachments) == (reply, [n for n, _ in attachments])
    mail = await _read(body, headers)
    assert [(a.name, a.content_type) for a in mail.attachments] == attachments


def _text_post(text: str) -> tuple[bytes, dict[str, str]]:
    """`text` in the `text` field of sendgrid-python's parsed-mode sample (its html part
    removed), as SOURCES.md describes."""
    sample = _crlf((REAL_WORLD / "sendgrid_inbound" / "sendgrid_python_default_data.txt")
                   .read_bytes()).replace(b"inbound@inbound.example.com", TAGGED.encode())
    fields = dict(split_multipart(sample, b"xYzZY"))
    del fields["html"]
    fields["text"] = text.encode()
    return multipart(fields)


@pytest.mark.parametrize("name", sorted(TEXTS))
async def test_each_real_text_body_gives_the_new_text_only(name):
    text = (REAL_WORLD / "email_bodies" / name).read_text()
    signal = await _post(StandInClient(customer="test@example.com"), *_text_post(text))
    assert signal.text == TEXTS[name]


def _date_headers() -> dict[str, str]:
    return json.loads((REAL_WORLD / "email_bodies" / "willdurand_date_headers.json").read_text())


@pytest.mark.parametrize("quoted", [False, True])
@pytest.mark.parametrize("client_name", sorted(_date_headers()) if REAL_WORLD.is_dir() else [])
async def test_each_clients_date_header_ends_the_reply(client_name, quoted):
    template = (REAL_WORLD / "email_bodies" / "willdurand_email_with_date_headers.txt").read_text()
    header = _date_headers()[client_name]
    text = template.replace("[DATE]", header)
    if quoted:
        before, after = template.split("[DATE]")
        text = before + header + "\n" + "\n".join(f"> {line}" for line in after.splitlines())
    signal = await _post(StandInClient(customer="test@example.com"), *_text_post(text))
    assert signal.text == "Thank you very much."


# --- Stripe events ----------------------------------------------------------------------

STRIPE_EVENTS = sorted(p.name for p in (REAL_WORLD / "stripe_events").iterdir()) \
    if REAL_WORLD.is_dir() else []


def _charge_of(event: dict[str, Any]) -> str:
    obj = event["data"]["object"]
    return obj["id"] if event["type"] == "charge.refunded" else obj["charge"]


@pytest.mark.parametrize("name", STRIPE_EVENTS)
async def test_each_stripe_event_reaches_the_case_open_on_its_charge(name):
    """As published: no event carries our metadata, so each is routed by its charge (a
    card `ch_` or, for the SEPA/ACH one, `py_`) to the case open on it."""
    payload = (REAL_WORLD / "stripe_events" / name).read_text()
    event = json.loads(payload)
    charge = _charge_of(event)
    client = StandInClient(cases_by_charge={charge: [CASE]})
    header = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET)
    async with http(app_with(client)) as api:
        resp = await api.post("/webhooks/stripe", content=payload,
                              headers={"Stripe-Signature": header,
                                       "content-type": "application/json"})
    assert resp.json() == {"status": "delivered", "cases": [CASE]}, resp.text
    expected = "dispute_opened" if event["type"] == "charge.dispute.created" else "refund_update"
    assert [(c, n) for c, n, _ in client.signals] == [(CASE, expected)]
    assert client.signals[0][2].charge_id == charge
