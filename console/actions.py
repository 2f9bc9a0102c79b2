"""Agents' actions from the console: which fit a case (its state, the agent's role, the
workflow's handlers), how a form becomes the action's message, and one route that runs any
of them as a workflow update through CaseClient. The case decides: a refusal is shown
with the case's own reason and changes nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData
from temporalio.client import WorkflowQueryFailedError, WorkflowUpdateRPCTimeoutOrCancelledError

from api import agents
from api.deps import get_cases
from api.logging import annotate
from api.temporal import temporal_call
from console import web
from console.auth import Actor, CheckedForm, ConsoleUser, safe_next
from console.session import flash
from core.case_client import ActionRefused, CaseIsClosed, CaseNotFound
from core.contract import (
    CASE_ID,
    TERMINAL_STATUSES,
    ApproveSignal,
    AssignSignal,
    CaseState,
    CaseStatus,
    CloseCaseSignal,
    DenySignal,
    NoteSignal,
    RequestInfoSignal,
    RetryRefundSignal,
    SatisfyRequirementSignal,
    Update,
)
from core.money import from_decimal

router = APIRouter(prefix="/console")

_AGENT_WAITS = frozenset({CaseStatus.awaiting_agent, CaseStatus.awaiting_info})


@dataclass(frozen=True)
class ActionSpec:
    name: str  # the URL segment and the form's name
    update: Update
    title: str
    statuses: frozenset[CaseStatus] | None  # None: any status of an open case


SPECS: dict[str, ActionSpec] = {spec.name: spec for spec in (
    ActionSpec("approve", Update.approve, "Approve", _AGENT_WAITS),
    ActionSpec("deny", Update.deny, "Deny", _AGENT_WAITS),
    ActionSpec("ask", Update.request_info, "Ask the customer", _AGENT_WAITS),
    ActionSpec("satisfy", Update.satisfy_requirement, "Mark a requirement satisfied",
               _AGENT_WAITS),
    ActionSpec("retry", Update.retry_refund, "Retry the refund",
               frozenset({CaseStatus.refund_failed})),
    ActionSpec("close", Update.close, "Close the case", frozenset({CaseStatus.refund_failed})),
    ActionSpec("note", Update.note, "Add a note", None),
    ActionSpec("assign", Update.assign, "Assign", None),
)}


@dataclass(frozen=True)
class Offer:
    spec: ActionSpec
    available: bool
    why_not: str = ""


def offers(state: CaseState, user: ConsoleUser, handlers: frozenset[str] | None, *,
           running: bool = True) -> dict[str, Offer]:
    """The actions that fit the case for this user. An action the workflow does not
    handle is offered as not available (with why); `handlers` None: not known (no worker
    answered), so the case itself will answer."""
    if not user.can_act or not running:
        return {}
    out: dict[str, Offer] = {}
    for spec in SPECS.values():
        fits = state.status not in TERMINAL_STATUSES if spec.statuses is None \
            else state.status in spec.statuses
        if not fits:
            continue
        if handlers is not None and spec.update.value not in handlers:
            out[spec.name] = Offer(spec, False, f"not available yet: this case's workflow "
                                                f"does not handle {spec.update.value}")
        else:
            out[spec.name] = Offer(spec, True)
    return out


class FormError(ValueError):
    """The form cannot become an action; nothing was sent to the case."""


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def parse_amount(text: str, currency: str) -> int:
    """'12.50' in USD -> 1250; refuses what is not a positive amount in the currency."""
    try:
        value = Decimal(text.replace(",", "").replace(" ", ""))
        amount = from_decimal(value, currency)
    except InvalidOperation:
        raise FormError(f"{text!r} is not an amount") from None
    except ValueError as exc:
        raise FormError(str(exc)) from None
    if amount <= 0:
        raise FormError("the amount must be above zero")
    return amount


def message_for(spec: ActionSpec, form: FormData, user: ConsoleUser, state: CaseState
                ) -> BaseModel:
    """The action's message from the form, or FormError saying what to fix."""
    agent = user.agent
    try:
        if spec.name == "approve":
            amount = None
            if _text(form, "mode") == "part":
                amount = parse_amount(_text(form, "amount"), state.currency)
            return ApproveSignal(agent=agent, amount=amount, note=_text(form, "note"))
        if spec.name == "deny":
            return DenySignal(agent=agent, clause_id=_text(form, "clause_id"),
                              alternative=_text(form, "alternative") or None,
                              note=_text(form, "note"))
        if spec.name == "ask":
            questions = [q.strip() for q in _text(form, "questions").splitlines() if q.strip()]
            return RequestInfoSignal(agent=agent, questions=questions)
        if spec.name == "satisfy":
            return SatisfyRequirementSignal(agent=agent, requirement=_text(form, "requirement"),
                                            note=_text(form, "note"))
        if spec.name == "retry":
            return RetryRefundSignal(agent=agent, note=_text(form, "note"))
        if spec.name == "close":
            return CloseCaseSignal(agent=agent, reason=_text(form, "reason"))
        if spec.name == "note":
            return NoteSignal(agent=agent, text=_text(form, "text"))
        return _assignment(form, user, state)
    except ValidationError as exc:
        raise FormError("; ".join(_field_error(e) for e in exc.errors())) from None


def _assignment(form: FormData, user: ConsoleUser, state: CaseState) -> AssignSignal:
    """Agents claim an unassigned case or release their own; a lead assigns to anyone."""
    target = _text(form, "assignee")
    assignee = user.agent if target == "me" else (target or None)
    if not user.is_lead:
        if assignee not in (None, user.agent):
            raise FormError("only a lead can give a case to someone else")
        holder = state.assignee
        if holder not in (None, user.agent):
            raise FormError(f"{holder} holds this case: ask them or a lead to reassign it")
    return AssignSignal(agent=user.agent, assignee=assignee, note=_text(form, "note"))


_FIELD_NAMES = {"questions": "questions (one a line, 1 to 10)", "clause_id": "the clause",
                "text": "the note", "reason": "the reason", "note": "the note",
                "requirement": "the requirement", "assignee": "the agent id"}


def _field_error(error: object) -> str:
    if not isinstance(error, dict):
        return str(error)
    where = str(error.get("loc", ("",))[-1])
    return f"{_FIELD_NAMES.get(where, where)}: {str(error.get('msg', '')).lower()}"


async def run(request: Request, case_id: str, spec: ActionSpec, message: BaseModel) -> None:
    """Run the action as an update; the outcome becomes the message the agent sees."""
    annotate(request, case_id=case_id, action=spec.update.value)
    cases = await get_cases(request)
    try:
        async with asyncio.timeout(agents.UPDATE_TIMEOUT_SECONDS
                                   + agents.UPDATE_BACKSTOP_SECONDS):
            async with temporal_call(spec.update.value):
                result = await cases.act(
                    case_id, spec.update, message,
                    rpc_timeout=timedelta(seconds=agents.UPDATE_TIMEOUT_SECONDS))
    except ActionRefused as refused:
        annotate(request, outcome=f"refused:{refused.code}")
        if "expected but not found" in refused.reason:
            flash(request, "error", f"{spec.title}: not available yet (this case's workflow "
                                    f"does not handle {spec.update.value})")
        else:
            flash(request, "error", f"{spec.title} refused: {refused.reason}")
        return
    except CaseIsClosed:
        flash(request, "error", f"{spec.title} refused: the case is closed")
        return
    except (WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from None
        annotate(request, outcome="case_slow")
        flash(request, "error", f"{spec.title}: the case did not answer in time (is the "
                                "worker running?); it may still apply it: reload before "
                                "trying again")
        return
    annotate(request, outcome="accepted")
    flash(request, "ok", result.message)


@router.post("/cases/{case_id}/{action}", include_in_schema=False)
async def act(request: Request, case_id: str, action: str, user: Actor,
              form: CheckedForm) -> Response:
    spec = SPECS.get(action)
    if spec is None or not CASE_ID.match(case_id):
        return web.error_page(request, 404, "Not found", "No such case or action.")
    back = safe_next(_text(form, "next") or f"/console/cases/{case_id}")
    cases = await get_cases(request)
    try:
        async with temporal_call("query case state"):
            state = await cases.state(case_id)
    except CaseNotFound:
        return web.error_page(request, 404, "Not found", f"There is no case {case_id}.")
    except WorkflowQueryFailedError as exc:
        return web.error_page(request, 502, "The case could not answer", str(exc))
    try:
        message = message_for(spec, form, user, state)
    except FormError as exc:
        flash(request, "error", f"{spec.title}: {exc}")
        return web.redirect(request, back)
    await run(request, case_id, spec, message)
    return web.redirect(request, back)
