"""Metrics and traces of real cases on the dev server: the worker's Prometheus endpoint (the
SDK runtime's) and the API's /metrics list the domain metrics, and one trace runs from the
intake webhook through the workflow to the Stripe HTTP call (spans captured in memory).

Two cases: one the policy approves (Stripe answers the first refund call with its recorded
429, SendGrid the first email with 429: both retried), one held for an agent, who is late
(agent-decision SLA breach) and then approves over the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
import yaml
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core import tracing
from core.client import connect
from core.contract import CaseState
from core.worker_metrics import prometheus_runtime
from policies.loader import DEFAULT_POLICY
from stack.net import free_port
from stack.stripe_seed import seed_charge
from tests.api_support import api_settings, eventually, http, request_body, signed_intake
from tests.sendgrid_capture import SendGridCapture
from tests.stripe_replay_server import API_KEY, StripeReplayServer
from worker import build_worker

pytest_plugins = ["tests.sendgrid_capture"]

ALICE = {"Authorization": "Bearer tok-alice"}
VIC = {"Authorization": "Bearer tok-vic"}


def observed_policy(path: Path) -> Path:
    data = yaml.safe_load(DEFAULT_POLICY.read_text(encoding="utf-8"))
    data["sla"].update({"agent_decision": "2s", "follow_up_delay": "1s",
                        "feedback_wait": "2s", "refund_settle_poll": "2s"})
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class Observed:
    def __init__(self, api: httpx.AsyncClient, client: Client, stripe_url: str,
                 worker_metrics: str, spans: InMemorySpanExporter) -> None:
        self.api, self.client, self.stripe_url = api, client, stripe_url
        self.worker_metrics, self.spans = worker_metrics, spans

    async def open(self, reason: str, amount: int) -> str:
        email = f"obs-{uuid.uuid4().hex[:8]}@example.com"
        charge = await asyncio.to_thread(seed_charge, self.stripe_url, API_KEY, email=email,
                                         amount=amount, currency="usd")
        body = request_body(f"obs-{uuid.uuid4().hex[:10]}", customer_email=email,
                            charge_id=charge.charge_id, reason=reason, amount=amount)
        raw, headers = signed_intake(body)
        resp = await self.api.post("/webhooks/refund-requests", content=raw, headers=headers)
        assert resp.status_code == 202, resp.text
        return resp.json()["case_id"]

    async def state(self, case_id: str) -> CaseState:
        return await self.client.get_workflow_handle(case_id).query(
            "state", result_type=CaseState)

    async def until(self, case_id: str, *statuses: str) -> CaseState:
        async def check() -> CaseState | None:
            state = await self.state(case_id)
            if state.waiting_for == "the customer's feedback":
                await self.client.get_workflow_handle(case_id).signal(
                    "feedback", {"rating": 5, "comment": ""})
            return state if state.status in statuses else None
        return await eventually(check, timeout=60)


@pytest_asyncio.fixture(loop_scope="session")
async def observed(dev_env: WorkflowEnvironment, localstripe_url: str, tmp_path: Path,
                   sendgrid_capture: SendGridCapture) -> AsyncIterator[Observed]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.instrument_http_clients(provider)  # the Stripe SDK's requests
    stripe = StripeReplayServer(upstream=localstripe_url).start()
    stripe.reply("POST", "/v1/refunds", "rate_limit")  # the first refund call: 429
    sendgrid_capture.fail_next(429)  # the first email: 429
    settings = api_settings(
        STRIPE_API_BASE=stripe.url, STRIPE_API_KEY=API_KEY, SENDGRID_API_KEY="SG.test",
        SENDGRID_API_HOST=sendgrid_capture.host, OUTBOX_DIR=tmp_path / "outbox",
        REFUND_POLICY_FILE=observed_policy(tmp_path / "policy.yaml"))
    metrics_address = f"127.0.0.1:{free_port()}"
    client = await connect(settings, address=dev_env.client.service_client.config.target_host,
                           runtime=prometheus_runtime(metrics_address), tracer_provider=provider)
    task_queue = f"obs-{uuid.uuid4().hex[:8]}"

    async def factory() -> Client:
        return client

    app = create_app(settings, factory, task_queue=task_queue, tracer_provider=provider)
    try:
        async with build_worker(client, settings, task_queue=task_queue), http(app) as api:
            yield Observed(api, client, localstripe_url, f"http://{metrics_address}/metrics",
                           spans)
    finally:
        tracing.uninstrument_http_clients()
        stripe.stop()


async def test_metrics_and_one_trace_per_case(observed: Observed) -> None:
    auto = await observed.open("change_of_mind", 1500)  # the policy approves
    held = await observed.open("fraud_suspected", 2500)  # an agent decides, late
    await observed.until(held, "awaiting_agent")

    async def breached() -> bool:
        return "agent_decision" in (await observed.state(held)).sla_breaches
    await eventually(breached)
    approved = await observed.api.post(f"/cases/{held}/approve", json={"note": "checked"},
                                       headers=ALICE)
    assert approved.status_code == 200, approved.text
    for case_id in (auto, held):
        state = await observed.until(case_id, "completed")
        assert state.refund is not None and state.refund.status == "succeeded"

    async with httpx.AsyncClient() as http_client:
        worker = (await http_client.get(observed.worker_metrics)).text
    api = (await observed.api.get("/metrics")).text

    # The worker: the SDK's own metrics and the domain metrics of both cases.
    assert sample(worker, "temporal_workflow_completed_total") >= 2
    assert sample(worker, "temporal_activity_execution_latency_count") > 0
    assert sample(worker, "refund_desk_cases_started_total", reason="change_of_mind") == 1
    assert sample(worker, "refund_desk_cases_started_total", reason="fraud_suspected") == 1
    assert sample(worker, "refund_desk_decisions_total", outcome="approved",
                  decider="policy") == 1
    assert sample(worker, "refund_desk_decisions_total", outcome="approved",
                  decider="agent") == 1
    assert sample(worker, "refund_desk_sla_breaches_total", kind="agent_decision") == 1
    assert sample(worker, "refund_desk_stripe_errors_total", type="rate_limit",
                  retryable="true") == 1
    assert sample(worker, "refund_desk_sendgrid_errors_total", type="http_429",
                  retryable="true") == 1
    assert sample(worker, "refund_desk_refunds_total", currency="usd") == 2
    assert sample(worker, "refund_desk_refunded_amount_minor_units_total", currency="usd") \
        == 4000
    assert sample(worker, "refund_desk_emails_sent_total", template="acknowledgment") == 2
    for name in ("refund_desk_time_to_acknowledgment_seconds_count",
                 "refund_desk_time_to_decision_seconds_count",
                 "refund_desk_time_to_refund_seconds_count"):
        assert sample(worker, name) == 2, name

    # The API: request metrics and its own domain events.
    assert sample(api, "refund_desk_http_requests_total", method="POST",
                  route="/webhooks/refund-requests", status="202") == 2
    assert sample(api, "refund_desk_cases_opened_total", channel="webhook",
                  reason="change_of_mind") == 1
    assert sample(api, "refund_desk_agent_actions_total", action="approve_action",
                  result="accepted") == 1
    assert sample(api, "refund_desk_http_request_duration_seconds_count",
                  route="/cases/{case_id}/approve") == 1
    assert "refund-obs-" not in api  # routes are templates, never case ids

    # One trace: the webhook's server span, the workflow, and the Stripe refund call.
    spans = observed.spans.get_finished_spans()
    webhook = _one(spans, lambda s: s.name == "POST /webhooks/refund-requests"
                   and s.kind.name == "SERVER" and _case(s, spans) == auto)
    trace = [s for s in spans if s.context.trace_id == webhook.context.trace_id]
    names = {s.name for s in trace}
    assert {"StartWorkflow:RefundCase", "RunWorkflow:RefundCase",
            "RunActivity:stripe_create_refund", "RunActivity:send_email"} <= names, names
    refund_calls = [s for s in trace if s.kind.name == "CLIENT" and _method(s) == "POST"
                    and _url(s).endswith("/v1/refunds")]
    assert len(refund_calls) == 2, sorted(names)  # the 429, then the refund
    run_refund = [s for s in trace if s.name == "RunActivity:stripe_create_refund"]
    assert all(any(_descends(call, run, trace) for run in run_refund) for call in refund_calls)


def _method(span: ReadableSpan) -> str:
    return str(span.attributes.get("http.request.method") or span.attributes.get("http.method"))


def _url(span: ReadableSpan) -> str:
    return str(span.attributes.get("url.full") or span.attributes.get("http.url"))


def _case(span: ReadableSpan, spans: Any) -> str | None:
    """The case started under this webhook span (its StartWorkflow child's workflow id)."""
    for child in spans:
        if child.parent is not None and child.parent.span_id == span.context.span_id \
                and child.name == "StartWorkflow:RefundCase":
            return child.attributes.get("temporalWorkflowID")
    return None


def _one(spans: Any, predicate: Any) -> ReadableSpan:
    found = [s for s in spans if predicate(s)]
    assert found, "no such span"
    return found[0]


def _descends(span: ReadableSpan, ancestor: ReadableSpan, trace: list[ReadableSpan]) -> bool:
    by_id = {s.context.span_id: s for s in trace}
    current: ReadableSpan | None = span
    while current is not None and current.parent is not None:
        if current.parent.span_id == ancestor.context.span_id:
            return True
        current = by_id.get(current.parent.span_id)
    return False


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include `labels` (other labels, such as
    the SDK's namespace and task_queue, may be there too)."""
    total, found = 0.0, False
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and labels.items() <= s.labels.items():
                total, found = total + s.value, True
    assert found, f"no sample {name}{labels}"
    return total


async def test_api_metrics_can_require_a_token():
    from tests.api_support import app_with

    async with http(app_with(object(), api_settings(METRICS_TOKEN="scrape-me"))) as api:
        anonymous = await api.get("/metrics")
        scraped = await api.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert anonymous.status_code == 401 and "refund_desk" not in anonymous.text
    assert scraped.status_code == 200
    assert sample(scraped.text, "refund_desk_http_requests_total", route="/metrics",
                  status="401") == 1
