"""RefundCase decision paths on the time-skipping server, with activity doubles: the
policy decides alone, asks the customer, or hands the case to agents."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from core.models import (
    ApproveSignal,
    CustomerReplySignal,
    DenySignal,
    RequestInfoSignal,
    RetryRefundSignal,
)
from tests.workflow_doubles import (
    Case,
    Fakes,
    accepted_updates,
    entries,
    kinds,
    record_history,
    request,
)
from workflows.refund_case import RefundCase, patches


async def test_auto_approve_refunds_and_follows_up(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request()) as case:
        state = await case.result()
    assert state.status == "completed"
    assert state.decision is not None and state.decision.outcome == "approve"
    assert state.policy_version == fakes.policy.version
    assert fakes.templates() == ["acknowledgment", "approval", "refund_completed"]
    assert fakes.email("refund_completed").context["acquirer_reference"] == "ARN-2468"
    [call] = fakes.refund_calls
    assert call.amount == 4900 and call.idempotency_key == f"{case.request.case_id}:refund"
    assert state.refund is not None and state.refund.status == "succeeded"
    assert "no_feedback" in kinds(state)
    assert not state.sla_breached


async def test_auto_deny_quotes_the_clause(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(charge_age=timedelta(days=40))
    async with Case(time_env, fakes, request()) as case:
        state = await case.result()
    assert state.status == "denied"
    assert state.denial is not None and state.denial.clause_id == "change-of-mind-late"
    denial = fakes.email("denial")
    assert denial.context["clause_text"] == fakes.policy.clause("change-of-mind-late").text
    assert [a["id"] for a in denial.context["alternatives"]] == [  # the clause's own
        a.id for a in fakes.policy.alternatives_for("change-of-mind-late")] == [
        "discounted_upgrade", "plan_change"]
    assert fakes.refund_calls == []


async def test_need_info_then_reply_then_approve(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        # The status changes before the questions are emailed; the wait, with its
        # deadline, starts once they are sent.
        state = await case.until(lambda s: s.status == "awaiting_info" and
                                 s.waiting_for is not None, "the wait for the reply")
        assert state.waiting_for == "the customer's reply" and state.deadline is not None
        asked = fakes.email("info_request")
        assert asked.context["questions"] == state.questions and state.questions
        await case.handle.signal(RefundCase.customer_reply, CustomerReplySignal(
            text="Ticket 4411", attachments=["ticket-4411.txt"], channel="email"))
        state = await case.result()
    assert state.status == "completed"
    assert "ticket-4411.txt" in state.documents
    outcomes = [e.data["outcome"] for e in entries(state, "policy_decision")]
    assert outcomes == ["need_info", "approve"]
    assert "reminder" not in fakes.templates()


async def test_reply_while_the_info_request_is_being_sent_is_not_lost(
        time_env: WorkflowEnvironment) -> None:
    gate = asyncio.Event()
    fakes = Fakes(info_gate=gate)
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.status("awaiting_info")
        await case.handle.signal(RefundCase.customer_reply, CustomerReplySignal(
            text="Ticket 4411", attachments=["ticket-4411.txt"], channel="email"))
        await case.until(lambda s: "customer_replied" in kinds(s), "the reply recorded")
        gate.set()
        state = await case.result()
    assert state.status == "completed"
    assert "reminder" not in fakes.templates()
    outcomes = [e.data["outcome"] for e in entries(state, "policy_decision")]
    assert outcomes == ["need_info", "approve"]


async def test_need_info_reminder_then_abandoned(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.status("awaiting_info")
        # An agent action that does not fit the state (a retry with no failed refund):
        # refused by the update's validator, so nothing reaches the history; an invalid
        # action as a signal is recorded.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await case.handle.execute_update(RefundCase.retry_refund_action,
                                             RetryRefundSignal(agent="alice"))
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError) and cause.type == "ActionRefused"
        assert cause.details[0]["code"] == "wrong_state"
        assert await accepted_updates(case.handle) == 0
        await case.handle.signal(RefundCase.deny, DenySignal(agent="bob",
                                                             clause_id="no-such-clause"))
        state = await case.result()
        await record_history(case.handle, "need_info_abandoned")
    assert state.status == "abandoned"
    assert fakes.templates() == ["acknowledgment", "info_request", "reminder", "abandoned"]
    assert fakes.email("abandoned").context["questions"] == fakes.email(
        "info_request").context["questions"]
    refusals = entries(state, "action_refused")
    assert [(r.actor, r.data["code"]) for r in refusals] == [("agent:bob", "invalid")]


async def test_agent_approves_what_outside_refunds_left(time_env: WorkflowEnvironment) -> None:
    """Above the automatic limit an agent decides; a refund made in the Stripe dashboard
    meanwhile is recorded and never refunded twice."""
    fakes = Fakes(amount=50_000)
    async with Case(time_env, fakes, request()) as case:
        state = await case.status("awaiting_agent")
        assert state.decision is not None and state.decision.amount == 50_000
        from core.models import RefundUpdateSignal
        await case.handle.signal(RefundCase.refund_update, RefundUpdateSignal(
            refund_id="re_dashboard", status="succeeded", amount=10_000, currency="usd",
            charge_id="ch_test_1", case_id=None))
        with pytest.raises(WorkflowUpdateFailedError) as too_much:
            await case.handle.execute_update(RefundCase.approve_action,
                                             ApproveSignal(agent="alice", amount=50_000))
        assert too_much.value.cause.details[0]["code"] == "invalid"  # type: ignore[union-attr]
        result = await case.handle.execute_update(RefundCase.approve_action,
                                                  ApproveSignal(agent="alice", note="ok"))
        assert result.accepted and result.status == "approved"
        state = await case.result()
    assert state.status == "completed"
    assert [c.amount for c in fakes.refund_calls] == [40_000]
    assert "outside_refund" in kinds(state)
    assert state.external_refunds[0].refund_id == "re_dashboard"
    assert fakes.email("approval").context["amount"] == 40_000


async def test_outside_refund_status_changes_land_in_the_timeline(
        time_env: WorkflowEnvironment) -> None:
    """A dashboard refund that fails gives its amount back: that change is recorded once
    (duplicates and stale events change nothing) and the agent may approve it all."""
    from core.models import RefundUpdateSignal
    fakes = Fakes(amount=50_000)
    async with Case(time_env, fakes, request()) as case:
        await case.status("awaiting_agent")
        for status in ("pending", "failed", "failed", "pending"):
            await case.handle.signal(RefundCase.refund_update, RefundUpdateSignal(
                refund_id="re_dashboard", status=status, amount=10_000,  # type: ignore[arg-type]
                currency="usd", charge_id="ch_test_1", case_id=None))
        state = await case.until(lambda s: len(entries(s, "outside_refund")) == 2,
                                 "the outside refund failing")
        assert "is failed; 500.00 USD remains refundable" in entries(
            state, "outside_refund")[1].message
        result = await case.handle.execute_update(RefundCase.approve_action,
                                                  ApproveSignal(agent="alice", amount=50_000))
        assert result.accepted
        state = await case.result()
    assert [c.amount for c in fakes.refund_calls] == [50_000]
    assert len(entries(state, "outside_refund")) == 2
    assert state.external_refunds[0].status == "failed"


async def test_two_different_agents_approve_large_refunds(time_env: WorkflowEnvironment
                                                          ) -> None:
    fakes = Fakes(amount=150_000)
    async with Case(time_env, fakes, request()) as case:
        state = await case.status("awaiting_agent")
        assert state.approvers_required == 2
        first = await case.handle.execute_update(RefundCase.approve_action,
                                                 ApproveSignal(agent="alice"))
        assert first.accepted and first.status == "awaiting_agent"
        assert (first.approvals, first.approvers_required) == (1, 2)
        with pytest.raises(WorkflowUpdateFailedError) as twice:
            await case.handle.execute_update(RefundCase.approve_action,
                                             ApproveSignal(agent="alice"))
        assert twice.value.cause.details[0]["code"] == "invalid"  # type: ignore[union-attr]
        state = await case.state()
        assert state.status == "awaiting_agent" and len(state.approvals) == 1
        assert "already approved" in twice.value.cause.message  # type: ignore[union-attr]
        assert entries(state, "action_refused") == []  # the validator refused: no history
        assert await accepted_updates(case.handle) == 1
        await case.handle.signal(RefundCase.approve, ApproveSignal(agent="alice"))  # again
        state = await case.until(lambda s: bool(entries(s, "action_refused")), "a refusal")
        assert "already approved" in entries(state, "action_refused")[0].message
        await case.handle.signal(RefundCase.approve, ApproveSignal(agent="bob"))
        state = await case.result()
        await record_history(case.handle, "two_approvers")
    assert state.status == "completed"
    assert [a.agent for a in state.approvals] == ["alice", "bob"]
    assert [c.amount for c in fakes.refund_calls] == [150_000]


async def test_agent_denies_with_an_alternative(time_env: WorkflowEnvironment) -> None:
    # Late (20 days) and held for risk: an agent decides, and the late clause fits.
    fakes = Fakes(amount=50_000, charge_age=timedelta(days=20),
                  facts_overrides={"radar_risk_level": "highest"})
    async with Case(time_env, fakes, request()) as case:
        await case.status("awaiting_agent")
        for bad in (DenySignal(agent="alice", clause_id="no-such-clause"),
                    DenySignal(agent="alice", clause_id="misuse", alternative="free_pony"),
                    DenySignal(agent="alice", clause_id="change-of-mind-late",
                               alternative="product_support")):  # not the clause's
            with pytest.raises(WorkflowUpdateFailedError) as refused:
                await case.handle.execute_update(RefundCase.deny_action, bad)
            assert refused.value.cause.details[0]["code"] == "invalid"  # type: ignore[union-attr]
        result = await case.handle.execute_update(RefundCase.deny_action, DenySignal(
            agent="alice", clause_id="change-of-mind-late", note="Used all month",
            alternative="plan_change"))
        assert result.accepted and result.status == "denied"
        state = await case.result()
        await record_history(case.handle, "agent_deny")
    assert state.status == "denied"
    denial = fakes.email("denial").context
    assert denial["clause_id"] == "change-of-mind-late" and denial["note"] == "Used all month"
    assert [a["id"] for a in denial["alternatives"]] == ["plan_change"]
    assert entries(state, "action_refused") == []  # refused updates leave no trace
    assert fakes.refund_calls == []


async def test_agent_asks_then_customer_replies(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(amount=50_000)
    async with Case(time_env, fakes, request()) as case:
        await case.status("awaiting_agent")
        result = await case.handle.execute_update(RefundCase.request_info_action,
                                                  RequestInfoSignal(agent="carol",
                                                                    questions=["Why?"]))
        assert result.accepted
        await case.status("awaiting_info")
        assert fakes.email("info_request").context["questions"] == ["Why?"]
        await case.handle.signal(RefundCase.customer_reply,
                                 CustomerReplySignal(text="Because."))
        await case.until(lambda s: s.status == "awaiting_agent"
                         and len(s.replies) == 1, "back with the agents")
        await case.handle.signal(RefundCase.approve, ApproveSignal(agent="carol"))
        state = await case.result()
    assert state.status == "completed"


async def test_agent_sla_escalates_once(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(amount=50_000)
    async with Case(time_env, fakes, request()) as case:
        await case.status("awaiting_agent")
        await time_env.sleep(timedelta(hours=25))
        state = await case.until(lambda s: s.sla_breached, "the agent SLA breach")
        assert state.sla_breaches == ["agent_decision"] and state.status == "awaiting_agent"
        assert state.waiting_for == "an agent's decision (escalated)"
        await time_env.sleep(timedelta(hours=25))
        await case.handle.signal(RefundCase.approve, ApproveSignal(agent="alice"))
        state = await case.result()
        described = await case.handle.describe()
    assert state.status == "completed"
    assert [o.kind for o in fakes.ops] == ["sla_breached"]
    from core import search_attributes as sa
    assert described.typed_search_attributes.get(sa.SLA_BREACHED) is True
    assert described.typed_search_attributes.get(sa.STATUS) == "completed"


async def test_agent_amount_stripe_cannot_refund_is_refused(
        time_env: WorkflowEnvironment) -> None:
    """KWD refunds go in 10 fils: 63.333 KWD is refused with the reason, 63.330 is paid."""
    fakes = Fakes(amount=95_000, currency="kwd")
    async with Case(time_env, fakes, request(currency="kwd")) as case:
        await case.status("awaiting_agent")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await case.handle.execute_update(RefundCase.approve_action,
                                             ApproveSignal(agent="alice", amount=63_333))
        assert "multiples of 10" in refused.value.cause.details[0]["reason"]  # type: ignore[union-attr]
        await case.handle.execute_update(RefundCase.approve_action,
                                         ApproveSignal(agent="alice", amount=63_330))
        state = await case.result()
    assert [c.amount for c in fakes.refund_calls] == [63_330]
    assert entries(state, "action_refused") == []


async def test_a_new_case_records_one_patch_marker(time_env: WorkflowEnvironment) -> None:
    """Every patch of the newest baseline is taken by one marker (and its one
    TemporalChangeVersion upsert), not two events per patch id, on a new case's whole path;
    ids added after the baseline still record their own."""
    async with Case(time_env, Fakes(), request()) as case:
        state = await case.result()
        history = await case.handle.fetch_history()
        await record_history(case.handle, "at_rest_auto_approve")
    assert state.status == "completed"
    markers = [e.marker_recorded_event_attributes for e in history.events
               if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED]
    ids = [json.loads(m.details["patch-data"].payloads[0].data)["id"]
           for m in markers if m.marker_name == "core_patch"]
    assert ids == [patches.BASELINE_AT_REST]
    # the policy pinned by a local activity: its one marker, no activity task
    assert [m.marker_name for m in markers] == ["core_patch", "core_local_activity"]
    ids_of_newest = dict(patches.BASELINES)[patches.BASELINE_AT_REST]
    assert not ids_of_newest & set(ids)  # none of the ids it stands for
    # Lean (issue 12): no Stripe permits (the worker paces requests), no queue memo for a
    # case that never waited for an agent (the starter's card stands).
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name
                 for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert "stripe_permit" not in scheduled and "pin_policy" not in scheduled
    assert not [e for e in history.events
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED]
    # The view at rest: the case passes through assessing, approved and refunding in
    # moments, so the first upsert after the patch's own comes where it rests (refunded,
    # until the follow-up date), with everything that changed on the way.
    upserts = [e for e in history.events
               if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]
    written = [dict(e.upsert_workflow_search_attributes_event_attributes
                    .search_attributes.indexed_fields) for e in upserts]
    assert set(written[0]) == {"TemporalChangeVersion"}
    refund_done = next(e.event_id for e in history.events
                       if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
                       and e.activity_task_completed_event_attributes.scheduled_event_id
                       == next(s.event_id for s in history.events
                               if s.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                               and s.activity_task_scheduled_event_attributes
                               .activity_type.name == "stripe_create_refund"))
    assert [e.event_id for e in upserts if e.event_id < refund_done] == [upserts[0].event_id]
    at_rest = {name: json.loads(p.data) for name, p in written[1].items()}
    assert at_rest == {"RefundStatus": "refunded", "RefundPolicyVersion": state.policy_version,
                       "RefundRisk": "low", "RefundAmount": 4900, "RefundCurrency": "usd"}
    assert [json.loads(w["RefundStatus"].data) for w in written[2:]] == ["completed"]
