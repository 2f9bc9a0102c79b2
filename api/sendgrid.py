"""SendGrid webhooks: Inbound Parse (customer replies) and the Event Webhook (bounces).

Inbound mail is placed by its per-case reply address `refunds+<case id>+<tag>@<REPLY_DOMAIN>`
(core.reply_address: the tag is an HMAC of the case id, so an address cannot be made up
from a guessed case id) and accepted only from the case's customer. Text fields are
decoded with the charset SendGrid lists for each in `charsets` (ISO-2022-JP, Shift_JIS,
EUC-KR... replies), from the raw bytes of the form. Mail that cannot be placed (no case
address, a missing or wrong tag, unknown or closed case, a stranger) is logged and
answered 200: SendGrid would otherwise retry it for days and nothing can change that.
A Temporal outage is 503 (retry).

The Event Webhook is authenticated by SendGrid's signature (SENDGRID_EVENTS_PUBLIC_KEY;
a timestamp more than 5 minutes away is a replay and refused) and/or a secret in its URL
(SENDGRID_EVENTS_SECRET). Production requires one of them; development warns at start-up."""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import hmac
import html
import json
import re
import time
from email.utils import getaddresses, parseaddr
from typing import Any
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError

from api import signatures
from api.logging import annotate, event
from api.temporal import RPC_TIMEOUT, get_client, is_not_found, temporal_call
from core.config import Settings
from core.models import (
    CASE_ID,
    UNDELIVERABLE_EMAIL_EVENTS,
    CustomerReplySignal,
    EmailEventSignal,
)
from core.reply_address import parse_reply_address, reply_key, verify_tag

router = APIRouter(tags=["webhooks"])

FORWARDED_EVENTS = UNDELIVERABLE_EMAIL_EVENTS | {"spamreport"}
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_REPLY_CHARS = 50_000
MAX_FORM_FILES = 50
MAX_FORM_FIELDS = 200

# --- pure helpers ---------------------------------------------------------------------

_ATTRIBUTION_START = re.compile(r"^\s*On\s", re.IGNORECASE)
_ATTRIBUTION_END = re.compile(r"wrote:\s*$", re.IGNORECASE)
_OTHER_ATTRIBUTIONS = (
    re.compile(r"^\s*-{2,}\s*Original Message\s*-{2,}\s*$", re.IGNORECASE),
    re.compile(r"^\s*_{20,}\s*$"),  # Outlook's separator line above "From: ..."
    re.compile(r"^\s*\d{4}\s*[年/.-].*>\s*[:：]\s*$"),  # Gmail ja: "2026年5月5日(月) … <a@b>:"
    re.compile(r"(書きました|のメール|のメッセージ)\s*[:：]\s*$"),  # other Japanese clients
    re.compile(r"님이\s*작성\s*:\s*$"),  # Gmail, Korean
)


def _attribution_at(lines: list[str], i: int) -> bool:
    """An "On <date>, <someone> wrote:" line, which mail clients may wrap over 3 lines."""
    if any(p.search(lines[i]) for p in _OTHER_ATTRIBUTIONS):
        return True
    if not _ATTRIBUTION_START.match(lines[i]):
        return False
    return any(_ATTRIBUTION_END.search(line) for line in lines[i:i + 3])


def strip_quoted(text: str) -> str:
    """The new part of a reply: drop ">" lines and everything from the attribution line
    ("On ... wrote:", "-----Original Message-----", ...) on."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    for i, line in enumerate(lines):
        if _attribution_at(lines, i):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line.rstrip())
    return "\n".join(kept).strip()


def html_to_text(markup: str) -> str:
    """Crude text of an HTML-only reply: quoted blocks dropped, tags removed."""
    markup = re.sub(r"(?is)<blockquote.*?</blockquote>", "", markup)
    markup = re.sub(r"(?is)<(script|style).*?</\1>", "", markup)
    markup = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", markup)
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def bare_address(value: str | None) -> str | None:
    """'Ana <Ana@Example.com>' -> 'ana@example.com'; None when there is no address."""
    if not value:
        return None
    address = parseaddr(value)[1].strip().lower()
    return address if "@" in address else None


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


def envelope_of(raw: str | None) -> dict[str, Any]:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# Mail clients label text with the standard name but use the vendor superset.
_SUPERSETS = {"shift_jis": "cp932", "euc_kr": "cp949", "iso2022_jp": "iso2022_jp_ext"}


def decode_field(raw: bytes, charset: str | None) -> str:
    """A form field's bytes in the charset SendGrid names for it (its superset, then
    UTF-8, when the bytes do not fit); never raises."""
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


def decode_fields(raw: dict[str, bytes]) -> dict[str, str]:
    """Every field decoded with the charset listed for it in `charsets` (a JSON object
    such as {"text": "iso-2022-jp", "subject": "UTF-8"}), UTF-8 otherwise."""
    listed = envelope_of(decode_field(raw.get("charsets", b""), "utf-8"))
    return {name: decode_field(value, listed.get(name) if isinstance(listed.get(name), str)
                               else None)
            for name, value in raw.items()}


_CHARSET_PARAM = re.compile(r';\s*charset\s*=\s*("[^"]*"|[^;]*)', re.IGNORECASE)


async def read_form(request: Request) -> tuple[dict[str, bytes], list[UploadFile]]:
    """The raw bytes of each text field and the uploaded files. Multipart parts are
    parsed as latin-1, which maps every byte to one character, so encoding them back
    gives the exact bytes SendGrid sent; raises MultiPartException on a broken body."""
    content_type = request.headers.get("content-type", "")
    media = content_type.partition(";")[0].strip().lower()
    fields: dict[str, bytes] = {}
    uploads: list[UploadFile] = []
    if media == "multipart/form-data":
        latin1 = _CHARSET_PARAM.sub("", content_type) + "; charset=latin-1"
        parser = MultiPartParser(Headers({"content-type": latin1}), request.stream(),
                                 max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
        form = await parser.parse()
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if value.filename:
                    value.filename = value.filename.encode("latin-1").decode(
                        "utf-8", errors="replace")
                uploads.append(value)
            else:
                fields[name] = value.encode("latin-1")
    elif media == "application/x-www-form-urlencoded":
        body = (await request.body()).decode("latin-1")
        pairs = parse_qsl(body, keep_blank_values=True, encoding="latin-1",
                          max_num_fields=MAX_FORM_FIELDS)
        fields = {name: value.encode("latin-1") for name, value in pairs}
    return fields, uploads


def recipients(form: dict[str, str]) -> list[str]:
    """Header recipients first, then the SMTP envelope's (what the MTA really delivered)."""
    found = [form.get("to") or "", form.get("cc") or ""]
    env_to = envelope_of(form.get("envelope")).get("to")
    if isinstance(env_to, str):
        found.append(env_to)
    elif isinstance(env_to, list):
        found += [a for a in env_to if isinstance(a, str)]
    return [a for a in found if a]


def attachment_names(info_raw: str | None, uploads: list[UploadFile]) -> list[str]:
    """File names from `attachment-info` (or the uploaded parts themselves)."""
    names: list[str] = []
    info = envelope_of(info_raw)
    for key in sorted(info):
        item = info[key]
        if isinstance(item, dict):
            name = item.get("filename") or item.get("name")
            if isinstance(name, str) and name:
                names.append(name[:255])
    if not names:
        names = [u.filename[:255] for u in uploads if u.filename]
    return names[:50]


def email_event_deliveries(events: Any) -> tuple[list[tuple[str, EmailEventSignal]], int]:
    """(case id, signal) for each undelivered-mail event of one of our emails, and the
    number of events ignored (other kinds, no case id, malformed)."""
    out: list[tuple[str, EmailEventSignal]] = []
    ignored = 0
    for item in events if isinstance(events, list) else []:
        kind = item.get("event") if isinstance(item, dict) else None
        if not isinstance(kind, str):  # e.g. a list: not hashable, not an event
            ignored += 1
            continue
        if kind == "bounce" and item.get("type") == "blocked":
            kind = "blocked"
        case_id = item.get("case_id") if isinstance(item, dict) else None
        if kind not in FORWARDED_EVENTS or not isinstance(case_id, str) \
                or not CASE_ID.match(case_id):
            ignored += 1
            continue
        try:
            signal = EmailEventSignal(
                event=kind,
                email=item.get("email"),
                template=item.get("template") if isinstance(item.get("template"), str) else None,
                reason=_reason(item),
                sg_event_id=item.get("sg_event_id") if isinstance(item.get("sg_event_id"),
                                                                   str) else None,
            )
        except ValidationError:
            ignored += 1
            continue
        out.append((case_id, signal))
    return out, ignored


def _reason(item: dict[str, Any]) -> str | None:
    for key in ("reason", "response", "bounce_classification", "type"):
        value = item.get(key)
        if isinstance(value, str) and value:
            return value[:1000]
    return None


@functools.lru_cache(maxsize=4)
def _public_key(key_b64: str) -> ec.EllipticCurvePublicKey:
    key = load_der_public_key(base64.b64decode(key_b64.strip()))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("SENDGRID_EVENTS_PUBLIC_KEY is not an ECDSA key")
    return key


def verify_event_signature(public_key_b64: str, payload: bytes, signature_b64: str | None,
                           timestamp: str | None) -> bool:
    """SendGrid's signed Event Webhook: ECDSA P-256 / SHA-256 over timestamp + raw body
    (what sendgrid.helpers.eventwebhook.EventWebhook checks, but on bytes and never
    raising on garbage)."""
    if not signature_b64 or not timestamp:
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        _public_key(public_key_b64).verify(
            signature, timestamp.encode() + payload, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def event_timestamp_fresh(timestamp: str | None, *, now: float | None = None,
                          tolerance: int = signatures.TOLERANCE_SECONDS) -> bool:
    """The signed Event Webhook timestamp is within `tolerance` seconds of now (either
    side): a captured, validly signed POST cannot be replayed later."""
    if not timestamp or not timestamp.isascii() or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    return abs(current - int(timestamp)) <= tolerance


def url_secret_authorized(request: Request, secret: str | None) -> bool:
    """`?secret=` in the configured webhook URL, or the basic-auth password."""
    if not secret:
        return False
    expected = secret.encode()
    given = request.query_params.get("secret")
    if given is not None and hmac.compare_digest(given.encode(), expected):
        return True
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return False
    password = decoded.partition(b":")[2]
    return hmac.compare_digest(password, expected)


# --- handlers -------------------------------------------------------------------------


def _unplaced(request: Request, reason: str, **fields: Any) -> JSONResponse:
    event("inbound_mail_unplaced", reason=reason, **fields)
    annotate(request, outcome=f"unplaced:{reason}")
    return JSONResponse({"status": "ignored", "reason": reason})


async def _customer_emails(client: Client, case_id: str) -> set[str] | None:
    """The case's customer addresses from its `state` query; None: no such case."""
    try:
        async with temporal_call("query case state"):
            state = await client.get_workflow_handle(case_id).query(
                "state", rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if is_not_found(exc):
            return None
        raise
    except WorkflowQueryFailedError:
        return None
    emails = {
        _get(state, "request", "customer_email"),
        _get(state, "facts", "customer_email"),
    }
    return {e.lower() for e in emails if isinstance(e, str) and e}


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)
    return obj


@router.post(
    "/webhooks/sendgrid/inbound",
    summary="SendGrid Inbound Parse: a customer's reply (secret in the URL or basic auth)",
    responses={
        200: {"description": "Delivered to the case, or logged and ignored",
              "content": {"application/json": {"examples": {
                  "delivered": {"value": {"status": "delivered", "case_id": "refund-req_1"}},
                  "ignored": {"value": {"status": "ignored", "reason": "sender_mismatch"}},
                  "forged": {"value": {"status": "ignored", "reason": "bad_reply_tag"}},
              }}}},
        401: {"description": "Missing or wrong secret"},
        503: {"description": "Temporal unreachable: SendGrid will retry"},
    },
    openapi_extra={
        "parameters": [{"name": "secret", "in": "query", "required": False,
                        "schema": {"type": "string"},
                        "description": "SENDGRID_INBOUND_SECRET (or use basic auth)"}],
        "requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": {"type": "object", "properties": {
                name: {"type": "string"} for name in
                ("to", "cc", "from", "subject", "text", "html", "envelope", "charsets",
                 "attachments", "attachment-info")}},
            "example": {
                "to": "refunds+refund-req_1042+3f9c0a1b2c3d4e5f@reply.example.com",
                "from": "Ana <ana@example.com>",
                "subject": "Re: A question about your refund request",
                "text": "It was bought on 3 May.\n\nOn Mon, 5 May 2026 Refund Desk wrote:\n> ...",
                "envelope": '{"to":["refunds+refund-req_1042+3f9c0a1b2c3d4e5f'
                            '@reply.example.com"],"from":"ana@example.com"}',
                "charsets": '{"to":"UTF-8","from":"UTF-8","subject":"UTF-8",'
                            '"text":"UTF-8"}',
            }}}},
    },
)
async def sendgrid_inbound(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    if not url_secret_authorized(request, settings.SENDGRID_INBOUND_SECRET):
        annotate(request, outcome="unauthorized")
        return JSONResponse({"detail": "unauthorized"}, status_code=401,
                            headers={"WWW-Authenticate": 'Basic realm="sendgrid-inbound"'})
    try:
        raw, uploads = await read_form(request)
    except MultiPartException as exc:
        annotate(request, outcome="malformed_form")
        return JSONResponse({"detail": exc.message}, status_code=400)
    try:
        fields = decode_fields(raw)
        names = attachment_names(fields.get("attachment-info"), uploads)
    finally:
        for upload in uploads:
            await upload.close()
    placed = case_from_addresses(recipients(fields), settings.REPLY_DOMAIN,
                                 reply_key(settings))
    if placed is None:
        return _unplaced(request, "no_case_address")
    case_id, trusted = placed
    annotate(request, case_id=case_id)
    sender = bare_address(fields.get("from"))
    if not trusted:  # a made-up or untagged reply address: never reaches the case
        return _unplaced(request, "bad_reply_tag", case_id=case_id, sender=sender)
    client = await get_client(request)
    customers = await _customer_emails(client, case_id)
    if customers is None:
        return _unplaced(request, "unknown_case", case_id=case_id)
    if sender is None or sender not in customers:
        return _unplaced(request, "sender_mismatch", case_id=case_id, sender=sender)
    text = fields.get("text") or html_to_text(fields.get("html") or "")
    reply = CustomerReplySignal(text=strip_quoted(text)[:MAX_REPLY_CHARS], from_email=sender,
                                attachments=names, channel="email")
    try:
        async with temporal_call("signal customer_reply"):
            await client.get_workflow_handle(case_id).signal(
                "customer_reply", reply, rpc_timeout=RPC_TIMEOUT)
    except RPCError as exc:
        if is_not_found(exc):
            return _unplaced(request, "case_closed", case_id=case_id)
        raise
    annotate(request, outcome="delivered")
    return JSONResponse({"status": "delivered", "case_id": case_id})


@router.post(
    "/webhooks/sendgrid/events",
    summary="SendGrid Event Webhook: bounces and drops reach the case (signed and/or URL "
            "secret)",
    responses={
        200: {"description": "Counts of delivered and ignored events",
              "content": {"application/json": {"example": {"delivered": 1, "ignored": 3}}}},
        400: {"description": "Not a JSON array"},
        401: {"description": "Signature missing, wrong or older than 5 minutes (with "
                             "SENDGRID_EVENTS_PUBLIC_KEY), or wrong URL secret (with "
                             "SENDGRID_EVENTS_SECRET)"},
        503: {"description": "Temporal unreachable: SendGrid will retry"},
    },
    openapi_extra={"parameters": [
        {"name": "secret", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "SENDGRID_EVENTS_SECRET, when set (or use basic auth)"},
    ], "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "array", "items": {"type": "object"}},
        "example": [{"event": "bounce", "email": "ana@example.com",
                     "case_id": "refund-req_1042", "template": "info_request",
                     "reason": "550 5.1.1 mailbox unavailable", "sg_event_id": "ev_1"}],
    }}}},
)
async def sendgrid_events(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    secret = settings.SENDGRID_EVENTS_SECRET
    if secret and not url_secret_authorized(request, secret):
        annotate(request, outcome="unauthorized")
        return JSONResponse({"detail": "unauthorized"}, status_code=401,
                            headers={"WWW-Authenticate": 'Basic realm="sendgrid-events"'})
    body = await request.body()
    key = settings.SENDGRID_EVENTS_PUBLIC_KEY
    if key:
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        if not verify_event_signature(key, body, request.headers.get(SIGNATURE_HEADER),
                                      timestamp):
            annotate(request, outcome="bad_signature")
            return JSONResponse({"detail": "bad event webhook signature"}, status_code=401)
        if not event_timestamp_fresh(timestamp):
            annotate(request, outcome="stale_signature")
            return JSONResponse({"detail": "event webhook timestamp outside the 5-minute "
                                           "tolerance (replayed?)"}, status_code=401)
    try:
        events = json.loads(body)
    except ValueError:
        return JSONResponse({"detail": "expected a JSON array of events"}, status_code=400)
    if not isinstance(events, list):
        return JSONResponse({"detail": "expected a JSON array of events"}, status_code=400)
    deliveries, ignored = email_event_deliveries(events)
    delivered = 0
    if deliveries:
        client = await get_client(request)
        for case_id, signal in deliveries:
            try:
                async with temporal_call("signal email_event"):
                    await client.get_workflow_handle(case_id).signal(
                        "email_event", signal, rpc_timeout=RPC_TIMEOUT)
                delivered += 1
            except RPCError as exc:
                if not is_not_found(exc):
                    raise
                ignored += 1
                event("email_event_unplaced", case_id=case_id, email_event=signal.event)
        annotate(request, case_id=",".join(dict.fromkeys(c for c, _ in deliveries)))
    return JSONResponse({"delivered": delivered, "ignored": ignored})
