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
# Replies (issue 11): answers in words, replies after closing, full-width ratings.
REPLY_ANSWERS = "replies-answers-count"  # a reply's text / file types meet requirements;
#                                           an unanswered question goes to an agent, never twice
REPLY_REOPENS = "replies-reopen-closed-cases"  # a run reopened by a reply after closing
FULL_WIDTH_RATING = "replies-full-width-rating"  # "５" in a reply is the rating 5
