"""The console's pure parts: what an agent is offered, how forms become actions, what the
workflow must keep for the queue, the charts, and the facts a past case is simulated on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.datastructures import FormData
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from activities.stripe_models import StripeFacts
from console import charts
from console.actions import FormError, message_for, offers, parse_amount
from console.auth import ConsoleUser
from console.case_page import denial_choices
from console.queue import QueueFilters
from core import search_attributes as sa
from core.contract import (
    Assessment,
    CaseState,
    CaseStatus,
    RefundRequest,
    TimelineEntry,
    Update,
    console_attribute_updates,
    queue_card_of,
    queue_deadline,
)
from core.policy_facts import last_evaluation
from policies.evaluate import evaluate
from policies.loader import DEFAULT_POLICY, load_policy
from policies.simulate import SimCase, simulate

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
ALICE = ConsoleUser(agent="alice", role="agent", via="token")
CAROL = ConsoleUser(agent="carol", role="lead", via="token")
VIC = ConsoleUser(agent="vic", role="viewer", via="token")


def case(status: CaseStatus = CaseStatus.awaiting_agent, **over: Any) -> CaseState:
    request = RefundRequest(request_id="u1", customer_email="ana@example.com",
                            charge_id="ch_1", reason="technical_issue", amount=4900,
                            currency="usd", documents=["receipt.pdf"])
    values: dict[str, Any] = {"case_id": request.case_id, "request": request,
                              "status": status}
    values.update(over)
    return CaseState(**values)


# --- what is offered --------------------------------------------------------------------


def test_actions_fit_the_state_and_the_role():
    waiting = offers(case(), ALICE, None)
    assert set(waiting) == {"approve", "deny", "ask", "satisfy", "note", "assign"}
    assert all(o.available for o in waiting.values())  # unknown handlers: the case decides
    assert offers(case(), VIC, None) == {}
    failed = offers(case(CaseStatus.refund_failed), ALICE, None)
    assert set(failed) == {"retry", "close", "note", "assign"}
    assert offers(case(CaseStatus.denied), ALICE, None) == {}  # closed


def test_an_action_the_workflow_does_not_handle_is_shown_unavailable():
    handled = frozenset({Update.approve.value, Update.deny.value,
                         Update.request_info.value})
    got = offers(case(), CAROL, handled)
    assert got["approve"].available and got["deny"].available and got["ask"].available
    assert not got["assign"].available
    assert got["assign"].why_not == ("not available yet: this case's workflow does not "
                                     "handle assign_action")
    assert not got["satisfy"].available and not got["note"].available


@pytest.mark.parametrize(("text", "currency", "minor"), [
    ("12.50", "usd", 1250), ("1,500", "usd", 150000), ("500", "jpy", 500),
    ("1.250", "kwd", 1250)])
def test_amounts_are_read_in_the_currencys_units(text, currency, minor):
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize(("text", "currency", "problem"), [
    ("12.345", "usd", "finer than"), ("1.5", "jpy", "finer than"), ("abc", "usd", "not an"),
    ("0", "usd", "above zero"), ("-3", "usd", "above zero")])
def test_bad_amounts_are_refused_with_why(text, currency, problem):
    with pytest.raises(FormError, match=problem):
        parse_amount(text, currency)


def form(**values: str) -> FormData:
    return FormData(list(values.items()))


def test_forms_become_the_actions_messages():
    state = case()
    approve = message_for(offers(state, ALICE, None)["approve"].spec,
                          form(mode="part", amount="20", note="half"), ALICE, state)
    assert approve.model_dump() == {"agent": "alice", "amount": 2000, "note": "half"}
    full = message_for(offers(state, ALICE, None)["approve"].spec,
                       form(mode="full", amount="999999"), ALICE, state)
    assert full.model_dump()["amount"] is None  # the policy's (or first approval's) amount
    ask = message_for(offers(state, ALICE, None)["ask"].spec,
                      form(questions="Which export?\n\n  When?  \n"), ALICE, state)
    assert ask.model_dump()["questions"] == ["Which export?", "When?"]
    deny = message_for(offers(state, ALICE, None)["deny"].spec,
                       form(clause_id="misuse", alternative=""), ALICE, state)
    assert deny.model_dump()["alternative"] is None
    with pytest.raises(FormError, match="questions"):
        message_for(offers(state, ALICE, None)["ask"].spec, form(questions=" \n"), ALICE,
                    state)


def test_agents_claim_and_release_leads_assign_anyone():
    spec = offers(case(), ALICE, None)["assign"].spec
    assert message_for(spec, form(assignee="me"), ALICE, case()).model_dump()["assignee"] \
        == "alice"
    with pytest.raises(FormError, match="only a lead"):
        message_for(spec, form(assignee="bob"), ALICE, case())
    with pytest.raises(FormError, match="bob holds this case"):
        message_for(spec, form(assignee="me"), ALICE, case(assignee="bob"))
    assert message_for(spec, form(assignee=""), ALICE, case(assignee="alice")) \
        .model_dump()["assignee"] is None
    assert message_for(spec, form(assignee="bob"), CAROL, case(assignee="alice")) \
        .model_dump()["assignee"] == "bob"


def test_denial_choices_put_the_cited_clauses_first():
    policy = load_policy(DEFAULT_POLICY)
    state = case()
    state.decision = evaluate(_facts_for(state), policy, T0)
    choices = [c.id for c in denial_choices(policy, state)]
    fitting = [c for c in state.decision.clause_ids if c in state.decision.citable_clause_ids]
    assert choices[:len(fitting)] == fitting
    assert sorted(choices) == sorted(state.decision.citable_clause_ids)  # only those that fit
    assert "approval-limits" not in choices  # never grounds for a denial
    older = state.model_copy(update={"decision": state.decision.model_copy(
        update={"citable_clause_ids": []})})  # decided before the policy said which fit
    assert sorted(c.id for c in denial_choices(policy, older)) == sorted(
        c.id for c in policy.clauses)


# --- what the workflow keeps for the queue ------------------------------------------------


def test_the_queue_deadline_is_the_waits_or_the_breachs():
    due = T0 + timedelta(hours=4)
    assert queue_deadline(case(waiting_for="an agent's decision", deadline=due)) == due
    escalated = case(waiting_for="an agent's decision (escalated)", timeline=[
        TimelineEntry(at=T0, actor="system", kind="sla_breached", message="late")])
    assert queue_deadline(escalated) == T0
    assert queue_deadline(case(CaseStatus.refunding)) is None
    card = queue_card_of(case(waiting_for="x", deadline=due, approvers_required=2))
    assert (card.status, card.deadline, card.approvals, card.approvers_required) == (
        CaseStatus.awaiting_agent, due, 0, 2)


def test_console_attributes_change_only_what_differs_and_unset_what_is_gone():
    due = T0 + timedelta(hours=1)
    current = TypedSearchAttributes([SearchAttributePair(sa.ASSIGNEE, "alice"),
                                     SearchAttributePair(sa.DEADLINE, due)])
    same = case(assignee="alice", waiting_for="w", deadline=due)
    assert console_attribute_updates(same, current) == []
    moved = console_attribute_updates(case(assignee=None), current)
    assert {(u.key.name, u.value) for u in moved} == {("RefundAssignee", None),
                                                      ("RefundDeadline", None)}
    fresh = console_attribute_updates(same, TypedSearchAttributes([]))
    assert {(u.key.name, u.value) for u in fresh} == {("RefundAssignee", "alice"),
                                                      ("RefundDeadline", due)}


def test_queue_filters_make_one_visibility_query():
    query = QueueFilters(status="awaiting_agent", reason="unused", risk="high",
                         breached=True, mine=True).query("alice", "refund-cases")
    assert query == ("WorkflowType = 'RefundCase' AND ExecutionStatus = 'Running' AND "
                     "TaskQueue = 'refund-cases' AND RefundStatus = 'awaiting_agent' AND "
                     "RefundReason = 'unused' AND RefundRisk = 'high' AND "
                     "RefundSlaBreached = true AND RefundAssignee = 'alice'")
    waiting = QueueFilters(unassigned=True).query("alice", "refund-cases")
    assert "RefundStatus IN ('awaiting_agent', 'awaiting_info', 'refund_failed')" in waiting
    assert waiting.endswith("RefundAssignee IS NULL")
    with pytest.raises(ValueError):
        QueueFilters(mine=True).query("x' OR '1'='1", "refund-cases")


# --- charts -----------------------------------------------------------------------------


def test_charts_escape_what_they_draw_and_bin_durations():
    svg = charts.bars([("<script>alert(1)</script>", 3.0)], "Reasons & more")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "Reasons &amp; more" in svg
    assert charts.binned([0.001, 0.1, 0.5, 2, 30, 100]) == {
        "< 1 min": 1, "1–10 min": 1, "10–60 min": 1, "1–4 h": 1, "4–24 h": 0, "1–3 d": 1,
        "> 3 d": 1}
    assert "No data" in charts.columns([], {}, "empty")
    stacked = charts.columns(["2026-11-01", "2026-11-02"], {"unused": [1, 0],
                                                             "billing_error": [2, 3]}, "t")
    assert stacked.count("<rect") == 3 + 2  # three non-empty segments, two legend keys


# --- simulation on past cases ---------------------------------------------------------------


def _facts_for(state: CaseState) -> Any:
    from core.policy_facts import policy_facts
    facts = StripeFacts(found=True, charge_id="ch_1", amount=4900, currency="usd",
                        created=T0 - timedelta(days=2), customer_email="ana@example.com")
    state.facts = facts
    state.assessment = Assessment()
    return policy_facts(state.request, facts, state.assessment, documents=state.documents,
                        now=T0)


def test_a_past_case_is_simulated_with_the_documents_it_had_when_decided():
    state = case(documents=["receipt.pdf", "ticket-4411.png"])
    _facts_for(state)
    at = T0 + timedelta(minutes=5)
    state.timeline = [
        TimelineEntry(at=T0, actor="customer", kind="received", message=""),
        TimelineEntry(at=T0 + timedelta(minutes=1), actor="customer",
                      kind="customer_replied", message="", data={"attachments": ["x.txt"]}),
        TimelineEntry(at=at, actor="policy", kind="policy_decision", message=""),
        TimelineEntry(at=at + timedelta(minutes=1), actor="customer",
                      kind="customer_replied", message="",
                      data={"attachments": ["ticket-4411.png"]})]
    policy = load_policy(DEFAULT_POLICY)
    state.decision = evaluate(_facts_for(state), policy, at)
    found = last_evaluation(state)
    assert found is not None
    facts, moment = found
    assert moment == at
    assert facts.documents == ["receipt.pdf", "x.txt"]  # the later ticket came after
    assert last_evaluation(case()) is None  # never evaluated


def test_simulation_counts_clauses_and_checks_the_recorded_decisions():
    policy = load_policy(DEFAULT_POLICY)
    state = case()
    facts = _facts_for(state)
    recorded = evaluate(facts, policy, T0)
    wrong = recorded.model_copy(update={"outcome": "deny", "clause_ids": ["misuse"]})
    sim = simulate([SimCase("a", facts, T0, policy, recorded),
                    SimCase("b", facts, T0, policy, wrong)], policy)
    assert (sim.checked, sim.reproduced) == (2, 1)
    assert [c.label for c in sim.not_reproduced] == ["b"]
    assert sim.baseline == f"pinned ({policy.version}: 2)"
    cited = {c.clause_id: (c.baseline, c.new) for c in sim.clauses}
    assert all(cited[c] == (2, 2) for c in recorded.clause_ids)


def test_an_email_shown_inline_keeps_its_look_and_loses_anything_active() -> None:
    from console.email_view import safe_email, style_hashes

    raw = ('<html><head><style>p{}</style><script>alert(1)</script></head>'
           '<body style="margin:0"><p style="color:#111">Hi &amp; <b>bye</b></p>'
           '<a href="javascript:alert(1)" onclick="x()">a</a><a href="https://x.test/">b</a>'
           '<img src="https://tracker.test/p.gif"><form action="/x"><input name="q"></form>'
           '<iframe src="https://x.test"><p>inside</p></iframe></body></html>')
    safe = safe_email(raw)
    assert safe.html == (
        '<div style="margin:0"><p style="color:#111">Hi &amp; <b>bye</b></p>'
        '<a rel="noopener noreferrer" target="_blank">a</a>'
        '<a href="https://x.test/" rel="noopener noreferrer" target="_blank">b</a>'
        '<img></div>')
    assert safe.styles == {"margin:0", "color:#111"}
    sources = style_hashes(safe.styles)
    assert sources.startswith("'unsafe-hashes' 'sha256-") and sources.count("sha256-") == 2
