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

# Agents at every wait, money within what is refundable, the customer's clock, the
# console's view (issue 11 "agents" and issue 13): decided once, first thing in a run
# (`AgentPaths.now()`), so that a case keeps one behaviour for the whole run.
AGENTS_EVERY_WAIT = "agents-at-every-wait"  # awaiting_info actions, satisfy, retry, close
WITHIN_REFUNDABLE = "approval-within-refundable"  # nothing left: closed, explained
SLA_FROM_RECEIPT = "sla-from-receipt"  # the ack SLA and the timeline count from the intake
QUEUE_VIEW = "console-queue-view"  # RefundAssignee, RefundDeadline and the `queue` memo


@dataclass
class AgentPaths:
    """Which of these behaviours this run has: all off for cases started before them,
    whose recorded histories replay the old paths."""

    every_wait: bool = False
    within_refundable: bool = False
    sla_from_receipt: bool = False
    queue_view: bool = False

    @classmethod
    def now(cls) -> AgentPaths:
        """One `workflow.patched` each, in this fixed order (a new run records a marker
        each; the replay of an older history finds none)."""
        return cls(every_wait=workflow.patched(AGENTS_EVERY_WAIT),
                   within_refundable=workflow.patched(WITHIN_REFUNDABLE),
                   sla_from_receipt=workflow.patched(SLA_FROM_RECEIPT),
                   queue_view=workflow.patched(QUEUE_VIEW))
