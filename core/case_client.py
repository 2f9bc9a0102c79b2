"""`CaseClient`: the one way to start a case and talk to it, shared by the API, the CLI,
the demo, the console and the tests. It knows the contract (names, id policies, initial
search attributes, how a refusal travels) so that none of its users has to."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    Priority,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core import search_attributes as sa
from core.contract import (
    ACTION_REFUSED,
    FOLLOWS_MEMO,
    QUEUE_MEMO,
    REOPENED_MEMO,
    TASK_QUEUE,
    WORKFLOW_TYPE,
    ActionResult,
    CaseResult,
    CaseState,
    ContinuedCase,
    CustomerReplySignal,
    FollowedCase,
    Query,
    RefundRequest,
    Reopening,
    Signal,
    Update,
    case_id_for,
    queue_card_of,
    search_attributes_of,
)
from core.customer_ref import (
    customer_attribute,
    customer_ref,
    is_customer_ref,
    normalize_email,
)
from policies import library
from policies.model import ReplyRules

MAX_FOLLOW_UP_DOCUMENTS = 20  # RefundRequest.documents' bound
MAX_FOLLOW_UP_MESSAGE = 10_000  # RefundRequest.message's bound
MAX_OPEN_CASES_READ = 20  # a charge has one open case; older data may hold a few
OPENED_BY = "opened_by"  # memo key: "agent:<id>" for a case an agent opened by hand


@dataclass(frozen=True)
class Started:
    """The outcome of a start: `started` is False when the request id was seen before."""

    case_id: str
    started: bool
    handle: WorkflowHandle[Any, Any] | None = None  # the new run's handle, when started
    joined: bool = False  # the request joined `case_id`, the open case on its charge


@dataclass(frozen=True)
class ReplyTaken:
    """Where a customer's reply went: the running case, the closed case reopened (a new
    run of the same id), or a new case linked to the closed one (past the window)."""

    case_id: str
    how: Literal["delivered", "reopened", "follow_up"]
    handle: WorkflowHandle[Any, Any] | None = field(default=None, compare=False)
    # the run this reply started (reopened, or the new case), for callers that await it


class OpenCaseOnCharge(Exception):
    """The charge already has an open case that this request cannot join (another
    customer's address): nothing was started; the message names the open case."""

    def __init__(self, case_id: str, reason: str) -> None:
        super().__init__(f"{reason}: the charge already has the open case {case_id}")
        self.case_id, self.reason = case_id, reason


@dataclass
class CaseStates:
    """The states read for a visibility query, and the cases that could not answer."""

    states: list[CaseState] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (case id, why)


class CaseNotFound(Exception):
    """No case with this id."""


class CaseIsClosed(Exception):
    """The case has closed: it takes no more actions."""


class ActionRefused(Exception):
    """The case refused an agent's action, with its own reason (nothing was changed)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def case_id(value: str) -> str:
    """A case id from a case id or a request id."""
    return value if value.startswith("refund-") else case_id_for(value)


def _literal(value: str) -> str:
    """A visibility-query string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def open_cases_query(charges: Iterable[str], customers: Iterable[str] = ()) -> str:
    """The one visibility query for running cases on these charges (RefundChargeId: a
    charge, payment intent or purchase ref) or of these customers (RefundCustomer refs):
    the intake's one-case-per-charge check, Stripe's webhooks and billing incidents."""
    def one_of(name: str, values: list[str]) -> str:
        if len(values) == 1:
            return f"{name} = {_literal(values[0])}"
        return f"{name} IN ({', '.join(map(_literal, values))})"

    ids, refs = sorted(set(charges)), sorted(set(customers))
    clauses = [one_of(sa.CHARGE_ID.name, ids)] if ids else []
    if refs:
        clauses.append(one_of(sa.CUSTOMER.name, refs))
    if not clauses:
        raise ValueError("no charge or customer to look for")
    where = clauses[0] if len(clauses) == 1 else f"({' OR '.join(clauses)})"
    return f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' AND {where}"


def policy_reopen_window(policy_file: Path) -> Callable[[CaseState], timedelta]:
    """How long after closing a reply reopens a case: its pinned policy's
    `replies.reopen_within_days` (the model's default when that policy is not held here:
    policies are read from `policy_file`'s folder, as the worker does)."""
    def window(state: CaseState) -> timedelta:
        library.hold_folder(policy_file.parent)
        policy = None
        if state.policy_version and state.policy_sha256:
            with contextlib.suppress(library.UnknownPolicy):
                policy = library.resolve(library.PolicyRef(
                    version=state.policy_version, sha256=state.policy_sha256))
        policy = policy or library.by_version(state.policy_version or "")
        return (policy.reply_rules if policy else ReplyRules()).reopen_window
    return window


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND


class CaseClient:
    def __init__(self, client: Client, *, task_queue: str = TASK_QUEUE,
                 rpc_timeout: timedelta | None = None,
                 customer_ref_key: str | None = None) -> None:
        """`customer_ref_key` (CUSTOMER_REF_KEY) makes started cases findable by customer
        (`RefundCustomer`); only starting a case needs it."""
        self.client = client
        self.task_queue = task_queue
        self.rpc_timeout = rpc_timeout
        self.customer_ref_key = customer_ref_key

    def handle(self, case_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(case_id)

    async def start(self, request: RefundRequest, *, opened_by: str | None = None,
                    priority: Priority | None = None,
                    memo: dict[str, Any] | None = None) -> Started:
        """Start the case; nothing is started when this request id was seen before, even
        once its case closed (a new run would email and assess the customer again).
        `priority`: a billing incident's cases go after ordinary ones."""
        case_id = request.case_id
        case = CaseState(case_id=case_id, request=request)
        attributes = search_attributes_of(case)
        if self.customer_ref_key:
            attributes.append(customer_attribute(request.customer_email,
                                                 self.customer_ref_key))
        try:
            handle = await self.client.start_workflow(
                WORKFLOW_TYPE, request, id=case_id, task_queue=self.task_queue,
                result_type=CaseResult,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                search_attributes=TypedSearchAttributes(attributes),
                # The queue's card from the start: a case writes it again only while in
                # an agent's queue (workflows/refund_case/runtime.py, lean view).
                memo={QUEUE_MEMO: queue_card_of(case), **(memo or {}),
                      **({OPENED_BY: opened_by} if opened_by else {})},
                priority=priority or Priority.default,
                rpc_timeout=self.rpc_timeout,
            )
        except WorkflowAlreadyStartedError:
            return Started(case_id, started=False)
        return Started(case_id, started=True, handle=handle)

    async def open(self, request: RefundRequest, *, opened_by: str | None = None,
                   channel: Literal["api", "cli", "email"] = "api",
                   memo: dict[str, Any] | None = None) -> Started:
        """One open case per charge: a request for a charge that has an open case joins
        it as the customer's reply (`Started.joined`; its request id makes a redelivery
        count once), or raises OpenCaseOnCharge when it cannot (another customer's
        address); otherwise the case starts (`start`). A case that closes between the
        look-up and the signal is not joined: the request starts its own case."""
        if await self._exists(request.case_id):
            return Started(request.case_id, started=False)  # a redelivery: its own case
        found = await self.open_case_on(request)
        if found is not None:
            open_case, customer = found
            if not await self._same_customer(open_case, customer, request.customer_email):
                raise OpenCaseOnCharge(open_case, "another customer's request for this "
                                                  "charge cannot join its case")
            reply = CustomerReplySignal(
                text=request.message or f"(a second request: {request.reason.value})",
                from_email=request.customer_email, attachments=request.documents,
                channel=channel, request_id=request.request_id)
            try:
                await self.signal(open_case, Signal.customer_reply, reply)
                return Started(open_case, started=False, joined=True)
            except (CaseIsClosed, CaseNotFound):
                pass  # it closed meanwhile: this request gets its own case
        return await self.start(request, opened_by=opened_by, memo=memo)

    async def reply(self, case_id: str, reply: CustomerReplySignal, *,
                    reopen_window: Callable[[CaseState], timedelta],
                    now: datetime | None = None) -> ReplyTaken:
        """The customer's reply reaches a case whatever happened to it: the running case
        takes it; a case that completed less than `reopen_window(state)` ago runs again
        with it (a new run of the same id); later, or a case that did not end normally
        (terminated), a new case linked to it takes it. A reply whose `message_id` a case
        took already is taken once (a redelivered mail). CaseNotFound: no such case;
        transport errors are raised (the webhook answers 503, the sender retries)."""
        for _ in range(3):  # again when another reply reopened the case meanwhile
            try:
                await self.signal(case_id, Signal.customer_reply, reply)
                return ReplyTaken(case_id, "delivered")
            except CaseIsClosed:
                pass
            desc = await self.handle(case_id).describe(rpc_timeout=self.rpc_timeout)
            if desc.status == WorkflowExecutionStatus.RUNNING:
                continue
            state = await self.state(case_id)  # the closed run's last state
            if reply.message_id and reply.message_id in state.progress.reply_ids:
                return ReplyTaken(case_id, "delivered")  # the case took it already
            closed_at = desc.close_time
            within = closed_at is None or (now or datetime.now(UTC)) - closed_at \
                <= reopen_window(state)
            # The new run, or the new case, runs where the closed one ran.
            cases = CaseClient(self.client, task_queue=desc.task_queue,
                               rpc_timeout=self.rpc_timeout,
                               customer_ref_key=self.customer_ref_key)
            if desc.status != WorkflowExecutionStatus.COMPLETED or not within:
                return await cases.open_follow_up(state, reply)
            reopening = Reopening(closed_status=state.status, closed_at=closed_at,
                                  closed_run_id=desc.run_id, reply=reply)
            try:
                handle = await cases._reopen(state, reopening)
            except WorkflowAlreadyStartedError:
                continue  # another reply reopened it first: this one is signalled to it
            return ReplyTaken(case_id, "reopened", handle)
        raise CaseIsClosed(case_id)  # reopened and closed again three times meanwhile

    async def _reopen(self, state: CaseState, reopening: Reopening
                      ) -> WorkflowHandle[Any, Any]:
        """A new run of the closed case (same id) carrying its state and the reply. Only
        when no run is open (conflict policy FAIL): two replies reopen it once."""
        attributes = search_attributes_of(state)
        if self.customer_ref_key:
            attributes.append(customer_attribute(state.request.customer_email,
                                                 self.customer_ref_key))
        return await self.client.start_workflow(
            WORKFLOW_TYPE, ContinuedCase(state=state, reopen=reopening), id=state.case_id,
            task_queue=self.task_queue, result_type=CaseResult,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes(attributes),
            memo={REOPENED_MEMO: reopening.model_dump(mode="json", exclude={"reply"})},
            rpc_timeout=self.rpc_timeout)

    async def open_follow_up(self, state: CaseState, reply: CustomerReplySignal
                             ) -> ReplyTaken:
        """A new case for the same purchase, linked to the closed one (memo `follows`,
        a `follows` entry in its timeline): the reply is its message, its files its
        documents. Its request id is the closed one's + `.f-` + a digest of the reply's
        message id (or content), so a redelivered mail opens it once and ops find every
        follow-up of a case with `WorkflowId STARTS_WITH 'refund-<request id>.f-'`. When
        the charge has another open case, the reply joins that case instead (`open`)."""
        old = state.request
        key = reply.message_id or "\n".join([reply.text, *reply.attachments])
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        request = RefundRequest.model_validate(old.model_dump() | {
            "request_id": f"{old.request_id[:100]}.f-{digest}",
            "message": reply.text[:MAX_FOLLOW_UP_MESSAGE] or old.message,
            "documents": reply.attachments[:MAX_FOLLOW_UP_DOCUMENTS],
            "received_at": datetime.now(UTC), "incident": None})
        follows = FollowedCase(case_id=state.case_id, closed_status=state.status)
        started = await self.open(request, channel="email",
                                  memo={FOLLOWS_MEMO: follows.model_dump(mode="json")})
        return ReplyTaken(started.case_id, "delivered" if started.joined else "follow_up",
                          started.handle)

    async def open_case_on(self, request: RefundRequest) -> tuple[str, str | None] | None:
        """The oldest running case on the request's charge or payment intent, with its
        RefundCustomer (visibility: eventually consistent, see the README's one case per
        charge)."""
        ids = [i for i in (request.charge_id, request.payment_intent_id) if i]
        found = [(wf.start_time, wf.id, wf.typed_search_attributes.get(sa.CUSTOMER))
                 async for wf in self.client.list_workflows(
                     open_cases_query(ids), limit=MAX_OPEN_CASES_READ,
                     rpc_timeout=self.rpc_timeout)
                 if wf.id != request.case_id]
        if not found:
            return None
        _, case_id, customer = min(found, key=lambda f: (f[0], f[1]))
        return case_id, customer

    async def _same_customer(self, case_id: str, customer: str | None, email: str) -> bool:
        """Whether `email` is the open case's customer: by its RefundCustomer (a keyed
        hash, or the address on cases started before), else by asking the case."""
        if customer and is_customer_ref(customer) and self.customer_ref_key:
            return customer == customer_ref(email, self.customer_ref_key)
        if customer and not is_customer_ref(customer):
            return customer == normalize_email(email)
        state = await self.state(case_id)
        known = (state.request.customer_email,
                 state.facts.customer_email if state.facts else None)
        return normalize_email(email) in {normalize_email(e) for e in known if e}

    async def _exists(self, case_id: str) -> bool:
        try:
            await self.handle(case_id).describe(rpc_timeout=self.rpc_timeout)
        except RPCError as exc:
            if is_not_found(exc):
                return False
            raise
        return True

    async def state(self, case_id: str) -> CaseState:
        try:
            state: CaseState = await self.handle(case_id).query(
                Query.state, result_type=CaseState, rpc_timeout=self.rpc_timeout)
            return state
        except RPCError as exc:
            if is_not_found(exc):
                raise CaseNotFound(case_id) from None
            raise

    async def state_json(self, case_id: str) -> Any:
        """The state as the workflow sent it (plain JSON), for callers that only pass it on."""
        try:
            return await self.handle(case_id).query(Query.state, rpc_timeout=self.rpc_timeout)
        except RPCError as exc:
            if is_not_found(exc):
                raise CaseNotFound(case_id) from None
            raise

    async def states(self, query: str, *, limit: int | None = None,
                     concurrency: int = 8) -> CaseStates:
        """The state of every case a visibility query finds (every page, or the first
        `limit`), a few queries at a time; a case that cannot answer (no worker for it, a
        failing query) is skipped with why, not fatal."""
        ids = [wf.id async for wf in self.client.list_workflows(
            query, limit=limit, rpc_timeout=self.rpc_timeout)]
        gate = asyncio.Semaphore(concurrency)
        out = CaseStates()

        async def one(case_id: str) -> CaseState | None:
            async with gate:
                try:
                    return await self.state(case_id)
                except Exception as exc:  # one case's failure must not hide the others
                    out.skipped.append((case_id, str(exc) or type(exc).__name__))
                    return None

        found = await asyncio.gather(*(one(i) for i in dict.fromkeys(ids)))
        out.states = [state for state in found if state is not None]
        return out

    async def act(self, case_id: str, update: Update, action: BaseModel, *,
                  rpc_timeout: timedelta | None = None) -> ActionResult:
        """An agent's action as an update: the result, or ActionRefused with the case's
        reason, CaseIsClosed, CaseNotFound."""
        try:
            result: ActionResult = await self.handle(case_id).execute_update(
                update, action, result_type=ActionResult,
                rpc_timeout=rpc_timeout or self.rpc_timeout)
            return result
        except WorkflowUpdateFailedError as exc:
            raise refusal_of(exc) from None
        except RPCError as exc:
            if not is_not_found(exc):
                raise
            await self._raise_missing_or_closed(case_id)
            raise

    async def signal(self, case_id: str, signal: Signal, message: BaseModel) -> None:
        """A message the case records whatever it decides (refusals land in its timeline)."""
        try:
            await self.handle(case_id).signal(signal, message, rpc_timeout=self.rpc_timeout)
        except RPCError as exc:
            if not is_not_found(exc):
                raise
            await self._raise_missing_or_closed(case_id)
            raise

    async def _raise_missing_or_closed(self, case_id: str) -> None:
        try:
            desc = await self.handle(case_id).describe(rpc_timeout=self.rpc_timeout)
        except RPCError as exc:
            if is_not_found(exc):
                raise CaseNotFound(case_id) from None
            raise
        if desc.status != WorkflowExecutionStatus.RUNNING:
            raise CaseIsClosed(case_id)
        raise CaseNotFound(case_id)


def refusal_of(exc: WorkflowUpdateFailedError) -> ActionRefused:
    """The case's refusal carried by a failed update (validator or handler)."""
    cause = exc.cause
    code, reason = "invalid", str(cause or exc)
    if isinstance(cause, ApplicationError):
        reason = cause.message
        detail = cause.details[0] if cause.details else None
        if cause.type == ACTION_REFUSED and isinstance(detail, dict):
            code = str(detail.get("code") or "invalid")
            reason = str(detail.get("reason") or reason)
    return ActionRefused(code, reason)
