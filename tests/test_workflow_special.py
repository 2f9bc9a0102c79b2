"""RefundCase special paths on the time-skipping server: acknowledgment SLA, billing
errors, fraud holds, disputes, withdrawal, records that do not match."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from core import search_attributes as sa
from core.models import (
    ApproveSignal,
    DisputeOpenedSignal,
    EmailEventSignal,
    WithdrawSignal,
)
from tests.workflow_doubles import (
    Case,
    Fakes,
    default_policy,
    entries,
    kinds,
    record_history,
    request,
)
from workflows.refund_case import RefundCase


async def test_ack_sla_breach_is_escalated_and_case_goes_on(
        time_env: WorkflowEnvironment) -> None:
    """The ack email blocks past the SLA. While an activity runs the test server does not
    skip time, so the policy's acknowledgment SLA is shortened to one real second."""
    policy = default_policy()
    policy = policy.model_copy(update={"sla": policy.sla.model_copy(
        update={"acknowledge": timedelta(seconds=1)})})
    fakes = Fakes(policy=policy, ack_gate=asyncio.Event())
    async with Case(time_env, fakes, request()) as case:
        state = await case.until(lambda s: s.sla_breached, "the ack SLA breach")
        assert state.waiting_for == "the acknowledgment email"
        assert state.sla_breaches == ["acknowledge"]
        assert fakes.templates() == []
        fakes.ack_gate.set()  # type: ignore[union-attr]
        state = await case.result()
        await record_history(case.handle, "ack_sla_breach")
        described = await case.handle.describe()
    assert state.status == "completed"
    assert fakes.templates()[0] == "acknowledgment"
    assert [(o.kind, o.step) for o in fakes.ops] == [("sla_breached", "sla_acknowledge")]
    assert described.typed_search_attributes.get(sa.SLA_BREACHED) is True
    assert kinds(state).index("sla_breached") < kinds(state).index("email_sent")


@pytest.mark.parametrize("reason", ["duplicate_charge", "billing_error"])
async def test_confirmed_billing_error_is_refunded_at_once(
        time_env: WorkflowEnvironment, reason: str) -> None:
    """The billing-error fast path: confirmed by the facts (the same amount charged twice),
    refunded in full at once above the automatic limit, with the apology."""
    fakes = Fakes(amount=30_000, facts_overrides={"duplicate_charge_ids": ["ch_dup"]})
    async with Case(time_env, fakes, request(reason)) as case:
        state = await case.result()
    assert state.status == "completed"
    assert state.root_cause is not None and state.root_cause.startswith("duplicate_charge")
    assert entries(state, "root_cause")[0].data["tag"] == "duplicate_charge"
    apology = fakes.email("billing_error_apology").context
    assert apology["amount"] == 30_000  # the root cause in the customer's words, no ids
    assert apology["root_cause"] == fakes.policy.root_cause_text("duplicate_charge", "en")
    assert "approval" not in fakes.templates()
    [call] = fakes.refund_calls
    assert call.amount == 30_000 and call.reason_tag == "duplicate_charge"


async def test_fraud_report_is_held_with_evidence_then_withdrawn(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(facts_overrides={"radar_risk_level": "elevated"})
    async with Case(time_env, fakes, request("fraud_suspected")) as case:
        state = await case.status("awaiting_agent")
        assert state.assessment is not None and state.assessment.risk == "high"
        assert any("Radar" in r for r in state.assessment.risk_reasons)
        assert state.decision is not None and state.decision.clause_ids == [
            "unauthorised-charges"]
        await case.handle.signal(RefundCase.withdraw, WithdrawSignal(note="found it"))
        state = await case.result()
        described = await case.handle.describe()
    assert state.status == "withdrawn"
    assert fakes.refund_calls == []
    assert described.typed_search_attributes.get(sa.RISK) == "high"
    assert described.typed_search_attributes.get(sa.STATUS) == "withdrawn"


async def test_dispute_before_refund_stops_the_case(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(amount=50_000)
    async with Case(time_env, fakes, request()) as case:
        await case.status("awaiting_agent")
        dispute = DisputeOpenedSignal(dispute_id="dp_1", charge_id="ch_test_1",
                                      reason="fraudulent")
        await case.handle.signal(RefundCase.dispute_opened, dispute)
        await case.handle.signal(RefundCase.dispute_opened, dispute)  # redelivered
        state = await case.result()
        await record_history(case.handle, "dispute")
    assert state.status == "disputed"
    assert state.dispute is not None and state.dispute.dispute_id == "dp_1"
    assert fakes.refund_calls == []
    assert [o.kind for o in fakes.ops] == ["dispute_opened"]


async def test_charge_not_found_is_a_finding_not_a_crash(time_env: WorkflowEnvironment
                                                          ) -> None:
    fakes = Fakes(facts_overrides={"found": False, "amount": 0,
                                   "not_found_reason": "charge ch_test_1 does not exist"})
    async with Case(time_env, fakes, request(currency="usd")) as case:
        state = await case.status("awaiting_agent")
        assert state.assessment is not None
        assert state.assessment.findings == ["charge_not_found"]
        assert entries(state, "finding")[0].data["code"] == "charge_not_found"
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await case.handle.execute_update(RefundCase.approve_action,
                                             ApproveSignal(agent="alice"))
        assert "not found" in refused.value.cause.details[0]["reason"]  # type: ignore[union-attr]
        await case.handle.signal(RefundCase.withdraw, WithdrawSignal(by="alice"))
        state = await case.result()
    assert state.status == "withdrawn"
    assert entries(state, "status")[-1].actor == "agent:alice"


async def test_email_mismatch_sends_to_agents(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(facts_overrides={"customer_email": "someone@else.com"})
    async with Case(time_env, fakes, request(amount=3_000)) as case:
        state = await case.status("awaiting_agent")
        assert state.assessment is not None
        assert state.assessment.findings == ["email_mismatch"]
        assert state.decision is not None and state.decision.clause_ids == ["details-mismatch"]
        await case.handle.signal(RefundCase.approve, ApproveSignal(agent="bob"))
        state = await case.result()
    assert [c.amount for c in fakes.refund_calls] == [3_000]


async def test_ack_email_that_cannot_be_sent_is_an_sla_breach(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(failing_templates={"acknowledgment"})
    async with Case(time_env, fakes, request()) as case:
        state = await case.result()
        described = await case.handle.describe()
    assert state.sla_breaches == ["acknowledge"]
    assert described.typed_search_attributes.get(sa.SLA_BREACHED) is True
    assert [o.kind for o in fakes.ops] == ["email_failed", "sla_breached"]
    assert state.status == "completed"  # the case goes on


@pytest.mark.parametrize("event", ["bounce", "dropped", "blocked"])
async def test_undeliverable_questions_go_to_an_agent_at_once(
        time_env: WorkflowEnvironment, event: str) -> None:
    """A bounce of the info request (redelivered by SendGrid) hands the case to an agent
    instead of waiting ten days for a reply that cannot come."""
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.status("awaiting_info")
        bounce = EmailEventSignal(event=event, email=case.request.customer_email,
                                  template="info_request", reason="550 mailbox unavailable",
                                  sg_event_id="sg-1")
        for _ in range(2):
            await case.handle.signal(RefundCase.email_event, bounce)
        waiting = await case.status("awaiting_agent")
        await case.handle.signal(RefundCase.approve, ApproveSignal(agent="alice"))
        state = await case.result()
        if event == "bounce":
            await record_history(case.handle, "undeliverable_info")
    assert "could not be delivered" in entries(waiting, "status")[-1].message
    assert len(entries(state, "email_event")) == 1
    assert [o.kind for o in fakes.ops] == ["info_undeliverable"]
    assert "reminder" not in fakes.templates() and "abandoned" not in fakes.templates()
    assert state.status == "completed" and [c.amount for c in fakes.refund_calls] == [4900]


async def test_a_bounce_of_another_email_only_lands_in_the_timeline(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.status("awaiting_info")
        await case.handle.signal(RefundCase.email_event, EmailEventSignal(
            event="bounce", email=case.request.customer_email, template="acknowledgment"))
        await case.handle.signal(RefundCase.email_event, EmailEventSignal(
            event="delivered", email=case.request.customer_email, template="info_request"))
        state = await case.until(lambda s: len(entries(s, "email_event")) == 2,
                                 "both events")
        assert state.status == "awaiting_info"
        await case.handle.signal(RefundCase.withdraw, WithdrawSignal())
        await case.result()


async def test_an_unreadable_policy_holds_the_case_until_it_can_be_read(
        time_env: WorkflowEnvironment) -> None:
    """The policy file is broken for the first pin and the one a minute later: the case
    waits (it used to fail after 20 attempts), pins it on the third try and goes on. Three
    minutes are less than the quarter of an hour after which ops hear of the policy."""
    fakes = Fakes(unreadable_pins=2)
    async with Case(time_env, fakes, request()) as case:
        state = await case.result()
    assert state.status == "completed"
    assert fakes.pins == 3
    assert kinds(state).index("policy_unreadable") < kinds(state).index("policy_pinned") \
        < kinds(state).index("email_sent")
    assert "line 3: mapping values are not allowed" in entries(
        state, "policy_unreadable")[0].message
    assert fakes.templates()[0] == "acknowledgment"
    assert state.refund is not None
    # The acknowledgment went out minutes after the request: late for its 30 s SLA.
    assert [o.kind for o in fakes.ops] == ["sla_breached"]


async def test_ops_hear_once_of_a_policy_unreadable_for_a_quarter_of_an_hour(
        time_env: WorkflowEnvironment) -> None:
    """Tries at 0, 1, 3, 7, 15, 25 and 35 minutes: ops are told at the fifth (15 minutes of
    waiting), not again at the sixth, and the seventh pins the policy."""
    fakes = Fakes(unreadable_pins=6)
    async with Case(time_env, fakes, request()) as case:
        state = await case.result()
        await record_history(case.handle, "policy_pin_waits")
    assert state.status == "completed"
    assert fakes.pins == 7
    assert [(o.kind, o.step) for o in fakes.ops] == [
        ("policy_unreadable", "pin-policy"), ("sla_breached", "sla_acknowledge")]
    assert "its customer not yet acknowledged" in fakes.ops[0].message
    assert fakes.ops[0].message.endswith("it tries again at least every 10 minutes.")
    pinned = next(t.at for t in state.timeline if t.kind == "policy_pinned")
    unreadable = next(t.at for t in state.timeline if t.kind == "policy_unreadable")
    assert timedelta(minutes=35) <= pinned - unreadable < timedelta(minutes=36)


async def test_a_customer_can_withdraw_while_the_policy_cannot_be_read(
        time_env: WorkflowEnvironment) -> None:
    """The wait for a readable policy is a wait like any other: a withdrawal ends it, and
    the case closes without ever needing the policy."""
    fakes = Fakes(unreadable_pins=1000)
    async with Case(time_env, fakes, request()) as case:
        await case.until(lambda s: s.waiting_for == "the refund policy to be readable",
                         "the wait for the policy")
        await case.handle.signal(RefundCase.withdraw, WithdrawSignal(note="sorted it"))
        state = await case.result()
    assert state.status == "withdrawn"
    assert fakes.templates() == []
    assert "policy_pinned" not in kinds(state)
