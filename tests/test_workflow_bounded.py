"""A case stays bounded whatever a customer sends: its state keeps the latest replies
(each capped) and a compacted timeline, and a long wait for people continues in a fresh
history when Temporal suggests it, carrying the case. Real dev servers (the time-skipping
server never suggests continue-as-new), activity doubles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core import binaries, search_attributes
from core.contract import (
    ApproveSignal,
    CaseState,
    CustomerReplySignal,
    EmailEventSignal,
    Signal,
    Update,
)
from stack import dev_server
from tests.conftest import SERVER_STARTUP
from tests.workflow_doubles import Case, Fakes, default_policy, record_history, request
from workflows.refund_case.gather_info import MAX_REPLIES_KEPT, MAX_REPLY_CHARS
from workflows.refund_case.runtime import MAX_TIMELINE

SUGGEST_AFTER_EVENTS = 300


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def short_history_env() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server that suggests continue-as-new early, so a test sees it happen."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binaries.temporal_cli(),
        data_converter=pydantic_data_converter, search_attributes=search_attributes.ALL,
        dev_server_extra_args=[*dev_server.KEEP_SEARCH_ATTRIBUTE_CACHE, "--dynamic-config-value",
                               f"limit.historyCount.suggestContinueAsNew={SUGGEST_AFTER_EVENTS}"],
        dev_server_startup_timeout=SERVER_STARTUP)
    try:
        yield env
    finally:
        await env.shutdown()


def quick_fakes() -> Fakes:
    """A case an agent must decide ($500 is above the automatic limit), with the waits
    after the refund cut to seconds: the dev server's clock does not skip."""
    policy = default_policy()
    sla = policy.sla.model_copy(update={"follow_up_delay": timedelta(seconds=1),
                                        "feedback_wait": timedelta(seconds=1)})
    return Fakes(amount=50_000, policy=policy.model_copy(update={"sla": sla}))


async def send_replies(case: Case, count: int, size: int) -> None:
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with gate:
            text = f"reply {i} " + "x" * max(0, size - 12)
            await case.handle.signal(Signal.customer_reply, CustomerReplySignal(
                text=text[:size], channel="api"))

    await asyncio.gather(*(one(i) for i in range(count)))


async def test_thousands_of_replies_and_huge_ones_leave_the_case_bounded_and_decidable(
        short_history_env: WorkflowEnvironment) -> None:
    fakes = quick_fakes()
    async with Case(short_history_env, fakes, request()) as case:
        await case.status("awaiting_agent")
        await send_replies(case, 5_000, 100)
        await send_replies(case, 50, 50_000)
        # Every reply counted, and the long history continued as new (the query may be
        # answered by the run that Temporal has just told to continue: wait for the next).
        state = await case.until(lambda s: s.progress.replies_received == 5_050
                                 and s.progress.runs > 1, "every reply counted", timeout=120)
        assert len(state.replies) == MAX_REPLIES_KEPT
        assert all(len(r.text) <= MAX_REPLY_CHARS for r in state.replies)
        assert len(state.timeline) <= MAX_TIMELINE + 1
        assert state.progress.timeline_omitted > 0
        assert state.progress.runs > 1  # it continued as new, carrying the case
        assert len(state.model_dump_json()) < 1_000_000
        assert state.status == "awaiting_agent" and state.waiting_for == "an agent's decision"
        result = await case.handle.execute_update(
            Update.approve, ApproveSignal(agent="alice"), result_type=object)
        assert result is not None
        state = await case.result()
    assert state.status == "completed"
    assert [c.amount for c in fakes.refund_calls] == [50_000]
    assert fakes.templates().count("approval") == 1  # one approval email across the runs


async def test_a_continued_case_resumes_its_wait_for_the_customer(
        short_history_env: WorkflowEnvironment) -> None:
    """Asked a question, the case hears of many email events (opens, deliveries) before
    the reply: it continues as new, still waits for the same reply with the same
    deadline, and the reply, when it comes, is what moves it on."""
    fakes = quick_fakes()
    client = short_history_env.client
    async with Case(short_history_env, fakes, request("technical_issue")) as case:
        asked = await case.status("awaiting_info")
        first_run = (await case.handle.describe()).run_id
        for i in range(SUGGEST_AFTER_EVENTS // 3 + 20):
            await case.handle.signal(Signal.email_event, EmailEventSignal(
                event="open", email="ana@example.com", template="info_request",
                sg_event_id=f"sg-{i}"))
        state = await case.until(lambda s: s.progress.runs > 1, "a continued run", timeout=60)
        assert state.status == "awaiting_info"
        assert state.progress.info_reply_by == asked.progress.info_reply_by
        assert state.waiting_for is not None and "customer's reply" in state.waiting_for
        assert fakes.templates().count("info_request") == 1
        history = client.get_workflow_handle(case.request.case_id, run_id=first_run)
        await record_history(history, "continued_as_new")
        await case.handle.signal(Signal.customer_reply, CustomerReplySignal(
            text="Here it is", attachments=["screenshot.png"], channel="api"))
        await case.status("awaiting_agent")  # $500: above the automatic limit
        await case.handle.execute_update(Update.approve, ApproveSignal(agent="alice"),
                                         result_type=object)
        state = await case.result()
        await record_history(case.handle, "continued_run")  # the run that resumed
    assert state.status == "completed" and state.progress.replies_received == 1
    assert [e.data["outcome"] for e in state.timeline if e.kind == "policy_decision"][-1] \
        != "need_info"


def test_state_model_keeps_its_bounds_documented() -> None:
    assert CaseState.model_fields["progress"].default_factory is not None
