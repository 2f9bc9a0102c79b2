"""The API end to end: the real dev server, the real worker (Stripe activities against
localstripe, emails to an outbox folder), requests signed the way each sender signs.

Stripe's refund creation goes through the stripe helper's replay server, which forwards
to localstripe but can answer POST /v1/refunds with a recorded *pending* refund:
localstripe settles every refund at once and sends no events, so a refund that a webhook
moves to `succeeded` needs Stripe's own pending answer."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api import agents
from api.app import create_app
from core import search_attributes as sa
from core.config import DEV_CUSTOMER_REF_KEY
from core.customer_ref import customer_ref
from stack.stripe_seed import SeededCharge, seed_charge
from tests.api_support import (
    INBOUND_SECRET,
    api_settings,
    eventually,
    inbound_form,
    request_body,
    signed_intake,
    signed_stripe,
    stripe_event,
)
from tests.stripe_replay_server import API_KEY, StripeReplayServer
from worker import build_worker

ALICE = {"Authorization": "Bearer tok-alice"}
BOB = {"Authorization": "Bearer tok-bob"}
VIC = {"Authorization": "Bearer tok-vic"}


@dataclass
class Desk:
    """The API app with its own worker and task queue, for one test."""

    api: httpx.AsyncClient
    client: Client
    replay: StripeReplayServer
    stripe_url: str
    outbox: Path

    def seed(self, amount: int, currency: str = "usd") -> SeededCharge:
        email = f"c-{uuid.uuid4().hex[:10]}@example.com"
        return seed_charge(self.stripe_url, API_KEY, email=email, amount=amount,
                           currency=currency)

    async def intake(self, body: dict[str, Any]) -> httpx.Response:
        raw, headers = signed_intake(body)
        return await self.api.post("/webhooks/refund-requests", content=raw, headers=headers)

    async def open_case(self, charge: SeededCharge, **over: Any) -> str:
        body = request_body(f"e2e-{uuid.uuid4().hex[:10]}", customer_email=charge.email,
                            charge_id=charge.charge_id, amount=charge.amount,
                            currency=charge.currency, **over)
        resp = await self.intake(body)
        assert resp.status_code == 202, resp.text
        return resp.json()["case_id"]

    async def state(self, case_id: str) -> dict[str, Any]:
        resp = await self.api.get(f"/cases/{case_id}", headers=VIC)
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def until(self, case_id: str, predicate: Any) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            state = await self.state(case_id)
            return state if predicate(state) else None
        return await eventually(check)

    async def reaches(self, case_id: str, *statuses: str) -> dict[str, Any]:
        return await self.until(case_id, lambda s: s["status"] in statuses)

    async def stripe(self, event: dict[str, Any]) -> httpx.Response:
        payload, headers = signed_stripe(event)
        return await self.api.post("/webhooks/stripe", content=payload, headers=headers)

    async def findable_by_charge(self, charge_id: str) -> None:
        query = f"RefundChargeId = '{charge_id}' AND ExecutionStatus = 'Running'"

        async def check() -> bool:
            return bool([w async for w in self.client.list_workflows(query)])
        await eventually(check)


@pytest_asyncio.fixture(loop_scope="session")
async def desk(dev_env: WorkflowEnvironment, localstripe_url: str, tmp_path: Path
               ) -> AsyncIterator[Desk]:
    replay = StripeReplayServer(upstream=localstripe_url).start()
    settings = api_settings(STRIPE_API_BASE=replay.url, STRIPE_API_KEY=API_KEY,
                            OUTBOX_DIR=tmp_path / "outbox", SENDGRID_API_KEY=None)
    task_queue = f"api-e2e-{uuid.uuid4().hex[:8]}"

    async def factory() -> Client:
        return dev_env.client

    app = create_app(settings, factory, task_queue=task_queue)
    worker = build_worker(dev_env.client, settings, task_queue=task_queue)
    transport = httpx.ASGITransport(app=app)
    try:
        async with worker, httpx.AsyncClient(transport=transport, base_url="http://api") as api:
            yield Desk(api, dev_env.client, replay, localstripe_url, tmp_path / "outbox")
    finally:
        await _terminate_open_cases(dev_env.client, task_queue)
        replay.stop()


async def _terminate_open_cases(client: Client, task_queue: str) -> None:
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
    async for wf in client.list_workflows(query):
        await client.get_workflow_handle(wf.id).terminate("test finished")


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return True


def kinds(state: dict[str, Any]) -> list[str]:
    return [entry["kind"] for entry in state["timeline"]]


# --- intake ---------------------------------------------------------------------------


async def test_healthz_reports_temporal_reachable(desk: Desk):
    resp = await desk.api.get("/healthz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok" and resp.json()["temporal"] == "reachable"


async def test_signed_request_opens_a_findable_case(desk: Desk):
    charge = desk.seed(4900)
    case_id = await desk.open_case(charge, reason="fraud_suspected")
    desc = await desk.client.get_workflow_handle(case_id).describe()
    assert desc.workflow_type == "RefundCase"
    assert desc.typed_search_attributes.get(sa.CHARGE_ID) == charge.charge_id
    assert desc.typed_search_attributes.get(sa.CUSTOMER) == customer_ref(
        charge.email, DEV_CUSTOMER_REF_KEY)  # a keyed hash, never the address
    assert desc.typed_search_attributes.get(sa.AMOUNT) == 4900
    state = await desk.reaches(case_id, "awaiting_agent")
    assert state["request"]["charge_id"] == charge.charge_id

    async def listed() -> list[dict[str, Any]]:
        resp = await desk.api.get("/cases", params={"customer": charge.email.upper(),
                                                    "status": "awaiting_agent"}, headers=VIC)
        assert resp.status_code == 200
        return resp.json()
    [row] = await eventually(listed)
    assert row["id"] == case_id and row["reason"] == "fraud_suspected"
    assert row["execution_status"] == "RUNNING" and row["amount"] == 4900


async def test_the_same_delivery_twice_gives_one_case(desk: Desk):
    body = request_body(f"dup-{uuid.uuid4().hex[:8]}", charge_id="ch_missing")
    raw, headers = signed_intake(body)
    first = await desk.api.post("/webhooks/refund-requests", content=raw, headers=headers)
    again = await desk.api.post("/webhooks/refund-requests", content=raw, headers=headers)
    assert (first.status_code, first.json()["status"]) == (202, "started")
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert first.json()["case_id"] == again.json()["case_id"] == f"refund-{body['request_id']}"
    case_id = first.json()["case_id"]

    async def runs() -> int:
        return len([w async for w in desk.client.list_workflows(f"WorkflowId = '{case_id}'")])
    assert await eventually(runs) == 1


@pytest.mark.parametrize("variant", ["wrong_secret", "expired", "malformed", "negative_amount",
                                     "amount_beyond_int64", "unknown_reason"])
async def test_refused_requests_start_nothing(desk: Desk, variant: str):
    import time

    request_id = f"bad-{uuid.uuid4().hex[:8]}"
    body: Any = request_body(request_id)
    secret, timestamp = "test-intake-secret", None
    if variant == "wrong_secret":
        secret = "not-the-secret"
    elif variant == "expired":
        timestamp = int(time.time()) - 600
    elif variant == "malformed":
        body = json.dumps(body).encode()[:-3]
    elif variant == "negative_amount":
        body["amount"] = -100
    elif variant == "amount_beyond_int64":  # once a 503 from Temporal, retried forever
        body["amount"] = 2**63
    else:
        body["reason"] = "felt_like_it"
    raw, headers = signed_intake(body, secret=secret, timestamp=timestamp)
    resp = await desk.api.post("/webhooks/refund-requests", content=raw, headers=headers)
    expected = 401 if variant in ("wrong_secret", "expired") else 422
    assert resp.status_code == expected, resp.text
    assert not await _exists(desk.client, f"refund-{request_id}")


# --- Stripe ---------------------------------------------------------------------------


def _pending_refund(case_id: str, charge: SeededCharge) -> dict[str, Any]:
    return {"status": 200, "headers": {}, "body": {
        "id": f"re_{uuid.uuid4().hex[:14]}", "object": "refund", "amount": charge.amount,
        "charge": charge.charge_id, "currency": charge.currency, "created": 1767225600,
        "metadata": {"case_id": case_id}, "payment_intent": charge.payment_intent_id,
        "reason": None, "status": "pending", "destination_details": None,
    }}


async def test_a_signed_stripe_event_drives_the_refund_to_succeeded(desk: Desk):
    charge = desk.seed(4900)
    body = request_body(f"st-{uuid.uuid4().hex[:8]}", customer_email=charge.email,
                        charge_id=charge.charge_id, amount=4900, reason="change_of_mind")
    pending = _pending_refund(f"refund-{body['request_id']}", charge)
    desk.replay.reply("POST", "/v1/refunds", pending)
    resp = await desk.intake(body)
    case_id = resp.json()["case_id"]
    # "refunding" is set before Stripe answers: wait for the refund itself
    state = await desk.until(case_id, lambda s: s["refund"] is not None)
    assert state["status"] == "refunding"
    refund_id = pending["body"]["id"]
    assert state["refund"]["refund_id"] == refund_id
    assert state["refund"]["status"] == "pending"

    succeeded = {**pending["body"], "status": "succeeded", "destination_details": {
        "type": "card", "card": {"reference": "24692164340000012345678",
                                 "reference_status": "available", "type": "refund"}}}
    event = stripe_event("refund.updated", succeeded)
    resp = await desk.stripe(event)
    assert resp.status_code == 200 and resp.json() == {"status": "delivered",
                                                       "cases": [case_id]}
    again = await desk.stripe(event)  # Stripe redelivers: harmless
    assert again.status_code == 200
    state = await desk.reaches(case_id, "refunded")
    assert state["refund"]["status"] == "succeeded"
    assert state["refund"]["acquirer_reference"] == "24692164340000012345678"
    assert kinds(state).count("refund_status") == 1


async def test_a_dispute_event_stops_a_refund_not_yet_made(desk: Desk):
    charge = desk.seed(50_000)  # above the automatic limit: waits for an agent
    case_id = await desk.open_case(charge, reason="change_of_mind")
    await desk.reaches(case_id, "awaiting_agent")
    await desk.findable_by_charge(charge.charge_id)

    # a refund made in the Stripe dashboard on the same charge reaches the case too
    outside = {"id": "re_dashboard1", "object": "refund", "status": "succeeded",
               "amount": 1000, "currency": "usd", "charge": charge.charge_id, "metadata": {}}
    resp = await desk.stripe(stripe_event("refund.created", outside))
    assert resp.json() == {"status": "delivered", "cases": [case_id]}

    dispute = {"id": f"dp_{uuid.uuid4().hex[:10]}", "object": "dispute",
               "charge": charge.charge_id, "reason": "fraudulent", "amount": 50_000,
               "status": "needs_response"}
    event = stripe_event("charge.dispute.created", dispute)
    resp = await desk.stripe(event)
    assert resp.status_code == 200 and resp.json()["cases"] == [case_id]
    state = await desk.reaches(case_id, "disputed")
    assert state["dispute"]["dispute_id"] == dispute["id"]
    assert [r["refund_id"] for r in state["external_refunds"]] == ["re_dashboard1"]
    assert state["refund"] is None and not desk.replay.seen("POST", "/v1/refunds")
    refused = await desk.api.post(f"/cases/{case_id}/approve", json={}, headers=ALICE)
    assert refused.status_code == 409
    # the case has closed: a late redelivery finds no open case, and is still acknowledged
    await eventually(lambda: _closed(desk.client, case_id))
    late = await desk.stripe(event)
    assert late.status_code == 200 and late.json()["status"] == "no_case"


async def test_refunds_and_disputes_on_a_non_card_payment_reach_its_case(desk: Desk):
    """A SEPA Direct Debit or ACH payment is a `py_` charge: intake takes it, and Stripe's
    events about it find the case through RefundChargeId."""
    charge_id = f"py_{uuid.uuid4().hex[:20]}"
    resp = await desk.intake(request_body(f"sepa-{uuid.uuid4().hex[:8]}", charge_id=charge_id,
                                          amount=1234, currency="eur",
                                          reason="change_of_mind"))
    assert resp.status_code == 202, resp.text
    case_id = resp.json()["case_id"]
    await desk.findable_by_charge(charge_id)

    outside = {"id": f"pyr_{uuid.uuid4().hex[:14]}", "object": "refund", "amount": 1234,
               "charge": charge_id, "currency": "eur", "metadata": {},
               "payment_intent": "pi_sepa1", "status": "succeeded"}
    resp = await desk.stripe(stripe_event("charge.refund.updated", outside))
    assert resp.json() == {"status": "delivered", "cases": [case_id]}, resp.text
    dispute = {"id": f"du_{uuid.uuid4().hex[:14]}", "object": "dispute", "charge": charge_id,
               "reason": "debit_not_authorized", "amount": 1234, "status": "needs_response"}
    resp = await desk.stripe(stripe_event("charge.dispute.created", dispute))
    assert resp.json() == {"status": "delivered", "cases": [case_id]}, resp.text
    state = await desk.reaches(case_id, "disputed")
    assert state["dispute"]["dispute_id"] == dispute["id"]
    assert [r["refund_id"] for r in state["external_refunds"]] == [outside["id"]]


async def _closed(client: Client, case_id: str) -> bool:
    desc = await client.get_workflow_handle(case_id).describe()
    return desc.status != WorkflowExecutionStatus.RUNNING


# --- SendGrid -------------------------------------------------------------------------


async def test_inbound_reply_from_the_customer_resumes_the_case_a_strangers_does_not(
        desk: Desk):
    charge = desk.seed(4900)
    case_id = await desk.open_case(charge, reason="technical_issue")  # no evidence: asks
    # reply once the questions went out (the case counts replies from that moment)
    state = await desk.until(case_id, lambda s: s["status"] == "awaiting_info" and any(
        e["kind"] == "email_sent" and e["data"].get("template") == "info_request"
        for e in s["timeline"]))
    assert state["questions"]
    url = f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}"

    stranger = inbound_form(case_id, "Mallory <mallory@example.net>", "Refund me instead")
    resp = await desk.api.post(url, data=stranger)
    assert resp.status_code == 200 and resp.json()["reason"] == "sender_mismatch"
    state = await desk.state(case_id)
    assert state["status"] == "awaiting_info" and state["replies"] == []

    text = ("Ticket 4411, screenshot attached.\n\n"
            "On Mon, 5 May 2026 at 10:00, Refund Desk <refunds@example.com> wrote:\n"
            "> What is the number of the support ticket?\n")
    mine = inbound_form(case_id, f"Customer <{charge.email.upper()}>", text,
                        **{"attachment-info": json.dumps(
                            {"attachment1": {"filename": "screenshot.png"}})})
    resp = await desk.api.post(url, data=mine, files={
        "attachment1": ("screenshot.png", b"\x89PNG", "image/png")})
    assert resp.json() == {"status": "delivered", "case_id": case_id}
    state = await desk.reaches(case_id, "assessing", "approved", "refunding", "refunded",
                               "awaiting_agent", "completed")
    [reply] = state["replies"]
    # No Message-ID in the form: the mail's content keys it (a redelivery counts once).
    assert reply.pop("message_id").startswith("sha256:")
    assert reply == {"text": "Ticket 4411, screenshot attached.", "from_email": charge.email,
                     "attachments": ["screenshot.png"], "channel": "email",
                     "attachment_types": {"screenshot.png": "image/png"}, "request_id": None}
    assert "screenshot.png" in state["documents"]

    # a bounce of one of the case's emails reaches its timeline
    events = [{"event": "bounce", "email": charge.email, "case_id": case_id,
               "template": "info_request", "reason": "550 mailbox unavailable",
               "sg_event_id": "sg1"},
              {"event": "delivered", "email": charge.email, "case_id": case_id}]
    resp = await desk.api.post("/webhooks/sendgrid/events", json=events)
    assert resp.json() == {"delivered": 1, "ignored": 1}

    async def bounced() -> bool:
        return "email_event" in kinds(await desk.state(case_id))
    await eventually(bounced)


async def test_inbound_mail_for_an_unknown_case_is_acknowledged(desk: Desk):
    form = inbound_form("refund-nobody-here", "ana@example.com", "hello?")
    resp = await desk.api.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}",
                               data=form)
    assert resp.status_code == 200 and resp.json()["reason"] == "unknown_case"


# --- one open case per charge ----------------------------------------------------------


async def test_a_second_request_for_a_charge_joins_its_open_case_once(desk: Desk):
    charge = desk.seed(4900)
    first = await desk.open_case(charge, reason="fraud_suspected")  # waits for an agent
    await desk.reaches(first, "awaiting_agent")
    await desk.findable_by_charge(charge.charge_id)
    second = request_body(f"again-{uuid.uuid4().hex[:8]}", customer_email=charge.email.upper(),
                          charge_id=charge.charge_id, reason="technical_issue",
                          message="My support ticket number is 4411.")
    joined = await desk.intake(second)
    assert (joined.status_code, joined.json()) == (200, {"case_id": first,
                                                          "status": "joined"})
    redelivered = await desk.intake(second)
    assert redelivered.json() == {"case_id": first, "status": "joined"}
    assert not await _exists(desk.client, f"refund-{second['request_id']}")
    state = await desk.until(first, lambda s: "request_joined_again" in kinds(s))
    assert state["progress"]["joined_requests"] == [second["request_id"]]
    assert kinds(state).count("request_joined") == 1
    [reply] = state["replies"]
    assert reply["text"] == "My support ticket number is 4411."
    assert reply["request_id"] == second["request_id"] and reply["channel"] == "api"

    by_hand = request_body(f"hand-{uuid.uuid4().hex[:8]}", customer_email=charge.email,
                           charge_id=charge.charge_id, reason="duplicate_charge")
    resp = await desk.api.post("/cases", json=by_hand, headers=BOB)
    assert (resp.status_code, resp.json()["status"], resp.json()["case_id"]) == (
        200, "joined", first)


async def test_another_customers_request_for_a_charge_with_an_open_case_is_409(desk: Desk):
    charge = desk.seed(2500)
    first = await desk.open_case(charge, reason="fraud_suspected")
    await desk.findable_by_charge(charge.charge_id)
    stranger = request_body(f"other-{uuid.uuid4().hex[:8]}", customer_email="eve@example.net",
                            charge_id=charge.charge_id)
    resp = await desk.intake(stranger)
    assert resp.status_code == 409, resp.text
    assert resp.json()["case_id"] == first and first in resp.json()["detail"]
    assert not await _exists(desk.client, f"refund-{stranger['request_id']}")
    state = await desk.state(first)
    assert state["replies"] == [] and state["progress"]["joined_requests"] == []


# --- agents ---------------------------------------------------------------------------


async def test_agents_approve_over_http_and_the_same_agent_cannot_approve_twice(desk: Desk):
    charge = desk.seed(150_000)  # $1,500: two different approvers
    case_id = await desk.open_case(charge, reason="change_of_mind")
    await desk.reaches(case_id, "awaiting_agent")
    url = f"/cases/{case_id}/approve"

    viewer = await desk.api.post(url, json={"note": "looks fine"}, headers=VIC)
    assert viewer.status_code == 403
    first = await desk.api.post(url, json={"note": "new customer, in window"}, headers=ALICE)
    assert first.status_code == 200, first.text
    assert first.json()["approvals"] == 1 and first.json()["approvers_required"] == 2
    twice = await desk.api.post(url, json={"note": "again"}, headers=ALICE)
    assert twice.status_code == 422
    assert twice.json()["detail"]["code"] == "invalid"
    assert "alice already approved" in twice.json()["detail"]["reason"]

    second = await desk.api.post(url, json={"note": "agreed"}, headers=BOB)
    assert second.status_code == 200 and second.json()["status"] == "approved"
    late = await desk.api.post(url, json={}, headers=ALICE)
    assert late.status_code == 409 and late.json()["detail"]["code"] == "wrong_state"

    state = await desk.reaches(case_id, "refunded", "completed")
    assert [a["agent"] for a in state["approvals"]] == ["alice", "bob"]
    # The updates' validators refused before anything reached the history.
    assert [e for e in state["timeline"] if e["kind"] == "action_refused"] == []


async def test_agent_actions_on_unknown_cases_and_opening_by_hand(desk: Desk):
    missing = await desk.api.post("/cases/refund-nope-404/deny",
                                  json={"clause_id": "misuse"}, headers=ALICE)
    assert missing.status_code == 404
    assert (await desk.api.get("/cases/refund-nope-404", headers=VIC)).status_code == 404

    charge = desk.seed(2500)
    body = request_body(f"hand-{uuid.uuid4().hex[:8]}", customer_email=charge.email,
                        charge_id=charge.charge_id, amount=2500, reason="fraud_suspected")
    opened = await desk.api.post("/cases", json=body, headers=BOB)
    assert opened.status_code == 202 and opened.json()["status"] == "started"
    case_id = opened.json()["case_id"]
    again = await desk.api.post("/cases", json=body, headers=BOB)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    await desk.reaches(case_id, "awaiting_agent")
    denied = await desk.api.post(f"/cases/{case_id}/deny",
                                 json={"clause_id": "no-such-clause"}, headers=BOB)
    assert denied.status_code == 422 and "no-such-clause" in denied.json()["detail"]["reason"]
    asked = await desk.api.post(f"/cases/{case_id}/request-info",
                                json={"questions": ["Which card ends in 4242?"]}, headers=BOB)
    assert asked.status_code == 200 and asked.json()["accepted"] is True
    await desk.reaches(case_id, "awaiting_info")


# --- a case no worker serves ------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def idle(dev_env: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    """The API starting cases on a task queue that no worker polls."""
    task_queue = f"api-idle-{uuid.uuid4().hex[:8]}"

    async def factory() -> Client:
        return dev_env.client

    app = create_app(api_settings(), factory, task_queue=task_queue)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api") as api:
            yield api
    finally:
        await _terminate_open_cases(dev_env.client, task_queue)


async def test_an_action_on_a_case_whose_worker_is_down_is_504(
        idle: httpx.AsyncClient, dev_env: WorkflowEnvironment, monkeypatch):
    monkeypatch.setattr(agents, "UPDATE_TIMEOUT_SECONDS", 2.0)
    body = request_body(f"idle-{uuid.uuid4().hex[:8]}")
    opened = await idle.post("/cases", json=body, headers=BOB)
    assert opened.status_code == 202
    case_id = opened.json()["case_id"]
    resp = await idle.post(f"/cases/{case_id}/approve", json={"note": "ok"}, headers=ALICE)
    assert resp.status_code == 504, resp.text
    assert "did not answer in time" in resp.json()["detail"]
    # and the case records who opened it by hand (the workflow's memo)
    desc = await dev_env.client.get_workflow_handle(case_id).describe()
    assert await desc.memo_value("opened_by") == "agent:bob"


async def test_the_customer_filter_finds_an_address_with_a_quote(idle: httpx.AsyncClient):
    email = f"o'brien-{uuid.uuid4().hex[:8]}@example.com"
    other = f"x'or'1'='1-{uuid.uuid4().hex[:8]}@example.com"
    for n, address in enumerate((email, other)):  # one open case per charge: two charges
        body = request_body(f"quote-{uuid.uuid4().hex[:8]}", customer_email=address,
                            charge_id=f"ch_quote{n}{uuid.uuid4().hex[:6]}")
        assert (await idle.post("/cases", json=body, headers=BOB)).status_code == 202

    async def listed() -> list[dict[str, Any]]:
        resp = await idle.get("/cases", params={"customer": email.upper()}, headers=VIC)
        assert resp.status_code == 200, resp.text
        return resp.json()
    [row] = await eventually(listed)
    assert row["customer"] == customer_ref(email, DEV_CUSTOMER_REF_KEY)  # never the address

    # a value shaped like an injection is one literal: it matches only its own case
    async def injected() -> list[str]:
        resp = await idle.get("/cases", params={"customer": other}, headers=VIC)
        return [r["customer"] for r in resp.json()]
    assert await eventually(injected) == [customer_ref(other, DEV_CUSTOMER_REF_KEY)]
