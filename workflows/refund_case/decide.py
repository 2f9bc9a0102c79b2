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
    from policies.evaluate import denial_grounds
    from policies.facts import PolicyDecision

    from . import patches
    from .gather_info import ask
    from .policy import evaluate_case, facts_now
    from .refund import REFUND_ARRIVAL, send_apology
    from .runtime import CaseRuntime, iso

AGENT_WAIT = "an agent's decision"


@dataclass
class Refusal:
    code: RefusalCode
    reason: str


async def decide(rt: CaseRuntime, *, resumed: bool = False) -> int | None:
    """Until the case is approved (the amount) or closed (None). `resumed`: a continued
    run picks up the wait for people (an agent, or the customer's reply) it left."""
    case = rt.case
    undeliverable = False
    action: AgentDecision | None = None
    if resumed and case.status == CaseStatus.awaiting_agent and case.decision is not None:
        action = await _await_agents(rt, case.decision, resumed=True)
    elif resumed and case.status == CaseStatus.awaiting_info:
        asked = await ask(rt, case.questions, "", resumed=True)
        if asked == "abandoned":
            return None
        undeliverable = asked == "undeliverable"
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
            elif decision.outcome == "need_info" and by_policy:
                asked = await ask(rt, decision.questions, "policy")
                if asked == "abandoned":
                    return None
                undeliverable = asked == "undeliverable"
                continue
            action = await _await_agents(rt, decision, undeliverable=undeliverable)
            undeliverable = False
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
    """Approval email saying what happens next, by when. A confirmed billing error gets
    the apology instead, once the refund is created (refund.py), never before it."""
    assessment = rt.case.assessment
    if assessment is not None and assessment.billing_error_confirmed:
        if workflow.patched(patches.TEXT_APOLOGY_AFTER_REFUND):
            rt.case.progress.apology_due = True
        else:  # cases started before: the apology with the approval
            await send_apology(rt, amount, "approval")
    else:
        by = iso(workflow.now() + REFUND_ARRIVAL)
        await rt.email("approval", "approval", {"amount": amount,
                                                "currency": rt.case.currency,
                                                "next_steps_by": by})
    rt.checkpoint()


async def send_denial(rt: CaseRuntime, denial: Denial) -> None:
    """Denial email quoting the clause in the customer's words and locale, offering the
    alternatives attached to that clause (or the one the agent chose among them)."""
    rt.case.denial = denial
    rt.set_status(CaseStatus.denied, f"denied under clause {denial.clause_id}", actor=denial.by)
    locale = rt.case.request.locale
    clause = rt.policy.clause(denial.clause_id)
    offered = [a for a in rt.policy.alternatives_for(clause.id)
               if denial.alternative in (None, a.id)]
    await rt.email("denial", "denial", {
        "clause_id": clause.id, "clause_title": clause.title_in(locale),
        "clause_text": clause.text_in(locale), "note": denial.note,
        "alternatives": [{"id": a.id, "text": a.text_in(locale)} for a in offered],
    })


async def _await_agents(rt: CaseRuntime, decision: PolicyDecision, *,
                        undeliverable: bool = False, resumed: bool = False) -> AgentDecision:
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
        await _hand_to_agents(rt, decision, undeliverable)

    def decided() -> bool:
        return case.progress.agent_decision is not None

    if timeout is not None and not await rt.wait(AGENT_WAIT, decided, timeout, case.deadline
                                                 if resumed else None, may_continue=True):
        await rt.breach("agent_decision", f"No agent decided within {sla}")
    if not decided():
        await rt.wait(f"{AGENT_WAIT} (escalated)", decided, None, may_continue=True)
    assert case.progress.agent_decision is not None
    return case.progress.agent_decision


async def _hand_to_agents(rt: CaseRuntime, decision: PolicyDecision, undeliverable: bool
                          ) -> None:
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
    if refusal is None and rt.case.progress.clauses_fit_facts:
        refusal = _clause_refusal(rt, sig)
    return refusal


def _clause_refusal(rt: CaseRuntime, sig: DenySignal) -> Refusal | None:
    """A denial must rest on a clause the facts fit (not "more than 14 days after the
    payment" for a payment made minutes ago), and offer only that clause's alternatives."""
    facts = facts_now(rt)
    if facts is not None:
        why_not = denial_grounds(facts, rt.policy, workflow.now()).get(sig.clause_id)
        if why_not is not None:
            return Refusal("invalid", f"clause {sig.clause_id} does not fit this case: "
                                      f"{why_not}")
    offered = [a.id for a in rt.policy.alternatives_for(sig.clause_id)]
    if sig.alternative is not None and sig.alternative not in offered:
        return Refusal("invalid", f"alternative {sig.alternative!r} does not go with clause "
                                  f"{sig.clause_id} (it offers "
                                  f"{', '.join(offered) or 'no alternative'})")
    return None


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
