"""Test doubles for RefundCase's activities (registered under the SAME names as the real
ones) and helpers to run one case on the time-skipping server. Used only by the
workflow-branch tests; the end-to-end test runs the real activities."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.email_models import (
    EMAIL_PERMANENT,
    EMAIL_TRANSIENT,
    EmailInput,
    EmailSent,
    OpsNotice,
)
from activities.errors import permanent, transient
from activities.policy_activities import POLICY_INVALID
from activities.stripe_activities import stripe_permit
from activities.stripe_models import (
    CreateRefundInput,
    GatherFactsInput,
    GetRefundInput,
    RefundResult,
    StripeFacts,
    stripe_task_queue,
)
from core.case_client import CaseClient
from core.config import DEV_CUSTOMER_REF_KEY
from core.contract import CaseResult, CaseState
from core.models import RefundReason, RefundRequest
from policies.library import PolicyRef, register
from policies.loader import load_policy
from policies.model import Policy
from worker import activity_name
from workflows.refund_case import RefundCase

CHARGE = "ch_test_1"
EMAIL = "ana@example.com"


def default_policy() -> Policy:
    return load_policy()


def request(reason: RefundReason | str = RefundReason.change_of_mind, **kw: Any
            ) -> RefundRequest:
    fields: dict[str, Any] = {"request_id": f"req-{uuid.uuid4().hex[:10]}",
                              "customer_email": EMAIL, "charge_id": CHARGE,
                              "reason": RefundReason(reason)}
    fields.update(kw)
    return RefundRequest(**fields)


@dataclass
class Fakes:
    """Configurable Stripe, email and policy doubles that record what they were asked.

    The charge is dated relative to the activity's scheduled time (the test server's
    clock, which only moves forward), never to absolute times."""

    policy: Policy = field(default_factory=default_policy)
    amount: int = 4900
    currency: str = "usd"
    charge_age: timedelta = timedelta(days=2)
    customer_age: timedelta = timedelta(days=3)
    facts_overrides: dict[str, Any] = field(default_factory=dict)
    later_facts: dict[str, Any] = field(default_factory=dict)  # from the 2nd look-up on
    failing_templates: set[str] = field(default_factory=set)  # send_email refuses for good
    flaky_templates: dict[str, int] = field(default_factory=dict)  # fails this often first
    refund_errors: list[Exception] = field(default_factory=list)  # raised in order first
    refund_status: str = "succeeded"
    poll_statuses: list[str] = field(default_factory=list)  # stripe_get_refund answers
    acquirer_reference: str | None = "ARN-2468"
    ack_gate: asyncio.Event | None = None  # the ack email waits for this
    info_gate: asyncio.Event | None = None  # the info_request email waits for this
    refund_gate: asyncio.Event | None = None  # stripe_create_refund waits for this
    unreadable_pins: int = 0  # pin_policy finds the policy file broken this many times
    emails: list[EmailInput] = field(default_factory=list)
    ops: list[OpsNotice] = field(default_factory=list)
    refund_calls: list[CreateRefundInput] = field(default_factory=list)
    polls: int = 0
    gathers: int = 0
    pins: int = 0

    def activities(self) -> list[Callable[..., Any]]:
        return [self.load_policy, self.pin_policy, self.stripe_gather_facts,
                self.stripe_create_refund, self.stripe_get_refund, self.send_email,
                self.notify_ops]

    def templates(self) -> list[str]:
        return [e.template for e in self.emails]

    def email(self, template: str) -> EmailInput:
        return next(e for e in self.emails if e.template == template)

    @activity.defn(name="load_policy")
    async def load_policy(self) -> Policy:
        return self.policy

    @activity.defn(name="pin_policy")
    async def pin_policy(self) -> PolicyRef:
        self.pins += 1
        if self.pins <= self.unreadable_pins:
            raise permanent(POLICY_INVALID, "policies/default.yaml: line 3: mapping "
                                            "values are not allowed here")
        return register(self.policy)

    @activity.defn(name="stripe_gather_facts")
    async def stripe_gather_facts(self, inp: GatherFactsInput) -> StripeFacts:
        now = activity.info().scheduled_time
        facts: dict[str, Any] = {
            "found": True, "charge_id": inp.request.charge_id or CHARGE,
            "payment_intent_id": "pi_test_1", "customer_id": "cus_test_1",
            "customer_email": EMAIL, "amount": self.amount, "amount_refunded": 0,
            "currency": self.currency, "created": now - self.charge_age,
            "customer_created": now - self.customer_age,
        }
        facts.update(self.facts_overrides)
        self.gathers += 1
        if self.gathers > 1:
            facts.update(self.later_facts)
        return StripeFacts(**facts)

    @activity.defn(name="stripe_create_refund")
    async def stripe_create_refund(self, inp: CreateRefundInput) -> RefundResult:
        self.refund_calls.append(inp)
        if self.refund_gate is not None:
            await self.refund_gate.wait()
        if self.refund_errors:
            raise self.refund_errors.pop(0)
        return RefundResult(refund_id="re_test_1", status=self.refund_status,  # type: ignore[arg-type]
                            amount=inp.amount, currency=inp.currency, charge_id=inp.charge_id,
                            acquirer_reference=self.acquirer_reference
                            if self.refund_status == "succeeded" else None,
                            case_id=inp.case_id)

    @activity.defn(name="stripe_get_refund")
    async def stripe_get_refund(self, inp: GetRefundInput) -> RefundResult:
        self.polls += 1
        status = self.poll_statuses.pop(0) if self.poll_statuses else "pending"
        return RefundResult(refund_id=inp.refund_id, status=status,  # type: ignore[arg-type]
                            amount=self.refund_calls[-1].amount, currency=self.currency,
                            charge_id=CHARGE,
                            failure_reason="expired_or_canceled_card"
                            if status == "failed" else None,
                            case_id=self.refund_calls[-1].case_id)

    @activity.defn(name="send_email")
    async def send_email(self, email: EmailInput) -> EmailSent:
        gate = {"acknowledgment": self.ack_gate, "info_request": self.info_gate}.get(
            email.template)
        if gate is not None:
            await gate.wait()
        if email.template in self.failing_templates:
            raise permanent(EMAIL_PERMANENT, "SendGrid refused the address (400)", status=400,
                            step=email.step)
        if self.flaky_templates.get(email.template):
            self.flaky_templates[email.template] -= 1
            raise transient(EMAIL_TRANSIENT, "SendGrid answered 503", status=503)
        if email.step not in {e.step for e in self.emails}:
            self.emails.append(email)
        return EmailSent(message_id=f"msg-{email.step}", backend="outbox",
                         template=email.template, to=email.to, subject=email.template)

    @activity.defn(name="notify_ops")
    async def notify_ops(self, notice: OpsNotice) -> EmailSent:
        self.ops.append(notice)
        return EmailSent(message_id=f"ops-{notice.step}", backend="outbox",
                         template="ops_escalation", to="ops@example.com", subject=notice.kind)


def stripe_transient(code: str = "rate_limit") -> Exception:
    return transient("StripeTransient", f"Stripe {code}", code=code, message=code)


def stripe_permanent(code: str = "charge_already_refunded") -> Exception:
    return permanent("StripePermanent", f"Stripe {code}", code=code, message=code)


class Case:
    """One RefundCase on a fresh task queue with the doubles; use as `async with`."""

    def __init__(self, env: WorkflowEnvironment, fakes: Fakes, req: RefundRequest):
        self.env, self.fakes, self.request = env, fakes, req
        self.task_queue = f"tq-{uuid.uuid4().hex[:8]}"
        self.worker = Worker(env.client, task_queue=self.task_queue, workflows=[RefundCase],
                             activities=fakes.activities())
        self.stripe_worker = stripe_worker(env.client, self.task_queue, fakes.activities())
        self.handle: WorkflowHandle[RefundCase, CaseResult]

    async def __aenter__(self) -> Case:
        await self.worker.__aenter__()
        await self.stripe_worker.__aenter__()
        self.handle = await start(self.env.client, self.request, self.task_queue)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stripe_worker.__aexit__(*exc)
        await self.worker.__aexit__(*exc)

    async def state(self) -> CaseState:
        return await self.handle.query(RefundCase.state)

    async def until(self, predicate: Callable[[CaseState], bool], what: str,
                    timeout: float = 45.0) -> CaseState:
        """Query until the case reaches a state (the test server's clock stays put)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            state = await self.state()
            if predicate(state):
                return state
            if loop.time() > end:
                raise AssertionError(f"case never reached {what}: {state.status}, "
                                     f"{[t.kind for t in state.timeline]}")
            await asyncio.sleep(0.05)

    async def status(self, status: str) -> CaseState:
        return await self.until(lambda s: s.status == status, f"status {status}")

    async def result(self, timeout: float = 120.0) -> CaseState:
        """The finished case's state (its result is only a small summary). Bounded: a
        case stuck on a path the test did not expect fails the test, never hangs the suite."""
        try:
            await asyncio.wait_for(self.handle.result(), timeout)
        except TimeoutError:
            state = await self.state()
            raise AssertionError(f"case never finished: {state.status}, waiting for "
                                 f"{state.waiting_for}, {[t.kind for t in state.timeline]}"
                                 ) from None
        return await self.state()


def stripe_worker(client: Client, task_queue: str, activities: list[Callable[..., Any]]
                  ) -> Worker:
    """The doubles on the task queue's Stripe queue, where the workflows call Stripe, with
    the real (no-op) permit activity that pays for a request (unless `activities` are the
    real Stripe activities, which bring it)."""
    names = {activity_name(fn) for fn in activities}
    permit = [] if activity_name(stripe_permit) in names else [stripe_permit]
    return Worker(client, task_queue=stripe_task_queue(task_queue),
                  activities=[*activities, *permit])


# Cases the tests started; conftest ends those still running after each test.
STARTED: list[WorkflowHandle[Any, Any]] = []


async def start(client: Client, req: RefundRequest, task_queue: str
                ) -> WorkflowHandle[RefundCase, CaseResult]:
    """Started as every case is, through the CaseClient."""
    started = await CaseClient(client, task_queue=task_queue,
                               customer_ref_key=DEV_CUSTOMER_REF_KEY).start(req)
    assert started.handle is not None, f"{req.case_id} was started before"
    STARTED.append(started.handle)
    return started.handle


async def end_cases_left_running() -> None:
    """Terminate the cases a test left waiting (e.g. for an agent, with an escalation
    timer): on the shared time-skipping server, such a timer fires in a later test with
    no worker for it, and its pending workflow task stops the clock from skipping."""
    while STARTED:
        handle = STARTED.pop()
        # Closed already, or its server gone with the test: nothing left to end.
        with contextlib.suppress(RPCError, TimeoutError, RuntimeError):
            await asyncio.wait_for(handle.terminate("test over"), 5)


def kinds(state: CaseState) -> list[str]:
    return [t.kind for t in state.timeline]


def entries(state: CaseState, kind: str) -> list[Any]:
    return [t for t in state.timeline if t.kind == kind]


def ago(now: datetime, **kw: float) -> datetime:
    return now - timedelta(**kw)


async def accepted_updates(handle: WorkflowHandle[Any, Any]) -> int:
    """Updates the case accepted into its history (a refused one leaves no event)."""
    history = await handle.fetch_history()
    return sum(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
               for e in history.events)


HISTORIES = Path(__file__).parent / "histories"


async def record_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With RECORD_HISTORIES=1, save the case's event history for tests/test_replay.py
    (see tests/histories/README.md)."""
    if os.environ.get("RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json(), encoding="utf-8")
