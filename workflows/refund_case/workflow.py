"""`RefundCase`: one refund request walked through the seven steps of the playbook.

`run()` reads as the steps; each step lives in the module named for it and works on the
one `CaseRuntime`. Handlers are thin: they hand the message to the step it belongs to.
Agents' updates have validators, so a refused update writes nothing to history; their
signals record a refusal in the timeline instead.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from core.contract import (
        ACTION_REFUSED,
        ActionResult,
        ApproveSignal,
        AssignSignal,
        CaseResult,
        CaseState,
        CloseCaseSignal,
        ContinuedCase,
        CustomerReplySignal,
        DenySignal,
        DisputeOpenedSignal,
        EmailEventSignal,
        FeedbackSignal,
        JoinIncidentSignal,
        NoteSignal,
        RefundRequest,
        RefundUpdateSignal,
        RequestInfoSignal,
        RetryRefundSignal,
        RetryStripeSignal,
        SatisfyRequirementSignal,
        WithdrawSignal,
    )

    from . import decide, desk, incident, patches
    from .acknowledge import acknowledge
    from .assess import assess_case
    from .follow_up import follow_up, on_feedback
    from .gather_info import on_email_event, on_reply
    from .policy import load_policy
    from .refund import on_refund_update, refund, report_failed
    from .reopen import announce_follow_up, pinned_policy, reopen
    from .runtime import CaseClosed, CaseRuntime, ContinueAsNewNow
    from .special import close_if_disputed, on_dispute, on_withdraw


@workflow.defn(name="RefundCase")
class RefundCase:
    # The input is the customer's RefundRequest; a case that continued as new receives
    # its ContinuedCase instead (one argument: the SDK decodes typed arguments by count).
    @workflow.init
    def __init__(self, start: RefundRequest | ContinuedCase) -> None:
        if isinstance(start, ContinuedCase):  # the same case, with its pinned policy
            self.rt = CaseRuntime(start.state, continued=True)
            self.rt.pin_policy(start.policy if start.policy is not None
                               else pinned_policy(start.state))  # a reopened case
        else:
            self.rt = CaseRuntime(CaseState(case_id=workflow.info().workflow_id,
                                            request=start, documents=list(start.documents)))
        self.incident = incident.IncidentReporter(self.rt)
        self.baseline: frozenset[str] = frozenset()  # patches.has: the ids of this run's baseline

    @workflow.run
    async def run(self, start: RefundRequest | ContinuedCase) -> CaseResult:
        self.baseline = patches.begin_run()
        rt = self.rt
        request = rt.case.request
        continued = start if isinstance(start, ContinuedCase) else None
        reopening = continued.reopen if continued is not None else None
        review: str | None = None  # why an agent reads a reply after closing first
        if reopening is not None and patches.has(patches.REPLY_REOPENS):
            rt.may_continue = True  # a reply after closing: a new run (reopen.py)
            rt.paths = patches.AgentPaths.now()
            incident.start_reporting(rt, self.incident)
        elif continued is None:
            rt.may_continue = patches.has(patches.CONTINUE_AS_NEW)
            rt.case.progress.clauses_fit_facts = patches.has(patches.TEXT_CLAUSES_FIT_FACTS)
            rt.paths = patches.AgentPaths.now()
            received = request.received_at if rt.paths.sla_from_receipt else None
            rt.record("received", f"Refund request {request.request_id} received "
                                  f"({request.reason.value})", actor="customer", at=received)
            rt.keep_search_attributes()
            incident.start_reporting(rt, self.incident)   # a billing incident's case
        else:
            rt.may_continue = True
            rt.paths = patches.AgentPaths.now()
            rt.case.progress.runs += 1
            rt.record("continued", f"Continued in a fresh history (run {rt.case.progress.runs})"
                      f" while waiting for {rt.case.waiting_for}")
            incident.start_reporting(rt, self.incident)
        try:
            if continued is None:
                await load_policy(rt)                 # 3. the policy in force, pinned
                await acknowledge(rt)                 # 1. acknowledge within the SLA
                review = await announce_follow_up(rt)  # opened by a reply to a closed case
                await assess_case(rt)                 # 2. assess validity and risk
            elif reopening is not None:
                review = await reopen(rt, reopening)  # takes the reply it came with
                await assess_case(rt)                 # 2. the facts as they are now
            amount = await decide.decide(rt, resumed=continued is not None  # 3-5
                                         and reopening is None, review=review)
            while amount is not None:
                outcome = await refund(rt, amount)    # 6. refund exactly once
                if outcome == "refunded" and not await follow_up(rt):  # 7. follow up
                    await report_failed(rt)           # Stripe reversed the refund
                    outcome = "failed"
                if outcome == "failed" and rt.paths.every_wait:
                    # The money did not move: an agent retries (a new round) or closes.
                    amount = await decide.after_failed_refund(rt)
                    continue
                if outcome != "not_made":
                    break
                # Stripe refused for good and no money moved: look again, an agent decides.
                rt.case.progress.agent_must_decide = True
                self._close_if_disputed()
                await assess_case(rt)
                self._close_if_disputed()
                amount = await decide.decide(rt)
        except CaseClosed:
            pass  # the signal handler recorded why and told whoever needs to know
        except ContinueAsNewNow:
            await workflow.wait_condition(workflow.all_handlers_finished)
            rt.write_view()
            workflow.continue_as_new(ContinuedCase(state=rt.case, policy=rt.policy))
        rt.show_waiting(None, None)
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self.incident.finish()  # its last outcome told to the incident
        rt.write_view()  # due from the last task, if any: before the result
        case = rt.case
        return CaseResult(case_id=case.case_id, status=case.status,
                          approved_amount=case.approved_amount,
                          refund_id=case.refund.refund_id if case.refund else None)

    def _close_if_disputed(self) -> None:
        if patches.has(patches.AGENT_AFTER_REFUSAL):
            close_if_disputed(self.rt)  # Stripe refuses disputed charges: hand over
            self.rt.checkpoint()  # withdrawn or disputed meanwhile

    # --- query ---

    @workflow.query
    def state(self) -> CaseState:
        return self.rt.case

    # --- agents: signals record refusals, updates are validated first ---

    @workflow.signal
    def approve(self, sig: ApproveSignal) -> None:
        decide.approve(self.rt, sig)

    @workflow.signal
    def deny(self, sig: DenySignal) -> None:
        decide.deny(self.rt, sig)

    @workflow.signal
    def request_info(self, sig: RequestInfoSignal) -> None:
        decide.request_info(self.rt, sig)

    @workflow.update
    def approve_action(self, sig: ApproveSignal) -> ActionResult:
        return _accepted(decide.approve(self.rt, sig))

    @approve_action.validator
    def _validate_approve(self, sig: ApproveSignal) -> None:
        _refuse_if(decide.approve_refusal(self.rt, sig))

    @workflow.update
    def deny_action(self, sig: DenySignal) -> ActionResult:
        return _accepted(decide.deny(self.rt, sig))

    @deny_action.validator
    def _validate_deny(self, sig: DenySignal) -> None:
        _refuse_if(decide.deny_refusal(self.rt, sig))

    @workflow.update
    def request_info_action(self, sig: RequestInfoSignal) -> ActionResult:
        return _accepted(decide.request_info(self.rt, sig))

    @request_info_action.validator
    def _validate_request_info(self, sig: RequestInfoSignal) -> None:
        _refuse_if(decide.request_info_refusal(self.rt, sig))

    @workflow.update
    def retry_stripe_action(self, sig: RetryStripeSignal) -> ActionResult:
        self.rt.case.progress.stripe_retry_requested = True
        self.rt.record("stripe_retry_requested", f"{sig.agent} asks to try Stripe again now",
                       actor=f"agent:{sig.agent}")
        return ActionResult(accepted=True, status=self.rt.case.status,
                            message="Stripe will be tried again now")

    @retry_stripe_action.validator
    def _validate_retry_stripe(self, sig: RetryStripeSignal) -> None:
        if self.rt.case.progress.stripe_unreachable_since is None:
            _refuse_if(decide.Refusal("wrong_state", "the case is not waiting for Stripe"))

    @workflow.update
    def satisfy_requirement_action(self, sig: SatisfyRequirementSignal) -> ActionResult:
        return decide.satisfy(self.rt, sig)

    @satisfy_requirement_action.validator
    def _validate_satisfy(self, sig: SatisfyRequirementSignal) -> None:
        _refuse_if(decide.satisfy_refusal(self.rt, sig))

    @workflow.update
    def retry_refund_action(self, sig: RetryRefundSignal) -> ActionResult:
        return decide.retry_refund(self.rt, sig)

    @retry_refund_action.validator
    def _validate_retry_refund(self, sig: RetryRefundSignal) -> None:
        _refuse_if(decide.retry_refund_refusal(self.rt, sig))

    @workflow.update
    def close_action(self, sig: CloseCaseSignal) -> ActionResult:
        return decide.close(self.rt, sig)

    @close_action.validator
    def _validate_close(self, sig: CloseCaseSignal) -> None:
        _refuse_if(decide.close_refusal(self.rt, sig))

    # --- the desk: who holds the case, notes (while the case runs) ---

    @workflow.update
    def assign_action(self, sig: AssignSignal) -> ActionResult:
        return desk.assign(self.rt, sig)

    @assign_action.validator
    def _validate_assign(self, sig: AssignSignal) -> None:
        _refuse_if(desk.assign_refusal(self.rt, sig))

    @workflow.update
    def note_action(self, sig: NoteSignal) -> ActionResult:
        return desk.note(self.rt, sig)

    @note_action.validator
    def _validate_note(self, sig: NoteSignal) -> None:
        _refuse_if(desk.note_refusal(self.rt, sig))

    # --- the customer, Stripe and SendGrid ---

    @workflow.signal
    def customer_reply(self, sig: CustomerReplySignal) -> None:
        if desk.joined_before(self.rt, sig):
            return  # a redelivered second request for this charge
        on_reply(self.rt, sig)

    @workflow.signal
    def feedback(self, sig: FeedbackSignal) -> None:
        on_feedback(self.rt, sig)

    @workflow.signal
    def withdraw(self, sig: WithdrawSignal) -> None:
        on_withdraw(self.rt, sig)

    @workflow.signal
    def refund_update(self, sig: RefundUpdateSignal) -> None:
        on_refund_update(self.rt, sig)

    @workflow.signal
    async def dispute_opened(self, sig: DisputeOpenedSignal) -> None:
        await on_dispute(self.rt, sig)

    @workflow.signal
    def email_event(self, sig: EmailEventSignal) -> None:
        on_email_event(self.rt, sig)

    @workflow.signal
    def join_incident(self, sig: JoinIncidentSignal) -> None:
        incident.on_join(self.rt, self.incident, sig)


def _refuse_if(refusal: decide.Refusal | None) -> None:
    """A refusal becomes the error the API maps to 409 / 422 with the case's own reason."""
    if refusal is not None:
        raise ApplicationError(refusal.reason, {"code": refusal.code, "reason": refusal.reason},
                               type=ACTION_REFUSED, non_retryable=True)


def _accepted(outcome: ActionResult | decide.Refusal) -> ActionResult:
    if isinstance(outcome, decide.Refusal):
        _refuse_if(outcome)
    assert isinstance(outcome, ActionResult)
    return outcome
