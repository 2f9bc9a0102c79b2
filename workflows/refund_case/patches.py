"""`workflow.patched` ids. Each guards a change of behaviour that cases started before it
must not see: their histories replay the old path (see tests/histories/)."""

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
