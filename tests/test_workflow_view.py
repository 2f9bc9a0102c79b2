"""The ops view at rest (patch `view-at-rest`, issue 12): a case's search attributes are
written where it comes to rest, not at each step it passes through in a moment; a step
whose first attempt fails shows at once, and so does a case leaving an agent's queue or
closing. Read from the histories: each upsert event is what visibility was given."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.testing import WorkflowEnvironment

from core import search_attributes as sa
from core.models import CustomerReplySignal
from tests.workflow_doubles import (
    Case,
    Fakes,
    record_history,
    request,
    stripe_transient,
)
from workflows.refund_case import RefundCase
from workflows.refund_case.runtime import FIRST_PICK_UP

UPSERT = EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES


def written(event: HistoryEvent) -> dict[str, Any]:
    fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
    return {name: json.loads(p.data) for name, p in fields.indexed_fields.items()}


def activity_events(events: list[HistoryEvent], name: str, kind: EventType.ValueType
                    ) -> list[int]:
    """Ids of the events of `kind` (scheduled, completed, failed) of activity `name`."""
    scheduled = {e.event_id for e in events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                 and e.activity_task_scheduled_event_attributes.activity_type.name == name}
    if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        return sorted(scheduled)
    done = {EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed",
            EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed"}[kind]
    return [e.event_id for e in events if e.event_type == kind
            and getattr(e, f"{done}_event_attributes").scheduled_event_id in scheduled]


async def test_a_refund_held_up_shows_once_its_first_attempt_fails(
        time_env: WorkflowEnvironment) -> None:
    """While the refund's first attempt runs, the view still shows where the case last
    rested (the starter's `received`); the attempt fails, and before Stripe is tried again
    the view shows the refund under way with its amount, risk and policy. One idempotency
    key throughout."""
    fakes = Fakes(refund_errors=[stripe_transient("api_error")], refund_gate=asyncio.Event())
    async with Case(time_env, fakes, request()) as case:
        await case.until(lambda s: s.status == "refunding" and bool(fakes.refund_calls),
                         "the refund's first attempt")
        held = (await case.handle.describe()).typed_search_attributes
        assert held.get(sa.STATUS) == "received" and held.get(sa.AMOUNT) is None
        fakes.refund_gate.set()  # type: ignore[union-attr]
        state = await case.result()
        events = list((await case.handle.fetch_history()).events)
        await record_history(case.handle, "at_rest_slow_refund")
    assert state.status == "completed"
    assert {c.idempotency_key for c in fakes.refund_calls} == {f"{case.request.case_id}:refund"}
    [failed] = activity_events(events, "stripe_create_refund",
                               EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED)
    first, again = activity_events(events, "stripe_create_refund",
                                   EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    [made] = activity_events(events, "stripe_create_refund",
                             EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    # written by the task that tries again, before the second try's answer
    [shown] = [written(e) for e in events
               if e.event_type == UPSERT and failed < e.event_id < made]
    assert shown == {"RefundStatus": "refunding", "RefundPolicyVersion": state.policy_version,
                     "RefundRisk": "low", "RefundAmount": 4900, "RefundCurrency": "usd"}
    before = [set(written(e)) for e in events if e.event_type == UPSERT and e.event_id < first]
    assert before == [{"TemporalChangeVersion"}]  # the patch's own, nothing of the case's
    # the first attempt alone, to be picked up within FIRST_PICK_UP; then the usual retries
    runs = {e.event_id: e.activity_task_scheduled_event_attributes for e in events
            if e.event_id in (first, again)}
    assert runs[first].retry_policy.maximum_attempts == 1
    assert runs[first].schedule_to_start_timeout.ToTimedelta() == FIRST_PICK_UP
    assert runs[again].retry_policy.maximum_attempts == 0
    # no pick-up of its own: the server gives it the rest of the deadline
    assert runs[again].schedule_to_start_timeout == runs[again].schedule_to_close_timeout
    assert runs[again].schedule_to_close_timeout.ToTimedelta() < \
        runs[first].schedule_to_close_timeout.ToTimedelta()


async def test_an_approval_email_held_up_shows_the_approval(
        time_env: WorkflowEnvironment) -> None:
    """SendGrid fails the approval email's first attempt: the view shows the approval while
    the email is retried; the customer gets one approval email."""
    fakes = Fakes(flaky_templates={"approval": 1})
    async with Case(time_env, fakes, request()) as case:
        state = await case.result()
        events = list((await case.handle.fetch_history()).events)
    assert state.status == "completed" and fakes.templates().count("approval") == 1
    [failed] = activity_events(events, "send_email", EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED)
    later = [written(e) for e in events if e.event_type == UPSERT and e.event_id > failed]
    assert later[0]["RefundStatus"] == "approved" and later[0]["RefundAmount"] == 4900
    assert "email_sent" in [t.kind for t in state.timeline if t.data.get("template") == "approval"]


async def test_a_case_leaves_the_agents_queue_at_once(time_env: WorkflowEnvironment) -> None:
    """From an agent's queue the view does not wait: the customer's answer lets the policy
    approve, and the task that decides writes `approved` before the approval email's first
    attempt is answered (the case is out of the queue at once, not once it rests)."""
    fakes = Fakes()
    async with Case(time_env, fakes, request("technical_issue")) as case:
        await case.status("awaiting_info")
        await case.handle.signal(RefundCase.customer_reply, CustomerReplySignal(
            text="My support ticket number is 4411.", channel="email"))
        state = await case.result()
        events = list((await case.handle.fetch_history()).events)
    assert state.status == "completed"
    *_, approval = activity_events(events, "send_email",
                                   EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)[:3]
    answered = min(d for d in activity_events(events, "send_email",
                                              EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
                   if d > approval)
    statuses = [(e.event_id, written(e).get("RefundStatus")) for e in events
                if e.event_type == UPSERT]
    assert [s for _, s in statuses][1:] == ["awaiting_info", "approved", "refunded",
                                            "completed"]
    [at] = [i for i, s in statuses if s == "approved"]
    assert at < answered


async def test_a_denied_case_shows_it_is_closed_at_once(time_env: WorkflowEnvironment) -> None:
    """A case that closes does not wait: the task that denies writes `denied` before the
    denial email's first attempt is answered, so a second request for the charge finds
    the case closed and starts one of its own."""
    fakes = Fakes(charge_age=timedelta(days=40))  # change of mind after the 14 days
    async with Case(time_env, fakes, request()) as case:
        state = await case.result()
        events = list((await case.handle.fetch_history()).events)
    assert state.status == "denied"
    *_, denial = activity_events(events, "send_email",
                                 EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    [answered] = [d for d in activity_events(events, "send_email",
                                             EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
                  if d > denial]
    [at] = [e.event_id for e in events
            if e.event_type == UPSERT and written(e).get("RefundStatus") == "denied"]
    assert at < answered

