"""Steps 3 and 5: act on the policy's decision (approve, deny, ask) where it is clear and
allowed to decide; otherwise wait for agents. Agents' approvals, denials and questions are
validated here once, for their signals and their updates alike; above the policy's
threshold two different agents must approve. The decision is told to the customer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from core.contract import (
        ActionResult,
        AgentDecision,
        Approval,
        ApproveSignal,
        CaseStatus,
        Denial,
        DenySignal,
        RefusalCode,
        RequestInfoSignal,
    )
    from core.money import refund_step
    from policies.facts import PolicyDecision

    from . import patches
    from .gather_info import ask, asked_before, last_reply_excerpt
    from .incident import apology_context
    from .policy import evaluate_case
    from .runtime import CaseRuntime, iso

AGENT_WAIT = "an agent's decision"
# What the approval email promises: the money is back on the card within this time.
REFUND_ARRIVAL = timedelta(days=10)


@dataclass
class Refusal:
    code: RefusalCode
    reason: str


async def decide(rt: CaseRuntime, *, resumed: bool = False, review: str | None = None
                 ) -> int | None:
    """Until the case is approved (the amount) or closed (None). `resumed`: a continued
    run picks up the wait for people (an agent, or the customer's reply) it left.
    `review`: a reopened case goes to agents first, with why."""
    case = rt.case
    undeliverable = False
    action: AgentDecision | None = None
    if review is not None:
        last = case.decision if case.decision is not None else evaluate_case(rt)
        action = await _await_agents(rt, last, why=review)
    elif resumed and case.status == CaseStatus.awaiting_agent and case.decision is not None:
        action = await _await_agents(rt, case.decision, resumed=True)
    elif resumed and case.status == CaseStatus.awaiting_info:
        asked = await ask(rt, case.questions, "", resumed=True)
        if asked == "abandoned":
            return None
        undeliverable = asked == "undeliverable"
    unanswered: str | None = None  # why an agent reads the reply instead of a 2nd question
    while True:
        if action is None:
            decision = evaluate_case(rt)
            # After Stripe refused a refund, the policy decides nothing on its own.
            by_policy = not case.progress.agent_must_decide
            if not by_policy and not workflow.patched(patches.AGENT_AFTER_REFUSAL):
                by_policy = decision.outcome != "approve"  # cases started before the fix
            if undeliverable:
                pass  # our questions cannot reach the customer: an agent decides
            elif decision.outcome == "approve" and by_policy:
                case.approved_amount = decision.amount
                rt.set_status(CaseStatus.approved, f"the policy approves "
                              f"{rt.money(decision.amount)} ({', '.join(decision.clause_ids)})",
                              actor="policy")
                await send_approval(rt, decision.amount)
                return decision.amount
            elif decision.outcome == "deny" and by_policy:
                await send_denial(rt, Denial(by="policy", clause_id=decision.clause_ids[0]))
                return None
            elif decision.outcome == "need_info" and by_policy and asked_before(
                    rt, decision.questions):
                unanswered = ("the customer's reply does not answer what we asked "
                              f"({', '.join(decision.clause_ids)}): {last_reply_excerpt(rt)}; "
                              "an agent decides")
            elif decision.outcome == "need_info" and by_policy:
                asked = await ask(rt, decision.questions, "policy")
                if asked == "abandoned":
                    return None
                undeliverable = asked == "undeliverable"
                continue
            action = await _await_agents(rt, decision, undeliverable=undeliverable,
                                         why=unanswered)
            undeliverable, unanswered = False, None
        if action.kind == "approve":
            await send_approval(rt, action.amount)
            return action.amount
        if action.kind == "deny" and action.denial is not None:
            await send_denial(rt, action.denial)
            return None
        asked = await ask(rt, action.questions, f"agent:{action.agent}")
        action = None
        if asked == "abandoned":
            return None
        undeliverable = asked == "undeliverable"


async def send_approval(rt: CaseRuntime, amount: int) -> None:
    """Approval email (or the billing-error apology) saying what happens next, by when."""
    by = iso(workflow.now() + REFUND_ARRIVAL)
    money = {"amount": amount, "currency": rt.case.currency}
    assessment = rt.case.assessment
    if assessment is not None and assessment.billing_error_confirmed:
        await rt.email("billing_error_apology", "approval",
                       {**money, **apology_context(rt.case), "next_steps_by": by})
    else:
        await rt.email("approval", "approval", {**money, "next_steps_by": by})
    rt.checkpoint()


async def send_denial(rt: CaseRuntime, denial: Denial) -> None:
    """Denial email quoting the clause and offering the policy's alternatives."""
    rt.case.denial = denial
    rt.set_status(CaseStatus.denied, f"denied under clause {denial.clause_id}", actor=denial.by)
    clause = rt.policy.clause(denial.clause_id)
    offered = [a for a in rt.policy.alternatives if denial.alternative in (None, a.id)]
    await rt.email("denial", "denial", {
        "clause_id": clause.id, "clause_text": clause.text, "note": denial.note,
        "alternatives": [{"id": a.id, "text": a.text} for a in offered],
    })


async def _await_agents(rt: CaseRuntime, decision: PolicyDecision, *,
                        undeliverable: bool = False, resumed: bool = False,
                        why: str | None = None) -> AgentDecision:
    """Wait for an agent's decision, escalating once past the SLA. `resumed`: a continued
    run keeps the approvals so far and the deadline of the wait it left."""
    case = rt.case
    sla = rt.policy.sla.agent_decision
    timeout: timedelta | None = sla
    if resumed:
        first_wait = case.waiting_for == AGENT_WAIT and case.deadline is not None
        timeout = max(case.deadline - workflow.now(), timedelta(seconds=1)) \
            if first_wait and case.deadline else None
    else:
        await _hand_to_agents(rt, decision, undeliverable, why)

    def decided() -> bool:
        return case.progress.agent_decision is not None

    if timeout is not None and not await rt.wait(AGENT_WAIT, decided, timeout, case.deadline
                                                 if resumed else None, may_continue=True):
        await rt.breach("agent_decision", f"No agent decided within {sla}")
    if not decided():
        await rt.wait(f"{AGENT_WAIT} (escalated)", decided, None, may_continue=True)
    assert case.progress.agent_decision is not None
    return case.progress.agent_decision


async def _hand_to_agents(rt: CaseRuntime, decision: PolicyDecision, undeliverable: bool,
                          reply_why: str | None = None) -> None:
    """A new round for agents, with why the policy does not decide alone."""
    case = rt.case
    case.progress.agent_decision = None
    case.approvals = []
    clauses = ", ".join(decision.clause_ids)
    why = f"the policy asks an agent to decide ({clauses})"
    if decision.outcome != "agent_review":
        why = f"the policy would {decision.outcome.replace('_', ' ')} ({clauses}); an agent decides"
    if case.assessment is not None and case.assessment.risk == "high":
        why = f"held for review, risk high: {'; '.join(case.assessment.risk_reasons)}"
    if case.refund_error is not None:
        error = case.refund_error
        why = (f"Stripe refused the refund ({error['code']}: {error['message']}); an agent "
               "approves another amount or denies")
    if undeliverable:
        why = ("our questions could not be delivered to the customer's address; an agent "
               "decides or reaches the customer another way")
        await rt.notify_ops("info_undeliverable", why,
                            f"undeliverable_{case.progress.info_rounds}")
    if reply_why is not None:  # the customer's reply, for an agent to read
        why = reply_why
    rt.set_status(CaseStatus.awaiting_agent, why, actor="policy")


# --- agents' actions: one validation (read-only) and one way to apply each ---


def _agent_refusal(rt: CaseRuntime) -> Refusal | None:
    if rt.case.status != CaseStatus.awaiting_agent:
        return Refusal("wrong_state", f"the case is {rt.case.status}, not waiting for an agent")
    if rt.case.progress.agent_decision is not None:
        return Refusal("wrong_state", "the case was already decided")
    return None


def _approval_amount(rt: CaseRuntime, sig: ApproveSignal) -> int:
    """The amount asked, else the first approval's, else what the policy proposes."""
    case = rt.case
    if sig.amount:
        return sig.amount
    if case.approvals:
        return case.approvals[0].amount
    decision = case.decision
    if decision is not None and decision.amount > 0:
        return min(decision.amount, case.refundable)
    return case.refundable


def approve_refusal(rt: CaseRuntime, sig: ApproveSignal) -> Refusal | None:
    refusal = _agent_refusal(rt)
    if refusal is not None:
        return refusal
    case, amount = rt.case, _approval_amount(rt, sig)
    first = case.approvals[0] if case.approvals else None
    if case.facts is None or not case.facts.found:
        return Refusal("invalid", "the charge was not found in Stripe: nothing to refund")
    if amount > case.refundable:
        return Refusal("invalid", f"{rt.money(amount)} is above the refundable "
                                  f"{rt.money(case.refundable)}")
    step = refund_step(case.currency)
    if amount % step:
        return Refusal("invalid", f"Stripe refunds {case.currency.upper()} only in multiples "
                                  f"of {step} minor units, not {rt.money(amount)}")
    if any(a.agent == sig.agent for a in case.approvals):
        return Refusal("invalid", f"{sig.agent} already approved; a second approval must "
                                  "come from a different agent")
    if first is not None and amount != first.amount:
        return Refusal("invalid", f"{rt.money(amount)} differs from the first approval "
                                  f"({rt.money(first.amount)})")
    return None


def deny_refusal(rt: CaseRuntime, sig: DenySignal) -> Refusal | None:
    refusal = _agent_refusal(rt)
    if refusal is None and not rt.policy.has_clause(sig.clause_id):
        refusal = Refusal("invalid", f"clause {sig.clause_id!r} is not in policy "
                                     f"{rt.policy.version}")
    if refusal is None and sig.alternative is not None and sig.alternative not in {
            a.id for a in rt.policy.alternatives}:
        refusal = Refusal("invalid", f"alternative {sig.alternative!r} is not offered by "
                                     f"policy {rt.policy.version}")
    return refusal


def request_info_refusal(rt: CaseRuntime, sig: RequestInfoSignal) -> Refusal | None:
    return _agent_refusal(rt)


def approve(rt: CaseRuntime, sig: ApproveSignal) -> ActionResult | Refusal:
    actor = f"agent:{sig.agent}"
    refusal = approve_refusal(rt, sig)
    if refusal is not None:
        return _refuse(rt, "approve", actor, refusal)
    case, amount = rt.case, _approval_amount(rt, sig)
    case.approvals.append(Approval(agent=sig.agent, amount=amount, note=sig.note,
                                   at=workflow.now()))
    required = max(case.approvers_required, rt.policy.approvers_required(amount, case.currency))
    case.approvers_required = required
    if len(case.approvals) < required:
        message = (f"Approval {len(case.approvals)} of {required} for {rt.money(amount)}; "
                   "a different agent must also approve")
        rt.record("approval_recorded", message, actor=actor, amount=amount)
    else:
        message = f"Approved {rt.money(amount)}"
        case.approved_amount = amount
        case.progress.agent_decision = AgentDecision(kind="approve", agent=sig.agent,
                                                     amount=amount, note=sig.note)
        rt.set_status(CaseStatus.approved, f"{message} by "
                      f"{', '.join(a.agent for a in case.approvals)}", actor=actor)
    return _result(rt, message)


def deny(rt: CaseRuntime, sig: DenySignal) -> ActionResult | Refusal:
    actor = f"agent:{sig.agent}"
    refusal = deny_refusal(rt, sig)
    if refusal is not None:
        return _refuse(rt, "deny", actor, refusal)
    denial = Denial(by=actor, clause_id=sig.clause_id, note=sig.note,
                    alternative=sig.alternative)
    rt.case.progress.agent_decision = AgentDecision(kind="deny", agent=sig.agent, note=sig.note,
                                                    denial=denial)
    rt.case.denial = denial
    rt.set_status(CaseStatus.denied, f"denied under clause {sig.clause_id}"
                  f"{': ' + sig.note if sig.note else ''}", actor=actor)
    return _result(rt, f"Denied under clause {sig.clause_id}")


def request_info(rt: CaseRuntime, sig: RequestInfoSignal) -> ActionResult | Refusal:
    actor = f"agent:{sig.agent}"
    refusal = request_info_refusal(rt, sig)
    if refusal is not None:
        return _refuse(rt, "request_info", actor, refusal)
    rt.case.progress.agent_decision = AgentDecision(kind="request_info", agent=sig.agent,
                                                    questions=list(sig.questions))
    rt.record("info_requested_by_agent", f"{sig.agent} asks: {' / '.join(sig.questions)}",
              actor=actor)
    return _result(rt, f"{len(sig.questions)} question(s) will be sent to the customer")


def _refuse(rt: CaseRuntime, action: str, actor: str, refusal: Refusal) -> Refusal:
    rt.record("action_refused", f"{action} refused: {refusal.reason}", actor=actor,
              action=action, code=refusal.code)
    return refusal


def _result(rt: CaseRuntime, message: str) -> ActionResult:
    case = rt.case
    return ActionResult(accepted=True, status=case.status, message=message,
                        approvals=len(case.approvals),
                        approvers_required=case.approvers_required)
