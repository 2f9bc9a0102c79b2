"""A billing incident end to end on a real Temporal dev server with the real worker: the
stripe SDK against localstripe behind the rate-limiting Stripe stand-in, emails into an
outbox folder; opened and approved from the CLI and the API by two leads."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import stripe
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.incident_activities import IncidentActivities
from activities.incident_models import OpenCasesInput, PurchaseRef
from api.app import create_app
from cli import incidents as incident_cli
from core.case_client import CaseClient
from core.config import Settings
from core.contract import RefundReason, RefundRequest, incident_case_request_id
from stack.stripe_seed import seed_charge
from tests.api_support import api_settings, eventually, http
from tests.stripe_rate_limit_proxy import StripeRateLimitProxy
from tests.test_e2e_refund import quick_policy
from worker import build_worker

API_KEY = "sk_test_refund_desk_incident"
RATE = 10  # Stripe requests a second, for the stand-in and the worker alike
LEADS = {"tok-carol": {"agent": "carol", "role": "lead"},
         "tok-dave": {"agent": "dave", "role": "lead"},
         "tok-alice": {"agent": "alice", "role": "agent"}}
CAROL, DAVE, ALICE = ({"Authorization": f"Bearer tok-{n}"} for n in ("carol", "dave", "alice"))


async def test_an_incident_from_the_cli_and_the_api_refunds_each_charge_once(
        dev_env: WorkflowEnvironment, localstripe_url: str, tmp_path: Path) -> None:
    proxy = StripeRateLimitProxy(localstripe_url, RATE, limiter="bucket").start()
    settings: Settings = api_settings(
        TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
        TEMPORAL_NAMESPACE=dev_env.client.namespace, STRIPE_API_BASE=proxy.url,
        STRIPE_API_KEY=API_KEY, STRIPE_MAX_REQUESTS_PER_SECOND=RATE, SENDGRID_API_KEY=None,
        OUTBOX_DIR=tmp_path / "outbox", REFUND_POLICY_FILE=quick_policy(tmp_path / "p.yaml"),
        AGENT_TOKENS=LEADS)
    task_queue = f"inc-e2e-{uuid.uuid4().hex[:8]}"
    run = uuid.uuid4().hex[:6]
    charges = [await asyncio.to_thread(seed_charge, localstripe_url, API_KEY,
                                       email=f"inc{i}-{run}@example.com", amount=4900 + i,
                                       currency="usd") for i in range(5)]
    ids = [c.charge_id for c in charges]
    stripe_v1 = stripe.StripeClient(API_KEY, base_addresses={"api": localstripe_url},
                                    max_network_retries=0).v1
    await asyncio.to_thread(stripe_v1.refunds.create, {"charge": ids[4]})  # refunded before
    charges_file = tmp_path / "charges.csv"
    charges_file.write_text("charge_id\n" + "\n".join(ids) + "\n")
    incident_id = f"e2e-{run}"

    async def cli(*argv: str) -> int:
        return await asyncio.to_thread(incident_cli.main, list(argv), settings=settings)

    async def factory() -> Any:
        return dev_env.client

    app = create_app(settings, factory, task_queue=task_queue)
    try:
        async with build_worker(dev_env.client, settings, task_queue=task_queue), \
                http(app) as api:
            refused = await api.post("/incidents", headers=ALICE, json={
                "incident_id": incident_id, "root_cause": "x", "explanation": {"en": "y"},
                "charges": ids})
            assert refused.status_code == 403  # agents do not open incidents
            bad = await api.post("/incidents", headers=CAROL, json={
                "incident_id": incident_id, "root_cause": "x", "explanation": {"en": "y"},
                "charges_file": {"format": "csv", "content": "charge_id\nch_1\nnope\n"}})
            assert bad.status_code == 422 and "line 3" in bad.text
            assert await cli("open", "--id", incident_id, "--lead", "carol",
                             "--root-cause", "price migration ran twice",
                             "--explanation", "en=A pricing error charged you twice.",
                             "--charges-file", str(charges_file),
                             "--task-queue", task_queue) == 0

            async def dry_run_done() -> Any:
                got = (await api.get(f"/incidents/{incident_id}", headers=ALICE)).json()
                return got if got["phase"] == "awaiting_approval" else None
            progress = await eventually(dry_run_done)
            assert progress["dry_run"]["to_refund"] == 4
            assert progress["dry_run"]["skipped"]["already_refunded"]["examples"] == [ids[4]]
            assert await cli("approve", incident_id, "--lead", "carol") == 4  # same lead
            approved = await api.post(f"/incidents/{incident_id}/approve", headers=DAVE,
                                      json={"note": "checked the list"})
            assert approved.status_code == 200, approved.text
            again = await api.post(f"/incidents/{incident_id}/approve", headers=DAVE)
            assert again.status_code == 409

            async def ended() -> Any:
                got = (await api.get(f"/incidents/{incident_id}", headers=ALICE)).json()
                return got if got["phase"] in ("done", "cancelled") else None
            await eventually(ended, timeout=90)
            report = (await api.get(f"/incidents/{incident_id}/report", headers=ALICE)).json()
            assert await cli("status", incident_id) == 0
    finally:
        proxy.stop()
    assert report["phase"] == "done" and report["approved_by"] == "dave"
    assert report["counts"]["refunded"] == 4 and report["counts"]["skipped"] == 1
    assert report["refunded_totals"] == {"usd": 4900 + 4901 + 4902 + 4903}
    for charge_id in ids:  # exactly one refund each (the fifth: the one made before)
        made = await asyncio.to_thread(stripe_v1.refunds.list, {"charge": charge_id})
        assert len(made.data) == 1
    emails = [json.loads(p.read_text()) for p in (tmp_path / "outbox").glob("*.json")]
    apologies = [e for e in emails if e["template"] == "billing_error_apology"]
    assert len(apologies) == 4
    assert all("A pricing error charged you twice." in e["text"] for e in apologies)
    assert all("price migration" not in e["text"] for e in apologies)
    assert not [e for e in emails if e["template"] == "acknowledgment"]
    [ops] = [e for e in emails if e["template"] == "incident_report"]
    assert ops["to"] == settings.OPS_EMAIL and "4 refunded" in ops["subject"]
    # every request went through the stand-in (per case 2 fewer than before the charge
    # came with its refunds: one to gather facts, one to refund)
    assert proxy.stats().forwarded >= 5 + 4 * 5


async def test_open_cases_are_found_through_visibility(dev_env: WorkflowEnvironment) -> None:
    """The open-case check's query runs on the dev server's visibility: a running case
    on the charge (by charge id) or of the customer (another charge) is found; the
    incident's own cases are not."""
    task_queue = f"no-worker-{uuid.uuid4().hex[:8]}"  # the cases wait, open
    key = "test-customer-ref-key"
    cases = CaseClient(dev_env.client, task_queue=task_queue, customer_ref_key=key)
    run = uuid.uuid4().hex[:6]
    on_charge = RefundRequest(request_id=f"vis-a-{run}", customer_email=f"a-{run}@example.com",
                              charge_id=f"ch_visa{run}", reason=RefundReason.billing_error)
    of_customer = RefundRequest(request_id=f"vis-b-{run}",
                                customer_email=f"o'b-{run}@example.com",
                                charge_id=f"ch_visother{run}", reason=RefundReason.other)
    own = RefundRequest(request_id=incident_case_request_id(f"i{run}", f"ch_visc{run}"),
                        customer_email=f"c-{run}@example.com", charge_id=f"ch_visc{run}",
                        reason=RefundReason.billing_error)
    for request in (on_charge, of_customer, own):
        await cases.start(request)
    purchases = [
        PurchaseRef(ref=f"ch_visa{run}", charge_id=f"ch_visa{run}"),
        PurchaseRef(ref=f"pi_visb{run}", charge_id=f"ch_visb{run}",
                    customer_email=f"o'b-{run}@example.com"),
        PurchaseRef(ref=f"ch_visc{run}", charge_id=f"ch_visc{run}")]
    acts = IncidentActivities(dev_env.client, task_queue, key)

    async def found() -> Any:
        got = await ActivityEnvironment().run(
            acts.incident_open_cases, OpenCasesInput(incident_id=f"i{run}", purchases=purchases))
        return got if got.on_charge and got.of_customer else None
    try:
        got = await eventually(found)
    finally:
        for request in (on_charge, of_customer, own):
            await dev_env.client.get_workflow_handle(request.case_id).terminate("test done")
    assert got.on_charge == {f"ch_visa{run}": on_charge.case_id}
    assert got.of_customer == {f"pi_visb{run}": of_customer.case_id}
