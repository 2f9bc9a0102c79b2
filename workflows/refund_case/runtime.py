"""What every step of a case uses: the case state, the pinned policy, the timeline, status
changes, waits that show in the UI, emails, ops notices and search attributes.

One `CaseRuntime` per workflow run; the step modules are functions of it, so a step reads
as the playbook step and nothing else."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from activities.email_models import (
        EMAIL_DEADLINE,
        EMAIL_RETRY_POLICY,
        EMAIL_START_TO_CLOSE,
        NOTIFY_OPS,
        SEND_EMAIL,
        EmailInput,
        EmailSent,
        OpsNotice,
    )
    from activities.stripe_models import STRIPE_PAUSE, STRIPE_STEP_DEADLINE
    from core import search_attributes as sa
    from core.contract import (
        OPEN_STATUSES,
        QUEUE_MEMO,
        QUEUE_STATUSES,
        CaseState,
        CaseStatus,
        QueueCard,
        TimelineEntry,
        console_attribute_updates,
        queue_card_of,
        search_attributes_of,
    )
    from core.money import plain
    from policies.model import Policy

    from ..stripe_rate import Attempts
    from . import patches
    from .patches import AgentPaths

T = TypeVar("T")


# The state stays bounded whatever a customer sends: the timeline keeps its first entries
# and its latest ones (Temporal's event history keeps every signal and activity).
MAX_TIMELINE = 400
TIMELINE_HEAD = 40
# View at rest: a step's first attempt not picked up by a worker within this (a worker
# down, a backlog) shows the step in the view, and the step goes on with its retries.
FIRST_PICK_UP = timedelta(seconds=30)


# Lean view: attributes that wait for another change to be written with it (the pinned
# policy's version, known a moment before the status moves on).
WRITTEN_WITH_OTHERS = frozenset({sa.POLICY_VERSION.name})


class CaseClosed(Exception):
    """A withdraw or dispute signal closed the case while it waited for something else."""


class ContinueAsNewNow(Exception):
    """Temporal suggests a fresh history and the case waits for people: a safe point."""


class CaseRuntime:
    def __init__(self, case: CaseState, *, continued: bool = False) -> None:
        self.case = case
        self._policy: Policy | None = None
        self.may_continue = False  # cases started before continue-as-new never do
        self.paths = AgentPaths()  # decided first thing in run()
        self._queue_card: QueueCard | None = None  # the `queue` memo as last written
        # Lean view: an upsert is due at the end of the task's work; the memo of a run
        # that continued from another may hold a card of the queue.
        self._view_due = False
        self._card_queued = continued
        # View at rest: first attempts the main path waits on, and a write held meanwhile.
        self._first_attempts = 0
        self._view_held = False

    # --- the policy pinned for the case ---

    @property
    def policy(self) -> Policy:
        assert self._policy is not None, "the policy is loaded first"
        return self._policy

    def pin_policy(self, policy: Policy) -> None:
        self._policy = policy
        self.case.policy_version = policy.version

    # --- the timeline and the status ---

    def record(self, kind: str, message: str, /, *, actor: str = "system",
               at: datetime | None = None, **data: Any) -> None:
        """One timeline entry, at `at` (the intake's receipt time for "received") or now."""
        self.case.timeline.append(TimelineEntry(at=at or workflow.now(), actor=actor,
                                                kind=kind, message=message, data=data))
        if len(self.case.timeline) > MAX_TIMELINE:
            self._compact_timeline()

    def _compact_timeline(self) -> None:
        """Drop the oldest entries after the first TIMELINE_HEAD, leaving one marker."""
        timeline, progress = self.case.timeline, self.case.progress
        marked = progress.timeline_omitted > 0
        start = TIMELINE_HEAD + int(marked)
        drop = len(timeline) - MAX_TIMELINE + (0 if marked else 1)
        del timeline[start:start + drop]
        progress.timeline_omitted += drop
        marker = TimelineEntry(
            at=workflow.now(), actor="system", kind="timeline_compacted",
            message=f"{progress.timeline_omitted} older entries are not kept in the case's "
                    "state; Temporal's event history has every signal and activity",
            data={"omitted": progress.timeline_omitted})
        if marked:
            timeline[TIMELINE_HEAD] = marker
        else:
            timeline.insert(TIMELINE_HEAD, marker)

    def set_status(self, status: CaseStatus, why: str, *, actor: str = "system") -> None:
        if status == self.case.status:
            return
        old, self.case.status = self.case.status, status
        moved: dict[str, Any] = {"from": str(old), "to": str(status)}
        self.record("status", f"{old} → {status}: {why}", actor=actor, **moved)
        if not self.paths.queue_view:
            self.keep_search_attributes()
        self.show_waiting(self.case.waiting_for, self.case.deadline)  # writes them, once

    def keep_search_attributes(self) -> None:
        """Keep the ops view current; only changed values are written to history (the
        first write of a run writes them all, as cases always have). With the console's
        view, `RefundAssignee` and `RefundDeadline` go in the same one upsert, and the
        `queue` memo is written only when its card changed. With the lean view, all of it
        is written once, when the workflow task's work is done (`write_view`)."""
        if self.paths.lean_view:
            if not self._view_due:
                self._view_due = True
                asyncio.get_running_loop().call_soon(self.write_view)
            return
        updates = self._attribute_updates(
            everything=not self.case.progress.search_attributes_written)
        if updates:
            workflow.upsert_search_attributes(updates)
            self.case.progress.search_attributes_written = True
        if self.paths.queue_view:
            self.keep_queue_card()

    def _attribute_updates(self, *, everything: bool = False) -> list[SearchAttributeUpdate[Any]]:
        current = workflow.info().typed_search_attributes
        updates: list[SearchAttributeUpdate[Any]] = [
            pair.key.value_set(pair.value) for pair in search_attributes_of(self.case)
            if everything or current.get(pair.key) != pair.value]
        if self.paths.queue_view:
            # RefundDeadline is replaced, never unset: the queue selects by RefundStatus,
            # so a past deadline on a case that left it is never read (and the
            # time-skipping test server answers an unset Datetime with a value the SDK
            # cannot decode).
            updates += [u for u in console_attribute_updates(self.case, current)
                        if not (u.key.name == "RefundDeadline" and u.value is None)]
        return updates

    def write_view(self) -> None:
        """The lean view (patch `lean-ops-view`): run by the event loop after the
        workflow task's other work (and before the run ends), so a status that moves
        twice in one task is one upsert of what differs from the attributes in force (the
        starter's included). The `queue` memo is written while the case is in an agent's
        queue, and once as it leaves; the starter's card covers the rest (core.case_client),
        and the console reads the status of a case outside the queue from its attributes."""
        if not self._view_due:
            return
        self._view_due = False
        if self._holds_view():
            self._view_held = True
            return
        updates = self._attribute_updates()
        if any(u.key.name not in WRITTEN_WITH_OTHERS for u in updates):
            workflow.upsert_search_attributes(updates)
        card = queue_card_of(self.case)
        queued = card.status in QUEUE_STATUSES
        if card != self._queue_card and (queued or self._card_queued):
            workflow.upsert_memo({QUEUE_MEMO: card})
            self._queue_card, self._card_queued = card, queued

    def _holds_view(self) -> bool:
        """View at rest: while the case waits on the first attempt of a step's activity (a
        Stripe call, an email), the write waits for where the case comes to rest, or for
        that attempt to fail. Not when the case leaves an agent's queue (as its attributes
        in force say), so the agent who acted sees it go, nor when it closes, so a second
        request for the charge finds it closed and starts a case of its own."""
        if not (self.paths.view_at_rest and self._first_attempts):
            return False
        in_force = workflow.info().typed_search_attributes.get(sa.STATUS)
        return in_force not in QUEUE_STATUSES and self.case.status in OPEN_STATUSES

    async def first_alone(self, run: Attempts[T], policy: RetryPolicy,
                          deadline: timedelta | None) -> T:
        """A step's activity, its first attempt on its own (view at rest): a case passes
        through a step in a moment and its view is written where it rests; a first attempt
        that fails, or that no worker picks up within FIRST_PICK_UP, ends the pause, the
        view is written, and the step goes on at once with its usual retries within what
        is left of its deadline. A failure no retry can help, or the deadline passed, is
        raised as it was. So the view waits at most FIRST_PICK_UP plus the activity's
        start-to-close timeout."""
        if not self.paths.view_at_rest:
            return await run(policy, deadline, None)
        began = workflow.now()
        self._first_attempts += 1
        try:
            return await run(dataclasses.replace(policy, maximum_attempts=1), deadline,
                             FIRST_PICK_UP)
        except ActivityError as err:
            left = None if deadline is None else deadline - (workflow.now() - began)
            if not _retryable(err, policy) or (left is not None and left <= timedelta(0)):
                raise
        finally:
            self._first_attempts -= 1
            if self._view_held and not self._first_attempts:
                self._view_held = False
                self.keep_search_attributes()
        return await run(policy, left, None)

    def keep_queue_card(self) -> None:
        card = queue_card_of(self.case)
        if card != self._queue_card:
            workflow.upsert_memo({QUEUE_MEMO: card})
            self._queue_card = card

    def keep_assignee(self) -> None:
        """An assignment on a case of any age (the handler's own history): the one
        attribute it changes."""
        if self.paths.queue_view:
            self.keep_search_attributes()
            return
        updates = console_attribute_updates(self.case, workflow.info().typed_search_attributes)
        assignee = [u for u in updates if u.key.name == "RefundAssignee"]
        if assignee:
            workflow.upsert_search_attributes(assignee)

    # --- waiting ---

    def checkpoint(self) -> None:
        """Stop the step here if a signal closed the case meanwhile."""
        if self.case.progress.closing is not None:
            raise CaseClosed(self.case.progress.closing)

    async def wait(self, what: str, condition: Callable[[], bool],
                   timeout: timedelta | None, deadline: datetime | None = None, *,
                   may_continue: bool = False) -> bool:
        """Wait for `condition` (or a closing signal) up to `timeout`, showing in the UI
        what the case waits for. False on timeout; raises CaseClosed when closed, and
        ContinueAsNewNow (with the wait still shown) when `may_continue` and Temporal
        suggests a fresh history."""
        if deadline is None and timeout is not None:
            deadline = workflow.now() + timeout
        self.show_waiting(what, deadline)

        def fresh_history_due() -> bool:
            return (may_continue and self.may_continue
                    and workflow.info().is_continue_as_new_suggested()
                    and workflow.all_handlers_finished())

        try:
            await workflow.wait_condition(
                lambda: self.case.progress.closing is not None or condition()
                or fresh_history_due(), timeout=timeout, timeout_summary=what)
            met = True
        except TimeoutError:
            met = False
        if met and self.case.progress.closing is None and not condition():
            raise ContinueAsNewNow
        self.show_waiting(None, None)
        self.checkpoint()
        return met

    def show_waiting(self, what: str | None, deadline: datetime | None) -> None:
        self.case.waiting_for, self.case.deadline = what, deadline
        if self.paths.queue_view:
            self.keep_search_attributes()  # the queue's deadline and card
        if what is None:
            workflow.set_current_details(f"**{self.case.status}**")
            return
        until = f" until {iso(deadline)}" if deadline else ""
        workflow.set_current_details(f"**{self.case.status}**: waiting for {what}{until}")

    async def breach(self, sla_name: str, message: str) -> None:
        """An SLA missed: flagged (search attribute too), recorded, escalated once."""
        if sla_name in self.case.sla_breaches:
            return
        self.case.sla_breaches.append(sla_name)
        self.case.sla_breached = True
        self.record("sla_breached", message, sla=sla_name)
        self.keep_search_attributes()  # with the console's view: the escalated deadline
        await self.notify_ops("sla_breached", message, f"sla_{sla_name}")

    # --- email and ops ---

    def email_input(self, template: str, step: str, context: dict[str, Any]) -> EmailInput:
        return EmailInput.model_validate({
            "case_id": self.case.case_id, "template": template,
            "to": self.case.request.customer_email, "locale": self.case.request.locale,
            "timezone": self.case.request.timezone, "context": context, "step": step})

    def start_email(self, email: EmailInput, summary: str,
                    retry_policy: RetryPolicy = EMAIL_RETRY_POLICY,
                    deadline: timedelta | None = EMAIL_DEADLINE,
                    pick_up: timedelta | None = None) -> workflow.ActivityHandle[EmailSent]:
        return workflow.start_activity(
            SEND_EMAIL, email, result_type=EmailSent,
            start_to_close_timeout=EMAIL_START_TO_CLOSE, schedule_to_close_timeout=deadline,
            schedule_to_start_timeout=pick_up, retry_policy=retry_policy, summary=summary)

    async def email(self, template: str, step: str, context: dict[str, Any]) -> bool:
        email = self.email_input(template, step, context)
        summary = f"Email the customer: {template}"
        return await self.email_done(self.first_alone(
            lambda policy, deadline, pick_up: self.start_email(email, summary, policy,
                                                               deadline, pick_up),
            EMAIL_RETRY_POLICY, EMAIL_DEADLINE), email)

    async def email_done(self, handle: Awaitable[EmailSent], email: EmailInput) -> bool:
        """An email's outcome in the timeline; a failed email is escalated, not fatal."""
        try:
            sent = await handle
        except ActivityError as err:
            self.record("email_failed", f"The {email.template} email could not be sent: "
                        f"{cause(err)}", template=email.template)
            await self.notify_ops("email_failed", f"The {email.template} email to "
                                  f"{email.to} failed: {cause(err)}", f"email_{email.step}")
            return False
        self.record("email_sent", f"Sent {email.template} to {email.to} ({sent.backend})",
                    template=email.template, message_id=sent.message_id)
        return True

    async def notify_ops(self, kind: str, message: str, step: str) -> None:
        notice = OpsNotice(case_id=self.case.case_id, kind=kind, message=message, step=step)
        try:
            await workflow.execute_activity(
                NOTIFY_OPS, notice, result_type=EmailSent,
                start_to_close_timeout=EMAIL_START_TO_CLOSE,
                schedule_to_close_timeout=EMAIL_DEADLINE, retry_policy=EMAIL_RETRY_POLICY,
                summary=f"Tell ops: {kind}")
        except ActivityError as err:
            self.record("ops_notice_failed", f"Ops could not be told ({kind}): {cause(err)}")
            return
        self.record("ops_notified", message, kind=kind)

    # --- Stripe outages ---

    async def call_stripe(self, step: str, waiting: str,
                          call: Callable[[timedelta | None], Awaitable[T]]) -> T:
        """`call(deadline)` until Stripe answers: an outage past the step's deadline is
        waited out (never a refusal, never a decision on missing facts); a refusal, or
        any failure of a case started before this, is raised to the step."""
        waits = patches.has(patches.STRIPE_OUTAGE_WAITS)
        while True:
            self.show_waiting(waiting, None)
            try:
                result = await call(STRIPE_STEP_DEADLINE if waits else None)
            except ActivityError as err:
                self.show_waiting(None, None)
                if waits and not is_refusal(err):
                    await self.wait_for_stripe(step, err)
                    continue
                raise
            self.stripe_answered()
            self.show_waiting(None, None)
            return result

    async def wait_for_stripe(self, step: str, err: ActivityError) -> None:
        """Stripe did not answer within the step's deadline: say so (once per outage, to
        ops too), wait, and let the caller try again. An agent may ask for a retry now."""
        progress = self.case.progress
        since = progress.stripe_unreachable_since
        if since is None:
            since = progress.stripe_unreachable_since = workflow.now()
            message = (f"Stripe unreachable since {iso(since)} while {step}: {cause(err)}. "
                       "The case waits for Stripe and tries again; nothing is decided "
                       "without it")
            self.record("stripe_unreachable", message, actor="stripe", step=step)
            await self.notify_ops("stripe_unreachable", message,
                                  f"stripe_unreachable_{iso(since)}")
        progress.stripe_retry_requested = False
        await self.wait(f"Stripe (unreachable since {iso(since)}, {step}; last error: "
                        f"{cause(err)[:120]})", lambda: progress.stripe_retry_requested,
                        STRIPE_PAUSE)
        progress.stripe_retry_requested = False

    def stripe_answered(self) -> None:
        """After an outage, the timeline says when Stripe came back."""
        since = self.case.progress.stripe_unreachable_since
        if since is not None:
            self.case.progress.stripe_unreachable_since = None
            self.record("stripe_back", f"Stripe answers again (unreachable from {iso(since)})",
                        actor="stripe")

    # --- money ---

    def money(self, amount: int) -> str:
        return plain(amount, self.case.currency)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def cause(err: ActivityError) -> str:
    return str(err.cause) if err.cause is not None else str(err)


def _retryable(err: ActivityError, policy: RetryPolicy) -> bool:
    """Would `policy` have tried the failed activity again (a timeout, or an error of a
    type it retries)?"""
    c = err.cause
    if isinstance(c, ActivityTimeout):
        return True
    return isinstance(c, ApplicationError) and not (
        c.non_retryable or c.type in (policy.non_retryable_error_types or ()))


def is_refusal(err: ActivityError) -> bool:
    """Stripe (or the activity) said no for good; anything else is an outage to wait out."""
    c = err.cause
    return isinstance(c, ApplicationError) and c.non_retryable


def details(err: ActivityError) -> dict[str, Any]:
    """The details dict an activity's typed error carries, or {}."""
    c = err.cause
    if isinstance(c, ApplicationError) and c.details and isinstance(c.details[0], dict):
        return dict(c.details[0])
    return {}
