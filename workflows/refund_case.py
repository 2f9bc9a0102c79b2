"""The RefundCase workflow: one refund request, walked through the seven steps of the
playbook (acknowledge, assess, apply the policy, gather information, decide, refund,
follow up) plus the special paths (billing errors, fraud holds, disputes, withdrawal).

Deterministic orchestration only: every side effect is an activity, time is
`workflow.now()` and timers. Each step is a small method; every change to the case lands
in its timeline through `_record`. Agents' signals and updates share one validation
(`_approve`, `_deny`, `_request_info`), so a refused signal and a refused update are the
same refusal, recorded the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.email_activities import (
        EMAIL_PERMANENT,
        NOTIFY_OPS,
        SEND_EMAIL,
        EmailInput,
        EmailSent,
        OpsNotice,
    )
    from activities.policy_activities import LOAD_POLICY, POLICY_INVALID
    from activities.stripe_models import (
        CREATE_REFUND,
        GATHER_FACTS,
        GET_REFUND,
        STRIPE_PERMANENT,
        CreateRefundInput,
        GatherFactsInput,
        GetRefundInput,
        RefundResult,
        StripeFacts,
    )
    from core import search_attributes as sa
    from core.models import (
        TERMINAL_STATUSES,
        UNDELIVERABLE_EMAIL_EVENTS,
        ApproveSignal,
        CaseStatus,
        CustomerReplySignal,
        DenySignal,
        DisputeOpenedSignal,
        EmailEventSignal,
        FeedbackSignal,
        RefundRequest,
        RefundUpdateSignal,
        RequestInfoSignal,
        TimelineEntry,
        WithdrawSignal,
    )
    from core.money import plain, refund_step
    from policies.evaluate import evaluate
    from policies.facts import PolicyDecision
    from policies.model import Policy
    from workflows.assessment import assess, policy_facts
    from workflows.case_state import (
        ACTION_REFUSED,
        ActionResult,
        Approval,
        CaseState,
        Denial,
        RefusalCode,
    )

# --- activity options (every call: a timeout, a retry policy fitting its errors) -------

EMAIL_TIMEOUT = timedelta(seconds=30)
EMAIL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=10,
    non_retryable_error_types=[EMAIL_PERMANENT],
)
STRIPE_TIMEOUT = timedelta(seconds=30)
STRIPE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
    non_retryable_error_types=[STRIPE_PERMANENT],
)
POLICY_TIMEOUT = timedelta(seconds=10)
POLICY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
    non_retryable_error_types=[POLICY_INVALID],
)

# Refund follow-through: how often to poll Stripe when no webhook came, and for how long.
MAX_REFUND_POLLS = 6
MAX_POLL_INTERVAL = timedelta(hours=12)
# What the approval email promises: the money is back on the card within this time.
REFUND_ARRIVAL = timedelta(days=10)
FINAL_REFUND_STATUSES = frozenset({"succeeded", "failed", "canceled"})
FEEDBACK_HINT = {
    "en": "Reply to this email with a rating from 1 (poor) to 5 (excellent) and a comment.",
    "ja": "このメールに 1（不満）から 5（満足）の評価とご意見を添えてご返信ください。",
    "ko": "이 메일에 1(불만족)부터 5(매우 만족)까지의 평가와 의견을 회신해 주세요.",
}


RefundOutcome = Literal["refunded", "failed", "not_made", "nothing_left"]
AskOutcome = Literal["replied", "abandoned", "undeliverable"]

# `workflow.patched` ids: each guards a change of behaviour that running cases started
# before it must not see (their histories replay the old path; see tests/histories/).
PATCH_AGENT_AFTER_REFUSAL = "agent-decides-after-refusal"  # a Stripe refusal: agents only
PATCH_ACK_FAILURE_BREACH = "ack-failure-is-breach"
PATCH_UNDELIVERABLE_INFO = "undeliverable-info-to-agent"
PATCH_FEEDBACK_BY_EMAIL = "feedback-by-email"
PATCH_REFUND_REVERSAL = "refund-reversal"


class _CaseClosed(Exception):
    """A withdraw or dispute signal closed the case while it waited for something else."""


@dataclass
class _Refusal:
    code: RefusalCode
    reason: str


@dataclass
class _AgentDecision:
    kind: Literal["approve", "deny", "request_info"]
    agent: str
    amount: int = 0
    note: str = ""
    denial: Denial | None = None
    questions: list[str] = field(default_factory=list)


@workflow.defn(name="RefundCase")
class RefundCase:
    @workflow.init
    def __init__(self, request: RefundRequest) -> None:
        self.case = CaseState(
            case_id=workflow.info().workflow_id,
            request=request,
            documents=list(request.documents),
        )
        self._policy: Policy | None = None
        self._agent_decision: _AgentDecision | None = None
        self._closing: CaseStatus | None = None  # withdrawn / disputed before any refund
        self._refund_started = False
        self._refund_rounds = 0
        self._agent_must_decide = False  # after Stripe refused a refund: no auto-approval
        self._early_updates: dict[str, RefundUpdateSignal] = {}
        self._info_rounds = 0
        self._info_undeliverable = False  # SendGrid bounced / dropped our questions
        self._refund_reversed = False  # Stripe: a succeeded refund failed after all
        self._email_events: set[str] = set()  # sg_event_id seen
        self._search_attributes: dict[str, Any] = {}

    # === the steps ======================================================================

    @workflow.run
    async def run(self, request: RefundRequest) -> CaseState:
        self._record("received", f"Refund request {request.request_id} received "
                                 f"({request.reason.value})", actor="customer")
        self._upsert_search_attributes()
        try:
            await self._load_policy()
            await self._acknowledge()
            await self._assess()
            amount = await self._decide()
            while amount is not None:
                outcome = await self._refund(amount)
                if outcome == "refunded":
                    await self._follow_up()
                if outcome != "not_made":
                    break
                # Stripe refused for good and no money moved: look again, an agent decides.
                self._agent_must_decide = True
                if workflow.patched(PATCH_AGENT_AFTER_REFUSAL):
                    self._close_if_disputed()  # Stripe refuses disputed charges: hand over
                    self._checkpoint()  # withdrawn or disputed while ops were told
                await self._assess()
                if workflow.patched(PATCH_AGENT_AFTER_REFUSAL):
                    self._close_if_disputed()
                    self._checkpoint()
                amount = await self._decide()
        except _CaseClosed:
            pass  # the signal handler recorded why and told whoever needs to know
        self._waiting(None, None)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.case

    async def _load_policy(self) -> None:
        """Step 3 (first half): the policy in force, pinned for the whole case."""
        self._policy = await workflow.execute_activity(
            LOAD_POLICY, result_type=Policy, start_to_close_timeout=POLICY_TIMEOUT,
            retry_policy=POLICY_RETRY, summary="Load the refund policy in force",
        )
        self.case.policy_version = self._policy.version
        self._record("policy_pinned", f"Policy {self._policy.version} applies to this case")
        self._upsert_search_attributes()

    async def _acknowledge(self) -> None:
        """Step 1: the acknowledgment email, raced against the acknowledgment SLA. A breach
        is recorded and escalated; the case goes on either way."""
        sla = self.policy.sla.acknowledge
        due = workflow.info().start_time + sla
        # What the customer is promised: a decision (or our questions) within the agent SLA.
        next_update = workflow.info().start_time + self.policy.sla.agent_decision
        email = self._email_input("acknowledgment", "ack", {
            "reason": self.case.request.reason.value, "next_update_by": _iso(next_update)})
        handle = workflow.start_activity(
            SEND_EMAIL, email, result_type=EmailSent, start_to_close_timeout=EMAIL_TIMEOUT,
            retry_policy=EMAIL_RETRY, summary=f"Acknowledge the request (due {_iso(due)})",
        )
        self._waiting("the acknowledgment email", due)
        left = max(due - workflow.now(), timedelta(seconds=1))
        try:
            await workflow.wait_condition(handle.done, timeout=left,
                                          timeout_summary="acknowledgment SLA")
        except TimeoutError:
            await self._breach("acknowledge", f"The acknowledgment was not sent within {sla}")
        sent = await self._email_done(handle, email)
        if not sent and workflow.patched(PATCH_ACK_FAILURE_BREACH):
            await self._breach("acknowledge", "The acknowledgment email could not be sent")
        self._checkpoint()

    async def _assess(self) -> None:
        """Step 2: the facts from Stripe, then the assessment: findings, risk, root cause."""
        self._set_status(CaseStatus.assessing, "looking the purchase up in Stripe")
        request = self.case.request
        try:
            facts = await workflow.execute_activity(
                GATHER_FACTS, GatherFactsInput(case_id=self.case.case_id, request=request),
                result_type=StripeFacts, start_to_close_timeout=STRIPE_TIMEOUT,
                retry_policy=STRIPE_RETRY,
                summary=f"Look up {request.charge_id or request.payment_intent_id} in Stripe",
            )
        except ActivityError as err:
            reason = f"Stripe look-up failed: {_cause(err)}"
            facts = StripeFacts(found=False, not_found_reason=reason,
                                charge_id=request.charge_id,
                                payment_intent_id=request.payment_intent_id)
        self._checkpoint()
        self.case.facts = facts
        self._record("facts_gathered", _facts_line(facts), actor="stripe")
        assessment = assess(request, facts, external_refunded=self._outside_refunded())
        self.case.assessment = assessment
        for code, line in zip(assessment.findings, assessment.finding_details, strict=True):
            self._record("finding", line, code=code)
        reasons = "; ".join(assessment.risk_reasons) or "no risk signals"
        self._record("risk_assessed", f"Risk {assessment.risk} ({assessment.risk_score}/100): "
                                      f"{reasons}", risk=assessment.risk,
                     score=assessment.risk_score)
        if assessment.root_cause:
            self.case.root_cause = assessment.root_cause
            self._record("root_cause", assessment.root_cause, tag=assessment.root_cause
                         .split(":", 1)[0])
        self._upsert_search_attributes()

    async def _decide(self) -> int | None:
        """Steps 3-5: evaluate, ask the customer, or wait for agents, until the case is
        approved (returns the amount) or closed (None)."""
        undeliverable = False
        while True:
            decision = self._evaluate()
            # After Stripe refused a refund, the policy decides nothing on its own.
            by_policy = not self._agent_must_decide
            if not by_policy and not workflow.patched(PATCH_AGENT_AFTER_REFUSAL):
                by_policy = decision.outcome != "approve"  # cases started before the fix
            if undeliverable:
                pass  # our questions cannot reach the customer: an agent decides
            elif decision.outcome == "approve" and by_policy:
                return await self._approved_by_policy(decision)
            elif decision.outcome == "deny" and by_policy:
                denial = Denial(by="policy", clause_id=decision.clause_ids[0])
                await self._send_denial(denial)
                return None
            elif decision.outcome == "need_info" and by_policy:
                asked = await self._ask(decision.questions, "policy")
                if asked == "abandoned":
                    return None
                undeliverable = asked == "undeliverable"
                continue
            action = await self._await_agents(decision, undeliverable=undeliverable)
            undeliverable = False
            if action.kind == "approve":
                await self._send_approval(action.amount)
                return action.amount
            if action.kind == "deny" and action.denial is not None:
                await self._send_denial(action.denial)
                return None
            asked = await self._ask(action.questions, f"agent:{action.agent}")
            if asked == "abandoned":
                return None
            undeliverable = asked == "undeliverable"

    def _evaluate(self) -> PolicyDecision:
        assert self.case.facts is not None and self.case.assessment is not None
        now = workflow.now()
        facts = policy_facts(self.case.request, self.case.facts, self.case.assessment,
                             documents=self.case.documents, now=now,
                             external_refunded=self._outside_refunded())
        decision = evaluate(facts, self.policy, now)
        self.case.decision = decision
        self.case.approvers_required = decision.approvers_required
        self._record("policy_decision", decision.explanation, actor="policy",
                     outcome=decision.outcome, amount=decision.amount,
                     clause_ids=decision.clause_ids, policy_version=decision.policy_version)
        self._upsert_search_attributes()
        return decision

    async def _approved_by_policy(self, decision: PolicyDecision) -> int:
        self.case.approved_amount = decision.amount
        self._set_status(CaseStatus.approved, f"the policy approves {self._money(decision.amount)}"
                         f" ({', '.join(decision.clause_ids)})", actor="policy")
        await self._send_approval(decision.amount)
        return decision.amount

    async def _send_approval(self, amount: int) -> None:
        """Approval email (or the billing-error apology) saying what happens next, by when."""
        by = _iso(workflow.now() + REFUND_ARRIVAL)
        money = {"amount": amount, "currency": self._currency()}
        assessment = self.case.assessment
        if assessment is not None and assessment.billing_error_confirmed:
            await self._email("billing_error_apology", "approval",
                              {**money, "root_cause": assessment.root_cause or "",
                               "next_steps_by": by})
        else:
            await self._email("approval", "approval", {**money, "next_steps_by": by})
        self._checkpoint()

    async def _send_denial(self, denial: Denial) -> None:
        """Denial email quoting the clause and offering the policy's alternatives."""
        self.case.denial = denial
        self._set_status(CaseStatus.denied, f"denied under clause {denial.clause_id}",
                         actor=denial.by)
        clause = self.policy.clause(denial.clause_id)
        offered = [a for a in self.policy.alternatives
                   if denial.alternative in (None, a.id)]
        await self._email("denial", "denial", {
            "clause_id": clause.id, "clause_text": clause.text, "note": denial.note,
            "alternatives": [{"id": a.id, "text": a.text} for a in offered],
        })

    async def _ask(self, questions: list[str], asked_by: str) -> AskOutcome:
        """Step 4: email the questions, remind once, close as abandoned at the timeout.
        "replied": the case is re-evaluated; "undeliverable": SendGrid could not deliver
        the questions, so an agent takes over instead of waiting out the timeout."""
        sla = self.policy.sla
        self._info_rounds += 1
        self._info_undeliverable = False
        rounds = self._info_rounds
        reply_by = workflow.now() + sla.info_timeout
        self.case.questions = list(questions)
        self._set_status(CaseStatus.awaiting_info, f"{len(questions)} question(s) for the "
                         "customer", actor=asked_by)
        context = {"questions": list(questions), "reply_by": _iso(reply_by)}
        seen = len(self.case.replies)  # before the email: a quick reply must count
        await self._email("info_request", f"info_request_{rounds}", context)

        def replied() -> bool:
            return len(self.case.replies) > seen

        def answered_or_bounced() -> bool:
            return replied() or self._info_undeliverable

        if not await self._wait("the customer's reply", answered_or_bounced, sla.info_reminder,
                                reply_by):
            await self._email("reminder", f"reminder_{rounds}", context)
            left = max(reply_by - workflow.now(), timedelta(seconds=1))
            if not await self._wait("the customer's reply (reminded)", answered_or_bounced,
                                    left):
                self._set_status(CaseStatus.abandoned, "no reply to our questions by "
                                 f"{_iso(reply_by)}")
                await self._email("abandoned", "abandoned", {"questions": list(questions)})
                return "abandoned"
        if not replied():
            return "undeliverable"
        self.case.questions = []
        self._set_status(CaseStatus.assessing, "the customer replied; deciding again")
        return "replied"

    async def _await_agents(self, decision: PolicyDecision, *, undeliverable: bool = False
                            ) -> _AgentDecision:
        """Step 5 by people: wait for an agent's decision, escalating once past the SLA."""
        self._agent_decision = None
        self.case.approvals = []
        why = f"the policy asks an agent to decide ({', '.join(decision.clause_ids)})"
        if decision.outcome != "agent_review":
            why = (f"the policy would {decision.outcome.replace('_', ' ')} "
                   f"({', '.join(decision.clause_ids)}); an agent decides")
        assessment = self.case.assessment
        if assessment is not None and assessment.risk == "high":
            why = f"held for review, risk high: {'; '.join(assessment.risk_reasons)}"
        if self.case.refund_error is not None:
            error = self.case.refund_error
            why = (f"Stripe refused the refund ({error['code']}: {error['message']}); an agent "
                   "approves another amount or denies")
        if undeliverable:
            why = ("our questions could not be delivered to the customer's address; an agent "
                   "decides or reaches the customer another way")
            await self._notify_ops("info_undeliverable", why, f"undeliverable_{self._info_rounds}")
        self._set_status(CaseStatus.awaiting_agent, why, actor="policy")
        sla = self.policy.sla.agent_decision

        def decided() -> bool:
            return self._agent_decision is not None

        if not await self._wait("an agent's decision", decided, sla):
            await self._breach("agent_decision", f"No agent decided within {sla}")
            await self._wait("an agent's decision (escalated)", decided, None)
        assert self._agent_decision is not None
        return self._agent_decision

    async def _refund(self, amount: int) -> RefundOutcome:
        """Step 6: create the Stripe refund (once, whatever retries or duplicate signals do)
        and follow it to a final status."""
        facts = self.case.facts
        assert facts is not None
        if amount > self.case.refundable:
            amount = self.case.refundable
            self._record("amount_reduced", f"Refunds made outside this case leave "
                         f"{self._money(amount)} to refund", amount=amount)
        if amount <= 0:
            self._set_status(CaseStatus.completed, "nothing is left to refund on the charge")
            return "nothing_left"
        self.case.approved_amount = amount
        self._refund_started = True
        self._refund_rounds += 1
        # One key per refund round, never per attempt: every retry of a round reuses it. A
        # later round exists only after Stripe refused the earlier one for good.
        step = "refund" if self._refund_rounds == 1 else f"refund-{self._refund_rounds}"
        self._set_status(CaseStatus.refunding, f"refunding {self._money(amount)}")
        request = CreateRefundInput(
            case_id=self.case.case_id, charge_id=facts.charge_id,
            payment_intent_id=facts.payment_intent_id, amount=amount,
            currency=self._currency(), idempotency_key=f"{workflow.info().workflow_id}:{step}",
            reason_tag=_root_cause_tag(self.case.root_cause) or self.case.request.reason.value,
        )
        try:
            result = await workflow.execute_activity(
                CREATE_REFUND, request, result_type=RefundResult,
                start_to_close_timeout=STRIPE_TIMEOUT, retry_policy=STRIPE_RETRY,
                summary=f"Refund {self._money(amount)} on {facts.charge_id}",
            )
        except ActivityError as err:
            await self._refund_not_made(err)
            return "not_made"
        self._refund_created(result)
        return await self._follow_refund()

    async def _follow_refund(self) -> RefundOutcome:
        """Wait for Stripe's webhook (refund_update); poll as a bounded fallback."""
        sla = self.policy.sla.refund_settle_poll
        if not self._refund_final():
            await self._wait("Stripe's refund webhook", self._refund_final, sla)
        interval = sla
        for _ in range(MAX_REFUND_POLLS):
            if self._refund_final():
                break
            await self._poll_refund()
            interval = min(interval * 2, MAX_POLL_INTERVAL)
            if not self._refund_final():
                await self._wait("the refund to settle", self._refund_final, interval)
        if not self._refund_final():
            await self._notify_ops("refund_pending", f"Refund still not settled after "
                                   f"{MAX_REFUND_POLLS} polls", "refund_pending")
            await self._wait("the refund to settle (escalated)", self._refund_final, None)
        refund = self.case.refund
        assert refund is not None
        if refund.status == "succeeded":
            self._set_status(CaseStatus.refunded, f"refund {refund.refund_id} succeeded",
                             actor="stripe")
            return "refunded"
        await self._refund_failed(refund)
        return "failed"

    async def _refund_failed(self, refund: RefundResult) -> None:
        """The money did not go back: the customer and ops are told."""
        reason = refund.failure_reason or refund.status
        self._set_status(CaseStatus.refund_failed, f"refund {refund.refund_id} {refund.status}"
                         f" ({reason})", actor="stripe")
        await self._email("refund_failed", "refund_failed", {
            "amount": refund.amount, "currency": refund.currency, "failure_reason": reason})
        await self._notify_ops("refund_failed", f"Refund {refund.refund_id} "
                               f"{refund.status}: {reason}", "refund_failed")

    async def _poll_refund(self) -> None:
        refund = self.case.refund
        assert refund is not None
        try:
            result = await workflow.execute_activity(
                GET_REFUND, GetRefundInput(refund_id=refund.refund_id),
                result_type=RefundResult, start_to_close_timeout=STRIPE_TIMEOUT,
                retry_policy=STRIPE_RETRY, summary=f"Poll refund {refund.refund_id}",
            )
        except ActivityError as err:
            self._record("refund_poll_failed", f"Polling the refund failed: {_cause(err)}")
            return
        self._apply_refund_update(_update_from(result, "poll"))

    async def _refund_not_made(self, err: ActivityError) -> None:
        """A permanent Stripe refusal (or retries exhausted): an agent takes over. No money
        moved (a refund made by a lost attempt is found by case id in the next round)."""
        details = _details(err)
        code = str(details.get("code") or "unknown")
        message = str(details.get("message") or _cause(err))
        self.case.refund_error = {"code": code, "message": message}
        self._refund_started = False
        self._record("refund_refused", f"Stripe refused the refund ({code}): {message}",
                     actor="stripe", code=code, round=self._refund_rounds)
        await self._notify_ops("refund_error", f"Stripe refused the refund ({code}): {message}."
                               " An agent must take the case over.",
                               f"refund_error_{self._refund_rounds}")

    async def _follow_up(self) -> None:
        """Step 7: after the follow-up delay, confirm the refund, ask for feedback."""
        sla = self.policy.sla
        await self._wait("the follow-up date", lambda: self._refund_reversed,
                         sla.follow_up_delay)
        refund = self.case.refund
        assert refund is not None
        if self._refund_reversed:
            await self._refund_failed(refund)  # no "your money is back" after a failure
            return
        await self._email("refund_completed", "refund_completed", {
            "amount": refund.amount, "currency": refund.currency,
            "acquirer_reference": refund.acquirer_reference or "",
            "feedback_hint": FEEDBACK_HINT[self.case.request.locale],
        })
        if not await self._wait("the customer's feedback",
                                lambda: self.case.feedback is not None, sla.feedback_wait):
            self._record("no_feedback", f"No feedback within {sla.feedback_wait}")
        self._set_status(CaseStatus.completed, "refunded and followed up")

    # === signals, updates, query ========================================================

    @workflow.query
    def state(self) -> CaseState:
        return self.case

    @workflow.signal
    def approve(self, sig: ApproveSignal) -> None:
        self._approve(sig)

    @workflow.signal
    def deny(self, sig: DenySignal) -> None:
        self._deny(sig)

    @workflow.signal
    def request_info(self, sig: RequestInfoSignal) -> None:
        self._request_info(sig)

    @workflow.update
    def approve_action(self, sig: ApproveSignal) -> ActionResult:
        return _accepted_or_raise(self._approve(sig))

    @workflow.update
    def deny_action(self, sig: DenySignal) -> ActionResult:
        return _accepted_or_raise(self._deny(sig))

    @workflow.update
    def request_info_action(self, sig: RequestInfoSignal) -> ActionResult:
        return _accepted_or_raise(self._request_info(sig))

    @workflow.signal
    def customer_reply(self, sig: CustomerReplySignal) -> None:
        self.case.replies.append(sig)
        new = [a for a in sig.attachments if a not in self.case.documents]
        self.case.documents.extend(new)
        line = f"The customer replied by {sig.channel}"
        if new:
            line += f" with {', '.join(new)}"
        if self.case.status != CaseStatus.awaiting_info:
            line += f" (no question was open: the case is {self.case.status})"
        self._record("customer_replied", line, actor="customer", attachments=new)
        rating = _rating_in(sig.text)
        if (self.case.status == CaseStatus.refunded and self.case.feedback is None
                and rating is not None and workflow.patched(PATCH_FEEDBACK_BY_EMAIL)):
            # The follow-up email asks for a 1-5 rating by reply.
            self._record_feedback(FeedbackSignal(rating=rating, comment=sig.text[:5_000]),
                                  "email")

    @workflow.signal
    def refund_update(self, sig: RefundUpdateSignal) -> None:
        ours = self.case.refund
        if sig.case_id == self.case.case_id or (
                sig.case_id is None and ours is not None and ours.refund_id == sig.refund_id):
            self._apply_refund_update(sig)
        else:
            self._outside_refund(sig)

    @workflow.signal
    async def dispute_opened(self, sig: DisputeOpenedSignal) -> None:
        if self.case.dispute is not None and self.case.dispute.dispute_id == sig.dispute_id:
            return  # a redelivered webhook
        self.case.dispute = sig
        if self._refund_started or self.case.status in TERMINAL_STATUSES:
            message = (f"Dispute {sig.dispute_id} opened ({sig.reason or 'no reason'}) while "
                       f"the case is {self.case.status}; the refund was already under way")
            self._record("dispute_opened", message, actor="stripe", dispute_id=sig.dispute_id)
        else:
            message = (f"Dispute {sig.dispute_id} opened ({sig.reason or 'no reason'}): no "
                       "refund will be made, the dispute process decides")
            self._closing = CaseStatus.disputed
            self._set_status(CaseStatus.disputed, message, actor="stripe")
        await self._notify_ops("dispute_opened", message, f"dispute_{sig.dispute_id}")

    @workflow.signal
    def withdraw(self, sig: WithdrawSignal) -> None:
        actor = sig.by if sig.by in ("customer", "system") else f"agent:{sig.by}"
        if self._refund_started or self.case.status in TERMINAL_STATUSES:
            why = ("the refund is already made" if self._refund_started
                   else f"the case is already {self.case.status}")
            self._record("withdraw_refused", f"Withdrawal refused: {why}", actor=actor,
                         note=sig.note)
            return
        self._closing = CaseStatus.withdrawn
        self._set_status(CaseStatus.withdrawn, f"withdrawn{': ' + sig.note if sig.note else ''}",
                         actor=actor)

    @workflow.signal
    def feedback(self, sig: FeedbackSignal) -> None:
        if self.case.status != CaseStatus.refunded:
            self._record("feedback_refused", f"Feedback {sig.rating}/5 not recorded: the case "
                         f"is {self.case.status}", actor="customer")
            return
        if self.case.feedback is not None:
            self._record("feedback_refused", f"Feedback {sig.rating}/5 not recorded: "
                         f"{self.case.feedback.rating}/5 was already given", actor="customer")
            return
        self._record_feedback(sig, "signal")

    def _record_feedback(self, sig: FeedbackSignal, channel: str) -> None:
        self.case.feedback = sig
        self._record("feedback", f"Rated {sig.rating}/5: {sig.comment}", actor="customer",
                     rating=sig.rating, channel=channel)

    @workflow.signal
    def email_event(self, sig: EmailEventSignal) -> None:
        if sig.sg_event_id is not None:
            if sig.sg_event_id in self._email_events:
                return  # SendGrid delivers events at least once
            self._email_events.add(sig.sg_event_id)
        self._record("email_event", f"Email {sig.template or ''} to {sig.email}: {sig.event}"
                     f"{' (' + sig.reason + ')' if sig.reason else ''}", actor="sendgrid",
                     event=sig.event, template=sig.template)
        if (sig.event in UNDELIVERABLE_EMAIL_EVENTS and sig.template in ("info_request", "reminder")
                and self.case.status == CaseStatus.awaiting_info
                and sig.email.lower() == self.case.request.customer_email.lower()
                and workflow.patched(PATCH_UNDELIVERABLE_INFO)):
            self._info_undeliverable = True

    # --- the one validation of agents' actions ---

    def _agent_refusal(self) -> _Refusal | None:
        if self.case.status != CaseStatus.awaiting_agent:
            return _Refusal("wrong_state", f"the case is {self.case.status}, not waiting "
                                           "for an agent")
        if self._agent_decision is not None:
            return _Refusal("wrong_state", "the case was already decided")
        return None

    def _approve(self, sig: ApproveSignal) -> ActionResult | _Refusal:
        actor = f"agent:{sig.agent}"
        refusal = self._agent_refusal()
        first = self.case.approvals[0] if self.case.approvals else None
        amount = sig.amount or (first.amount if first else self._proposed_amount())
        if refusal is None:
            refusal = self._approval_refusal(sig, amount, first)
        if refusal is not None:
            return self._refuse("approve", actor, refusal)
        self.case.approvals.append(Approval(agent=sig.agent, amount=amount, note=sig.note,
                                            at=workflow.now()))
        required = max(self.case.approvers_required,
                       self.policy.approvers_required(amount, self._currency()))
        self.case.approvers_required = required
        if len(self.case.approvals) < required:
            message = (f"Approval {len(self.case.approvals)} of {required} for "
                       f"{self._money(amount)}; a different agent must also approve")
            self._record("approval_recorded", message, actor=actor, amount=amount)
        else:
            message = f"Approved {self._money(amount)}"
            self.case.approved_amount = amount
            self._agent_decision = _AgentDecision("approve", sig.agent, amount=amount,
                                                  note=sig.note)
            self._set_status(CaseStatus.approved, f"{message} by "
                             f"{', '.join(a.agent for a in self.case.approvals)}", actor=actor)
        return self._result(message)

    def _approval_refusal(self, sig: ApproveSignal, amount: int, first: Approval | None
                          ) -> _Refusal | None:
        refundable = self.case.refundable
        if self.case.facts is None or not self.case.facts.found:
            return _Refusal("invalid", "the charge was not found in Stripe: nothing to refund")
        if amount > refundable:
            return _Refusal("invalid", f"{self._money(amount)} is above the refundable "
                                       f"{self._money(refundable)}")
        step = refund_step(self._currency())
        if amount % step:
            return _Refusal("invalid", f"Stripe refunds {self._currency().upper()} only in "
                                       f"multiples of {step} minor units, not "
                                       f"{self._money(amount)}")
        if any(a.agent == sig.agent for a in self.case.approvals):
            return _Refusal("invalid", f"{sig.agent} already approved; a second approval "
                                       "must come from a different agent")
        if first is not None and amount != first.amount:
            return _Refusal("invalid", f"{self._money(amount)} differs from the first "
                                       f"approval ({self._money(first.amount)})")
        return None

    def _deny(self, sig: DenySignal) -> ActionResult | _Refusal:
        actor = f"agent:{sig.agent}"
        refusal = self._agent_refusal()
        if refusal is None and not self.policy.has_clause(sig.clause_id):
            refusal = _Refusal("invalid", f"clause {sig.clause_id!r} is not in policy "
                                          f"{self.policy.version}")
        if refusal is None and sig.alternative is not None and sig.alternative not in {
                a.id for a in self.policy.alternatives}:
            refusal = _Refusal("invalid", f"alternative {sig.alternative!r} is not offered by "
                                          f"policy {self.policy.version}")
        if refusal is not None:
            return self._refuse("deny", actor, refusal)
        denial = Denial(by=actor, clause_id=sig.clause_id, note=sig.note,
                        alternative=sig.alternative)
        self._agent_decision = _AgentDecision("deny", sig.agent, note=sig.note, denial=denial)
        self.case.denial = denial
        self._set_status(CaseStatus.denied, f"denied under clause {sig.clause_id}"
                         f"{': ' + sig.note if sig.note else ''}", actor=actor)
        return self._result(f"Denied under clause {sig.clause_id}")

    def _request_info(self, sig: RequestInfoSignal) -> ActionResult | _Refusal:
        actor = f"agent:{sig.agent}"
        refusal = self._agent_refusal()
        if refusal is not None:
            return self._refuse("request_info", actor, refusal)
        self._agent_decision = _AgentDecision("request_info", sig.agent,
                                              questions=list(sig.questions))
        self._record("info_requested_by_agent", f"{sig.agent} asks: "
                     f"{' / '.join(sig.questions)}", actor=actor)
        return self._result(f"{len(sig.questions)} question(s) will be sent to the customer")

    def _refuse(self, action: str, actor: str, refusal: _Refusal) -> _Refusal:
        self._record("action_refused", f"{action} refused: {refusal.reason}", actor=actor,
                     action=action, code=refusal.code)
        return refusal

    def _result(self, message: str) -> ActionResult:
        return ActionResult(accepted=True, status=self.case.status, message=message,
                            approvals=len(self.case.approvals),
                            approvers_required=self.case.approvers_required)

    # === refunds as Stripe reports them =================================================

    def _refund_created(self, result: RefundResult) -> None:
        self.case.refund = result
        verb = "found (already made for this case)" if result.reused else "created"
        self._record("refund_created", f"Refund {result.refund_id} of "
                     f"{plain(result.amount, result.currency)} {verb}: {result.status}",
                     actor="stripe", refund_id=result.refund_id, status=result.status)
        early = self._early_updates.pop(result.refund_id, None)
        if early is not None:
            self._apply_refund_update(early)

    def _apply_refund_update(self, sig: RefundUpdateSignal) -> None:
        """One refund status change; duplicates and stale updates change nothing."""
        refund = self.case.refund
        if refund is None:  # the webhook beat the activity's answer
            # Stripe does not order its events: a late "pending" must not hide a final status.
            held = self._early_updates.get(sig.refund_id)
            if held is None or held.status not in FINAL_REFUND_STATUSES:
                self._early_updates[sig.refund_id] = sig
                self._record("refund_update_held", f"Refund {sig.refund_id} reported "
                             f"{sig.status} before Stripe answered our request; applied when "
                             "it does", actor="stripe", status=sig.status)
            return
        if sig.refund_id != refund.refund_id:
            self._outside_refund(sig)
            return
        if sig.acquirer_reference and sig.acquirer_reference != refund.acquirer_reference:
            # Stripe sends the reference later, in an update that keeps the status.
            refund = self.case.refund = refund.model_copy(
                update={"acquirer_reference": sig.acquirer_reference})
            self._record("acquirer_reference", f"Refund {sig.refund_id} has acquirer reference "
                         f"{sig.acquirer_reference}", actor="stripe")
        if (refund.status == "succeeded" and sig.status == "failed"
                and self.case.status == CaseStatus.refunded
                and workflow.patched(PATCH_REFUND_REVERSAL)):
            # Rare, and documented by Stripe: a refund fails after it succeeded.
            self._refund_reversed = True
        elif refund.status in FINAL_REFUND_STATUSES or sig.status == refund.status:
            return
        self.case.refund = refund.model_copy(update={
            "status": sig.status,
            "failure_reason": sig.failure_reason or refund.failure_reason,
            "acquirer_reference": sig.acquirer_reference or refund.acquirer_reference,
        })
        self._record("refund_status", f"Refund {sig.refund_id} is {sig.status}"
                     f"{' (' + sig.failure_reason + ')' if sig.failure_reason else ''}",
                     actor="stripe", status=sig.status, source=sig.source)

    def _outside_refund(self, sig: RefundUpdateSignal) -> None:
        """A refund on the charge this case did not make (e.g. in the Stripe dashboard):
        recorded, and its amount no longer refundable by the case."""
        known = {r.refund_id: i for i, r in enumerate(self.case.external_refunds)}
        result = RefundResult(refund_id=sig.refund_id, status=sig.status,
                              amount=sig.amount or 0,
                              currency=sig.currency or self._currency(),
                              charge_id=sig.charge_id, case_id=sig.case_id)
        if sig.refund_id in known:
            held = self.case.external_refunds[known[sig.refund_id]]
            if held.status in FINAL_REFUND_STATUSES or held.status == sig.status:
                return  # a duplicate or a stale event
            self.case.external_refunds[known[sig.refund_id]] = result
            # Its status moves what is refundable (a failed one gives the amount back).
            self._record("outside_refund", f"Refund {sig.refund_id} made outside this case "
                         f"is {sig.status}; {self._money(self.case.refundable)} remains "
                         "refundable", actor="stripe", refund_id=sig.refund_id,
                         amount=result.amount, status=sig.status)
            return
        self.case.external_refunds.append(result)
        self._record("outside_refund", f"Refund {sig.refund_id} of "
                     f"{self._money(sig.amount or 0)} was made outside this case "
                     f"({sig.status}); {self._money(self.case.refundable)} remains refundable",
                     actor="stripe", refund_id=sig.refund_id, amount=sig.amount or 0)
        self._upsert_search_attributes()

    def _refund_final(self) -> bool:
        return self.case.refund is not None and self.case.refund.status in FINAL_REFUND_STATUSES

    def _outside_refunded(self) -> int:
        facts = self.case.facts
        known = {r.refund_id for r in facts.existing_refunds} if facts else set()
        return sum(r.amount for r in self.case.external_refunds
                   if r.refund_id not in known and r.status not in ("failed", "canceled"))

    # === helpers ========================================================================

    @property
    def policy(self) -> Policy:
        assert self._policy is not None, "the policy is loaded first"
        return self._policy

    def _checkpoint(self) -> None:
        if self._closing is not None:
            raise _CaseClosed(self._closing)

    def _close_if_disputed(self) -> None:
        """No refund was made and the charge is disputed (a dispute_opened signal during
        the refund, or the fresh facts): the dispute process decides, not us."""
        facts = self.case.facts
        dispute = self.case.dispute
        if self._closing is not None or self._refund_started:
            return
        if dispute is None and not (facts and (facts.disputed or facts.dispute_ids)):
            return
        which = dispute.dispute_id if dispute else ", ".join(facts.dispute_ids if facts
                                                               else []) or "open"
        self._closing = CaseStatus.disputed
        self._set_status(CaseStatus.disputed, f"Dispute {which} on the charge: no refund will "
                         "be made, the dispute process decides", actor="stripe")

    async def _wait(self, what: str, condition: Callable[[], bool],
                    timeout: timedelta | None, deadline: datetime | None = None) -> bool:
        """Wait for `condition` (or a closing signal) up to `timeout`, showing in the UI
        what the case waits for. False on timeout; raises _CaseClosed when closed."""
        if deadline is None and timeout is not None:
            deadline = workflow.now() + timeout
        self._waiting(what, deadline)
        try:
            await workflow.wait_condition(lambda: self._closing is not None or condition(),
                                          timeout=timeout, timeout_summary=what)
            met = True
        except TimeoutError:
            met = False
        self._waiting(None, None)
        self._checkpoint()
        return met

    def _waiting(self, what: str | None, deadline: datetime | None) -> None:
        self.case.waiting_for, self.case.deadline = what, deadline
        if what is None:
            workflow.set_current_details(f"**{self.case.status}**")
            return
        until = f" until {_iso(deadline)}" if deadline else ""
        workflow.set_current_details(f"**{self.case.status}**: waiting for {what}{until}")

    async def _breach(self, sla_name: str, message: str) -> None:
        """An SLA missed: flagged (search attribute too), recorded, escalated once."""
        if sla_name in self.case.sla_breaches:
            return
        self.case.sla_breaches.append(sla_name)
        self.case.sla_breached = True
        self._record("sla_breached", message, sla=sla_name)
        self._upsert_search_attributes()
        await self._notify_ops("sla_breached", message, f"sla_{sla_name}")

    def _email_input(self, template: str, step: str, context: dict[str, Any]) -> EmailInput:
        return EmailInput(case_id=self.case.case_id, template=template,  # type: ignore[arg-type]
                          to=self.case.request.customer_email,
                          locale=self.case.request.locale, context=context, step=step)

    async def _email(self, template: str, step: str, context: dict[str, Any]) -> bool:
        email = self._email_input(template, step, context)
        handle = workflow.start_activity(
            SEND_EMAIL, email, result_type=EmailSent, start_to_close_timeout=EMAIL_TIMEOUT,
            retry_policy=EMAIL_RETRY, summary=f"Email the customer: {template}",
        )
        return await self._email_done(handle, email)

    async def _email_done(self, handle: workflow.ActivityHandle[EmailSent],
                          email: EmailInput) -> bool:
        """An email's outcome in the timeline; a failed email is escalated, not fatal."""
        try:
            sent = await handle
        except ActivityError as err:
            self._record("email_failed", f"The {email.template} email could not be sent: "
                         f"{_cause(err)}", template=email.template)
            await self._notify_ops("email_failed", f"The {email.template} email to "
                                   f"{email.to} failed: {_cause(err)}", f"email_{email.step}")
            return False
        self._record("email_sent", f"Sent {email.template} to {email.to} ({sent.backend})",
                     template=email.template, message_id=sent.message_id)
        return True

    async def _notify_ops(self, kind: str, message: str, step: str) -> None:
        notice = OpsNotice(case_id=self.case.case_id, kind=kind, message=message, step=step)
        try:
            await workflow.execute_activity(
                NOTIFY_OPS, notice, result_type=EmailSent, start_to_close_timeout=EMAIL_TIMEOUT,
                retry_policy=EMAIL_RETRY, summary=f"Tell ops: {kind}",
            )
        except ActivityError as err:
            self._record("ops_notice_failed", f"Ops could not be told ({kind}): {_cause(err)}")
            return
        self._record("ops_notified", message, kind=kind)

    def _record(self, kind: str, message: str, /, *, actor: str = "system",
                **data: Any) -> None:
        self.case.timeline.append(TimelineEntry(at=workflow.now(), actor=actor, kind=kind,
                                                message=message, data=data))

    def _set_status(self, status: CaseStatus, why: str, *, actor: str = "system") -> None:
        if status == self.case.status:
            return
        old, self.case.status = self.case.status, status
        self._record("status", f"{old} → {status}: {why}", actor=actor,
                     **{"from": str(old), "to": str(status)})
        self._upsert_search_attributes()
        self._waiting(self.case.waiting_for, self.case.deadline)

    def _upsert_search_attributes(self) -> None:
        """Keep the ops view current; only changed values are written to history."""
        case, request, facts = self.case, self.case.request, self.case.facts
        values: dict[str, Any] = {
            sa.STATUS.name: str(case.status),
            sa.REASON.name: str(request.reason),
            sa.CUSTOMER.name: request.customer_email,
            sa.SLA_BREACHED.name: case.sla_breached,
            sa.CHARGE_ID.name: (facts.charge_id if facts and facts.charge_id else None)
            or request.charge_id or request.payment_intent_id,
            sa.AMOUNT.name: case.approved_amount or (case.decision.amount if case.decision
                                                      else None)
            or request.amount or (facts.amount if facts and facts.found else None),
            sa.CURRENCY.name: (facts.currency if facts and facts.currency else None)
            or request.currency,
            sa.RISK.name: case.assessment.risk if case.assessment else None,
            sa.POLICY_VERSION.name: case.policy_version,
        }
        keys = {k.name: k for k in sa.ALL}
        updates = [keys[name].value_set(value) for name, value in values.items()  # type: ignore[attr-defined]
                   if value is not None and self._search_attributes.get(name) != value]
        if updates:
            workflow.upsert_search_attributes(updates)
            self._search_attributes.update({k: v for k, v in values.items() if v is not None})

    def _currency(self) -> str:
        facts = self.case.facts
        return (facts.currency if facts and facts.currency else None) \
            or self.case.request.currency or "usd"

    def _money(self, amount: int) -> str:
        return plain(amount, self._currency())

    def _proposed_amount(self) -> int:
        decision = self.case.decision
        if decision is not None and decision.amount > 0:
            return min(decision.amount, self.case.refundable)
        return self.case.refundable


# --- small pure helpers ----------------------------------------------------------------


def _accepted_or_raise(outcome: ActionResult | _Refusal) -> ActionResult:
    """Updates report a refusal as an error the API maps to 409 / 422 (already recorded)."""
    if isinstance(outcome, _Refusal):
        raise ApplicationError(outcome.reason, {"code": outcome.code, "reason": outcome.reason},
                               type=ACTION_REFUSED, non_retryable=True)
    return outcome


def _update_from(result: RefundResult, source: Literal["poll", "activity"]
                 ) -> RefundUpdateSignal:
    return RefundUpdateSignal(refund_id=result.refund_id, status=result.status,
                              amount=result.amount, currency=result.currency,
                              charge_id=result.charge_id, failure_reason=result.failure_reason,
                              acquirer_reference=result.acquirer_reference,
                              case_id=result.case_id, source=source)


def _rating_in(text: str) -> int | None:
    """A 1-5 rating at the start of a reply ("4", "5 - quick", "Rating: 3/5"), else None.
    Only the first line counts: quoted history and signatures hold other digits."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    m = re.match(r"^\s*(?:rating\s*[:=]?\s*)?([1-5])(?:\s*/\s*5)?(?![0-9])", first,
                 re.IGNORECASE)
    return int(m.group(1)) if m else None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _cause(err: ActivityError) -> str:
    cause = err.cause
    return str(cause) if cause is not None else str(err)


def _details(err: ActivityError) -> dict[str, Any]:
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0],
                                                                             dict):
        return dict(cause.details[0])
    return {}


def _root_cause_tag(root_cause: str | None) -> str | None:
    return root_cause.split(":", 1)[0] if root_cause else None


def _facts_line(facts: StripeFacts) -> str:
    if not facts.found:
        return f"Purchase not found: {facts.not_found_reason}"
    currency = facts.currency or "usd"
    line = (f"Charge {facts.charge_id}: {plain(facts.amount, currency)}, "
            f"{plain(facts.amount_refunded, currency)} already refunded")
    if facts.radar_risk_level:
        line += f", Radar risk {facts.radar_risk_level}"
    if facts.dispute_ids:
        line += f", open disputes {', '.join(facts.dispute_ids)}"
    return line

