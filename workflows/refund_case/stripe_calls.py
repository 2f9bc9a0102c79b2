"""A case's Stripe calls: on the rate-limited Stripe queue, paced by the Stripe worker
(cases since `stripe-paced-in-worker`) or each paid for in Stripe requests before it
(workflows/stripe_rate.py). Cases that started before the queue existed keep
calling on the case's own queue, unthrottled (`workflow.patched`), so their histories
replay."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.stripe_models import (
        CREATE_REFUND,
        GATHER_FACTS,
        GET_REFUND,
        PAYMENT_INTENT_REQUESTS,
        STRIPE_RETRY_POLICY,
        STRIPE_START_TO_CLOSE,
        CreateRefundInput,
        GatherFactsInput,
        GetRefundInput,
        RefundResult,
        StripeFacts,
    )

    from .. import stripe_rate
    from . import patches


def _rate_limited() -> bool:
    return patches.has(patches.STRIPE_RATE_LIMIT)


def _paced() -> bool:
    """The Stripe worker paces the requests: no permits in this case's history."""
    return patches.has(patches.STRIPE_PACED)


async def gather_facts(inp: GatherFactsInput, summary: str,
                       deadline: timedelta | None = None,
                       runner: stripe_rate.Runner[StripeFacts] | None = None) -> StripeFacts:
    if not _rate_limited():
        facts: StripeFacts = await workflow.execute_activity(
            GATHER_FACTS, inp, result_type=StripeFacts,
            start_to_close_timeout=STRIPE_START_TO_CLOSE, schedule_to_close_timeout=deadline,
            retry_policy=STRIPE_RETRY_POLICY,
            summary=summary)
        return facts
    if _paced():
        paced: StripeFacts = await stripe_rate.call(
            GATHER_FACTS, inp, result_type=StripeFacts, summary=summary, deadline=deadline,
            paced=True, runner=runner)
        return paced
    extra = 0 if inp.request.charge_id else PAYMENT_INTENT_REQUESTS
    facts = await stripe_rate.call(GATHER_FACTS, inp, result_type=StripeFacts,
                                   summary=summary, extra_requests=extra, deadline=deadline)
    # The invoice, disputes or more pages the usual count leaves out: paid now.
    await stripe_rate.pay(
        facts.stripe_requests - stripe_rate.expected(GATHER_FACTS, extra_requests=extra),
        summary)
    return facts


async def create_refund(inp: CreateRefundInput, summary: str,
                        deadline: timedelta | None = None,
                        runner: stripe_rate.Runner[RefundResult] | None = None
                        ) -> RefundResult:
    if not _rate_limited():
        made: RefundResult = await workflow.execute_activity(
            CREATE_REFUND, inp, result_type=RefundResult,
            start_to_close_timeout=STRIPE_START_TO_CLOSE, schedule_to_close_timeout=deadline,
            retry_policy=STRIPE_RETRY_POLICY,
            summary=summary)
        return made
    extra = 0 if inp.charge_id else PAYMENT_INTENT_REQUESTS
    return await stripe_rate.call(CREATE_REFUND, inp, result_type=RefundResult,
                                  summary=summary, extra_requests=extra, deadline=deadline,
                                  paced=_paced(), runner=runner)


async def get_refund(inp: GetRefundInput, summary: str,
                     deadline: timedelta | None = None) -> RefundResult:
    if not _rate_limited():
        polled: RefundResult = await workflow.execute_activity(
            GET_REFUND, inp, result_type=RefundResult,
            start_to_close_timeout=STRIPE_START_TO_CLOSE, schedule_to_close_timeout=deadline,
            retry_policy=STRIPE_RETRY_POLICY,
            summary=summary)
        return polled
    return await stripe_rate.call(GET_REFUND, inp, result_type=RefundResult, summary=summary,
                                 deadline=deadline, paced=_paced())
