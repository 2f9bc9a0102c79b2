"""The worker's metrics: the SDK runtime's Prometheus endpoint (Temporal's own worker
metrics: task latencies, poll counts, slots, ...) and an interceptor that records the
domain metrics of core.metrics there.

The interceptor watches a case from the outside, through names that are part of the
public surface, so the workflow code carries no metrics code:
- the workflow's start (its RefundRequest): cases started by reason;
- the activities it schedules: the acknowledgment email completing (time to
  acknowledgment), the approval / denial email (a decision: its outcome, time to decision,
  and who decided, read from the `state` query's answer), an ops notice of kind
  `sla_breached` (the SLA is its step, `sla_<name>`), a Stripe refund returned (refunds
  and amount per currency, time to refund);
- every activity attempt: Stripe and SendGrid errors by type, emails sent by template.
Workflow-side records go through `workflow.metric_meter()`, which skips replays, so a
case counts once however often its history is replayed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from core import metrics
from core.config import ConfigError
from core.metrics import DomainMetrics

# Activity and template names of the public surface (activities/*, DESIGN.md).
SEND_EMAIL = "send_email"
NOTIFY_OPS = "notify_ops"
CREATE_REFUND = "stripe_create_refund"
# Stripe errors by the activities' error types (activities.stripe_models; strings here: the
# metrics are observed from outside the activities). A 429 on the rate-limited queue is
# StripeRateLimited: retried by the workflow, still a failed call.
STRIPE_ERROR_TYPES = ("StripeTransient", "StripePermanent", "StripeRateLimited")
EMAIL_ERROR_TYPES = ("EmailTransient", "EmailPermanent")
DECISION_TEMPLATES = {"approval": "approved", "billing_error_apology": "approved",
                      "denial": "denied"}


def prometheus_runtime(address: str) -> Runtime:
    """A runtime whose Prometheus endpoint serves http://<address>/metrics."""
    config = PrometheusConfig(
        bind_address=address,
        counters_total_suffix=True,
        durations_as_seconds=True,
        histogram_bucket_overrides={name: metrics.CASE_DURATION_BUCKETS
                                    for name in metrics.HISTOGRAMS},
    )
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=config))
    except Exception as exc:  # address in use, bad address
        raise ConfigError(f"WORKER_METRICS_ADDRESS: cannot serve metrics on {address}: "
                          f"{exc}") from None


class DomainMetricsInterceptor(Interceptor):
    """Register on the worker (`interceptors=[DomainMetricsInterceptor()]`)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityMetrics(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _WorkflowMetrics


# --- activities: every attempt ---------------------------------------------------------


class _ActivityMetrics(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            result = await self.next.execute_activity(input)
        except ApplicationError as exc:
            _record_activity_error(exc)
            raise
        if activity.info().activity_type in (SEND_EMAIL, NOTIFY_OPS):
            template = getattr(result, "template", None)
            if template:
                DomainMetrics(activity.metric_meter()).email_sent(template)
        return result


def _record_activity_error(exc: ApplicationError) -> None:
    recorder = DomainMetrics(activity.metric_meter())
    details = exc.details[0] if exc.details and isinstance(exc.details[0], dict) else {}
    retryable = not exc.non_retryable
    if exc.type in STRIPE_ERROR_TYPES:
        recorder.stripe_error(str(details.get("code") or "unknown"), retryable)
    elif exc.type in EMAIL_ERROR_TYPES:
        status = details.get("status")
        if status:
            kind = f"http_{status}"
        elif "unreachable" in exc.message:
            kind = "unreachable"
        elif "outbox" in exc.message:
            kind = "outbox"
        else:
            kind = "render"
        recorder.sendgrid_error(kind, retryable)


# --- workflows: once per case event, never on replay -----------------------------------


def _since_start() -> float:
    return (workflow.now() - workflow.info().start_time).total_seconds()


def _decider(outcome: str) -> str:
    """Who decided, from the `state` query's answer: an agent's denial (`agent:<id>`) or
    an approval round with agent approvals; else the policy."""
    handler = workflow.get_query_handler("state")
    state = handler() if handler else None
    if outcome == "denied":
        denial = getattr(state, "denial", None)
        by = str(getattr(denial, "by", ""))
        return "agent" if by.startswith("agent") else "policy"
    return "agent" if getattr(state, "approvals", None) else "policy"


class _WorkflowMetrics(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowActivityMetrics(outbound))

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        request = input.args[0] if input.args else None
        reason = getattr(request, "reason", None)
        if reason is not None:
            DomainMetrics(workflow.metric_meter()).case_started(str(reason))
        return await self.next.execute_workflow(input)


class _WorkflowActivityMetrics(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        handle = self.next.start_activity(input)
        arg = input.args[0] if input.args else None
        recorder = DomainMetrics(workflow.metric_meter())
        if input.activity == SEND_EMAIL:
            template = getattr(arg, "template", None)
            if template == "acknowledgment":
                _on_success(handle, lambda _: recorder.acknowledged(_since_start()))
            elif template in DECISION_TEMPLATES:
                outcome = DECISION_TEMPLATES[template]
                recorder.decision(outcome, _decider(outcome), _since_start())
        elif input.activity == NOTIFY_OPS and getattr(arg, "kind", None) == "sla_breached":
            recorder.sla_breach(str(getattr(arg, "step", "")).removeprefix("sla_") or "unknown")
        elif input.activity == CREATE_REFUND:
            _on_success(handle, lambda refund: _refund_made(recorder, refund))
        return handle


def _refund_made(recorder: DomainMetrics, refund: Any) -> None:
    if getattr(refund, "status", None) in ("failed", "canceled"):
        return
    recorder.refund_made(str(refund.currency), int(refund.amount), _since_start())


def _on_success(handle: workflow.ActivityHandle[Any], record: Callable[[Any], None]) -> None:
    def done(task: Any) -> None:
        if not task.cancelled() and task.exception() is None:
            record(task.result())
    handle.add_done_callback(done)

