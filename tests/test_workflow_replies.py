"""Replies on the time-skipping server, with activity doubles: answers in words and files
count (the policy's `replies.answers`), a reply that answers nothing asked goes to an
agent instead of a second identical question, and full-width ratings count."""

from __future__ import annotations

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from core.models import ApproveSignal, CustomerReplySignal
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
