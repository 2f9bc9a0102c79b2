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
        CaseResult,
        CaseState,
        ContinuedCase,
        CustomerReplySignal,
        DenySignal,
        DisputeOpenedSignal,
        EmailEventSignal,
        FeedbackSignal,
        JoinIncidentSignal,
        RefundRequest,
        RefundUpdateSignal,
        RequestInfoSignal,
        RetryStripeSignal,
        WithdrawSignal,
    )

    from . import decide, incident, patches
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
            self.rt = CaseRuntime(start.state)
            self.rt.pin_policy(start.policy if start.policy is not None
                               else pinned_policy(start.state))
            self.replies_at_start = start.state.progress.replies_received
        else:
            self.rt = CaseRuntime(CaseState(case_id=workflow.info().workflow_id,
                                            request=start, documents=list(start.documents)))
            self.replies_at_start = 0
        self.incident = incident.IncidentReporter(self.rt)

    @workflow.run
    async def run(self, start: RefundRequest | ContinuedCase) -> CaseResult:
        rt = self.rt
        request = rt.case.request
        continued = start if isinstance(start, ContinuedCase) else None
        reopening = continued.reopen if continued is not None else None
        review: str | None = None  # a reopened case: why an agent reads the reply
        if reopening is not None:  # a reply after closing: a new run (reopen.py)
            rt.may_continue = True
            incident.start_reporting(rt, self.incident)
        elif continued is None:
            rt.may_continue = workflow.patched(patches.CONTINUE_AS_NEW)
            rt.record("received", f"Refund request {request.request_id} received "
                                  f"({request.reason.value})", actor="customer")
            rt.keep_search_attributes()
            incident.start_reporting(rt, self.incident)   # a billing incident's case
        else:
            rt.may_continue = True
            rt.case.progress.runs += 1
            rt.record("continued", f"Continued in a fresh history (run {rt.case.progress.runs})"
                      f" while waiting for {rt.case.waiting_for}")
            incident.start_reporting(rt, self.incident)
        try:
            if continued is None:
                await load_policy(rt)                 # 3. the policy in force, pinned
                await acknowledge(rt)                 # 1. acknowledge within the SLA
                if request.follows and workflow.patched(patches.REPLY_REOPENS):
                    await announce_follow_up(rt)      # it continues a closed case
                await assess_case(rt)                 # 2. assess validity and risk
            elif reopening is not None and workflow.patched(patches.REPLY_REOPENS):
                review = await reopen(rt, reopening, self.replies_at_start)
                await assess_case(rt)                 # 2. the facts as they are now
            amount = await decide.decide(rt, resumed=continued is not None
                                         and reopening is None, review=review)  # 3-5
            while amount is not None:
                outcome = await refund(rt, amount)    # 6. refund exactly once
                if outcome == "refunded" and not await follow_up(rt):  # 7. follow up
                    await report_failed(rt)           # Stripe reversed the refund
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
            workflow.continue_as_new(ContinuedCase(state=rt.case, policy=rt.policy))
        rt.show_waiting(None, None)
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self.incident.finish()  # its last outcome told to the incident
        case = rt.case
        return CaseResult(case_id=case.case_id, status=case.status,
                          approved_amount=case.approved_amount,
                          refund_id=case.refund.refund_id if case.refund else None)

    def _close_if_disputed(self) -> None:
        if workflow.patched(patches.AGENT_AFTER_REFUSAL):
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

    # --- the customer, Stripe and SendGrid ---

    @workflow.signal
    def customer_reply(self, sig: CustomerReplySignal) -> None:
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
