"""The case page: everything an agent needs to decide, on one page. The request and the
customer's messages; the Stripe facts and the findings; the risk and its reasons; the
policy's decision with the text of each clause it cites, in the version the case pinned;
approvals so far; the timeline; every email sent, as the customer saw it; and the actions
that fit the case's state."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from temporalio.client import WorkflowQueryFailedError

from activities.email_render import RenderError
from api.deps import get_cases, get_client
from api.logging import annotate
from api.temporal import temporal_call
from console import web
from console.actions import offers
from console.auth import ConsoleUser, User
from console.email_view import SafeEmail, safe_email, style_hashes
from console.handlers import KnownHandlers, update_handlers
from core.case_client import CaseNotFound
from core.case_history import CaseHistory, PinnedPolicies, SentEmail, read_history
from core.contract import CASE_ID, TERMINAL_STATUSES, CaseState
from core.money import refund_step, to_decimal
from policies.model import Policy

router = APIRouter(prefix="/console")


@dataclass
class ClauseText:
    id: str
    title: str
    text: str


@dataclass
class Requirement:
    kind: str
    question: str
    satisfied: bool


@dataclass
class EmailView:
    event_id: int
    template: str
    subject: str
    text: str
    sent: SentEmail
    error: str | None = None
    body: SafeEmail | None = None  # the HTML part, sanitized for the page


def clause_texts(policy: Policy | None, ids: list[str]) -> list[ClauseText]:
    out = []
    for clause_id in ids:
        if policy is not None and policy.has_clause(clause_id):
            clause = policy.clause(clause_id)
            out.append(ClauseText(clause.id, clause.title, clause.text))
        else:
            out.append(ClauseText(clause_id, "", "(the text of this clause is not available)"))
    return out


def denial_choices(policy: Policy | None, state: CaseState) -> list[ClauseText]:
    """The clauses an agent may cite to deny: only those the facts fit (the decision's
    `citable_clause_ids`), the ones the decision cites first. A decision made before the
    policy said which fit offers every clause. (The case refuses a clause that does not
    fit, with why.)"""
    if policy is None:
        return []
    decision = state.decision
    cited = decision.clause_ids if decision else []
    citable = set(decision.citable_clause_ids) if decision and decision.citable_clause_ids \
        else {c.id for c in policy.clauses}
    first = [c for c in clause_texts(policy, cited) if c.title and c.id in citable]
    rest = [ClauseText(c.id, c.title, c.text) for c in policy.clauses
            if c.id not in cited and c.id in citable]
    return first + rest


def requirements(policy: Policy | None, state: CaseState) -> list[Requirement]:
    """The documents the policy asks for this reason, and whether the case has them."""
    if policy is None or state.request.reason not in policy.reasons:
        return []
    out = []
    for kind in policy.reasons[state.request.reason].documents:
        need = policy.documents[kind]
        out.append(Requirement(kind, need.question, need.satisfied_by(kind, state.documents)))
    return out


def email_views(history: CaseHistory) -> list[EmailView]:
    views = []
    for sent in history.emails:
        try:
            rendered = sent.email.render()
            views.append(EmailView(sent.event_id, sent.email.template, rendered.subject,
                                   rendered.text, sent, body=safe_email(rendered.html)))
        except RenderError as exc:
            views.append(EmailView(sent.event_id, sent.email.template, "", "", sent, str(exc)))
    return views


def approve_defaults(state: CaseState) -> dict[str, Any]:
    """What the approve form proposes: the first approval's amount, else the policy's,
    else all that is refundable (in major units, as agents write amounts)."""
    currency = state.currency
    proposed = state.refundable
    if state.approvals:
        proposed = state.approvals[0].amount
    elif state.decision is not None and state.decision.amount > 0:
        proposed = min(state.decision.amount, state.refundable)
    return {"amount": to_decimal(proposed, currency), "proposed": proposed,
            "refundable": state.refundable, "currency": currency,
            "step": to_decimal(refund_step(currency), currency)}


async def _pinned(request: Request, state: CaseState, history: CaseHistory) -> Policy | None:
    book: PinnedPolicies = request.app.state.console_policies
    if history.pinned_policy is not None:
        book.remember(history.pinned_policy)
        return history.pinned_policy
    if state.policy_version is None:
        return None
    return await book.get(await get_client(request), state.policy_version, state.case_id)


@router.get("/cases/{case_id}", include_in_schema=False)
async def case_page(request: Request, case_id: str, user: User) -> Response:
    if not CASE_ID.match(case_id):
        return web.error_page(request, 404, "Not found", f"There is no case {case_id!r}.")
    annotate(request, case_id=case_id)
    cases = await get_cases(request)
    client = await get_client(request)
    try:
        async with temporal_call("read the case"):
            state, history, handlers = await asyncio.gather(
                cases.state(case_id), read_history(client, case_id),
                update_handlers(cases, case_id))
    except CaseNotFound:
        return web.error_page(request, 404, "Not found", f"There is no case {case_id}.")
    except WorkflowQueryFailedError as exc:
        return web.error_page(request, 502, "The case could not answer",
                              f"{case_id} could not answer its state query: {exc}")
    known: KnownHandlers = request.app.state.console_handlers
    known.learn(handlers)
    policy = await _pinned(request, state, history)
    emails = email_views(history)
    styles = set().union(*(e.body.styles for e in emails if e.body is not None))
    return web.page(request, "case.html", {
        "case": state, "policy": policy, "closed": state.status in TERMINAL_STATUSES,
        "cited": clause_texts(policy, state.decision.clause_ids if state.decision else []),
        "denied_clause": clause_texts(policy, [state.denial.clause_id])[0]
        if state.denial else None,
        "choices": denial_choices(policy, state),
        "alternatives": policy.alternatives if policy else [],
        "requirements": requirements(policy, state),
        "offers": offers(state, user, handlers,
                         running=state.status not in TERMINAL_STATUSES),
        "approve": approve_defaults(state),
        "approved_already": any(a.agent == user.agent for a in state.approvals),
        "emails": emails,
        "notes": [e for e in state.timeline if e.kind == "note"],
        "handlers_known": handlers is not None,
        "agents": _agents(request, user),
    }, style_sources=style_hashes(styles))


def _agents(request: Request, user: ConsoleUser) -> list[str]:
    """Agents a lead can assign to (from AGENT_TOKENS and the SSO map)."""
    if not user.is_lead:
        return []
    settings = request.app.state.settings
    names = {i.agent for i in settings.AGENT_TOKENS.values() if i.role != "viewer"}
    names |= {i.agent for i in settings.CONSOLE_SSO_USERS.values() if i.role != "viewer"}
    return sorted(names)


@router.get("/cases/{case_id}/emails/{event_id}", include_in_schema=False)
async def email_html(request: Request, case_id: str, event_id: int, user: User) -> Response:
    """One email's HTML part as the customer received it, for the case page's frame (its
    own policy: no scripts, nothing loaded from anywhere)."""
    if not CASE_ID.match(case_id):
        return web.error_page(request, 404, "Not found", "No such email.")
    client = await get_client(request)
    try:
        async with temporal_call("read the case history"):
            history = await read_history(client, case_id)
    except CaseNotFound:
        return web.error_page(request, 404, "Not found", "No such email.")
    for sent in history.emails:
        if sent.event_id == event_id:
            try:
                html = sent.email.render().html
            except RenderError as exc:
                return web.error_page(request, 500, "Cannot show this email", str(exc))
            return web.security_headers(HTMLResponse(html), web.EMAIL_CSP)
    return web.error_page(request, 404, "Not found", "No such email.")
