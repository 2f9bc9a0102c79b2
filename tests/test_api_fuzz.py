"""Fuzzing every webhook: random bodies and headers never produce a 500, and nothing
unsigned starts a case or reaches one. The Temporal client here is a recorder (the one
place a stand-in client is used): it makes "nothing was started or signalled" exact."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api import signatures
from api.app import create_app
from api.sendgrid import MAX_FORM_FIELDS, MAX_FORM_FILES
from core.reply_address import reply_address
from tests.api_support import (
    INBOUND_SECRET,
    STRIPE_SECRET,
    api_settings,
    multipart,
    request_body,
    signed_intake,
)

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


class _Handle:
    def __init__(self, client: RecordingClient, workflow_id: str) -> None:
        self.client, self.id = client, workflow_id

    async def signal(self, name: str, arg: Any = None, **_: Any) -> None:
        self.client.calls.append(("signal", self.id, name))

    async def query(self, name: str, *_: Any, **__: Any) -> dict[str, Any]:
        self.client.calls.append(("query", self.id, name))
        return {"request": {"customer_email": "ana@example.com"}}


class _NoWorkflows:
    def __aiter__(self) -> _NoWorkflows:
        return self

    async def __anext__(self) -> Any:
        raise StopAsyncIteration


class RecordingClient:
    """Records what the API asked of Temporal; refuses a second start of one id, and an
    Int search attribute outside int64, as the server does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.started: set[str] = set()

    async def start_workflow(self, workflow: str, arg: Any, *, id: str,
                             search_attributes: TypedSearchAttributes | None = None,
                             **_: Any) -> None:
        self.calls.append(("start", id))
        for pair in search_attributes or []:
            if isinstance(pair.value, int) and not -2**63 <= pair.value < 2**63:
                raise RPCError(f"invalid value for search attribute {pair.key.name} of "
                               "type Int", RPCStatusCode.INVALID_ARGUMENT, b"")
        if id in self.started:
            raise WorkflowAlreadyStartedError(id, workflow)
        self.started.add(id)

    def get_workflow_handle(self, workflow_id: str) -> _Handle:
        return _Handle(self, workflow_id)

    def list_workflows(self, query: str, **_: Any) -> _NoWorkflows:
        self.calls.append(("list", query))
        return _NoWorkflows()


RECORDER = RecordingClient()


async def _factory() -> RecordingClient:
    return RECORDER


SETTINGS = api_settings(SENDGRID_EVENTS_PUBLIC_KEY=None)
APP = create_app(SETTINGS, _factory)  # type: ignore[arg-type]


class _Http:
    """Synchronous calls into the app on a private event loop (hypothesis drives sync
    tests); an exception escaping the app becomes a 500, like a server would answer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://api")

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(url, **kwargs))


HTTP = _Http()

header_values = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.builds(lambda t, s: f"t={t},v1={s}", st.integers(-10**12, 10**12),
              st.text(alphabet="0123456789abcdef", max_size=64)),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=20,
)
bodies = st.one_of(st.binary(max_size=500),
                   json_values.map(lambda v: json.dumps(v).encode()))


def _headers(name: str, value: str | None) -> dict[str, bytes]:
    return {} if value is None else {name: value.encode("utf-8", "replace")}


def _no_calls_since(mark: int) -> bool:
    return len(RECORDER.calls) == mark


@FUZZ
@given(body=bodies, header=header_values)
def test_unsigned_intake_never_500_and_never_starts(body, header):
    mark = len(RECORDER.calls)
    resp = HTTP.post("/webhooks/refund-requests", content=body,
                     headers=_headers(signatures.HEADER, header))
    assert resp.status_code == 401
    assert _no_calls_since(mark)


refund_requests = st.fixed_dictionaries(
    {"request_id": st.text(max_size=12), "customer_email": st.sampled_from(
        ["ana@example.com", "nope", "", "B@Example.org"]),
     "reason": st.sampled_from(["technical_issue", "unused", "bored", ""])},
    optional={"charge_id": st.sampled_from(["ch_1", "ch_", "pi_1", "x", "py_1", "py_"]),
              "amount": st.integers(-5, 10**9) | st.integers(2**62, 2**70) | st.none()
              | st.text(max_size=3),
              "currency": st.text(max_size=4), "locale": st.sampled_from(["en", "fr"]),
              "documents": st.lists(st.text(max_size=5), max_size=3),
              "junk": json_values},
)


@FUZZ
@given(body=st.one_of(refund_requests.map(lambda d: json.dumps(d).encode()), bodies))
def test_signed_intake_never_500_and_starts_only_valid_requests(body):
    mark = len(RECORDER.calls)
    raw, headers = signed_intake(body)
    resp = HTTP.post("/webhooks/refund-requests", content=raw, headers=headers)
    assert resp.status_code in (200, 202, 413, 422)
    starts = RECORDER.calls[mark:]
    if resp.status_code in (200, 202):
        assert starts == [("start", resp.json()["case_id"])]
    else:
        assert starts == []


@pytest.mark.parametrize("amount", [2**63, 2**64 + 1, 10**30, 100_000_000])
def test_signed_intake_with_an_amount_stripe_cannot_hold_is_422_not_503(amount):
    mark = len(RECORDER.calls)
    raw, headers = signed_intake(request_body("req_big", amount=amount))
    resp = HTTP.post("/webhooks/refund-requests", content=raw, headers=headers)
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["detail"]
    assert error["loc"] == ["amount"] and "99999999" in error["msg"]
    assert _no_calls_since(mark)


@FUZZ
@given(body=bodies, header=header_values)
def test_unsigned_stripe_events_never_500_and_reach_no_case(body, header):
    mark = len(RECORDER.calls)
    resp = HTTP.post("/webhooks/stripe", content=body,
                     headers=_headers("Stripe-Signature", header))
    assert resp.status_code == 400
    assert _no_calls_since(mark)


event_types = st.sampled_from(["refund.created", "refund.updated", "refund.failed",
                               "charge.refunded", "charge.refund.updated",
                               "charge.dispute.created", "customer.created"])
# Every field may also be any JSON value at all (a list `type` was once a 500).
stripe_events = st.fixed_dictionaries({
    "id": st.text(max_size=10) | json_values,
    "object": st.just("event") | json_values,
    "type": event_types | json_values | st.lists(event_types, max_size=2),
    "data": json_values | st.fixed_dictionaries({"object": json_values | st.fixed_dictionaries({
        "id": st.text(max_size=6) | json_values,
        "status": st.sampled_from(["succeeded", "pending", "x"]) | json_values,
        "charge": st.sampled_from(["ch_1", "", None]) | json_values,
        "metadata": json_values | st.fixed_dictionaries({"case_id": st.text(max_size=12)}),
        "refunds": st.fixed_dictionaries({"data": st.lists(json_values, max_size=3)}),
        "amount": json_values})}),
}, optional={"api_version": json_values, "created": json_values, "junk": json_values})


@FUZZ
@given(event=stripe_events)
def test_signed_stripe_events_never_500(event):
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET)
    resp = HTTP.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": header})
    assert resp.status_code in (200, 400)


TAGGED = reply_address("refund-r1", SETTINGS)
form_fields = st.dictionaries(
    st.sampled_from(["to", "from", "cc", "text", "html", "subject", "envelope",
                     "attachment-info", "attachments", "charsets", "other"]),
    st.text(max_size=60) | st.sampled_from(
        ["refunds+refund-r1@reply.example.com", TAGGED, "Ana <ana@example.com>",
         '{"to": ["refunds+refund-r2@reply.example.com"]}', f'{{"to": ["{TAGGED}"]}}',
         '{"attachment1": 5}', '{"text": "iso-2022-jp", "from": "shift_jis"}',
         '{"text": "base64"}', '{"text": 5}']),
    max_size=8,
)


@FUZZ
@given(fields=form_fields, secret=st.one_of(st.none(), st.text(max_size=20)))
def test_inbound_without_the_secret_never_500_and_reaches_no_case(fields, secret):
    mark = len(RECORDER.calls)
    params = {"secret": secret} if secret is not None else None
    resp = HTTP.post("/webhooks/sendgrid/inbound", params=params, data=fields)
    if secret != INBOUND_SECRET:
        assert resp.status_code == 401 and _no_calls_since(mark)


@FUZZ
@given(fields=form_fields)
def test_inbound_with_the_secret_never_500(fields):
    resp = HTTP.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}", data=fields)
    assert resp.status_code == 200
    if resp.json()["status"] == "delivered":
        assert "ana@example.com" in fields.get("from", "").lower()
        assert any(TAGGED in fields.get(k, "") for k in ("to", "cc", "envelope"))


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["to", "from", "text", "subject", "charsets"]),
                              st.binary(max_size=60), max_size=5))
def test_inbound_raw_bytes_in_any_charset_never_500(fields):
    parts = b"".join(b'--b\r\nContent-Disposition: form-data; name="' + k.encode()
                     + b'"\r\n\r\n' + v + b"\r\n" for k, v in fields.items()) + b"--b--\r\n"
    resp = HTTP.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}", content=parts,
                     headers={"content-type": "multipart/form-data; boundary=b"})
    assert resp.status_code in (200, 400)


@FUZZ
@given(body=bodies)
def test_event_webhook_never_500(body):
    resp = HTTP.post("/webhooks/sendgrid/events", content=body)
    assert resp.status_code in (200, 400)


def test_raw_garbage_multipart_is_a_client_error():
    resp = HTTP.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}",
                     content=b"--xx\r\ngarbage", headers={
                         "content-type": "multipart/form-data; boundary=xx"})
    assert resp.status_code < 500


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count=st.integers(0, MAX_FORM_FIELDS + 60), files=st.integers(0, MAX_FORM_FILES + 10),
       encoding=st.sampled_from(["multipart", "urlencoded"]))
def test_inbound_with_any_number_of_fields_or_files_never_500(count, files, encoding):
    """Above the limits SendGrid gets a 200 with a logged refusal (it retries anything
    but 2xx for days), never a 500."""
    fields = {"to": TAGGED, "from": "ana@example.com", "text": "hi",
              **{f"x{i}": "v" for i in range(count)}}
    if encoding == "urlencoded":
        resp = HTTP.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}", data=fields)
        refused = len(fields) > MAX_FORM_FIELDS
    else:
        body, headers = multipart({k: v.encode() for k, v in fields.items()},
                                  {f"attachment{i}": (f"f{i}.png", b"x", "image/png")
                                   for i in range(files)})
        resp = HTTP.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}", content=body,
                         headers=headers)
        refused = len(fields) > MAX_FORM_FIELDS or files > MAX_FORM_FILES
    assert resp.status_code == 200
    assert (resp.json()["status"] == "refused") == refused


mime_heads = st.lists(st.sampled_from([
    b"From: <", b"From: Ana <ana@example.com>", b"To: " + TAGGED.encode(),
    b"Content-Type: text/html; charset=x-unknown", b"Content-Type: multipart/mixed; boundary=b",
    b"Content-Type: text/plain; charset=iso-2022-jp", b"Content-Transfer-Encoding: base64",
    b"Content-Disposition: attachment; filename*=utf-8''%E3%82", b"Subject: =?utf-8?b?\xff?=",
]), max_size=6).map(b"\r\n".join)


@FUZZ
@given(head=mime_heads, body=st.binary(max_size=200), sender=st.sampled_from(
    [b"ana@example.com", b"", b"<"]))
def test_inbound_raw_mode_with_any_mime_never_500(head, body, sender):
    fields = {"to": TAGGED.encode(), "from": sender, "email": head + b"\r\n\r\n" + body}
    content, headers = multipart(fields)
    resp = HTTP.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}", content=content,
                     headers=headers)
    assert resp.status_code == 200
