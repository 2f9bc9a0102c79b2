"""Turning a MIME message into what SendGrid's Inbound Parse posts, in both modes, for the
inbound mail tests (our fixtures and the real-world payloads alike).

Parsed mode as SendGrid documents it (and the captured payloads show): `from`, `to` and
`subject` with encoded words decoded (UTF-8), `text` and `html` decoded from their
transfer encoding but left in their charset, which `charsets` names; attachments as file
parts `attachment1..n` described by `attachment-info`. Raw mode: the whole message in
`email`, beside `from`, `to`, `subject` and `envelope`."""

from __future__ import annotations

import email
import json
from email import policy
from email.message import EmailMessage

Files = dict[str, tuple[str, bytes, str]]


def _message(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _envelope(to: str, sender: str) -> bytes:
    return json.dumps({"to": [to], "from": sender}).encode()


def parsed_post(raw: bytes, to: str) -> tuple[dict[str, bytes], Files]:
    """The parsed-mode form SendGrid would post for `raw` delivered to `to`."""
    message = _message(raw)
    sender = str(message["from"])
    fields = {"from": sender.encode(), "to": to.encode(),
              "subject": str(message["subject"] or "").encode(),
              "envelope": _envelope(to, sender)}
    charsets = {"from": "UTF-8", "to": "UTF-8", "subject": "UTF-8"}
    for field, kind in (("text", "plain"), ("html", "html")):
        part = message.get_body(preferencelist=(kind,))
        if part is not None:
            payload = part.get_payload(decode=True)
            fields[field] = payload if isinstance(payload, bytes) else b""
            charsets[field] = part.get_content_charset() or "us-ascii"
    files: Files = {}
    info: dict[str, dict[str, str]] = {}
    for number, part in enumerate(message.iter_attachments(), start=1):
        key = f"attachment{number}"
        name = part.get_filename()
        content = part.get_payload(decode=True)
        if not isinstance(content, bytes):  # an attached message: its bytes
            content = part.get_content().as_bytes()
        files[key] = (name or key, content, part.get_content_type())
        info[key] = {"type": part.get_content_type(), **({"filename": name} if name else {})}
    fields["charsets"] = json.dumps(charsets).encode()
    fields["attachments"] = str(len(files)).encode()
    if info:
        fields["attachment-info"] = json.dumps(info, ensure_ascii=False).encode()
    return fields, files


def raw_post(raw: bytes, to: str) -> dict[str, bytes]:
    """The raw-mode form SendGrid would post for `raw` delivered to `to`."""
    message = _message(raw)
    sender = str(message["from"])
    return {"from": sender.encode(), "to": to.encode(),
            "subject": str(message["subject"] or "").encode(),
            "envelope": _envelope(to, sender), "email": raw,
            "charsets": json.dumps({"from": "UTF-8", "to": "UTF-8",
                                    "subject": "UTF-8"}).encode()}


def split_multipart(body: bytes, boundary: bytes) -> list[tuple[str, bytes]]:
    """(field name, value) of each part of a multipart/form-data body (no files)."""
    found: list[tuple[str, bytes]] = []
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, value = chunk.partition(b"\r\n\r\n")
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        found.append((name, value.removesuffix(b"\r\n")))
    return found
