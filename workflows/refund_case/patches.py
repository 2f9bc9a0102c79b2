"""`workflow.patched` ids. Each guards a change of behaviour that cases started before it
must not see: their histories replay the old path (see tests/histories/)."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import workflow

AGENT_AFTER_REFUSAL = "agent-decides-after-refusal"  # a Stripe refusal: agents only
ACK_FAILURE_BREACH = "ack-failure-is-breach"
UNDELIVERABLE_INFO = "undeliverable-info-to-agent"
FEEDBACK_BY_EMAIL = "feedback-by-email"
REFUND_REVERSAL = "refund-reversal"
CONTINUE_AS_NEW = "continue-as-new"  # long waits for people continue in a fresh history
STRIPE_OUTAGE_WAITS = "stripe-outage-waits"  # an outage is waited out, never a decision
PINNED_POLICY = "pinned-policy"  # a PolicyRef in history instead of the whole policy
STRIPE_RATE_LIMIT = "stripe-rate-limited-queue"  # Stripe calls on the throttled queue
BILLING_INCIDENT = "billing-incident"  # incident cases: no ack, apology, outcome reports
# Customer-facing text (issue 11): the billing-error apology once the refund exists; a
# dispute emails the customer; agents' denials must cite a clause the facts fit (decided
# at the case's start: the update validator that checks it cannot call workflow.patched).
TEXT_APOLOGY_AFTER_REFUND = "text-apology-after-refund"
TEXT_DISPUTE_EMAIL = "text-dispute-email"
TEXT_CLAUSES_FIT_FACTS = "text-clauses-fit-facts"

# Agents at every wait, money within what is refundable, the customer's clock and the
# console's view (issue 11 "agents" and issue 13) came together: ONE patch id gates them,
# since the SDK writes an upsert of TemporalChangeVersion for each id a run meets.
AGENTS_LIFECYCLE = "agents-lifecycle"
# Replies (issue 11): answers in words, full-width ratings.
REPLY_ANSWERS = "replies-answers-count"  # a reply's text / file types meet requirements;
#                                           an unanswered question goes to an agent, never twice
FULL_WIDTH_RATING = "replies-full-width-rating"  # "５" in a reply is the rating 5

# Every id above, taken together: a case started since records this one marker instead of
# one per id (each marker costs two events, the SDK's TemporalChangeVersion upsert being the
# second). Ids added after it are asked on their own: list them below, not in BASELINE_IDS.
BASELINE = "baseline-2026-11-23"
BASELINE_IDS = frozenset({
    AGENT_AFTER_REFUSAL, ACK_FAILURE_BREACH, UNDELIVERABLE_INFO, FEEDBACK_BY_EMAIL,
    REFUND_REVERSAL, CONTINUE_AS_NEW, STRIPE_OUTAGE_WAITS, PINNED_POLICY, STRIPE_RATE_LIMIT,
    BILLING_INCIDENT, TEXT_APOLOGY_AFTER_REFUND, TEXT_DISPUTE_EMAIL, TEXT_CLAUSES_FIT_FACTS,
    AGENTS_LIFECYCLE, REPLY_ANSWERS, FULL_WIDTH_RATING,
})

# After the baseline (asked on their own by runs that have only it):
# A reply after closing: a reopened run (same id) or a case linked to the closed one.
REPLY_REOPENS = "replies-reopen-closed-cases"
# A lean case (issue 12): Stripe calls make their own requests at the paced rate (the
# Stripe worker paces every request; no `stripe_permit` activities in the case's history);
# search attributes and the `queue` memo written once per workflow task, only what changed,
# the memo only while the case is in an agent's queue.
STRIPE_PACED = "stripe-paced-in-worker"
LEAN_VIEW = "lean-ops-view"
PIN_LOCALLY = "pin-policy-locally"  # pin_policy as a local activity

# The second baseline: every id above in one marker. A run records the newest baseline it
# has; runs that recorded an older one ask the ids after it on their own.
BASELINE_LEAN = "baseline-lean-case"
LEAN_IDS = BASELINE_IDS | {REPLY_REOPENS, STRIPE_PACED, LEAN_VIEW, PIN_LOCALLY}

# After the second baseline (asked on their own, where the new path begins):
# A policy that cannot be read holds a new case until it can, ops told; it used to fail the
# case after 20 attempts (about 8 minutes).
POLICY_PIN_WAITS = "policy-pin-waits"
# The view at rest (issue 12): the search attributes are written where the case comes to
# rest, not at each step it passes through in a moment (runtime.CaseRuntime.first_alone).
VIEW_AT_REST = "view-at-rest"

# The third baseline: a new id asked in the first steps of every case would cost each case
# a marker and the SDK's TemporalChangeVersion upsert, a visibility write.
BASELINE_AT_REST = "baseline-view-at-rest"
BASELINES = (
    (BASELINE_AT_REST, LEAN_IDS | {POLICY_PIN_WAITS, VIEW_AT_REST}),
    (BASELINE_LEAN, LEAN_IDS),
    (BASELINE, BASELINE_IDS),
)


def begin_run() -> frozenset[str]:
    """Asked first thing in every run (RefundCase.run): the ids this run's baseline
    stands for (none for runs started before the first baseline)."""
    for marker, ids in BASELINES:
        if workflow.patched(marker):
            return ids
    return frozenset()


def has(patch_id: str) -> bool:
    """`workflow.patched(patch_id)`, without a marker of its own in a run whose baseline
    stands for it. Only from the main workflow coroutine, as workflow.patched."""
    if patch_id in getattr(workflow.instance(), "baseline", frozenset()):
        return True
    return workflow.patched(patch_id)


@dataclass
class AgentPaths:
    """Which of these behaviours this run has: all off for cases started before them,
    whose recorded histories replay the old paths. The fields say what each gates:
    every_wait (awaiting_info actions, satisfy, retry and close), within_refundable
    (nothing left: closed, explained), sla_from_receipt (the ack SLA and the timeline count
    from the intake), queue_view (RefundAssignee, RefundDeadline and the `queue` memo),
    lean_view (that view written once per workflow task, the memo only for the queue),
    view_at_rest (that view written where the case comes to rest)."""

    every_wait: bool = False
    within_refundable: bool = False
    sla_from_receipt: bool = False
    queue_view: bool = False
    lean_view: bool = False
    view_at_rest: bool = False

    @classmethod
    def now(cls) -> AgentPaths:
        """Asked once, first thing in a run, so a case keeps one behaviour per run."""
        on = has(AGENTS_LIFECYCLE)
        lean = on and has(LEAN_VIEW)
        return cls(every_wait=on, within_refundable=on, sla_from_receipt=on, queue_view=on,
                   lean_view=lean, view_at_rest=lean and has(VIEW_AT_REST))
