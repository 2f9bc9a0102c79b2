"""End to end on a real Temporal dev server with the real worker: the stripe SDK against
localstripe over HTTP, emails into an outbox folder (no SendGrid key), cases opened and
approved through the CLI. Only the policy's follow-up delays are shortened (a test policy
file), since a dev server's clock does not skip."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import pytest
import stripe
import yaml
from temporalio.testing import WorkflowEnvironment

from cli import cases, demo
from core.config import Settings
from core.contract import CaseState
from core.models import FeedbackSignal
from policies.loader import DEFAULT_POLICY
from stack.stripe_seed import seed_charge
from tests.api_support import INBOUND_SECRET, api_settings, app_for, http, inbound_form
from tests.workflow_doubles import record_history
from worker import build_worker
from workflows.refund_case import RefundCase

API_KEY = "sk_test_refund_desk_e2e"


def quick_policy(path: Path) -> Path:
    """The default policy with the waits after the refund cut to seconds."""
    data = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    data["sla"].update({"follow_up_delay": "1s", "feedback_wait": "60s",
                        "refund_settle_poll": "2s"})
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def e2e_settings(dev_env: WorkflowEnvironment, localstripe_url: str, tmp_path: Path
                 ) -> Settings:
    """The settings of the worker, the CLI and the API in these tests: the dev server,
    localstripe, emails to an outbox folder, the quick policy."""
    return Settings(
        TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
        TEMPORAL_NAMESPACE=dev_env.client.namespace,
        STRIPE_API_BASE=localstripe_url, STRIPE_API_KEY=API_KEY, SENDGRID_API_KEY=None,
        OUTBOX_DIR=tmp_path / "outbox", REFUND_POLICY_FILE=quick_policy(tmp_path / "p.yaml"),
    )

async def test_case_opened_and_approved_from_the_cli_refunds_in_stripe(
        dev_env: WorkflowEnvironment, localstripe_url: str, tmp_path: Path) -> None:
    settings = e2e_settings(dev_env, localstripe_url, tmp_path)
    task_queue = f"e2e-{uuid.uuid4().hex[:8]}"
    email = f"e2e-{uuid.uuid4().hex[:6]}@example.com"
    # Above the policy's automatic limit: an agent must approve.
    charge = await asyncio.to_thread(seed_charge, localstripe_url, API_KEY, email=email,
                                     amount=50_000, currency="usd")
    request_id = f"e2e-{uuid.uuid4().hex[:8]}"
    case_id = f"refund-{request_id}"

    async def cli(*argv: str) -> int:
        return await asyncio.to_thread(cases.main, list(argv), settings=settings)

    async with build_worker(dev_env.client, settings, task_queue=task_queue):
        assert await cli("open", "--request-id", request_id, "--email", email, "--charge",
                         charge.charge_id, "--reason", "change_of_mind",
                         "--task-queue", task_queue) == 0
        reopen = ("open", "--request-id", request_id, "--email", email, "--charge",
                  charge.charge_id, "--reason", "change_of_mind", "--task-queue", task_queue)
        assert await cli(*reopen) == 0  # a repeated open starts nothing (no traceback)
        handle = dev_env.client.get_workflow_handle_for(RefundCase.run, case_id)
        state = await _until(handle, lambda s: s.status == "awaiting_agent")
        assert state.facts is not None and state.facts.customer_email == email
        assert state.decision is not None and state.decision.amount == 50_000
        # One open case per charge: a second request joins it, another customer's is refused
        second = f"e2e-{uuid.uuid4().hex[:8]}"
        assert await cli("open", "--request-id", second, "--email", email, "--charge",
                         charge.charge_id, "--reason", "technical_issue", "--message",
                         "It never worked.", "--task-queue", task_queue) == 0
        state = await _until(handle, lambda s: s.progress.joined_requests == [second])
        assert state.replies[-1].channel == "cli" and state.replies[-1].text == "It never worked."
        assert await cli("open", "--request-id", f"x-{second}", "--email", "eve@example.net",
                         "--charge", charge.charge_id, "--reason", "fraud_suspected",
                         "--task-queue", task_queue) == 3
        assert state.status == "awaiting_agent"
        assert await cli("approve", case_id, "--agent", "bob", "--amount", "60000") == 4
        assert await cli("approve", case_id, "--agent", "alice", "--note", "ok") == 0
        state = await _until(handle, lambda s: s.waiting_for == "the customer's feedback")
        assert await cli("feedback", case_id, "--rating", "4", "--comment", "fine") == 0
        assert await cli("status", case_id) == 0
        await handle.result()
        state = await handle.query(RefundCase.state)
        await record_history(handle, "e2e_agent_approve")
        run_id = (await handle.describe()).run_id
        assert await cli(*reopen) == 0  # even once closed: no second run of the case
        assert (await dev_env.client.get_workflow_handle(case_id).describe()).run_id == run_id

    assert state.status == "completed"
    assert state.feedback is not None and state.feedback.rating == 4
    assert "action_refused" not in [t.kind for t in state.timeline]  # refused by validator

    client = stripe.StripeClient(API_KEY, base_addresses={"api": localstripe_url},
                                 max_network_retries=0)
    refunds = client.v1.refunds.list({"charge": charge.charge_id}).data
    assert [(r.amount, r.metadata["case_id"]) for r in refunds] == [(50_000, case_id)]
    assert state.refund is not None and state.refund.refund_id == refunds[0].id

    sent = [json.loads(p.read_text()) for p in sorted((tmp_path / "outbox").glob("*.json"))]
    templates = {m.get("template") for m in sent}
    assert {"acknowledgment", "approval", "refund_completed"} <= templates, sent[:1]
    assert all(case_id in json.dumps(m) for m in sent)


async def _until(handle, predicate, timeout: float = 30.0) -> CaseState:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        state = await handle.query(RefundCase.state)
        if predicate(state):
            return state
        assert loop.time() < end, f"stuck at {state.status}: {[t.kind for t in state.timeline]}"
        await asyncio.sleep(0.2)


async def test_demo_seeds_a_charge_and_opens_a_case(
        dev_env: WorkflowEnvironment, localstripe_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`starter.py demo` against the running stack: the case it opens is approved by the
    policy, refunded in localstripe and followed up."""
    settings = e2e_settings(dev_env, localstripe_url, tmp_path)
    task_queue = f"demo-{uuid.uuid4().hex[:8]}"
    async with build_worker(dev_env.client, settings, task_queue=task_queue):
        code = await asyncio.to_thread(demo.main, ["--task-queue", task_queue],
                                       settings=settings)
        assert code == 0
        printed = capsys.readouterr().out
        case_id = re.search(r"Opened case (refund-demo-[0-9a-f]+)", printed).group(1)  # type: ignore[union-attr]
        assert f"python starter.py status {case_id}" in printed
        handle = dev_env.client.get_workflow_handle_for(RefundCase.run, case_id)
        state = await _until(handle, lambda s: s.waiting_for == "the customer's feedback")
        await handle.signal(RefundCase.feedback, FeedbackSignal(rating=5))
        await handle.result()
        state = await handle.query(RefundCase.state)
    assert state.status == "completed"
    assert state.decision is not None and state.decision.outcome == "approve"
    assert state.refund is not None and state.refund.amount == 4900


async def test_a_text_answer_goes_to_an_agent_who_approves_from_the_cli(
        dev_env: WorkflowEnvironment, localstripe_url: str, tmp_path: Path) -> None:
    """A request that needs a document; the customer answers in words only, by email
    (SendGrid Inbound Parse into the API): an agent reads it instead of a second question,
    approves from the CLI, and the money moves in Stripe."""
    settings = e2e_settings(dev_env, localstripe_url, tmp_path)
    task_queue = f"e2e-{uuid.uuid4().hex[:8]}"
    email = f"e2e-{uuid.uuid4().hex[:6]}@example.com"
    charge = await asyncio.to_thread(seed_charge, localstripe_url, API_KEY, email=email,
                                     amount=4_900, currency="usd")
    request_id = f"e2e-{uuid.uuid4().hex[:8]}"
    case_id = f"refund-{request_id}"
    answer = "I already explained all of this to your colleague on the phone."

    async def cli(*argv: str) -> int:
        return await asyncio.to_thread(cases.main, list(argv), settings=settings)

    async with build_worker(dev_env.client, settings, task_queue=task_queue), \
            http(app_for(dev_env.client, api_settings())) as api:
        assert await cli("open", "--request-id", request_id, "--email", email, "--charge",
                         charge.charge_id, "--reason", "technical_issue",
                         "--task-queue", task_queue) == 0
        handle = dev_env.client.get_workflow_handle_for(RefundCase.run, case_id)
        asked = await _until(handle, lambda s: s.status == "awaiting_info")
        mail = await api.post(f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}",
                              data=inbound_form(case_id, email, answer))
        assert mail.json() == {"status": "delivered", "case_id": case_id}, mail.text
        state = await _until(handle, lambda s: s.status == "awaiting_agent")
        assert "colleague on the phone" in state.timeline[-1].message
        assert await cli("approve", case_id, "--agent", "alice", "--note", "called her") == 0
        state = await _until(handle, lambda s: s.status == "refunded")
        assert await cli("feedback", case_id, "--rating", "5") == 0
        await handle.result()
        # A reply after the case completed reopens it for an agent (CLI `reply`, as an
        # emailed one); the money already moved, so an approval finds nothing left.
        assert await cli("reply", case_id, "--text", "Could you refund the tax too?") == 0
        reopened = await _until(handle, lambda s: s.status == "awaiting_agent"
                                and s.progress.reopened == 1)
        assert await cli("approve", case_id, "--agent", "alice") == 0
        await handle.result()
        closed = await handle.query(RefundCase.state)

    assert asked.questions and state.approved_amount == 4_900
    assert "closed as completed" in reopened.timeline[-1].message
    assert closed.status == "closed" and "reopened" in [t.kind for t in closed.timeline]
    client = stripe.StripeClient(API_KEY, base_addresses={"api": localstripe_url},
                                 max_network_retries=0)
    refunds = client.v1.refunds.list({"charge": charge.charge_id}).data
    assert [(r.amount, r.metadata["case_id"]) for r in refunds] == [(4_900, case_id)]
    sent = [json.loads(p.read_text()) for p in sorted((tmp_path / "outbox").glob("*.json"))]
    assert [m.get("template") for m in sent].count("info_request") == 1
    assert [m.get("template") for m in sent].count("refund_completed") == 1
    assert "reminder" not in [m.get("template") for m in sent]
