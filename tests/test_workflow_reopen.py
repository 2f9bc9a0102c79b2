"""Replies after closing (issue 11), on a time-skipping server of this module's own, with
activity doubles: within the reopen window an abandoned case runs again and the policy
decides with the reply; a denied case goes to an agent with the reply; past the window a
new case linked to the closed one takes it; a redelivered reply is taken once.

The runs a reply starts are awaited through the handle its start returned
(`ReplyTaken.handle`): only such handles let the time-skipping server skip time while a
test waits for their result (a handle from `get_workflow_handle` does not, and waits for
ever on the follow-up timer)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core.case_client import CaseClient, ReplyTaken, policy_reopen_window
from core.contract import CaseState, ContinuedCase, Reopening
from core.models import ApproveSignal, CustomerReplySignal, DenySignal
from policies.library import register
from policies.loader import DEFAULT_POLICY, load_policy
from policies.model import DEFAULT_REOPEN_WITHIN_DAYS
from tests.api_support import INBOUND_SECRET, app_with, http, inbound_form
from tests.conftest import time_skipping_server
from tests.toggle_proxy import ToggleProxy
from tests.workflow_doubles import (
    STARTED,
    Case,
    Fakes,
    entries,
    kinds,
    record_history,
    request,
)
from workflows.refund_case import RefundCase

THIRTY_DAYS = timedelta(days=30)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """Its own time-skipping server: a shared one's clock is held by other tests' timers."""
    async for env in time_skipping_server():
        yield env


def _window(_: CaseState) -> timedelta:
    return THIRTY_DAYS


def _reply(text: str, message_id: str | None = "<m1@mail.example.com>") -> CustomerReplySignal:
    return CustomerReplySignal(text=text, channel="email", from_email="ana@example.com",
                               message_id=message_id)


def _run(taken: ReplyTaken) -> WorkflowHandle[Any, Any]:
    """The run the reply started, ended after the test like every case the tests start."""
    assert taken.handle is not None
    STARTED.append(taken.handle)
    return taken.handle


def _denial(state: CaseState) -> DenySignal:
    """An agent's denial citing the clause the policy cites."""
    assert state.decision is not None
    return DenySignal(agent="alice", clause_id=state.decision.clause_ids[0],
                      note="still past the window")


async def _finished(handle: WorkflowHandle[Any, Any]) -> CaseState:
    await handle.result()
    state: CaseState = await handle.query(RefundCase.state)
    return state


async def test_a_reply_after_abandonment_reopens_and_the_policy_decides_with_it(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        closed = await case.result()
        assert closed.status == "abandoned"
        cases = CaseClient(time_env.client)  # the default task queue: it follows the case
        taken = await cases.reply(case.handle.id, _reply("My support ticket number is 4411."),
                                  reopen_window=_window)
        assert (taken.case_id, taken.how) == (case.handle.id, "reopened")
        handle = _run(taken)
        state = await _finished(handle)
        await record_history(handle, "reopen_abandoned")
        reopened = await (await handle.describe()).memo_value("reopened")
    assert state.status == "completed" and state.progress.reopened == 1
    assert reopened["closed_status"] == "abandoned"
    [entry] = entries(state, "reopened")
    assert "closed as abandoned" in entry.message and "4411" in entry.message
    assert kinds(state).index("reopened") < kinds(state).index("refund_created")
    assert "4411" in state.requirements_answered["support_evidence"]
    assert [c.amount for c in fakes.refund_calls] == [4900]
    assert [n.kind for n in fakes.ops if n.kind == "case_reopened"] == ["case_reopened"]


async def test_a_reply_to_a_denial_within_the_window_goes_to_an_agent_who_can_approve(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(charge_age=timedelta(days=40))
    async with Case(time_env, fakes, request("change_of_mind")) as case:
        closed = await case.result()
        assert closed.status == "denied" and fakes.refund_calls == []
        cases = CaseClient(time_env.client)
        taken = await cases.reply(case.handle.id, _reply("I accept the discounted upgrade."),
                                  reopen_window=_window)
        assert taken.how == "reopened"
        case.handle = _run(taken)
        state = await case.until(lambda s: s.status == "awaiting_agent", "an agent")
        why = entries(state, "status")[-1].message
        assert "closed as denied" in why and "discounted upgrade" in why
        await case.handle.execute_update(RefundCase.approve_action,
                                         ApproveSignal(agent="alice", note="accepted the offer"))
        state = await _finished(case.handle)
        await record_history(case.handle, "reopen_denied_to_agent")
    assert state.status == "completed" and state.approved_amount == 4900
    assert [c.amount for c in fakes.refund_calls] == [4900]
    assert "case_reopened" in [n.kind for n in fakes.ops]


async def test_a_reply_to_a_denial_past_the_window_opens_a_linked_case(
        dev_env: WorkflowEnvironment) -> None:
    """On the dev server: one open case per charge asks visibility, which the time-skipping
    server does not implement. A charge of its own: the dev server is shared."""
    fakes = Fakes(charge_age=timedelta(days=40))
    req = request("change_of_mind", charge_id=f"ch_reopen_{uuid.uuid4().hex[:10]}")
    async with Case(dev_env, fakes, req) as case:
        await case.result()
        old = await case.handle.describe()
        assert old.close_time is not None
        later = old.close_time + THIRTY_DAYS + timedelta(days=1)
        cases = CaseClient(dev_env.client)
        reply = _reply("Please look again, I never used it.")
        taken = await cases.reply(case.handle.id, reply, reopen_window=_window, now=later)
        assert taken.how == "follow_up"
        assert taken.case_id.startswith(f"{case.handle.id}.f-")
        again = await cases.reply(case.handle.id, reply, reopen_window=_window, now=later)
        assert again == taken  # a redelivered mail opens it once
        follow_up = _run(taken)
        case.handle = follow_up
        state = await case.until(lambda s: s.status == "awaiting_agent", "an agent")
        await follow_up.execute_update(RefundCase.deny_action, _denial(state))
        state = await _finished(follow_up)
        await record_history(follow_up, "reopen_follow_up")
        memo = await (await follow_up.describe()).memo_value("follows")
        closed_run = await dev_env.client.get_workflow_handle(old.id).describe()
    assert memo == {"case_id": old.id, "closed_status": "denied"}
    [linked] = entries(state, "follows")
    assert linked.data["follows"] == old.id and "closed as denied" in linked.message
    assert state.request.message == "Please look again, I never used it."
    assert state.status == "denied"
    assert closed_run.run_id == old.run_id  # the closed case stays as it was
    assert closed_run.status == WorkflowExecutionStatus.COMPLETED
    assert "follow_up_case" in [n.kind for n in fakes.ops]


async def test_a_redelivered_reply_reopens_the_case_once(
        time_env: WorkflowEnvironment) -> None:
    fakes = Fakes(charge_age=timedelta(days=40))
    async with Case(time_env, fakes, request("change_of_mind")) as case:
        await case.result()
        cases = CaseClient(time_env.client)
        reply = _reply("I accept the discounted upgrade.")
        first = await cases.reply(case.handle.id, reply, reopen_window=_window)
        case.handle = _run(first)
        await case.until(lambda s: s.status == "awaiting_agent", "an agent")
        # SendGrid delivers the same mail again while the reopened run waits...
        while_open = await cases.reply(case.handle.id, reply, reopen_window=_window)
        state = await case.until(lambda s: "reply_again" in kinds(s), "the redelivery")
        await case.handle.execute_update(RefundCase.deny_action, _denial(state))
        await _finished(case.handle)
        # ... and once more after it closed again: the closed case took it already.
        after_close = await cases.reply(case.handle.id, reply, reopen_window=_window)
        state = await case.state()
        latest = await time_env.client.get_workflow_handle(case.handle.id).describe()
    assert (first.how, while_open.how, after_close.how) == ("reopened", "delivered",
                                                            "delivered")
    assert latest.run_id == case.handle.result_run_id  # no third run
    assert state.progress.reopened == 1 and state.status == "denied"
    assert len([r for r in state.replies if r.message_id == reply.message_id]) == 1
    assert [n.kind for n in fakes.ops].count("case_reopened") == 1


async def test_the_inbound_webhook_answers_503_while_temporal_is_down_and_never_loses_it(
        time_env: WorkflowEnvironment) -> None:
    """SendGrid posts a reply to a denied case while the API cannot reach Temporal: 503
    (SendGrid retries) and the case is untouched; its retry reopens the case; one more
    redelivery of the same mail is taken once."""
    fakes = Fakes(charge_age=timedelta(days=40))
    target = time_env.client.service_client.config.target_host
    async with Case(time_env, fakes, request("change_of_mind")) as case, \
            ToggleProxy(int(target.rsplit(":", 1)[1])) as proxy:
        await case.result()
        closed_run = case.handle.result_run_id
        api_client = await Client.connect(f"127.0.0.1:{proxy.port}",
                                          namespace=time_env.client.namespace,
                                          data_converter=pydantic_data_converter)
        form = inbound_form(case.handle.id, "ana@example.com", "I accept the upgrade offer.",
                            headers="Message-ID: <accept-1@mail.example.com>\r\n")
        url = f"/webhooks/sendgrid/inbound?secret={INBOUND_SECRET}"
        async with http(app_with(api_client)) as api:
            proxy.up = False
            down = await api.post(url, data=form)
            untouched = await time_env.client.get_workflow_handle(case.handle.id).describe()
            proxy.up = True
            retried = await api.post(url, data=form)
            case.handle = time_env.client.get_workflow_handle(case.handle.id)
            STARTED.append(case.handle)
            state = await case.until(lambda s: s.status == "awaiting_agent", "an agent")
            again = await api.post(url, data=form)
            state = await case.until(lambda s: "reply_again" in kinds(s), "the redelivery")
    assert down.status_code == 503, down.text
    assert untouched.run_id == closed_run and untouched.status == \
        WorkflowExecutionStatus.COMPLETED
    assert retried.json() == {"status": "reopened", "case_id": case.handle.id}, retried.text
    assert again.json() == {"status": "delivered", "case_id": case.handle.id}, again.text
    assert state.progress.reopened == 1
    assert [r.message_id for r in state.replies] == ["<accept-1@mail.example.com>"]
    assert "upgrade offer" in entries(state, "status")[-1].message


def test_the_reopen_window_is_the_pinned_policys_setting(tmp_path: Path) -> None:
    """`replies.reopen_within_days` of the policy the case pinned; the default without."""
    text = DEFAULT_POLICY.read_text("utf-8")
    assert "reopen_within_days" not in text and "\nreplies:\n" in text
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace("\nreplies:\n", "\nreplies:\n  reopen_within_days: 7\n"),
                    "utf-8")
    ref = register(load_policy(path))
    window = policy_reopen_window(path)
    pinned = CaseState(case_id="refund-r1", request=request(), policy_version=ref.version,
                       policy_sha256=ref.sha256)
    assert window(pinned) == timedelta(days=7)
    unknown = CaseState(case_id="refund-r2", request=request(), policy_version="nope")
    assert window(unknown) == timedelta(days=DEFAULT_REOPEN_WITHIN_DAYS)
    # A policy without the setting keeps the hash the cases pinned to it hold.
    assert register(load_policy(DEFAULT_POLICY)).sha256 != ref.sha256


def test_a_reopening_carries_the_reply_and_no_policy() -> None:
    """The reopened run resolves the policy its state pinned (the client holds none)."""
    state = CaseState(case_id="refund-r1", request=request())
    start = ContinuedCase(state=state, reopen=Reopening(closed_status="denied",
                                                        reply=_reply("yes")))
    again = ContinuedCase.model_validate_json(start.model_dump_json())
    assert again.policy is None and again.reopen is not None
    assert again.reopen.reply.text == "yes"
