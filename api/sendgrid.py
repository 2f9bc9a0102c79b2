"""SendGrid webhooks: Inbound Parse (customer replies) and the Event Webhook (bounces).
HTTP only: the mail is read by api.inbound_mail, the events by api.email_events, the
signatures checked by api.signatures, the cases reached through api.cases.

Inbound mail is placed by its per-case reply address `refunds+<case id>+<tag>@<REPLY_DOMAIN>`
(core.reply_address: the tag is an HMAC of the case id, so an address cannot be made up
from a guessed case id) and accepted only from the case's customer; both Inbound Parse
modes (parsed fields, or the raw MIME in `email`) are read. Mail that cannot be placed
(no case address, a missing or wrong tag, unknown case, a stranger) or that
is refused (more than MAX_FORM_FIELDS fields or MAX_FORM_FILES files, a body over
MAX_INBOUND_BYTES, MIME the email package cannot read) is logged and answered 200:
SendGrid retries anything else for days and nothing can change the answer. A broken
multipart body is 400; a Temporal outage 503 (retry). A reply to a closed case is never
lost: within its policy's reopen window the case runs again with it (`reopened`), later a
new case follows it (`follow_up`, with that case's id); see CaseClient.reply.

The Event Webhook is authenticated by SendGrid's signature (SENDGRID_EVENTS_PUBLIC_KEY;
a timestamp more than 5 minutes away is a replay and refused) and/or a secret in its URL
(SENDGRID_EVENTS_SECRET). Production requires one of them; development warns at start-up."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from api import signatures
from api.bodies import BodyTooLarge, limited_stream, read_limited
from api.cases import customer_emails, signal_case
from api.deps import AppSettings, get_cases, get_client
from api.email_events import email_event_deliveries
from api.inbound_mail import (
    FilePart,
    UnreadableMail,
    case_from_addresses,
    read_inbound,
)
from api.logging import annotate, event
from api.temporal import temporal_call
from core.case_client import (
    CaseIsClosed,
    CaseNotFound,
    OpenCaseOnCharge,
    policy_reopen_window,
)
from core.contract import CustomerReplySignal, Signal
from core.reply_address import reply_key

router = APIRouter(tags=["webhooks"])

MAX_REPLY_CHARS = 50_000
MAX_FORM_FILES = 50
MAX_FORM_FIELDS = 200
MAX_INBOUND_BYTES = 40 * 1024 * 1024  # SendGrid posts mail of up to 30 MB
MAX_FIELD_BYTES = 32 * 1024 * 1024  # a raw-mode `email` field holds the whole message


class FormRefused(Exception):
    """A well-formed post we will not read (too many fields or files, too large); the
    message is the reason logged and answered."""


class MalformedForm(Exception):
    """Not a readable form body."""


_CHARSET_PARAM = re.compile(r';\s*charset\s*=\s*("[^"]*"|[^;]*)', re.IGNORECASE)
# starlette says which limit a multipart body broke only in its message.
_LIMIT_MESSAGES = {"Too many fields": "too_many_fields", "Too many files": "too_many_files",
                   "exceeded maximum size": "too_large"}


def _limit_broken(exc: MultiPartException) -> str | None:
    return next((reason for text, reason in _LIMIT_MESSAGES.items() if text in exc.message),
                None)


async def read_form(request: Request) -> tuple[dict[str, bytes], list[FilePart]]:
    """The raw bytes of each text field and the file parts' names and types. Multipart
    parts are parsed as latin-1, which maps every byte to one character, so encoding
    them back gives the exact bytes SendGrid sent. Raises FormRefused or MalformedForm."""
    content_type = request.headers.get("content-type", "")
    media = content_type.partition(";")[0].strip().lower()
    fields: dict[str, bytes] = {}
    files: list[FilePart] = []
    try:
        if media == "multipart/form-data":
            latin1 = _CHARSET_PARAM.sub("", content_type) + "; charset=latin-1"
            parser = MultiPartParser(Headers({"content-type": latin1}),
                                     limited_stream(request, MAX_INBOUND_BYTES),
                                     max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS,
                                     max_part_size=MAX_FIELD_BYTES)
            form = await parser.parse()
            try:
                for name, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        filename = value.filename.encode("latin-1").decode(
                            "utf-8", errors="replace") if value.filename else None
                        files.append(FilePart(name, filename, value.content_type))
                    else:
                        fields[name] = value.encode("latin-1")
            finally:
                await form.close()
        elif media == "application/x-www-form-urlencoded":
            body = (await read_limited(request, MAX_INBOUND_BYTES)).decode("latin-1")
            try:
                pairs = parse_qsl(body, keep_blank_values=True, encoding="latin-1",
                                  max_num_fields=MAX_FORM_FIELDS)
            except ValueError:  # "Max number of fields exceeded"
                raise FormRefused("too_many_fields") from None
            fields = {name: value.encode("latin-1") for name, value in pairs}
    except BodyTooLarge:
        raise FormRefused("too_large") from None
    except MultiPartException as exc:
        reason = _limit_broken(exc)
        if reason:
            raise FormRefused(reason) from None
        raise MalformedForm(exc.message) from None
    return fields, files


def _unplaced(request: Request, reason: str, **fields: Any) -> JSONResponse:
    event("inbound_mail_unplaced", reason=reason, **fields)
    annotate(request, outcome=f"unplaced:{reason}")
    return JSONResponse({"status": "ignored", "reason": reason})


def _refused(request: Request, reason: str, **fields: Any) -> JSONResponse:
    event("inbound_mail_refused", reason=reason, **fields)
    annotate(request, outcome=f"refused:{reason}")
    return JSONResponse({"status": "refused", "reason": reason})


def _secret_ok(request: Request, secret: str | None) -> bool:
    return signatures.url_secret_matches(secret, request.query_params.get("secret"),
                                         request.headers.get("authorization"))


@router.post(
    "/webhooks/sendgrid/inbound",
    summary="SendGrid Inbound Parse: a customer's reply (secret in the URL or basic auth)",
    responses={
        200: {"description": "Delivered to the case, logged and ignored (not placed), or "
                            "logged and refused (over the form limits, unreadable MIME)",
              "content": {"application/json": {"examples": {
                  "delivered": {"value": {"status": "delivered", "case_id": "refund-req_1"}},
                  "reopened": {"value": {"status": "reopened", "case_id": "refund-req_1"}},
                  "follow_up": {"value": {"status": "follow_up",
                                          "case_id": "refund-req_1.f-0a1b2c3d4e5f"}},
                  "ignored": {"value": {"status": "ignored", "reason": "sender_mismatch"}},
                  "forged": {"value": {"status": "ignored", "reason": "bad_reply_tag"}},
                  "refused": {"value": {"status": "refused", "reason": "too_many_fields"}},
              }}}},
        400: {"description": "Not a readable multipart body"},
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
                 "attachments", "attachment-info", "email")}},
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
async def sendgrid_inbound(request: Request, settings: AppSettings) -> JSONResponse:
    if not _secret_ok(request, settings.SENDGRID_INBOUND_SECRET):
        annotate(request, outcome="unauthorized")
        return JSONResponse({"detail": "unauthorized"}, status_code=401,
                            headers={"WWW-Authenticate": 'Basic realm="sendgrid-inbound"'})
    try:
        fields, files = await read_form(request)
    except FormRefused as exc:
        return _refused(request, str(exc), limit_fields=MAX_FORM_FIELDS,
                        limit_files=MAX_FORM_FILES, limit_bytes=MAX_INBOUND_BYTES)
    except MalformedForm as exc:
        annotate(request, outcome="malformed_form")
        return JSONResponse({"detail": str(exc)}, status_code=400)
    try:
        mail = read_inbound(fields, files)
    except UnreadableMail as exc:
        return _refused(request, "unreadable_mail", detail=str(exc))
    annotate(request, mode=mail.mode)
    placed = case_from_addresses(mail.recipients, settings.REPLY_DOMAIN, reply_key(settings))
    if placed is None:
        return _unplaced(request, "no_case_address")
    case_id, trusted = placed
    annotate(request, case_id=case_id)
    if not trusted:  # a made-up or untagged reply address: never reaches the case
        return _unplaced(request, "bad_reply_tag", case_id=case_id, sender=mail.sender)
    client = await get_client(request)
    customers = await customer_emails(client, case_id)
    if customers is None:
        return _unplaced(request, "unknown_case", case_id=case_id)
    if mail.sender is None or mail.sender not in customers:
        return _unplaced(request, "sender_mismatch", case_id=case_id, sender=mail.sender)
    text = mail.reply()[:MAX_REPLY_CHARS]
    reply = CustomerReplySignal(text=text, from_email=mail.sender,
                                attachments=mail.attachment_names, channel="email",
                                attachment_types=mail.attachment_types,
                                message_id=mail.message_id or _content_id(mail.sender, text,
                                                                          mail.attachment_names))
    cases = await get_cases(request)
    try:
        async with temporal_call("reply to case"):
            taken = await cases.reply(case_id, reply,
                                      reopen_window=policy_reopen_window(settings.REFUND_POLICY_FILE))
    except CaseNotFound:
        return _unplaced(request, "unknown_case", case_id=case_id)
    except OpenCaseOnCharge as exc:  # the charge's open case is another customer's
        return _unplaced(request, "open_case_on_charge", case_id=case_id,
                         open_case=exc.case_id)
    except CaseIsClosed:  # reopened and closed again meanwhile, three times: try later
        annotate(request, outcome="case_changing")
        return JSONResponse({"detail": "the case is changing; retry"}, status_code=503,
                            headers={"Retry-After": "5"})
    if taken.how != "delivered" or taken.case_id != case_id:
        event("inbound_mail_after_close", case_id=case_id, taken_by=taken.case_id,
              how=taken.how)
    annotate(request, outcome=taken.how)
    return JSONResponse({"status": taken.how, "case_id": taken.case_id})



def _content_id(sender: str, text: str, attachments: list[str]) -> str:
    """A mail without a Message-ID is known by its content (SendGrid redelivers the same
    post): the key that makes a redelivered reply count once."""
    content = json.dumps([sender, text, attachments], ensure_ascii=False)
    return "sha256:" + hashlib.sha256(content.encode()).hexdigest()[:32]


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
async def sendgrid_events(request: Request, settings: AppSettings) -> JSONResponse:
    secret = settings.SENDGRID_EVENTS_SECRET
    if secret and not _secret_ok(request, secret):
        annotate(request, outcome="unauthorized")
        return JSONResponse({"detail": "unauthorized"}, status_code=401,
                            headers={"WWW-Authenticate": 'Basic realm="sendgrid-events"'})
    body = await request.body()
    key = settings.SENDGRID_EVENTS_PUBLIC_KEY
    if key:
        timestamp = request.headers.get(signatures.SENDGRID_TIMESTAMP_HEADER)
        if not signatures.verify_event_signature(
                key, body, request.headers.get(signatures.SENDGRID_SIGNATURE_HEADER), timestamp):
            annotate(request, outcome="bad_signature")
            return JSONResponse({"detail": "bad event webhook signature"}, status_code=401)
        if not signatures.event_timestamp_fresh(timestamp):
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
            if await signal_case(client, case_id, Signal.email_event, signal):
                delivered += 1
            else:
                ignored += 1
                event("email_event_unplaced", case_id=case_id, email_event=signal.event)
        annotate(request, case_id=",".join(dict.fromkeys(c for c, _ in deliveries)))
    return JSONResponse({"delivered": delivered, "ignored": ignored})
