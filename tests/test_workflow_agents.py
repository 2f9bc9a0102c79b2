"""Agents at every wait, money within what is refundable, the SLA from the intake's clock
(time-skipping server, activity doubles)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from core.models import (
    ApproveSignal,
    RefundUpdateSignal,
    RetryRefundSignal,
    SatisfyRequirementSignal,
)
from tests.conftest import time_skipping_server
from tests.workflow_doubles import (
    Case,
    Fakes,
    entries,
    record_history,
    request,
)
from workflows.refund_case import RefundCase


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """Its own time-skipping server: these tests move its clock by hand (env.sleep)."""
    async for env in time_skipping_server():
        yield env


async def test_agent_approves_while_the_customer_is_asked(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.until(lambda s: s.waiting_for == "the customer's reply", "the info wait")
        result = await case.handle.execute_update(RefundCase.approve_action,
                                                  ApproveSignal(agent="alice"))
        assert result.accepted
        await case.status("refunded")
        await time_env.sleep(timedelta(days=3, minutes=1))
        state = await case.result()
        await record_history(case.handle, "agents_approve_awaiting_info")
    assert state.status == "completed"
    assert "reminder" not in fakes.templates() and "approval" in fakes.templates()
    assert len(fakes.refund_calls) == 1


async def test_a_requirement_marked_met_is_re_evaluated(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.until(lambda s: s.waiting_for == "the customer's reply", "the info wait")
        await case.handle.execute_update(RefundCase.satisfy_requirement_action,
                                         SatisfyRequirementSignal(
                                             agent="alice", requirement="support_evidence",
                                             note="ticket 4411 confirmed by support"))
        await case.status("refunded")
        await time_env.sleep(timedelta(days=3, minutes=1))
        state = await case.result()
        await record_history(case.handle, "agents_satisfy_requirement")
    assert state.requirements_met["support_evidence"].startswith("ticket 4411")
    assert len(entries(state, "policy_decision")) == 2
    assert fakes.templates().count("info_request") == 1


async def test_failed_refund_retried_by_an_agent_refunds_once(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(refund_status="pending")
    async with Case(time_env, fakes, request()) as case:
        await case.until(lambda s: s.refund is not None, "the refund")
        await case.handle.signal(RefundCase.refund_update, RefundUpdateSignal(
            refund_id="re_test_1", status="failed", failure_reason="lost_or_stolen_card",
            case_id=case.request.case_id))
        await case.until(lambda s: s.status == "refund_failed" and s.waiting_for is not None,
                         "the wait for an agent")
        fakes.refund_status = "succeeded"
        await case.handle.execute_update(RefundCase.retry_refund_action,
                                         RetryRefundSignal(agent="bob", note="new card"))
        await case.status("refunded")
        await time_env.sleep(timedelta(days=3, minutes=1))
        state = await case.result()
        await record_history(case.handle, "agents_retry_refund")
    assert state.status == "completed"
    assert [c.idempotency_key for c in fakes.refund_calls] == [
        f"{case.request.case_id}:refund", f"{case.request.case_id}:refund-2"]
    assert [r.status for r in state.earlier_refunds] == ["failed"]
    assert state.refund is not None and state.refund.status == "succeeded"


async def test_outside_refund_then_approval_closes_with_an_explanation(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(amount=50_000)
    async with Case(time_env, fakes, request()) as case:
        await case.status("awaiting_agent")
        await case.handle.signal(RefundCase.refund_update, RefundUpdateSignal(
            refund_id="re_dash", status="succeeded", amount=50_000, currency="usd",
            charge_id="ch_test_1"))
        await case.until(lambda s: s.refundable == 0, "the outside refund")
        await case.handle.execute_update(RefundCase.approve_action,
                                         ApproveSignal(agent="alice"))
        state = await case.result()
        await record_history(case.handle, "agents_nothing_left")
    assert state.status == "closed" and "outside this case" in (state.close_reason or "")
    assert "approval" not in fakes.templates()
    assert fakes.email("nothing_left").context["refunded"] == 50_000
    assert fakes.refund_calls == []


async def test_paused_worker_breaches_the_ack_sla_from_the_intake_time(
        time_env: WorkflowEnvironment) -> None:
    """The intake received the request 40 s before any worker ran the case (30 s SLA):
    a breach, counted from the intake's receipt time, which is also the timeline's
    "received" time."""
    fakes = Fakes()
    received = await time_env.get_current_time() - timedelta(seconds=40)
    async with Case(time_env, fakes, request(received_at=received)) as case:
        state = await case.until(lambda s: "acknowledge" in s.sla_breaches, "the breach")
        await record_history(case.handle, "agents_ack_breach_received")
        await case.handle.terminate("test over")
    assert state.timeline[0].kind == "received" and state.timeline[0].at == received
    breach = entries(state, "sla_breached")[0].message
    assert "after the request arrived" in breach and "40 s" in breach
    assert "acknowledgment" in fakes.templates()
