"""Inbound mail as SendGrid's Inbound Parse posts it, read into one model: who sent it, to
which addresses, its text, its attachments (name and content type), and the new part of
a reply (`extract_reply`). Pure: no FastAPI, no Temporal; the route module reads the
HTTP form and hands over its fields' bytes and its file parts.

Both Inbound Parse modes:
- parsed: the text in `text` (or only `html`), each field in the charset SendGrid lists
  in `charsets`, attachments as file parts described by `attachment-info`;
- raw: the whole MIME message in `email`, read with Python's `email` package: the
  text/plain part preferred, else text/html as text, charsets honoured, attachment names
  decoded (RFC 2231 and encoded words).

Reply extraction (quoted history, attribution lines, signatures) is the maintained
`mail-parser-reply` library behind one function, with the attribution lines it does not
know (Apple Mail in Korean, Japanese and Chinese, Gmail's ISO dates) added as one more
"language" of its own kind."""

from __future__ import annotations

import codecs
import contextlib
import email
import json
import mimetypes
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage as MimeMessage
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser
from typing import Any, Literal

from mailparser_reply.constants import MAIL_LANGUAGES
from mailparser_reply.parser import EmailMessage as ReplyMessage
from pydantic import BaseModel, Field

from core.reply_address import parse_reply_address, verify_tag

MAX_ATTACHMENTS = 50
MAX_NAME_CHARS = 255
MAX_HTML_CHARS = 1_000_000  # HTML beyond this is not read (the reply is at its top)
REPLY_INPUT_CHARS = 30_000  # unquoted text handed to the reply parser (cost bound)
FOLD_AT = 200  # longer lines are folded for the parser (its patterns are quadratic)
_SIGNATURE_TRIES = 5
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class Attachment(BaseModel):
    """A file that came with the mail; the content type is the sender's claim."""

    name: str = Field(examples=["スクリーンショット.png"])
    content_type: str = Field(examples=["image/png"])


class InboundMail(BaseModel):
    """One inbound email, whichever mode SendGrid posted it in."""

    mode: Literal["parsed", "raw"]
    sender: str | None = Field(description="The From address, lowercased; None: none given.")
    recipients: list[str] = Field(description="To, Cc and SMTP envelope recipients as sent.")
    subject: str = ""
    text: str = Field("", description="The whole text (HTML-only mail converted).")
    attachments: list[Attachment] = Field(default_factory=list)
    message_id: str | None = Field(None, description="The Message-ID header, if any.")

    @property
    def attachment_names(self) -> list[str]:
        return [a.name for a in self.attachments]

    @property
    def attachment_types(self) -> dict[str, str]:
        """Each attachment's content type by name (what the case weighs as evidence)."""
        return {a.name: a.content_type for a in self.attachments}

    def reply(self) -> str:
        """The new part of the reply (see `extract_reply`)."""
        return extract_reply(self.text)


@dataclass(frozen=True)
class FilePart:
    """A file part of the posted form: its field name (`attachment1`...), file name and
    content type as the form gave them."""

    field: str
    filename: str | None
    content_type: str | None


class UnreadableMail(ValueError):
    """Raw MIME the email package could not read; the message says why."""


# --- form fields ------------------------------------------------------------------------

# Mail clients label text with the standard name but use the vendor superset.
_SUPERSETS = {"shift_jis": "cp932", "euc_kr": "cp949", "iso2022_jp": "iso2022_jp_ext"}


def decode_field(raw: bytes, charset: str | None) -> str:
    """Bytes in the charset named for them (its superset, then UTF-8, when the bytes do
    not fit); never raises."""
    candidates: list[str] = []
    if charset:
        try:
            name = codecs.lookup(charset.strip()).name
        except (LookupError, ValueError, TypeError):
            name = ""
        candidates += [name, _SUPERSETS.get(name, "")]
    candidates.append("utf-8")
    for codec in filter(None, candidates):
        try:
            return raw.decode(codec)
        except (UnicodeDecodeError, LookupError):  # LookupError: not a text codec (base64)
            continue
    return raw.decode("utf-8", errors="replace")


def json_object(raw: str | None) -> dict[str, Any]:
    """A JSON object field (`envelope`, `charsets`, `attachment-info`); {} otherwise."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def decode_fields(raw: dict[str, bytes]) -> dict[str, str]:
    """Every field decoded with the charset listed for it in `charsets` (a JSON object
    such as {"text": "iso-2022-jp", "subject": "UTF-8"}), UTF-8 otherwise."""
    listed = json_object(decode_field(raw.get("charsets", b""), "utf-8"))
    return {name: decode_field(value, listed.get(name) if isinstance(listed.get(name), str)
                               else None)
            for name, value in raw.items()}


def bare_address(value: str | None) -> str | None:
    """'Ana <Ana@Example.com>' -> 'ana@example.com'; None when there is no address."""
    if not value:
        return None
    address = parseaddr(value)[1].strip().lower()
    return address if "@" in address else None


def recipients(form: dict[str, str]) -> list[str]:
    """Header recipients first, then the SMTP envelope's (what the MTA really delivered)."""
    found = [form.get("to") or "", form.get("cc") or ""]
    env_to = json_object(form.get("envelope")).get("to")
    if isinstance(env_to, str):
        found.append(env_to)
    elif isinstance(env_to, list):
        found += [a for a in env_to if isinstance(a, str)]
    return [a for a in found if a]


def case_from_addresses(addresses: list[str], reply_domain: str, key: str
                        ) -> tuple[str, bool] | None:
    """(case id, True) for the first `refunds+<case id>+<tag>@<reply domain>` among
    `addresses` whose tag verifies; else (case id, False) for the first case address
    seen (untagged or a wrong tag: not to be trusted); None when there is none."""
    untrusted: str | None = None
    for _name, address in getaddresses(addresses):
        parsed = parse_reply_address(address, reply_domain)
        if parsed is None:
            continue
        if verify_tag(parsed.case_id, parsed.tag, key):
            return parsed.case_id, True
        untrusted = untrusted or parsed.case_id
    return (untrusted, False) if untrusted else None


# --- attachments ------------------------------------------------------------------------

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$")


def clean_name(name: str | None) -> str | None:
    """A file name as a person reads it: encoded words decoded, any folder dropped
    (`\\share\\mail\\forwarded.msg` -> `forwarded.msg`), control characters removed."""
    if not name:
        return None
    if "=?" in name:
        with contextlib.suppress(LookupError, UnicodeDecodeError, ValueError, HeaderParseError):
            name = str(make_header(decode_header(name)))
    name = _CONTROL_CHARS.sub("", name.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name[:MAX_NAME_CHARS] or None


def clean_content_type(value: Any) -> str:
    """`Image/PNG; name=x` -> `image/png`; anything unusable -> application/octet-stream."""
    if not isinstance(value, str):
        return DEFAULT_CONTENT_TYPE
    media = value.partition(";")[0].strip().lower()
    return media if _CONTENT_TYPE.match(media) else DEFAULT_CONTENT_TYPE


def _nameless(content_type: str, number: int) -> str:
    return f"attachment-{number}{mimetypes.guess_extension(content_type) or ''}"


def _attachment_order(key: str) -> tuple[int, str]:
    """attachment2 before attachment10."""
    digits = key.removeprefix("attachment")
    return (int(digits) if digits.isdigit() else 1 << 30, key)


def form_attachments(info_raw: str | None, files: Sequence[FilePart]) -> list[Attachment]:
    """Parsed mode: the attachments `attachment-info` describes (name and `type`), else
    the file parts themselves."""
    by_field = {f.field: f for f in files}
    info = json_object(info_raw)
    found: list[Attachment] = []
    for key in sorted(info, key=_attachment_order):
        item = info[key]
        if not isinstance(item, dict):
            continue
        part = by_field.get(key)
        content_type = clean_content_type(item.get("type") or (part and part.content_type))
        name = next((clean_name(n) for n in (item.get("filename"), item.get("name"),
                                             part and part.filename)
                     if isinstance(n, str) and clean_name(n)), None)
        found.append(Attachment(name=name or _nameless(content_type, len(found) + 1),
                                content_type=content_type))
    if not found:
        for part in files:
            content_type = clean_content_type(part.content_type)
            found.append(Attachment(
                name=clean_name(part.filename) or _nameless(content_type, len(found) + 1),
                content_type=content_type))
    return found[:MAX_ATTACHMENTS]


# --- HTML -------------------------------------------------------------------------------


class _HtmlText(HTMLParser):
    """The visible text of an HTML mail, quoted history (<blockquote>) left out."""

    _BLOCKS = frozenset("address article br dd div dl dt footer h1 h2 h3 h4 h5 h6 header "
                        "hr li ol p pre section table tbody td th tr ul".split())
    _HIDDEN = frozenset({"script", "style", "title", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._quoted = 0  # blockquote depth
        self._hidden = 0
        self._in_head = False
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "head":
            self._in_head = True
        elif tag == "body":
            self._in_head = False  # a <head> never closed ends here, as in browsers
        elif tag == "blockquote":
            self._quoted += 1
        elif tag in self._HIDDEN:
            self._hidden += 1
        elif tag == "pre":
            self._pre += 1
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self._in_head = False
        elif tag == "blockquote":
            self._quoted = max(0, self._quoted - 1)
        elif tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in self._BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._quoted or self._hidden or self._in_head:
            return
        self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))


def html_to_text(markup: str) -> str:
    """The text of an HTML-only mail: blocks become lines, entities decoded, quoted
    history, scripts and styles left out."""
    parser = _HtmlText()
    parser.feed(markup[:MAX_HTML_CHARS])
    parser.close()
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [line.strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- raw MIME ---------------------------------------------------------------------------


def _leaves(part: MimeMessage) -> Iterator[MimeMessage]:
    """Non-multipart parts in order; an attached message/rfc822 is one leaf."""
    if part.get_content_maintype() == "multipart":
        for sub in part.iter_parts():
            yield from _leaves(sub)  # type: ignore[arg-type]  # parts are EmailMessages
    else:
        yield part


def _part_text(part: MimeMessage) -> str:
    payload = part.get_payload(decode=True)
    text = decode_field(payload if isinstance(payload, bytes) else b"",
                        part.get_content_charset())
    return html_to_text(text) if part.get_content_subtype() == "html" else text


def _mime_body(message: MimeMessage) -> tuple[str, MimeMessage | None]:
    """The text/plain body, else the text/html one as text (a blank plain part loses)."""
    plain = message.get_body(preferencelist=("plain",))
    if plain is not None:
        text = _part_text(plain)  # type: ignore[arg-type]
        if text.strip():
            return text, plain  # type: ignore[return-value]
    html = message.get_body(preferencelist=("html",))
    if html is not None:
        return _part_text(html), html  # type: ignore[arg-type,return-value]
    return "", None


def _mime_attachments(message: MimeMessage, body: MimeMessage | None) -> list[Attachment]:
    """Every leaf that is not a text body: named parts, parts marked as attachments, and
    any non-text part (a pasted screenshot without a name included)."""
    found: list[Attachment] = []
    for part in _leaves(message):
        if part is body:
            continue
        name = clean_name(part.get_filename())
        content_type = clean_content_type(part.get_content_type())
        if not (name or part.is_attachment() or part.get_content_maintype() != "text"):
            continue  # the other alternative of the body (text/html beside text/plain)
        found.append(Attachment(name=name or _nameless(content_type, len(found) + 1),
                                content_type=content_type))
        if len(found) == MAX_ATTACHMENTS:
            break
    return found


# The email package raises assorted types on hostile MIME (IndexError for `From: <`,
# HeaderParseError, ...): the two guards below catch anything, around its calls only.


def _header(message: MimeMessage, name: str) -> str:
    """A header's decoded value; "" when absent or unparseable (the form has its own)."""
    try:
        value = message.get(name)
        return str(value) if value is not None else ""
    except Exception:
        return ""


def read_mime(raw: bytes) -> tuple[MimeMessage, str, list[Attachment]]:
    """The message, its text and its attachments; raises UnreadableMail."""
    try:
        message = email.message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, MimeMessage)  # policy.default builds EmailMessages
        text, body = _mime_body(message)
        attachments = _mime_attachments(message, body)
    except Exception as exc:
        raise UnreadableMail(f"{type(exc).__name__}: {exc}"[:300]) from None
    return message, text, attachments


# --- one inbound mail -------------------------------------------------------------------


def read_inbound(fields: dict[str, bytes], files: Sequence[FilePart] = ()) -> InboundMail:
    """An Inbound Parse post (its fields' raw bytes and its file parts) as one mail.

    Raw mode is recognised by a non-empty `email` field; the form's own `from`, `to`,
    `cc`, `envelope` and `subject` win over the MIME headers (SendGrid sends both; the
    envelope says where the mail was really delivered). Raises UnreadableMail."""
    form = decode_fields({k: v for k, v in fields.items() if k != "email"})
    raw = fields.get("email", b"")
    if not raw.strip():
        text = form.get("text") or ""
        if not text.strip():
            text = html_to_text(form.get("html") or "")
        return InboundMail(
            mode="parsed", sender=bare_address(form.get("from")), recipients=recipients(form),
            subject=form.get("subject") or "", text=text,
            attachments=form_attachments(form.get("attachment-info"), files),
            message_id=_message_id(form.get("headers") or ""))
    message, text, attachments = read_mime(raw)
    found = recipients(form) or [a for a in (_header(message, "to"), _header(message, "cc"))
                                 if a]
    return InboundMail(
        mode="raw",
        sender=bare_address(form.get("from")) or bare_address(_header(message, "from")),
        recipients=found, subject=form.get("subject") or _header(message, "subject"),
        text=text, attachments=attachments,
        message_id=_header(message, "message-id").strip()[:MAX_MESSAGE_ID] or None)


MAX_MESSAGE_ID = 300


def _message_id(headers: str) -> str | None:
    """The Message-ID in parsed mode's `headers` field (the raw header block)."""
    try:
        value = HeaderParser(policy=policy.default).parsestr(headers).get("message-id")
    except Exception:
        return None
    if value is None:
        return None
    return str(value).strip()[:MAX_MESSAGE_ID] or None


# --- the new part of a reply ------------------------------------------------------------

_FOLD_MARK = "\u2063"  # INVISIBLE SEPARATOR: marks where a long line was folded
_OWN = "refund_desk"  # the "language" of the attribution lines the library lacks
_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "ja", "ko", "zh")
_ADDRESS = r"<[^<>\s@]+@[^<>\s]+>"
_EXTRA_HEADERS = [
    # A date first, an address, a colon last: Gmail's ISO dates ("2014-03-20 8:48
    # GMT+01:00 Rémi <r@x>:"), Apple Mail in Korean ("2016. 11. 8. 오후 12:39 … <a@b>
    # 작성:") and Japanese ("2016/11/08 14:26、… <a@b> のメッセージ:"), Gmail ja/ko.
    r"^((?:> ?)*\d{4}\s?[-/.年년]\s?\d{1,2}\s?[-/.月월]\s?\d{1,2}[^\n]{0,200}" + _ADDRESS
    + r"[^\n]{0,80}[:：])$",
    r"^((?:> ?)*在\s?\d{4}年[^\n]{0,200}写道[:：])$",  # Apple Mail, Chinese
    r"^((?:> ?)*[^\n]{1,200}(?:書きました|님이\s?작성)\s?[:：])$",  # other ja / ko clients
    r"^(_{20,})$",  # Outlook's rule above its From:/Sent: block
]
# Phones' sign-offs the library lacks ("내 iPhone에서 보냄" ends, not starts, its line).
_EXTRA_SIGNATURES = [r"내 \S+에서 보냄", r"\S+から送信", r"发自我的\s?\S+",
                     r"Von meinem \S+ gesendet", r"Envoy\u00e9 de mon \S+"]
_OWN_PATTERNS = {"wrote_header": _EXTRA_HEADERS, "signatures": _EXTRA_SIGNATURES}


class _Reply(ReplyMessage):  # type: ignore[misc]  # mail-parser-reply ships no types
    """The library's message with one more set of attribution patterns."""

    def _get_language_regex(self, language: str, regex_key: str) -> str:
        if language == _OWN:
            return "|".join(_OWN_PATTERNS.get(regex_key, []))
        return str(super()._get_language_regex(language, regex_key))


def _phrases(value: str | list[str] | None) -> list[str]:
    if not value:
        return []
    return [value] if isinstance(value, str) else list(value)


# Every sign-off the parser knows (the library's, in our languages, and ours), at the start
# of a line; `_is_signature` looks at what follows it.
_SIGN_OFF = re.compile(r"^(?:> ?)*(?:[-_]{2,}|" + "|".join(
    f"(?:{phrase})" for phrase in [*_EXTRA_SIGNATURES, *(
        p for lang in _LANGUAGES for key in ("signatures", "sent_from")
        for p in _phrases(MAIL_LANGUAGES[lang].get(key)))]) + ")", re.IGNORECASE)


def _is_signature(block: str) -> bool:
    """The library takes a sign-off ("Thanks,", "Best regards", "Sent from my") to the
    end as a signature; agree only when the sign-off's line carries no more than a name
    or a link (so "Thanks, ticket 4411 attached" stays) and the block is signature-sized:
    a few short lines, not the customer's next paragraph."""
    lines = [line.strip() for line in block.strip().split("\n") if line.strip()]
    if not lines or len(lines) > 8 or any(len(line.split()) > 8 for line in lines[1:]):
        return False
    rest = re.sub(r"<[^<>]*>", "", _SIGN_OFF.sub("", lines[0], count=1)).strip(" ,.!:;-")
    return len(rest.split()) <= 2 and not any(c.isdigit() for c in rest)


def _without_signature(text: str, signature: re.Pattern[str]) -> str:
    """`text` up to the first of the library's signature matches that `_is_signature`
    accepts (among the first few: each match scans to the end of the text)."""
    start = 0
    for _ in range(_SIGNATURE_TRIES):
        if (found := signature.search(text, start)) is None:
            break
        if _is_signature(found.group()):
            return text[:found.start()]
        leading = len(found.group()) - len(found.group().lstrip())
        first_line = found.group()[leading:].split("\n", 1)[0]
        start = found.start() + leading + max(1, len(first_line))  # on from its next line
    return text


def _fold(line: str) -> str:
    """A long line cut into marked pieces of at most FOLD_AT characters (at a space where
    there is one), so the library's patterns stay fast; unfolded after parsing."""
    pieces: list[str] = []
    while len(line) > FOLD_AT:
        cut = line.rfind(" ", FOLD_AT // 2, FOLD_AT) + 1 or FOLD_AT
        pieces.append(line[:cut] + _FOLD_MARK)
        line = line[cut:]
    pieces.append(line)
    return "\n".join(pieces)


def extract_reply(text: str) -> str:
    """The new part of an email reply: quoted ("> ") lines, the attribution or header
    block that starts earlier messages (Gmail, Outlook's From:/Sent:, Apple Mail, Yahoo,
    Thunderbird, in many languages) and everything after it, and a trailing signature
    dropped. A reply written below the quote (Thunderbird) keeps its text. The one place
    that decides what of a customer's email reaches the case."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").replace(_FOLD_MARK, "").split("\n")
    unquoted = "\n".join(_fold(line) for line in lines if not line.lstrip().startswith(">"))
    message = _Reply(text=unquoted[:REPLY_INPUT_CHARS], languages=[*_LANGUAGES, _OWN],
                     keep_hyphen_lists=True).read()
    if not message.replies:
        return ""
    reply = message.replies[0]
    new = reply.full_body
    for disclaimer in reply.disclaimers:
        new = new.replace(disclaimer, "")
    new = _without_signature(new, message.SIGNATURE_REGEX)
    return new.replace(_FOLD_MARK + "\n", "").replace(_FOLD_MARK, "").strip()
