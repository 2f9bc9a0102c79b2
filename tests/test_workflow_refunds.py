"""RefundCase step 6 and 7 on the time-skipping server: Stripe errors, webhooks and the
polling fallback, the follow-up and its feedback."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from core import search_attributes as sa
from core.models import (
    ApproveSignal,
    CloseCaseSignal,
    CustomerReplySignal,
    DenySignal,
    DisputeOpenedSignal,
    FeedbackSignal,
    RefundUpdateSignal,
    WithdrawSignal,
)
from tests.workflow_doubles import (
    Case,
    Fakes,
    entries,
    kinds,
    record_history,
    request,
    stripe_permanent,
    stripe_transient,
)
from workflows.refund_case import RefundCase


async def test_transient_refund_errors_are_retried_with_one_key(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(refund_errors=[stripe_transient("rate_limit"), stripe_transient("api_error")])
    async with Case(time_env, fakes, request()) as case:
        state = await case.result()
    assert state.status == "completed"
    assert len(fakes.refund_calls) == 3
    assert {c.idempotency_key for c in fakes.refund_calls} == {f"{case.request.case_id}:refund"}


async def test_permanent_refund_error_goes_to_an_agent_who_denies(
        time_env: WorkflowEnvironment) -> None:
    """Stripe refuses for good: no retry, the facts are looked up again and an agent
    decides; the policy may not approve again by itself."""
    fakes = Fakes(refund_errors=[stripe_permanent("charge_disputed")])
    async with Case(time_env, fakes, request()) as case:
        waiting = await case.status("awaiting_agent")
        # The facts show no dispute (only Stripe's refusal code does), so the agent cites
        # a clause the facts fit.
        await case.handle.signal(RefundCase.deny, DenySignal(agent="bob", clause_id="misuse"))
        state = await case.result()
        await record_history(case.handle, "refund_permanent_failure")
    assert "charge_disputed" in waiting.timeline[-1].message
    assert state.status == "denied"
    assert len(fakes.refund_calls) == 1
    assert state.refund_error is not None and state.refund_error["code"] == "charge_disputed"
    assert [o.kind for o in fakes.ops] == ["refund_error"]
    assert len(entries(state, "refund_refused")) == 1
    assert len(entries(state, "facts_gathered")) == 2


async def test_after_a_permanent_refund_error_an_agent_approves_a_new_amount(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(refund_errors=[stripe_permanent("amount_too_large")])
    async with Case(time_env, fakes, request()) as case:
        await case.status("awaiting_agent")
        await case.handle.signal(RefundCase.approve, ApproveSignal(agent="alice", amount=1000))
        await case.status("refunded")
        await time_env.sleep(timedelta(days=3, minutes=1))
        state = await case.result()
    assert state.status == "completed"
    assert [c.amount for c in fakes.refund_calls] == [4900, 1000]
    assert [c.idempotency_key for c in fakes.refund_calls] == [
        f"{case.request.case_id}:refund", f"{case.request.case_id}:refund-2"]


async def test_pending_refund_polled_until_failed(time_env: WorkflowEnvironment) -> None:
    """The money did not move: the case waits for an agent (it no longer completes on its
    own); here the agent closes it with a reason."""
    fakes = Fakes(refund_status="pending", poll_statuses=["pending", "failed"])
    async with Case(time_env, fakes, request()) as case:
        await case.until(lambda s: s.refund is not None, "the refund")
        await time_env.sleep(timedelta(days=2))  # the polls
        await case.until(lambda s: s.status == "refund_failed" and s.waiting_for is not None,
                         "the wait for an agent after the failed refund")
        await case.handle.execute_update(RefundCase.close_action, CloseCaseSignal(
            agent="alice", reason="Customer paid back by bank transfer"))
        state = await case.result()
    assert state.status == "closed"
    assert state.close_reason == "Customer paid back by bank transfer"
    assert fakes.polls == 2
    assert "sla_breached" in kinds(state)  # two days without an agent
    assert state.refund is not None and state.refund.status == "failed"
    failed = fakes.email("refund_failed").context
    assert failed["failure_reason"] == "expired_or_canceled_card" and failed["amount"] == 4900
    assert [o.kind for o in fakes.ops] == ["refund_failed", "sla_breached"]


async def test_webhooks_settle_the_refund_then_feedback(time_env: WorkflowEnvironment) -> None:
    """Duplicate webhooks are harmless; feedback inside the wait is recorded; withdrawing
    after the refund is refused."""
    fakes = Fakes(refund_status="pending")
    async with Case(time_env, fakes, request()) as case:
        await case.until(lambda s: s.refund is not None, "the refund")
        settled = RefundUpdateSignal(refund_id="re_test_1", status="succeeded",
                                     case_id=case.request.case_id, acquirer_reference="ARN-9",
                                     event_id="evt_1")
        for _ in range(3):
            await case.handle.signal(RefundCase.refund_update, settled)
        await case.handle.signal(RefundCase.withdraw, WithdrawSignal(note="never mind"))
        await case.status("refunded")
        await time_env.sleep(timedelta(days=3, minutes=1))
        await case.until(lambda s: s.waiting_for == "the customer's feedback", "feedback wait")
        await case.handle.signal(RefundCase.feedback, FeedbackSignal(rating=5, comment="Quick"))
        state = await case.result()
        await record_history(case.handle, "webhooks_feedback")
    assert state.status == "completed"
    assert fakes.polls == 0
    assert len(entries(state, "refund_status")) == 1
    assert state.feedback is not None and state.feedback.rating == 5
    assert "withdraw_refused" in kinds(state)
    assert fakes.email("refund_completed").context["acquirer_reference"] == "ARN-9"


async def test_webhook_before_the_refund_answer_is_kept(time_env: WorkflowEnvironment) -> None:
    """Stripe's webhook can beat the create-refund activity's answer; it is applied once
    the refund id is known, so no poll is needed. A dispute after that changes nothing."""
    fakes = Fakes(refund_status="pending", refund_gate=asyncio.Event())
    async with Case(time_env, fakes, request()) as case:
        await case.until(lambda s: s.status == "refunding" and bool(fakes.refund_calls),
                         "the refund call")
        await case.handle.signal(RefundCase.refund_update, RefundUpdateSignal(
            refund_id="re_test_1", status="succeeded", case_id=case.request.case_id))
        fakes.refund_gate.set()  # type: ignore[union-attr]
        await case.status("refunded")
        await case.handle.signal(RefundCase.dispute_opened,
                                 DisputeOpenedSignal(dispute_id="dp_late"))
        state = await case.result()
    assert state.status == "completed"
    assert fakes.polls == 0
    assert [e.data["status"] for e in entries(state, "refund_status")] == ["succeeded"]
    assert [o.kind for o in fakes.ops] == ["dispute_opened"]
    assert "refund was already under way" in entries(state, "dispute_opened")[0].message


async def test_early_webhooks_out_of_order_keep_the_final_status(
        time_env: WorkflowEnvironment) -> None:
    """Stripe does not order events: "succeeded" then a stale "pending", both before the
    create-refund answer, still settle the refund without waiting for a poll."""
    fakes = Fakes(refund_status="pending", refund_gate=asyncio.Event())
    async with Case(time_env, fakes, request()) as case:
        await case.until(lambda s: s.status == "refunding" and bool(fakes.refund_calls),
                         "the refund call")
        for status in ("succeeded", "pending"):
            await case.handle.signal(RefundCase.refund_update, RefundUpdateSignal(
                refund_id="re_test_1", status=status, case_id=case.request.case_id))  # type: ignore[arg-type]
        fakes.refund_gate.set()  # type: ignore[union-attr]
        await case.status("refunded")
        state = await case.result()  # a case left open would stall the shared server's clock
    assert state.status == "completed"
    assert fakes.polls == 0
    assert [e.data["status"] for e in entries(state, "refund_status")] == ["succeeded"]


async def test_refused_refund_on_a_charge_now_disputed_goes_to_the_dispute_process(
        time_env: WorkflowEnvironment) -> None:
    """Stripe refuses (charge_disputed) and the fresh facts show the dispute: the case is
    handed to the dispute process, not denied by the policy nor left 'assessing'."""
    fakes = Fakes(refund_errors=[stripe_permanent("charge_disputed")],
                  later_facts={"disputed": True, "dispute_ids": ["dp_7"]})
    async with Case(time_env, fakes, request()) as case:
        state = await case.result()
        described = await case.handle.describe()
    assert state.status == "disputed"
    assert described.typed_search_attributes.get(sa.STATUS) == "disputed"
    assert "dp_7" in entries(state, "status")[-1].message
    assert len(fakes.refund_calls) == 1
    assert "denial" not in fakes.templates()


async def test_dispute_signal_during_the_refund_call_closes_the_case_when_stripe_refuses(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(refund_errors=[stripe_permanent("charge_disputed")],
                  refund_gate=asyncio.Event())
    async with Case(time_env, fakes, request()) as case:
        await case.until(lambda s: s.status == "refunding" and bool(fakes.refund_calls),
                         "the refund call")
        await case.handle.signal(RefundCase.dispute_opened, DisputeOpenedSignal(
            dispute_id="dp_8", charge_id="ch_test_1", reason="fraudulent"))
        await case.until(lambda s: s.dispute is not None, "the dispute recorded")
        fakes.refund_gate.set()  # type: ignore[union-attr]
        state = await case.result()
    assert state.status == "disputed"
    assert fakes.gathers == 1  # closed before looking the charge up again
    assert [o.kind for o in fakes.ops] == ["dispute_opened", "refund_error"]


async def test_after_a_refusal_the_policy_does_not_deny_on_its_own(
        time_env: WorkflowEnvironment) -> None:
    """The fresh facts say 'already refunded', which the policy would deny by itself;
    after a Stripe refusal an agent decides, told what the policy would do."""
    fakes = Fakes(refund_errors=[stripe_permanent("charge_already_refunded")],
                  later_facts={"amount_refunded": 4900, "refunded": True})
    async with Case(time_env, fakes, request()) as case:
        waiting = await case.status("awaiting_agent")
        await case.handle.signal(RefundCase.deny, DenySignal(agent="bob",
                                                             clause_id="already-refunded"))
        state = await case.result()
    assert "Stripe refused the refund (charge_already_refunded" in \
        entries(waiting, "status")[-1].message
    assert waiting.decision is not None and waiting.decision.outcome == "deny"
    assert state.status == "denied" and state.denial is not None
    assert state.denial.by == "agent:bob"


async def test_pending_refund_failed_by_webhook(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(refund_status="pending")
    async with Case(time_env, fakes, request()) as case:
        await case.until(lambda s: s.refund is not None, "the refund")
        await case.handle.signal(RefundCase.refund_update, RefundUpdateSignal(
            refund_id="re_test_1", status="failed", failure_reason="lost_or_stolen_card",
            case_id=case.request.case_id))
        await case.status("refund_failed")
        await close_failed(case)
        state = await case.result()
    assert state.status == "closed" and fakes.polls == 0
    assert fakes.email("refund_failed").context["failure_reason"] == "lost_or_stolen_card"
    assert [o.kind for o in fakes.ops] == ["refund_failed"]


async def test_acquirer_reference_sent_later_reaches_the_follow_up(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(acquirer_reference=None)
    async with Case(time_env, fakes, request()) as case:
        await case.status("refunded")
        update = RefundUpdateSignal(refund_id="re_test_1", status="succeeded",
                                    acquirer_reference="ARN-7731",
                                    case_id=case.request.case_id)
        await case.handle.signal(RefundCase.refund_update, update)
        await case.handle.signal(RefundCase.refund_update, update)  # redelivered
        await case.until(lambda s: bool(entries(s, "acquirer_reference")), "the reference")
        await time_env.sleep(timedelta(days=3, minutes=1))
        state = await case.result()
    assert fakes.email("refund_completed").context["acquirer_reference"] == "ARN-7731"
    assert len(entries(state, "acquirer_reference")) == 1


async def test_refund_failing_after_it_succeeded_is_no_completed_refund(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request()) as case:
        await case.status("refunded")
        await case.handle.signal(RefundCase.refund_update, RefundUpdateSignal(
            refund_id="re_test_1", status="failed", failure_reason="expired_or_canceled_card",
            case_id=case.request.case_id))
        await case.status("refund_failed")
        await close_failed(case)
        state = await case.result()
        await record_history(case.handle, "refund_reversal")
    assert state.status == "closed" and state.refund is not None
    assert state.refund.status == "failed"
    assert "refund_completed" not in fakes.templates()
    assert fakes.email("refund_failed").context["failure_reason"] == "expired_or_canceled_card"
    assert [o.kind for o in fakes.ops] == ["refund_failed"]


async def test_a_rating_by_email_reply_is_the_feedback(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request()) as case:
        await case.status("refunded")
        await time_env.sleep(timedelta(days=3, minutes=1))
        await case.until(lambda s: s.waiting_for == "the customer's feedback", "feedback wait")
        await case.handle.signal(RefundCase.customer_reply, CustomerReplySignal(
            text="4 - quick, thank you\n\nOn Mon, Refund Desk wrote:\n> Rate us 1 to 5",
            channel="email"))
        await case.handle.signal(RefundCase.feedback, FeedbackSignal(rating=1))  # too late
        state = await case.result()
        await record_history(case.handle, "feedback_by_email")
    assert state.status == "completed"
    assert state.feedback is not None and state.feedback.rating == 4
    assert entries(state, "feedback")[0].data["channel"] == "email"
    assert "already given" in entries(state, "feedback_refused")[0].message
    assert "no_feedback" not in kinds(state)


def test_ratings_are_read_from_the_first_line_only() -> None:
    from workflows.refund_case.follow_up import rating_in
    assert [rating_in(t) for t in ["5", "Rating: 3/5 ok", "4/5", " 2 stars", "10", "",
                                    "thanks!\n5", "0", "6"]] == [5, 3, 4, 2, None, None,
                                                                None, None, None]


async def close_failed(case: Case) -> None:
    """A failed refund waits for an agent; the test's agent closes the case."""
    await case.until(lambda s: s.waiting_for is not None, "the wait for an agent")
    await case.handle.execute_update(RefundCase.close_action, CloseCaseSignal(
        agent="alice", reason="settled with the customer another way"))
