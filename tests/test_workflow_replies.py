"""Replies on the time-skipping server, with activity doubles: answers in words and files
count (the policy's `replies.answers`), a reply that answers nothing asked goes to an
agent instead of a second identical question, a reply after closing reopens the case
(or, past the window, a new linked case), and full-width ratings count."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from core.case_client import CaseClient, ReplyTaken
from core.contract import CaseState
from core.models import ApproveSignal, CustomerReplySignal, DenySignal
from tests.workflow_doubles import Case, Fakes, entries, kinds, record_history, request
from workflows.refund_case import RefundCase


def _reply(text: str, **kw: object) -> CustomerReplySignal:
    return CustomerReplySignal(text=text, channel="email", **kw)  # type: ignore[arg-type]


async def test_a_ticket_number_in_words_answers_the_question(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.status("awaiting_info")
        await case.handle.signal(RefundCase.customer_reply,
                                 _reply("My support ticket number is 4411."))
        state = await case.result()
        await record_history(case.handle, "replies_text_answer")
    assert state.status == "completed"
    assert "support_evidence" in state.requirements_answered
    assert "4411" in state.requirements_answered["support_evidence"]
    outcomes = [e.data["outcome"] for e in entries(state, "policy_decision")]
    assert outcomes == ["need_info", "approve"]
    assert fakes.templates().count("info_request") == 1


async def test_a_reply_that_answers_nothing_goes_to_an_agent_not_a_second_question(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.status("awaiting_info")
        await case.handle.signal(RefundCase.customer_reply, _reply(
            "I already explained all of this to your colleague on the phone."))
        state = await case.status("awaiting_agent")
        why = entries(state, "status")[-1].message
        assert "does not answer" in why and "colleague on the phone" in why
        assert state.requirements_answered == {}
        await case.handle.execute_update(RefundCase.approve_action,
                                         ApproveSignal(agent="alice", note="called her"))
        state = await case.result()
        await record_history(case.handle, "replies_unanswered_to_agent")
    assert state.status == "completed"
    assert fakes.templates().count("info_request") == 1
    assert "reminder" not in fakes.templates()
    assert [c.amount for c in fakes.refund_calls] == [4900]


async def test_an_image_with_a_japanese_name_answers_by_its_content_type(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue", locale="ja")) as case:
        await case.status("awaiting_info")
        await case.handle.signal(RefundCase.customer_reply, _reply(
            "エラー画面を添付します。", attachments=["スクリーンショット.png"],
            attachment_types={"スクリーンショット.png": "image/png"}))
        state = await case.result()
        await record_history(case.handle, "replies_image_answer")
    assert state.status == "completed"
    assert "スクリーンショット.png" in state.requirements_answered["support_evidence"]
    assert "スクリーンショット.png" in state.documents
    assert fakes.templates().count("info_request") == 1


async def test_a_file_of_another_type_does_not_answer(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.status("awaiting_info")
        await case.handle.signal(RefundCase.customer_reply, _reply(
            "", attachments=["data.zip"], attachment_types={"data.zip": "application/zip"}))
        state = await case.status("awaiting_agent")
        await case.handle.terminate("test done")
    assert "data.zip" in entries(state, "status")[-1].message
    assert fakes.templates().count("info_request") == 1


async def test_a_full_width_rating_is_recorded(time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request(locale="ja")) as case:
        await case.status("refunded")
        await time_env.sleep(timedelta(days=3, minutes=1))
        await case.until(lambda s: s.waiting_for == "the customer's feedback", "feedback wait")
        await case.handle.signal(RefundCase.customer_reply,
                                 _reply("５　とても早い対応でした"))
        state = await case.result()
        await record_history(case.handle, "replies_full_width_rating")
    assert state.feedback is not None and state.feedback.rating == 5
    assert "no_feedback" not in kinds(state)


async def test_a_policy_without_reply_rules_still_asks_by_file_name(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    fakes.policy = fakes.policy.model_copy(update={"replies": None})
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.status("awaiting_info")
        await case.handle.signal(RefundCase.customer_reply,
                                 _reply("ticket 4411", attachments=["ticket-4411.txt"]))
        state = await case.result()
    assert state.status == "completed" and state.requirements_answered == {}


# --- replies after closing --------------------------------------------------------------

async def _latest_run(env: WorkflowEnvironment, case_id: str) -> WorkflowHandle[Any, Any]:
    """The reopened run by its run id (the test server's result() of a bare id does not
    follow a new run of a closed workflow)."""
    run_id = (await env.client.get_workflow_handle(case_id).describe()).run_id
    return env.client.get_workflow_handle(case_id, run_id=run_id)


def _window(days: int) -> Callable[[CaseState], timedelta]:
    return lambda state: timedelta(days=days)


async def _closed_at(handle: WorkflowHandle[Any, Any]) -> datetime:
    closed = (await handle.describe()).close_time
    assert closed is not None
    return closed


async def test_a_reply_after_abandonment_reopens_the_case_and_decides_again(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        state = await case.result()
        assert state.status == "abandoned"
        client = CaseClient(time_env.client, task_queue=case.task_queue)
        taken = await client.reply(case.request.case_id, _reply(
            "Sorry, I was away. My support ticket number is 4411."), reopen_window=_window(30),
            now=await _closed_at(case.handle) + timedelta(days=2))
        assert taken == ReplyTaken(case.request.case_id, "reopened")
        reopened = await _latest_run(time_env, case.request.case_id)
        await reopened.result()
        state = await reopened.query(RefundCase.state)
        await record_history(reopened, "replies_reopen_abandoned")
    assert state.status == "completed"
    assert state.progress.reopened == 1 and "reopened" in kinds(state)
    assert "4411" in state.requirements_answered["support_evidence"]
    assert [o.kind for o in fakes.ops] == ["case_reopened"]
    assert fakes.templates().count("info_request") == 1
    assert "approval" in fakes.templates() and len(fakes.refund_calls) == 1


async def test_a_reply_to_a_denial_within_the_window_goes_to_an_agent(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(charge_age=timedelta(days=40))
    async with Case(time_env, fakes, request()) as case:
        assert (await case.result()).status == "denied"
        client = CaseClient(time_env.client, task_queue=case.task_queue)
        taken = await client.reply(case.request.case_id, _reply(
            "I'd like the discounted upgrade you offered instead."),
            reopen_window=_window(30), now=await _closed_at(case.handle))
        assert taken.how == "reopened"
        reopened = await _latest_run(time_env, case.request.case_id)
        reopened_case = Case.__new__(Case)
        reopened_case.handle = reopened  # type: ignore[assignment]
        state = await reopened_case.status("awaiting_agent")
        why = entries(state, "status")[-1].message
        assert "closed as denied" in why and "discounted upgrade" in why
        await reopened.execute_update(RefundCase.deny_action, DenySignal(
            agent="alice", clause_id="change-of-mind-late", alternative="discounted_upgrade",
            note="upgrade at 30% off applied"))
        await reopened.result()
        state = await reopened.query(RefundCase.state)
        await record_history(reopened, "replies_reopen_denied")
    assert state.status == "denied" and state.denial is not None
    assert state.denial.alternative == "discounted_upgrade"
    second = [e for e in fakes.emails if e.template == "denial"]
    assert len(second) == 2 or second[-1].context["alternatives"] == [
        {"id": "discounted_upgrade",
         "text": fakes.policy.alternatives[1].text}]
    assert [o.kind for o in fakes.ops] == ["case_reopened"]
    assert fakes.refund_calls == []


async def test_a_reply_to_a_denial_after_the_window_opens_a_linked_case(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(charge_age=timedelta(days=40))
    async with Case(time_env, fakes, request()) as case:
        assert (await case.result()).status == "denied"
        client = CaseClient(time_env.client, task_queue=case.task_queue)
        reply = _reply("Can you look at this again?", attachments=["receipt.pdf"],
                       attachment_types={"receipt.pdf": "application/pdf"})
        now = await _closed_at(case.handle) + timedelta(days=31)
        taken = await client.reply(case.request.case_id, reply, reopen_window=_window(30),
                                   now=now)
        assert taken.how == "follow_up_opened" and taken.case_id != case.request.case_id
        again = await client.reply(case.request.case_id, reply, reopen_window=_window(30),
                                   now=now)
        assert again == taken  # a redelivered mail opens the linked case once
        linked = time_env.client.get_workflow_handle(taken.case_id)
        await linked.result()
        state = await linked.query(RefundCase.state)
        await record_history(linked, "replies_follow_up_case")
        memo = await (await linked.describe()).memo_value("follows")
    assert memo == case.request.case_id
    assert state.request.follows == case.request.case_id
    assert state.request.message == "Can you look at this again?"
    assert state.documents == ["receipt.pdf"]
    assert "follows" in kinds(state)
    assert [o.kind for o in fakes.ops] == ["follow_up_case"]
