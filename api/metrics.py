"""The API's Prometheus metrics at `GET /metrics`: every request (method, route template,
status, duration) and the domain events the handlers already note for the request log
(api.logging.annotate): cases opened by reason and channel, agent actions by result,
every endpoint's outcome (started, duplicate, bad_signature, refused:wrong_state, ...).

One registry per app (tests build many apps). Routes are templates (`/cases/{case_id}`),
never raw paths, so case ids do not become label values. When METRICS_TOKEN is set the
endpoint wants `Authorization: Bearer <METRICS_TOKEN>` (Prometheus' `authorization`)."""

from __future__ import annotations

import hmac
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
INTAKE_ROUTE = "/webhooks/refund-requests"
AGENT_ACTIONS = frozenset({"approve_action", "deny_action", "request_info_action"})


class APIMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("refund_desk_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("refund_desk_http_request_duration_seconds",
                                 "Time to answer an HTTP request", ["method", "route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.outcomes = Counter("refund_desk_api_outcomes", "What each request did, by route",
                                ["route", "outcome"], registry=r)
        self.cases_opened = Counter("refund_desk_cases_opened",
                                    "Cases opened through the API, by reason and channel",
                                    ["reason", "channel"], registry=r)
        self.agent_actions = Counter("refund_desk_agent_actions",
                                     "Agent actions (updates) by result", ["action", "result"],
                                     registry=r)

    def observe(self, method: str, route: str, status: int, seconds: float,
                noted: dict[str, Any]) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        outcome = noted.get("outcome")
        if not outcome:
            return
        self.outcomes.labels(route, str(outcome)).inc()
        if outcome == "started" and noted.get("reason"):
            channel = "webhook" if route == INTAKE_ROUTE else "agent"
            self.cases_opened.labels(str(noted["reason"]), channel).inc()
        if noted.get("action") in AGENT_ACTIONS:
            self.agent_actions.labels(str(noted["action"]), str(outcome)).inc()


class MetricsMiddleware:
    """Pure ASGI, outermost but for the request log: sees the matched route and what the
    handler noted in `request.state.log`."""

    def __init__(self, app: ASGIApp, metrics: APIMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            noted = scope.get("state", {}).get("log")
            self.metrics.observe(scope.get("method", ""), _route(scope), status,
                                 time.perf_counter() - start,
                                 noted if isinstance(noted, dict) else {})


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    return f"{scope.get('root_path', '')}{path}"


def install_metrics(app: FastAPI, settings: Settings) -> APIMetrics:
    metrics = APIMetrics()
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics_endpoint(request: Request) -> Response:
        token = settings.METRICS_TOKEN
        if token is not None:
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
                return Response("metrics need METRICS_TOKEN as a bearer token\n", 401,
                                headers={"WWW-Authenticate": "Bearer"})
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
