"""Inbound mail (api.inbound_mail, and the inbound webhook around it): our own fixtures
(tests/mail_fixtures, written for these tests after the clients and payloads of
../shared/real-world) in both Inbound Parse modes, reply extraction, HTML, attachment
names and types, the form limits, and mail the email package cannot read."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.inbound_mail import (
    Attachment,
    FilePart,
    UnreadableMail,
    clean_name,
    extract_reply,
    form_attachments,
    html_to_text,
    read_inbound,
)
from api.sendgrid import MAX_FORM_FIELDS, MAX_FORM_FILES
from core.reply_address import reply_address
from tests.api_support import INBOUND_SECRET, StandInClient, api_settings, app_with, http, multipart
from tests.inbound_support import parsed_post, raw_post

FIXTURES = Path(__file__).parent / "mail_fixtures"
URL = f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}"
CASE = "refund-mail-1"

# fixture -> (sender, the reply the case must get, attachments (name, type); a None name:
# any name, for a part that has none)
EXPECTED: dict[str, tuple[str, str, list[tuple[str | None, str]]]] = {
    "outlook_from_sent_cp1252.eml": (
        "ana@example.com", "The export failed on 3 May \u2013 ticket 4411.", []),
    "apple_mail_ko.eml": ("minji@example.kr", "영수증을 첨부합니다. 티켓 번호는 4411입니다.", []),
    "gmail_ja_iso2022.eml": (
        "kenji@example.jp", "購入日は5月3日です。よろしくお願いします。", []),
    "apple_mail_ja_shift_jis.eml": ("yui@example.jp", "①の請求を返金してください。", []),
    "thunderbird_below_quote.eml": ("ana@example.com", "The CSV export, on 3 May.", []),
    "gmail_html_only.eml": ("ana@example.com", "I was charged twice on 3 May.\n\nAna", []),
    "screenshot_and_receipt.eml": (
        "ana@example.com", "Screenshot and receipt attached.",
        [("スクリーンショット.png", "image/png"), ("領収書.pdf", "application/pdf"),
         (None, "image/jpeg")]),
    "iphone_sent_from.eml": ("ana@example.com", "Yes, please refund the annual plan.", []),
    "outlook_de.eml": ("anna@example.de", "Der Export ist am 3. Mai fehlgeschlagen.", []),
    "signed_off_after_details.eml": (
        "ana@example.com", "Hi,\nThanks, ticket 4411 is the one.", []),
    "hyphen_list.eml": (
        "ana@example.com",
        "What went wrong:\n- the CSV export failed on 3 May\n- the PDF export failed on 4 May",
        []),
    "forwarded_receipt.eml": (
        "ana@example.com", "The receipt is attached.", [("receipt.eml", "message/rfc822")]),
}


def test_every_fixture_has_its_expectation():
    assert sorted(p.name for p in FIXTURES.glob("*.eml")) == sorted(EXPECTED)


def _matches(found: list[Attachment], expected: list[tuple[str | None, str]]) -> bool:
    return len(found) == len(expected) and all(
        (name is None or a.name == name) and a.content_type == content_type
        for a, (name, content_type) in zip(found, expected, strict=True))


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_raw_mode_reads_text_charsets_and_attachments(fixture):
    sender, reply, attachments = EXPECTED[fixture]
    mail = read_inbound(raw_post((FIXTURES / fixture).read_bytes(), "x@reply.example.com"))
    assert (mail.mode, mail.sender, mail.reply()) == ("raw", sender, reply)
    assert _matches(mail.attachments, attachments), mail.attachments


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_parsed_mode_gives_the_same_reply(fixture):
    sender, reply, attachments = EXPECTED[fixture]
    fields, files = parsed_post((FIXTURES / fixture).read_bytes(), "x@reply.example.com")
    parts = [FilePart(key, name, content_type) for key, (name, _, content_type) in files.items()]
    mail = read_inbound(fields, parts)
    assert (mail.mode, mail.sender, mail.reply()) == ("parsed", sender, reply)
    assert _matches(mail.attachments, attachments), mail.attachments


@pytest.mark.parametrize("mode", ["raw", "parsed"])
@pytest.mark.parametrize("fixture", sorted(EXPECTED))
async def test_each_fixture_reaches_its_case_over_http(fixture, mode):
    sender, reply, attachments = EXPECTED[fixture]
    client = StandInClient(customer=sender)
    to = reply_address(CASE, api_settings())
    raw = (FIXTURES / fixture).read_bytes()
    if mode == "raw":
        body, headers = multipart(raw_post(raw, to))
    else:
        body, headers = multipart(*parsed_post(raw, to))
    async with http(app_with(client)) as api:
        resp = await api.post(URL, content=body, headers=headers)
    assert resp.json() == {"status": "delivered", "case_id": CASE}, resp.text
    [(case_id, name, signal)] = client.signals
    assert (case_id, name, signal.channel) == (CASE, "customer_reply", "email")
    assert (signal.text, signal.from_email) == (reply, sender)
    assert len(signal.attachments) == len(attachments)
    assert all(n is None or n == got for got, (n, _) in zip(signal.attachments, attachments,
                                                               strict=True))


# --- reply extraction -------------------------------------------------------------------


@pytest.mark.parametrize("attribution", [
    "On Tue, 5 May 2026 at 10:02, Refund Desk <refunds@reply.example.com> wrote:",
    "2026-05-05 10:02 GMT+02:00 Refund Desk <refunds@reply.example.com>:",  # Gmail, ISO
    "2026. 5. 5. 오전 10:02, Refund Desk <refunds@reply.example.com> 작성:",  # Apple Mail ko
    "2026/05/05 10:02、Refund Desk <refunds@reply.example.com> のメッセージ:",  # Apple ja
    "在 2026年5月5日，上午10:02，Refund Desk <refunds@reply.example.com> 写道：",  # Apple zh
    "2026年5月5日(火) 10:02 Refund Desk <refunds@reply.example.com>:",  # Gmail ja
    "2026년 5월 5일 (화) 오전 10:02, Refund Desk <refunds@reply.example.com>님이 작성:",
    "Le 05/05/2026 à 10:02, Refund Desk a écrit :",  # Thunderbird fr
    "Am 05.05.2026 um 10:02 schrieb Refund Desk <refunds@reply.example.com>:",
    "-----Original Message-----",
])
@pytest.mark.parametrize("quoted", [False, True])
def test_history_below_any_clients_attribution_is_dropped(attribution, quoted):
    history = "Which export failed?\nThanks"
    if quoted:
        history = "\n".join(f"> {line}" for line in history.split("\n"))
    text = f"The CSV one, on 3 May.\n\n{attribution}\n\n{history}\n"
    assert extract_reply(text) == "The CSV one, on 3 May."


def test_a_reply_below_the_quote_is_kept():
    text = ("On 05/05/2026 10:02, Refund Desk wrote:\n> Which export failed?\n>\n"
            "The CSV export.\nIt failed twice.\n")
    assert extract_reply(text) == "The CSV export.\nIt failed twice."


@pytest.mark.parametrize("text, expected", [
    ("Hi\n\nThanks,\nAna", "Hi"),
    ("Hi\n\nBest regards,\nAna Silva\nACME Ltd\n+1 555 0100", "Hi"),
    ("Yes.\n\n-- \nAna Silva\nhttps://acme.example", "Yes."),
    ("Hi,\nThanks, ticket 4411 attached.", "Hi,\nThanks, ticket 4411 attached."),
    ("Hi,\nThanks,\nI bought it on 3 May and the export failed again last week.",
     "Hi,\nThanks,\nI bought it on 3 May and the export failed again last week."),
    ("Hi\n\nVon meinem iPhone gesendet", "Hi"),
    ("On Monday the export failed.\nThanks", "On Monday the export failed.\nThanks"),
])
def test_signatures_go_but_answers_that_start_like_one_stay(text, expected):
    assert extract_reply(text) == expected


def test_long_lines_come_back_whole():
    line = "word " * 3000 + "end"
    cjk = "返金" * 2000
    assert extract_reply(f"{line}\n{cjk}\n\nOn Mon, 4 May 2026 Bob <b@x.io> wrote:\n> q") == (
        f"{line}\n{cjk}")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("On wrote:>-_\n 2026年5月<a@b.c>Thanks,\u2063x")),
               max_size=300))
def test_extract_reply_never_raises_and_never_invents_text(text):
    reply = extract_reply(text)
    kept = text.replace("\u2063", "")
    assert all(line.strip() in kept for line in reply.split("\n"))


# --- HTML and attachments ---------------------------------------------------------------


def test_html_becomes_lines_without_quotes_scripts_or_an_unclosed_head():
    markup = ("<html><head><title>t</title><style>p {color: red}</style>"
              "<body><p>Hi &amp; thanks</p><div>one<br/>two</div>"
              "<blockquote>old<blockquote>older</blockquote>still old</blockquote>"
              "<script>alert(1)</script><p>after&nbsp;all</p></body></html>")
    assert html_to_text(markup) == "Hi & thanks\n\none\ntwo\n\nafter all"


@pytest.mark.parametrize("name, expected", [
    ("\\share\\mail\\forwarded.msg", "forwarded.msg"),
    ("../../etc/passwd", "passwd"),
    ("=?UTF-8?B?44K544Kv44Oq44O844Oz44K344On44OD44OILnBuZw==?=", "スクリーンショット.png"),
    ("=?ISO-2022-JP?B?" + base64.b64encode("領収書.pdf".encode("iso2022_jp")).decode() + "?=",
     "領収書.pdf"),
    ("bad\x00name\x1f.pdf", "badname.pdf"),
    ("", None), ("/", None),
])
def test_attachment_names_are_decoded_and_stripped_of_folders(name, expected):
    assert clean_name(name) == expected


def test_form_attachments_keep_order_names_and_content_types():
    info = {f"attachment{i}": {"filename": f"f{i}.png", "type": "image/png"} for i in (1, 2, 10)}
    info["attachment2"] = {"filename": "receipt.pdf", "type": "Application/PDF; name=x"}
    info["attachment10"] = {"name": "notes.txt"}
    parts = [FilePart("attachment10", "notes.txt", "text/plain; charset=utf-8")]
    found = form_attachments(json.dumps(info), parts)
    assert [(a.name, a.content_type) for a in found] == [
        ("f1.png", "image/png"), ("receipt.pdf", "application/pdf"),
        ("notes.txt", "text/plain")]
    # without attachment-info, the file parts themselves; an odd type is octet-stream
    only_files = [FilePart("attachment1", "scan.jpg", "image/jpeg"),
                  FilePart("attachment2", None, "not a type")]
    assert [(a.name, a.content_type) for a in form_attachments(None, only_files)] == [
        ("scan.jpg", "image/jpeg"), ("attachment-2.bin", "application/octet-stream")]


def test_html_only_parsed_mail_is_read_as_text():
    mail = read_inbound({"from": b"ana@example.com", "text": b"  ",
                         "html": b"<p>Refund <b>please</b></p><blockquote>old</blockquote>"})
    assert mail.reply() == "Refund please"


def test_raw_mime_with_a_hostile_from_header_uses_the_forms_sender():
    raw = b"From: <\r\nTo: x@y.z\r\nContent-Type: text/plain\r\n\r\nThe receipt.\r\n"
    mail = read_inbound({"email": raw, "from": b"Ana <ana@example.com>"})
    assert (mail.sender, mail.reply()) == ("ana@example.com", "The receipt.")


def _nested(depth: int) -> bytes:
    parts = [f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n".encode()
             for i in range(depth)]
    return b"From: ana@example.com\r\n" + b"".join(parts) + b"Content-Type: text/plain\r\n\r\nhi"


def test_mime_the_email_package_cannot_read_is_unreadable_mail():
    with pytest.raises(UnreadableMail, match="RecursionError"):
        read_inbound({"email": _nested(3000)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400) | st.builds(
    lambda head, body: head + b"\r\n\r\n" + body,
    st.lists(st.sampled_from([b"From: <", b"To: =?utf-8?b?\xff?=", b"Content-Type: text/html",
                              b"Content-Type: multipart/mixed; boundary=x",
                              b"Content-Disposition: attachment; filename*=utf-8''%E3",
                              b"Content-Transfer-Encoding: base64", b"Subject: =?x?q?=?="]),
             max_size=5).map(b"\r\n".join), st.binary(max_size=200)))
def test_any_raw_bytes_are_read_or_refused_as_unreadable(raw):
    with contextlib.suppress(UnreadableMail):  # any other exception fails the test
        read_inbound({"email": raw or b"x"})


# --- the webhook's answers for what it will not read ----------------------------------


@pytest.fixture
def log_lines():
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("refund_desk.api")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def _refusals(lines: list[str]) -> list[str]:
    return [json.loads(x)["reason"] for x in lines if '"inbound_mail_refused"' in x]


async def test_too_many_fields_or_files_is_a_logged_200_so_sendgrid_stops(log_lines):
    client = StandInClient()
    many = {f"field{i}": b"x" for i in range(MAX_FORM_FIELDS + 1)}
    files = {f"attachment{i}": (f"f{i}.png", b"x", "image/png")
             for i in range(MAX_FORM_FILES + 1)}
    async with http(app_with(client)) as api:
        fields_multipart = await api.post(URL, content=multipart(many)[0],
                                          headers=multipart(many)[1])
        fields_urlencoded = await api.post(URL, data={k: "x" for k in many})
        too_many_files = await api.post(URL, content=multipart({}, files)[0],
                                        headers=multipart({}, files)[1])
    for resp, reason in ((fields_multipart, "too_many_fields"),
                         (fields_urlencoded, "too_many_fields"),
                         (too_many_files, "too_many_files")):
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"status": "refused", "reason": reason}
    assert _refusals(log_lines) == ["too_many_fields", "too_many_fields", "too_many_files"]
    assert client.signals == []


async def test_a_body_over_the_limit_is_refused_before_it_is_read(log_lines, monkeypatch):
    from api import sendgrid

    monkeypatch.setattr(sendgrid, "MAX_INBOUND_BYTES", 1000)
    async with http(app_with(StandInClient())) as api:
        resp = await api.post(URL, content=b"x" * 2000,
                              headers={"content-type": "multipart/form-data; boundary=b"})
    assert resp.json() == {"status": "refused", "reason": "too_large"}


async def test_unreadable_raw_mail_is_a_logged_200(log_lines):
    client = StandInClient()
    to = reply_address(CASE, api_settings())
    body, headers = multipart({"to": to.encode(), "from": b"ana@example.com",
                               "email": _nested(3000)})
    async with http(app_with(client)) as api:
        resp = await api.post(URL, content=body, headers=headers)
    assert resp.json() == {"status": "refused", "reason": "unreadable_mail"}
    assert _refusals(log_lines) == ["unreadable_mail"] and client.signals == []


async def test_a_raw_mail_larger_than_a_megabyte_is_read():
    """A raw-mode `email` field holds the attachments too: far above starlette's 1 MB
    default for a field."""
    client = StandInClient(customer="ana@example.com")
    to = reply_address(CASE, api_settings())
    big = (FIXTURES / "screenshot_and_receipt.eml").read_bytes().replace(
        b"--mixed-b--", b"--mixed-b\r\nContent-Type: application/pdf\r\nContent-Disposition: "
        b"attachment; filename=big.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"QUJD\r\n" * 400_000 + b"\r\n--mixed-b--")
    body, headers = multipart(raw_post(big, to))
    async with http(app_with(client)) as api:
        resp = await api.post(URL, content=body, headers=headers)
    assert resp.json() == {"status": "delivered", "case_id": CASE}, resp.text
    [(_, _, signal)] = client.signals
    assert signal.attachments[-1] == "big.pdf"
