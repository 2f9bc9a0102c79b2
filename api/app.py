"""The Refund Desk HTTP API and the agent console (/console): `create_app(settings,
client_factory)` for tests and embedding, `app` for `uvicorn api.app:app` (settings from the
environment, the Temporal client from core.client.connect, connected on first use)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel, Field

import console
from api import agents, incidents, intake, sendgrid, stripe_events
from api.codec_server import create_codec_app
from api.docs import add_docs
from api.logging import RequestLogMiddleware, annotate, setup_logging, warning
from api.metrics import install_metrics
from api.temporal import ClientFactory, ClientProvider, TemporalUnavailable
from core import tracing
from core.client import connect
from core.codec import codec_from_settings
from core.config import Settings, get_settings
from core.contract import TASK_QUEUE

DESCRIPTION = """Refund Desk's front door. Webhooks start and drive `RefundCase` workflows;
agents read and act on cases with a bearer token. Every webhook is authenticated, every
duplicate harmless, and nothing is acknowledged that Temporal did not take (503 = retry)."""


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    temporal: str = Field(examples=["reachable"])
    namespace: str = Field(examples=["default"])
    reason: str | None = None


def create_app(settings: Settings, client_factory: ClientFactory | None = None, *,
               task_queue: str = TASK_QUEUE,
               tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The app; `client_factory` (async, returns a temporalio Client) defaults to
    core.client.connect(settings). `task_queue` is for tests that run their own worker;
    `tracer_provider` for tests that capture spans (else core.tracing's, if any)."""
    setup_logging()
    app = FastAPI(title="Refund Desk API", version="1.0", description=DESCRIPTION,
                  docs_url=None, redoc_url=None)
    add_docs(app)
    app.state.settings = settings
    app.state.task_queue = task_queue
    app.state.clients = ClientProvider(
        client_factory or (lambda: connect(settings, tracer_provider=tracer_provider)))
    install_metrics(app, settings)
    app.add_middleware(RequestLogMiddleware)
    if not settings.sendgrid_events_authenticated:  # production refuses this (core.config)
        warning("sendgrid_events_unauthenticated",
                detail="POST /webhooks/sendgrid/events accepts any request: set "
                       "SENDGRID_EVENTS_PUBLIC_KEY or SENDGRID_EVENTS_SECRET")

    @app.exception_handler(TemporalUnavailable)
    async def _temporal_down(request: Request, exc: TemporalUnavailable) -> Response:
        annotate(request, outcome="temporal_unavailable")
        if request.url.path.startswith(console.CONSOLE_PATH):
            return console.unavailable(request, str(exc))
        return JSONResponse({"detail": {"error": "temporal_unavailable", "reason": str(exc)}},
                            status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default, minus the echoed input (it may carry personal data).
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz", response_model=Health, tags=["ops"],
             responses={503: {"model": Health, "description": "Temporal unreachable"}})
    async def healthz(request: Request) -> JSONResponse:
        """200 when Temporal answers a health check, 503 with the reason otherwise."""
        namespace = settings.TEMPORAL_NAMESPACE
        try:
            client = await app.state.clients.get()
            serving = await client.service_client.check_health(timeout=timedelta(seconds=3))
            reason = None if serving else "the workflow service is not serving"
        except TemporalUnavailable as exc:
            reason = str(exc)
        except Exception as exc:  # any failure of the health RPC means "not reachable"
            reason = f"health check failed: {exc}"
        if reason:
            return JSONResponse(Health(status="degraded", temporal="unreachable",
                                       namespace=namespace, reason=reason).model_dump(),
                                status_code=503)
        return JSONResponse(Health(status="ok", temporal="reachable",
                                   namespace=namespace).model_dump())

    app.include_router(intake.router)
    app.include_router(stripe_events.router)
    app.include_router(sendgrid.router)
    app.include_router(agents.router)
    app.mount("/codec", create_codec_app(settings, codec_from_settings(settings)))
    tracing.instrument_fastapi(app, tracer_provider)
    console.mount(app, settings)
    app.include_router(incidents.router)
    return app


def _process_app() -> FastAPI:
    settings = get_settings()
    tracing.configure_tracing(settings, "refund-desk-api")
    return create_app(settings)


app = _process_app()
