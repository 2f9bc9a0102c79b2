"""A Stripe outage longer than a step's retry deadline (the real Stripe activities against
localstripe behind a proxy that refuses connections, on the time-skipping server): the
case never decides on missing facts and never takes "unreachable" for "refused"; it
waits for Stripe, says so, and when Stripe is back refunds exactly once, with no second
approval."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
import stripe
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.stripe_activities import StripeActivities
from activities.stripe_models import GatherFactsInput
from core.config import Settings
from core.contract import ApproveSignal, CaseState, RetryStripeSignal, Update
from stack.stripe_seed import seed_charge
from tests.conftest import time_skipping_server
from tests.toggle_proxy import ToggleProxy
from tests.workflow_doubles import (
    Fakes,
    entries,
    kinds,
    record_history,
    request,
    start,
    stripe_worker,
)
from workflows.refund_case import RefundCase

API_KEY = "sk_test_outage"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def outage_env() -> AsyncIterator[WorkflowEnvironment]:
    """Its own time-skipping server: these tests move its clock by hand (env.sleep)."""
    async for env in time_skipping_server():
        yield env


@pytest_asyncio.fixture(loop_scope="session")
async def stripe_proxy(localstripe_url: str) -> AsyncIterator[ToggleProxy]:
    async with ToggleProxy(int(localstripe_url.rsplit(":", 1)[1])) as proxy:
        yield proxy


async def until(handle: object, predicate: object, what: str,
                skip: WorkflowEnvironment | None = None) -> CaseState:
    """Query until `predicate`; with `skip`, the server's clock moves 30 s a round (the
    retries and waits run on it), so progress never depends on this machine's speed."""
    for _ in range(120):
        state: CaseState = await handle.query(RefundCase.state)  # type: ignore[attr-defined]
        if predicate(state):  # type: ignore[operator]
            return state
        if skip is not None:
            await skip.sleep(timedelta(seconds=30))
        else:
            await asyncio.sleep(0.25)
    raise AssertionError(f"never {what}: {state.status} {kinds(state)[-6:]}")


async def run_outage(time_env: WorkflowEnvironment, proxy: ToggleProxy, localstripe_url: str,
                     *, down_before_approval: bool) -> tuple[CaseState, Fakes, int]:
    email = f"outage-{uuid.uuid4().hex[:6]}@example.com"
    charge = await asyncio.to_thread(seed_charge, localstripe_url, API_KEY, email=email,
                                     amount=50_000, currency="usd")
    settings = Settings(STRIPE_API_BASE=proxy.url, STRIPE_API_KEY=API_KEY)
    fakes = Fakes()
    task_queue = f"outage-{uuid.uuid4().hex[:8]}"
    acts = [fakes.load_policy, fakes.pin_policy, fakes.send_email, fakes.notify_ops]
    req = request("fraud_suspected", customer_email=email, charge_id=charge.charge_id)
    proxy.up = down_before_approval  # the first outage hits the look-up, or the refund
    async with Worker(time_env.client, task_queue=task_queue, workflows=[RefundCase],
                      activities=acts), \
            stripe_worker(time_env.client, task_queue, StripeActivities(settings).activities()):
        handle = await start(time_env.client, req, task_queue)
        if not down_before_approval:
            state = await until(handle, lambda s: s.progress.stripe_unreachable_since,
                                "waiting for Stripe", skip=time_env)
            assert state.facts is None and state.status == "assessing"
            assert state.waiting_for is not None and state.waiting_for.startswith("Stripe")
            proxy.up = True
            await handle.execute_update(Update.retry_stripe, RetryStripeSignal(agent="alice"))
        await until(handle, lambda s: s.status == "awaiting_agent", "awaiting an agent")
        proxy.up = not down_before_approval
        await handle.execute_update(Update.approve, ApproveSignal(agent="alice"))
        if down_before_approval:
            state = await until(handle, lambda s: s.progress.stripe_unreachable_since,
                                "waiting for Stripe", skip=time_env)
            assert state.status == "refunding" and state.refund is None
            assert not entries(state, "refund_refused")
        proxy.up = True
        state = await until(handle, lambda s: s.refund is not None, "refunded", skip=time_env)
        await record_history(handle, "stripe_outage_" + ("refund" if down_before_approval
                                                          else "lookup"))
    client = stripe.StripeClient(API_KEY, base_addresses={"api": localstripe_url},
                                 max_network_retries=0)
    refunds = await asyncio.to_thread(
        lambda: client.v1.refunds.list({"charge": charge.charge_id}).data)
    return state, fakes, len(refunds)


@pytest.mark.parametrize("down_before_approval", [False, True],
                         ids=["during-the-look-up", "during-the-refund"])
async def test_an_outage_is_waited_out_and_refunds_exactly_once(
        outage_env: WorkflowEnvironment, stripe_proxy: ToggleProxy, localstripe_url: str,
        down_before_approval: bool) -> None:
    state, fakes, refunds = await run_outage(outage_env, stripe_proxy, localstripe_url,
                                             down_before_approval=down_before_approval)
    assert stripe_proxy.refused > 0  # Stripe really was unreachable for a while
    assert refunds == 1
    assert state.refund is not None and state.refund.amount == 50_000
    assert state.facts is not None and state.facts.found
    assert not entries(state, "refund_refused")
    assert [e.message for e in entries(state, "facts_gathered")
            if "not found" in e.message] == []
    assert len(entries(state, "stripe_unreachable")) == 1
    assert len(entries(state, "stripe_back")) == 1
    assert fakes.templates().count("approval") == 1  # nobody approved twice
    assert [n.kind for n in fakes.ops].count("stripe_unreachable") == 1


async def test_an_unreachable_stripe_fails_an_attempt_with_a_short_retryable_error(
        stripe_proxy: ToggleProxy) -> None:
    """What a retrying activity reports as its last failure must fit what Temporal shows
    (the SDK's nested connection errors once made it 'Failure exceeds size limit.')."""
    stripe_proxy.up = False
    try:
        acts = StripeActivities(Settings(STRIPE_API_BASE=stripe_proxy.url,
                                         STRIPE_API_KEY=API_KEY))
        with pytest.raises(ApplicationError) as failed:
            await ActivityEnvironment().run(acts.stripe_gather_facts, GatherFactsInput(
                case_id="refund-outage", request=request(charge_id="ch_outage")))
    finally:
        stripe_proxy.up = True
    error = failed.value
    assert not error.non_retryable and error.type == "StripeTransient"
    assert error.__cause__ is None and error.__suppress_context__
    assert len(error.message) <= 220
