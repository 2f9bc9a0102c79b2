"""Customer-facing text in the workflow (issue 11): the billing-error apology goes out once
the refund exists, in the customer's words; a denial must rest on a clause the facts fit
and offers only that clause's alternatives; a dispute tells the customer what happens
next. Time-skipping server, activity doubles; each new path's history is recorded as
tests/histories/text_*.json."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from core.models import DenySignal, DisputeOpenedSignal
from tests.workflow_doubles import Case, Fakes, entries, kinds, record_history, request
from workflows.refund_case import RefundCase


async def test_billing_error_apology_goes_out_once_the_refund_exists(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(facts_overrides={"duplicate_charge_ids": ["ch_dup_1"]})
    async with Case(time_env, fakes, request("duplicate_charge", locale="ko",
                                             timezone="Asia/Seoul")) as case:
        state = await case.result()
        await record_history(case.handle, "text_apology_after_refund")
    assert state.status == "completed"
    assert "approval" not in fakes.templates()  # the apology is the decision's email
    order = kinds(state)
    apology_at = next(i for i, t in enumerate(state.timeline) if t.kind == "email_sent"
                      and t.data.get("template") == "billing_error_apology")
    assert order.index("refund_created") < apology_at  # never before the refund exists
    apology = fakes.email("billing_error_apology")
    assert apology.timezone == "Asia/Seoul" and apology.locale == "ko"
    assert apology.context["root_cause"] == fakes.policy.root_cause_text(
        "duplicate_charge", "ko")
    assert "duplicate_charge" not in str(apology.context)  # the internal tag stays inside
    assert apology.context["amount"] == fakes.refund_calls[0].amount


async def test_a_denial_citing_a_clause_the_facts_contradict_is_refused(
        time_env: WorkflowEnvironment) -> None:
    """Bought minutes ago: "more than 14 days after the payment" cannot be the reason."""
    fakes = Fakes(amount=50_000, charge_age=timedelta(minutes=5))
    async with Case(time_env, fakes, request()) as case:
        waiting = await case.status("awaiting_agent")
        assert waiting.decision is not None
        assert "change-of-mind-late" not in waiting.decision.citable_clause_ids
        assert "misuse" in waiting.decision.citable_clause_ids
        late = DenySignal(agent="alice", clause_id="change-of-mind-late")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await case.handle.execute_update(RefundCase.deny_action, late)
        details = refused.value.cause.details[0]  # type: ignore[union-attr]
        assert details["code"] == "invalid"
        assert "within the 14-day window" in details["reason"]
        await case.handle.signal(RefundCase.deny, late)  # a signal: refused, recorded
        await case.until(lambda s: entries(s, "action_refused") != [], "the refusal")
        await case.handle.execute_update(RefundCase.deny_action, DenySignal(
            agent="alice", clause_id="misuse", note="Account closed for spam"))
        state = await case.result()
        await record_history(case.handle, "text_clause_refused")
    assert state.status == "denied" and state.denial is not None
    assert state.denial.clause_id == "misuse"
    assert "within the 14-day window" in entries(state, "action_refused")[0].message
    assert fakes.email("denial").context["alternatives"] == []  # misuse offers nothing


async def test_a_fraud_denial_offers_no_discount_and_is_written_in_japanese(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("fraud_suspected", locale="ja")) as case:
        await case.status("awaiting_agent")
        with pytest.raises(WorkflowUpdateFailedError):
            await case.handle.execute_update(RefundCase.deny_action, DenySignal(
                agent="alice", clause_id="unauthorised-charges",
                alternative="discounted_upgrade"))
        await case.handle.execute_update(RefundCase.deny_action, DenySignal(
            agent="alice", clause_id="unauthorised-charges"))
        await case.result()
        await record_history(case.handle, "text_fraud_denial")
    denial = fakes.email("denial").context
    clause = fakes.policy.clause("unauthorised-charges")
    assert denial["alternatives"] == []
    assert denial["clause_text"] == clause.translations["ja"].text
    assert denial["clause_title"] == clause.translations["ja"].title


async def test_a_dispute_tells_the_customer_what_happens_next(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(amount=50_000)
    async with Case(time_env, fakes, request(locale="ko")) as case:
        await case.status("awaiting_agent")
        dispute = DisputeOpenedSignal(dispute_id="dp_7", charge_id="ch_test_1",
                                      reason="fraudulent", amount=50_000)
        await case.handle.signal(RefundCase.dispute_opened, dispute)
        await case.handle.signal(RefundCase.dispute_opened, dispute)  # redelivered
        state = await case.result()
        await record_history(case.handle, "text_dispute_email")
    assert state.status == "disputed"
    assert fakes.templates().count("dispute_opened") == 1
    email = fakes.email("dispute_opened")
    assert email.locale == "ko" and email.context == {"amount": 50_000, "currency": "usd"}
    assert [o.kind for o in fakes.ops] == ["dispute_opened"]
    assert fakes.refund_calls == []
