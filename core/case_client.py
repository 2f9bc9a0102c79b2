"""`CaseClient`: the one way to start a case and talk to it, shared by the API, the CLI,
the demo, the console and the tests. It knows the contract (names, id policies, initial
search attributes, how a refusal travels) so that none of its users has to."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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

from core.contract import (
    ACTION_REFUSED,
    TASK_QUEUE,
    WORKFLOW_TYPE,
    ActionResult,
    CaseResult,
    CaseState,
    ContinuedCase,
    CustomerReplySignal,
    Query,
    RefundRequest,
    Reopening,
    Signal,
    Update,
    case_id_for,
    search_attributes_of,
)
from core.customer_ref import customer_attribute

OPENED_BY = "opened_by"  # memo key: "agent:<id>" for a case an agent opened by hand
FOLLOWS = "follows"  # memo key: the closed case a follow-up case continues
REOPENED = "reopened"  # memo key of a reopened run: {"closed_as", "closed_at"}
MAX_FOLLOW_UP_DOCUMENTS = 20  # RefundRequest.documents' bound


@dataclass(frozen=True)
class ReplyTaken:
    """Where a customer's reply went: the open case, the closed case reopened (a new run
    of the same id), or a new case linked to the closed one (past the reopen window)."""

    case_id: str
    how: Literal["delivered", "reopened", "follow_up_opened"]


@dataclass(frozen=True)
class Started:
    """The outcome of a start: `started` is False when the request id was seen before."""

    case_id: str
    started: bool
    handle: WorkflowHandle[Any, Any] | None = None  # the new run's handle, when started


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
        attributes = search_attributes_of(CaseState(case_id=case_id, request=request))
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
                memo={**(memo or {}), **({OPENED_BY: opened_by} if opened_by else {})}
                or None,
                priority=priority or Priority.default,
                rpc_timeout=self.rpc_timeout,
            )
        except WorkflowAlreadyStartedError:
            return Started(case_id, started=False)
        return Started(case_id, started=True, handle=handle)

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

    async def reply(self, case_id: str, reply: CustomerReplySignal, *,
                    reopen_window: Callable[[CaseState], timedelta],
                    now: datetime | None = None) -> ReplyTaken:
        """The customer's reply reaches a case whatever happened to it: the open case
        takes it; a case that completed less than `reopen_window(state)` ago is reopened
        with it; later (or a case ended otherwise, e.g. terminated), a new case linked to
        it opens. CaseNotFound when there is no such case; transport errors are raised
        (the caller answers so that the sender retries)."""
        try:
            await self.signal(case_id, Signal.customer_reply, reply)
            return ReplyTaken(case_id, "delivered")
        except CaseIsClosed:
            pass
        desc = await self.handle(case_id).describe(rpc_timeout=self.rpc_timeout)
        state = await self.state(case_id)
        closed_at = desc.close_time
        completed = desc.status == WorkflowExecutionStatus.COMPLETED
        if completed and (closed_at is None
                          or (now or datetime.now(UTC)) - closed_at <= reopen_window(state)):
            await self.reopen(state, reply, closed_at)
            return ReplyTaken(case_id, "reopened")
        # Past the window, or a case that ended otherwise (terminated): a new linked case.
        started = await self.open_follow_up(state, reply)
        return ReplyTaken(started.case_id, "follow_up_opened")

    async def reopen(self, state: CaseState, reply: CustomerReplySignal,
                     closed_at: datetime | None) -> None:
        """A new run of the closed case (same id) carrying its state; the reply arrives as
        the start's signal. Signal-with-start: when another reply reopened it first, this
        one is only signalled to the running case."""
        reopening = Reopening(closed_status=state.status, closed_at=closed_at)
        attributes = search_attributes_of(state)
        if self.customer_ref_key:
            attributes.append(customer_attribute(state.request.customer_email,
                                                 self.customer_ref_key))
        await self.client.start_workflow(
            WORKFLOW_TYPE, ContinuedCase(state=state, reopen=reopening), id=state.case_id,
            task_queue=self.task_queue, result_type=CaseResult,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            start_signal=Signal.customer_reply, start_signal_args=[reply],
            search_attributes=TypedSearchAttributes(attributes),
            memo={REOPENED: reopening.model_dump(mode="json")},
            rpc_timeout=self.rpc_timeout)

    async def open_follow_up(self, state: CaseState, reply: CustomerReplySignal) -> Started:
        """A new case for the same purchase that follows the closed one (RefundRequest
        .follows, memo `follows`): the reply is its message, its files its documents.
        Its id is derived from the reply, so a redelivered mail opens it once."""
        old = state.request
        digest = hashlib.sha256("\n".join([reply.text, *reply.attachments]).encode()
                                ).hexdigest()[:10]
        request = old.model_copy(update={
            "request_id": f"{old.request_id[:110]}.r{state.progress.reopened + 1}-{digest}",
            "message": reply.text[:10_000],
            "documents": reply.attachments[:MAX_FOLLOW_UP_DOCUMENTS],
            "follows": state.case_id, "incident": None})
        return await self.start(RefundRequest.model_validate(request.model_dump()),
                                memo={FOLLOWS: state.case_id})

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
