"""Step 2: the purchase as Stripe knows it, then the assessment (findings, risk, root
cause) from the pure rules in `assessment`."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.stripe_models import GatherFactsInput, StripeFacts
    from core.contract import CaseStatus
    from core.money import plain

    from . import stripe_calls
    from .assessment import assess
    from .runtime import CaseRuntime, cause


async def assess_case(rt: CaseRuntime) -> None:
    case, request = rt.case, rt.case.request
    rt.set_status(CaseStatus.assessing, "looking the purchase up in Stripe")
    what = request.charge_id or request.payment_intent_id
    try:
        facts = await rt.call_stripe(
            "looking the purchase up", "Stripe to answer the look-up (retried until it does)",
            lambda deadline: stripe_calls.gather_facts(
                GatherFactsInput(case_id=case.case_id, request=request),
                summary=f"Look up {what} in Stripe", deadline=deadline, runner=rt.first_alone))
    except ActivityError as err:  # Stripe said no for good (e.g. access refused)
        facts = StripeFacts(found=False, not_found_reason=f"Stripe look-up failed: {cause(err)}",
                            charge_id=request.charge_id,
                            payment_intent_id=request.payment_intent_id)
    rt.checkpoint()
    case.facts = facts
    rt.record("facts_gathered", facts_line(facts), actor="stripe")
    assessment = assess(request, facts, external_refunded=case.outside_refunded)
    case.assessment = assessment
    for code, line in zip(assessment.findings, assessment.finding_details, strict=True):
        rt.record("finding", line, code=code)
    reasons = "; ".join(assessment.risk_reasons) or "no risk signals"
    rt.record("risk_assessed", f"Risk {assessment.risk} ({assessment.risk_score}/100): "
                               f"{reasons}", risk=assessment.risk, score=assessment.risk_score)
    if assessment.root_cause:
        case.root_cause = assessment.root_cause
        rt.record("root_cause", assessment.root_cause, tag=root_cause_tag(assessment.root_cause))
    rt.keep_search_attributes()


def root_cause_tag(root_cause: str | None) -> str | None:
    return root_cause.split(":", 1)[0] if root_cause else None


def facts_line(facts: StripeFacts) -> str:
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
