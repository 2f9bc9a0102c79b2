"""Refund Desk's domain metrics: every name, label and unit in one place, recorded through
Temporal's metric meter (`workflow.metric_meter()` in workflow code, which records nothing
while replaying; `activity.metric_meter()` in activities), so the worker's metrics reach
Prometheus through the SDK's own endpoint with Temporal's. The API records the same names
with prometheus_client (api/metrics.py).

Pure (imports only temporalio.common): the workflow sandbox may import it.

Counters are exported with a `_total` suffix (`refund_desk_cases_started_total`)."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio.common import MetricMeter

PREFIX = "refund_desk_"

CASES_STARTED = PREFIX + "cases_started"  # {reason}
DECISIONS = PREFIX + "decisions"  # {outcome: approved|denied, decider: policy|agent}
SLA_BREACHES = PREFIX + "sla_breaches"  # {kind: acknowledge|agent_decision|...}
TIME_TO_ACK = PREFIX + "time_to_acknowledgment_seconds"
TIME_TO_DECISION = PREFIX + "time_to_decision_seconds"  # {outcome}
TIME_TO_REFUND = PREFIX + "time_to_refund_seconds"  # {currency}
STRIPE_ERRORS = PREFIX + "stripe_errors"  # {type: Stripe's code, retryable}
SENDGRID_ERRORS = PREFIX + "sendgrid_errors"  # {type: http_<status>|unreachable|...}
REFUNDS = PREFIX + "refunds"  # {currency}
REFUNDED_AMOUNT = PREFIX + "refunded_amount_minor_units"  # {currency}
EMAILS_SENT = PREFIX + "emails_sent"  # {template}

# Seconds from a case's start: a minute to a week (acknowledgment is seconds, a refund
# waiting for two agents can take days).
CASE_DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0,
                         86400.0, 3 * 86400.0, 7 * 86400.0)
HISTOGRAMS = (TIME_TO_ACK, TIME_TO_DECISION, TIME_TO_REFUND)

DESCRIPTIONS = {
    CASES_STARTED: "Refund cases started, by reason",
    DECISIONS: "Decisions on cases, by outcome and decider",
    SLA_BREACHES: "SLA breaches, by SLA",
    TIME_TO_ACK: "Seconds from a case's start to its acknowledgment email",
    TIME_TO_DECISION: "Seconds from a case's start to its decision",
    TIME_TO_REFUND: "Seconds from a case's start until Stripe accepted the refund",
    STRIPE_ERRORS: "Failed Stripe calls (activity attempts), by Stripe error code",
    SENDGRID_ERRORS: "Failed email sends (activity attempts), by type",
    REFUNDS: "Refunds created in Stripe, by currency",
    REFUNDED_AMOUNT: "Amount refunded in the currency's minor unit, by currency",
    EMAILS_SENT: "Emails sent (or written to the outbox), by template",
}


@dataclass(frozen=True)
class DomainMetrics:
    """Records the domain metrics on a Temporal MetricMeter."""

    meter: MetricMeter

    def _count(self, name: str, value: int = 1, **labels: str) -> None:
        counter = self.meter.create_counter(name, DESCRIPTIONS[name])
        counter.add(value, labels)

    def _seconds(self, name: str, seconds: float, **labels: str) -> None:
        histogram = self.meter.create_histogram_float(name, DESCRIPTIONS[name], "s")
        histogram.record(max(0.0, seconds), labels)

    def case_started(self, reason: str) -> None:
        self._count(CASES_STARTED, reason=reason)

    def decision(self, outcome: str, decider: str, seconds_since_start: float) -> None:
        self._count(DECISIONS, outcome=outcome, decider=decider)
        self._seconds(TIME_TO_DECISION, seconds_since_start, outcome=outcome)

    def sla_breach(self, kind: str) -> None:
        self._count(SLA_BREACHES, kind=kind)

    def acknowledged(self, seconds_since_start: float) -> None:
        self._seconds(TIME_TO_ACK, seconds_since_start)

    def refund_made(self, currency: str, amount: int, seconds_since_start: float | None) -> None:
        self._count(REFUNDS, currency=currency)
        self._count(REFUNDED_AMOUNT, amount, currency=currency)
        if seconds_since_start is not None:
            self._seconds(TIME_TO_REFUND, seconds_since_start, currency=currency)

    def stripe_error(self, error_type: str, retryable: bool) -> None:
        self._count(STRIPE_ERRORS, type=error_type, retryable=str(retryable).lower())

    def sendgrid_error(self, error_type: str, retryable: bool) -> None:
        self._count(SENDGRID_ERRORS, type=error_type, retryable=str(retryable).lower())

    def email_sent(self, template: str) -> None:
        self._count(EMAILS_SENT, template=template)
