"""Step 3: the refund policy. The version in force is loaded once and pinned for the whole
case; every evaluation is the pure `policies.evaluate` over the case's facts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeout

with workflow.unsafe.imports_passed_through():
    from activities.policy_activities import (
        LOAD_POLICY,
        PIN_POLICY,
        PIN_RETRY_POLICY,
        POLICY_RETRY_POLICY,
        POLICY_START_TO_CLOSE,
    )
    from core.policy_facts import policy_facts
    from policies.evaluate import evaluate
    from policies.facts import PolicyDecision, PolicyFacts
    from policies.library import PolicyRef, resolve
    from policies.model import Policy

    from . import patches
    from .gather_info import count_answers
    from .runtime import CaseRuntime, cause, iso

# A policy that cannot be read holds a new case before its acknowledgment (the SLA comes
# from the policy): it pins again after a minute, then at doubling intervals up to every
# ten minutes, and ops are told once it has waited a quarter of an hour (a volume mounted
# late should not email ops about every case it held for a minute).
PIN_AGAIN_AFTER = timedelta(minutes=1)
PIN_AGAIN_AT_MOST = timedelta(minutes=10)
TELL_OPS_AFTER = timedelta(minutes=15)
# How a pin that gave up arrives: an activity's failure wrapped in ActivityError, a local
# activity's as it is (the activity's error, or a timeout).
PIN_FAILURES = (ActivityError, ApplicationError, ActivityTimeout)


async def load_policy(rt: CaseRuntime) -> None:
    """The policy in force, pinned for the whole case: by version and content hash (the
    worker holds the policy itself), or, for cases started before, the whole policy."""
    if patches.has(patches.PINNED_POLICY):
        ref = await _pin_when_readable(rt, locally=patches.has(patches.PIN_LOCALLY))
        policy = resolve(ref)
        rt.case.policy_sha256 = ref.sha256
    else:
        policy = await workflow.execute_activity(
            LOAD_POLICY, result_type=Policy, start_to_close_timeout=POLICY_START_TO_CLOSE,
            retry_policy=POLICY_RETRY_POLICY, summary="Load the refund policy in force")
    rt.pin_policy(policy)
    rt.record("policy_pinned", f"Policy {policy.version} applies to this case")
    rt.keep_search_attributes()  # lean view: written with the next change


_PIN_OPTIONS: dict[str, Any] = {
    "result_type": PolicyRef, "start_to_close_timeout": POLICY_START_TO_CLOSE,
    "summary": "Pin the refund policy in force"}


async def _pin(*, locally: bool) -> PolicyRef:
    """Since `pin-policy-locally`, a local activity: one marker in history, and no round
    trip through the server before the acknowledgment (the worker that runs the case
    holds the policy anyway). It tries a few times within one workflow task."""
    if locally:
        local: PolicyRef = await workflow.execute_local_activity(
            PIN_POLICY, retry_policy=PIN_RETRY_POLICY, **_PIN_OPTIONS)
        return local
    ref: PolicyRef = await workflow.execute_activity(
        PIN_POLICY, retry_policy=POLICY_RETRY_POLICY, **_PIN_OPTIONS)
    return ref


async def _pin_when_readable(rt: CaseRuntime, *, locally: bool) -> PolicyRef:
    """The policy in force, however long its file cannot be read (missing, or invalid):
    the case waits for it (its state says so, and the timer in the UI), and ops are told
    once it has waited TELL_OPS_AFTER. Cases started before `policy-pin-waits` failed."""
    try:
        return await _pin(locally=locally)
    except PIN_FAILURES as err:
        if not patches.has(patches.POLICY_PIN_WAITS):
            raise
        problem = _problem(err)
    since = workflow.now()
    rt.record("policy_unreadable", f"The refund policy in force cannot be read ({problem}); "
              "the case waits for it before acknowledging the customer")
    told, wait = False, PIN_AGAIN_AFTER
    while True:
        await rt.wait("the refund policy to be readable", lambda: False, timeout=wait)
        try:
            return await _pin(locally=locally)
        except PIN_FAILURES as err:
            problem = _problem(err)
        if not told and workflow.now() - since >= TELL_OPS_AFTER:
            told = True
            await rt.notify_ops(
                "policy_unreadable",
                f"The refund policy in force cannot be read: {problem}. This case has waited "
                f"for it since {iso(since)}, its customer not yet acknowledged; it tries "
                f"again at least every {PIN_AGAIN_AT_MOST // timedelta(minutes=1)} minutes.",
                step="pin-policy")
        wait = min(wait * 2, PIN_AGAIN_AT_MOST)


def _problem(err: Exception) -> str:
    return cause(err) if isinstance(err, ActivityError) else str(err)


def facts_now(rt: CaseRuntime) -> PolicyFacts | None:
    """The policy's view of the case at this moment (None before the assessment)."""
    case = rt.case
    if case.facts is None or case.assessment is None:
        return None
    return policy_facts(case.request, case.facts, case.assessment, documents=case.documents,
                        now=workflow.now(), external_refunded=case.outside_refunded)


def evaluate_case(rt: CaseRuntime) -> PolicyDecision:
    """What the policy says now, recorded with the clauses that produced it."""
    case = rt.case
    assert case.facts is not None and case.assessment is not None
    now = workflow.now()
    count_answers(rt)
    # A requirement an agent marked met counts as its document kind supplied.
    documents = case.documents + list(case.requirements_met)
    facts = policy_facts(case.request, case.facts, case.assessment, documents=documents,
                         now=now, external_refunded=case.outside_refunded,
                         requirements_met=list(case.requirements_answered))
    decision = evaluate(facts, rt.policy, now)
    case.decision = decision
    case.approvers_required = decision.approvers_required
    rt.record("policy_decision", decision.explanation, actor="policy",
              outcome=decision.outcome, amount=decision.amount,
              clause_ids=decision.clause_ids, policy_version=decision.policy_version)
    rt.keep_search_attributes()
    return decision
