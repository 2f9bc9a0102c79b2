"""Steps 3 and 5: act on the policy's decision (approve, deny, ask) where it is clear and
allowed to decide; otherwise wait for agents. Agents' approvals, denials and questions are
validated here once, for their signals and their updates alike; above the policy's
threshold two different agents must approve. The decision is told to the customer.

Agents can act at every wait for people (patch agents-lifecycle): while the customer
is asked (approve, deny, ask again, mark a requirement met) as while agents are asked;
after a failed refund they retry it (a new round) or close the case with a reason. Every
approval is checked against what is still refundable :
nothing left closes the case with an explanation, never an approval of 0."""

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
        CloseCaseSignal,
        Denial,
        DenySignal,
        RefusalCode,
        RequestInfoSignal,
        RetryRefundSignal,
        SatisfyRequirementSignal,
    )
    from core.money import refund_step
    from policies.evaluate import denial_grounds
    from policies.facts import PolicyDecision

    from . import patches
    from .gather_info import AskOutcome, ask, asked_before, last_reply_excerpt
    from .policy import evaluate_case, facts_now
    from .refund import REFUND_ARRIVAL, close_nothing_left, send_apology
    from .runtime import CaseRuntime, iso

AGENT_WAIT = "an agent's decision"
RETRY_WAIT = "an agent to retry the refund or close the case"


@dataclass
class Refusal:
    code: RefusalCode
    reason: str


async def decide(rt: CaseRuntime, *, resumed: bool = False, review: str | None = None
                 ) -> int | None:
    """Until the case is approved (the amount) or closed (None). `resumed`: a continued
    run picks up the wait for people (an agent, or the customer's reply) it left.
    `review`: a reply after closing goes to agents first, with why (reopen.py)."""
    case = rt.case
    undeliverable = False
    action: AgentDecision | None = None
    if review is not None:
        action = await _await_agents(rt, evaluate_case(rt), why=review)
        action = action or _agents_move(rt)
    elif resumed and case.status == CaseStatus.awaiting_agent and case.decision is not None:
        action = await _await_agents(rt, case.decision, resumed=True)
    elif resumed and case.status == CaseStatus.awaiting_info:
        asked = await ask(rt, case.questions, "", resumed=True)
        if asked == "abandoned":
            return None
        action = _agents_move(rt) if asked == "agent" else None
        undeliverable = asked == "undeliverable"
    unanswered: str | None = None  # why an agent reads the reply instead of a 2nd question
    while True:
        if action is None:
            decision = evaluate_case(rt)
            # After Stripe refused a refund, the policy decides nothing on its own.
            by_policy = not case.progress.agent_must_decide
            if not by_policy and not patches.has(patches.AGENT_AFTER_REFUSAL):
                by_policy = decision.outcome != "approve"  # cases started before the fix
            if undeliverable:
                pass  # our questions cannot reach the customer: an agent decides
            elif decision.outcome == "approve" and by_policy:
                case.approved_amount = decision.amount
                rt.set_status(CaseStatus.approved, f"the policy approves "
                              f"{rt.money(decision.amount)} ({', '.join(decision.clause_ids)})",
                              actor="policy")
                return await approved(rt, decision.amount)
            elif decision.outcome == "deny" and by_policy:
                await send_denial(rt, Denial(by="policy", clause_id=decision.clause_ids[0]))
                return None
            elif decision.outcome == "need_info" and by_policy and asked_before(
                    rt, decision.questions):
                unanswered = ("the customer's reply does not answer what we asked "
                              f"({', '.join(decision.clause_ids)}): {last_reply_excerpt(rt)}; "
                              "an agent decides")
            elif decision.outcome == "need_info" and by_policy:
                asked = await _ask(rt, decision.questions, "policy")
                if asked == "abandoned":
                    return None
                action = _agents_move(rt) if asked == "agent" else None
                undeliverable = asked == "undeliverable"
                continue
            action = await _await_agents(rt, decision, undeliverable=undeliverable,
                                         why=unanswered)
            undeliverable, unanswered = False, None
            if action is None:
                action = _agents_move(rt)  # a requirement met: the policy decides again
                continue
        if action.kind == "approve":
            return await approved(rt, action.amount)
        if action.kind == "deny" and action.denial is not None:
            await send_denial(rt, action.denial)
            return None
        asked = await _ask(rt, action.questions, f"agent:{action.agent}")
        action = None
        if asked == "abandoned":
            return None
        action = _agents_move(rt) if asked == "agent" else None
        undeliverable = asked == "undeliverable"


async def _ask(rt: CaseRuntime, questions: list[str], asked_by: str) -> AskOutcome:
    """Ask the customer; agents may act meanwhile (a fresh round for them)."""
    if rt.paths.every_wait:
        progress = rt.case.progress
        progress.agent_decision, progress.reevaluate = None, False
        rt.case.approvals = []
    return await ask(rt, questions, asked_by)


def _agents_move(rt: CaseRuntime) -> AgentDecision | None:
    """What an agent did at a wait: their decision, or None when they marked a
    requirement met (the policy decides again)."""
    progress = rt.case.progress
    if progress.agent_decision is None and progress.reevaluate:
        progress.reevaluate = False
        met = ", ".join(rt.case.requirements_met)
        rt.set_status(CaseStatus.assessing, f"an agent marked {met} met; the policy "
                      "decides again")
    return progress.agent_decision


async def approved(rt: CaseRuntime, amount: int) -> int | None:
    """An approval (the policy's or agents'), checked against what is still refundable:
    the amount to refund, or None when nothing is left (the case closes, explained)."""
    case = rt.case
    if rt.paths.within_refundable:
        if amount > case.refundable:
            amount = case.refundable
            rt.record("amount_reduced", f"Refunds made outside this case leave "
                      f"{rt.money(amount)} to refund", amount=amount)
        if amount <= 0:
            await close_nothing_left(rt)
            return None
        case.approved_amount = amount
    await send_approval(rt, amount)
    return amount


async def after_failed_refund(rt: CaseRuntime) -> int | None:
    """The refund failed and no money moved: an agent retries it (the amount of a new
    round, with its own idempotency key) or closes the case with a reason (None). The case
    never completes on its own while the money it approved has not moved."""
    case, sla = rt.case, rt.policy.sla.agent_decision

    def acted() -> bool:
        return case.progress.agent_decision is not None

    if not await rt.wait(RETRY_WAIT, acted, sla):
        await rt.breach("agent_decision", f"No agent retried or closed the failed refund "
                        f"within {sla}")
        await rt.wait(f"{RETRY_WAIT} (escalated)", acted, None)
    action = case.progress.agent_decision
    assert action is not None
    case.progress.agent_decision = None
    if action.kind == "close":
        return None
    failed = case.refund
    if failed is not None:
        case.earlier_refunds.append(failed)
        case.refund = None
    return await approved(rt, min(failed.amount if failed else case.approved_amount or 0,
                                  case.refundable))


async def send_approval(rt: CaseRuntime, amount: int) -> None:
    """Approval email saying what happens next, by when. A confirmed billing error gets
    the apology instead, once the refund is created (refund.py), never before it."""
    assessment = rt.case.assessment
    if assessment is not None and assessment.billing_error_confirmed:
        if patches.has(patches.TEXT_APOLOGY_AFTER_REFUND):
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
                        undeliverable: bool = False, resumed: bool = False,
                        why: str | None = None) -> AgentDecision | None:
    """Wait for an agent's decision, escalating once past the SLA; None when an agent
    marked a requirement met instead. `resumed`: a continued run keeps the approvals so
    far and the deadline of the wait it left."""
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
        return case.progress.agent_decision is not None or case.progress.reevaluate

    if timeout is not None and not await rt.wait(AGENT_WAIT, decided, timeout, case.deadline
                                                 if resumed else None, may_continue=True):
        await rt.breach("agent_decision", f"No agent decided within {sla}")
    if not decided():
        await rt.wait(f"{AGENT_WAIT} (escalated)", decided, None, may_continue=True)
    return case.progress.agent_decision


async def _hand_to_agents(rt: CaseRuntime, decision: PolicyDecision, undeliverable: bool,
                          reply_why: str | None = None) -> None:
    """A new round for agents, with why the policy does not decide alone."""
    case = rt.case
    case.progress.agent_decision = None
    case.progress.reevaluate = False
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
    case = rt.case
    waits = (CaseStatus.awaiting_agent, CaseStatus.awaiting_info) if rt.paths.every_wait \
        else (CaseStatus.awaiting_agent,)
    if case.status not in waits:
        return Refusal("wrong_state", f"the case is {case.status}, not waiting for an agent")
    if case.progress.agent_decision is not None:
        return Refusal("wrong_state", "the case was already decided")
    if case.progress.reevaluate:
        return Refusal("wrong_state", "the policy is deciding again (a requirement was "
                                      "marked met)")
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


def satisfy_refusal(rt: CaseRuntime, sig: SatisfyRequirementSignal) -> Refusal | None:
    if not rt.paths.every_wait:
        return Refusal("wrong_state", "this case started before requirements could be "
                                      "marked met; approve or deny it")
    refusal = _agent_refusal(rt)
    if refusal is not None:
        return refusal
    case, policy = rt.case, rt.policy
    need = policy.documents.get(sig.requirement)
    if need is None:
        return Refusal("invalid", f"{sig.requirement!r} is not a requirement of policy "
                                  f"{policy.version} (it has: {', '.join(policy.documents)})")
    if sig.requirement in case.requirements_met:
        return Refusal("invalid", f"{sig.requirement} is already met: "
                                  f"{case.requirements_met[sig.requirement]}")
    if need.satisfied_by(sig.requirement, case.documents):
        return Refusal("invalid", f"{sig.requirement} is already met by a document")
    return None


def _failed_refund_refusal(rt: CaseRuntime) -> Refusal | None:
    case = rt.case
    if case.status != CaseStatus.refund_failed or not rt.paths.every_wait:
        return Refusal("wrong_state", f"the case is {case.status}, not refund_failed")
    if case.progress.agent_decision is not None:
        return Refusal("wrong_state", "an agent already acted on the failed refund")
    return None


def retry_refund_refusal(rt: CaseRuntime, sig: RetryRefundSignal) -> Refusal | None:
    refusal = _failed_refund_refusal(rt)
    if refusal is None and rt.case.refundable <= 0:
        refusal = Refusal("invalid", "nothing is left to refund on the charge: close the "
                                     "case instead")
    return refusal


def close_refusal(rt: CaseRuntime, sig: CloseCaseSignal) -> Refusal | None:
    return _failed_refund_refusal(rt)


def approve(rt: CaseRuntime, sig: ApproveSignal) -> ActionResult | Refusal:
    actor = f"agent:{sig.agent}"
    refusal = approve_refusal(rt, sig)
    if refusal is not None:
        return _refuse(rt, "approve", actor, refusal)
    case, amount = rt.case, _approval_amount(rt, sig)
    if amount <= 0 and rt.paths.within_refundable:
        message = ("Nothing is left to refund on the charge (refunded outside this case): "
                   "the case closes and the customer is told why")
        case.progress.agent_decision = AgentDecision(kind="approve", agent=sig.agent,
                                                     amount=0, note=sig.note)
        rt.record("approval_recorded", message, actor=actor, amount=0)
        return _result(rt, message)
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


def satisfy(rt: CaseRuntime, sig: SatisfyRequirementSignal) -> ActionResult:
    """A requirement met on an agent's word ("ticket 4411 confirmed by support"): the
    policy decides again with it."""
    actor = f"agent:{sig.agent}"
    case = rt.case
    case.requirements_met[sig.requirement] = f"{sig.note} ({actor})"
    case.progress.reevaluate = True
    rt.record("requirement_met", f"{sig.requirement} met: {sig.note}", actor=actor,
              requirement=sig.requirement)
    return _result(rt, f"{sig.requirement} is met; the policy decides again")


def retry_refund(rt: CaseRuntime, sig: RetryRefundSignal) -> ActionResult:
    actor = f"agent:{sig.agent}"
    rt.case.progress.agent_decision = AgentDecision(kind="retry", agent=sig.agent,
                                                    note=sig.note)
    rt.record("refund_retry_requested", f"{sig.agent} retries the failed refund"
              f"{': ' + sig.note if sig.note else ''}", actor=actor)
    return _result(rt, "The refund is made again, in a new round")


def close(rt: CaseRuntime, sig: CloseCaseSignal) -> ActionResult:
    """Closed on purpose, with why (e.g. the money went back another way)."""
    case = rt.case
    case.progress.agent_decision = AgentDecision(kind="close", agent=sig.agent,
                                                 note=sig.reason)
    case.close_reason = sig.reason
    rt.set_status(CaseStatus.closed, f"closed by {sig.agent}: {sig.reason}",
                  actor=f"agent:{sig.agent}")
    return _result(rt, "The case is closed")


def _refuse(rt: CaseRuntime, action: str, actor: str, refusal: Refusal) -> Refusal:
    rt.record("action_refused", f"{action} refused: {refusal.reason}", actor=actor,
              action=action, code=refusal.code)
    return refusal


def _result(rt: CaseRuntime, message: str) -> ActionResult:
    case = rt.case
    return ActionResult(accepted=True, status=case.status, message=message,
                        approvals=len(case.approvals),
                        approvers_required=case.approvers_required)
