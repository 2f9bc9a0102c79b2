"""OpenTelemetry traces: one trace from the intake webhook (FastAPI's instrumentation)
through the workflow and its activities (temporalio.contrib.opentelemetry, which carries
the context in Temporal headers) to the Stripe HTTP calls (`http_client_span`, around each
request of the Stripe SDK's aiohttp client).

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set: then `configure_tracing` installs a tracer
provider that exports by OTLP/HTTP (the collector's :4318) and every client made by
core.client.connect carries the tracing interceptor. The standard OTEL_* variables
(OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, ...) keep their
usual meaning."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Tracer, TracerProvider
from temporalio.contrib.opentelemetry import TracingInterceptor

from core.config import Settings

TRACER_NAME = "refund-desk"
_http_tracer: Tracer | None = None  # set by instrument_http_clients


def configure_tracing(settings: Settings, service_name: str) -> TracerProvider | None:
    """The process' tracer provider exporting by OTLP, set as the global one; None (and
    nothing installed) when OTEL_EXPORTER_OTLP_ENDPOINT is unset."""
    endpoint = settings.OTEL_EXPORTER_OTLP_ENDPOINT
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = SdkTracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    trace.set_tracer_provider(provider)
    instrument_http_clients(provider)
    return provider


def enabled_provider(provider: TracerProvider | None = None) -> TracerProvider | None:
    """`provider`, else the global one if a real (SDK) provider was installed."""
    if provider is not None:
        return provider
    current = trace.get_tracer_provider()
    return current if isinstance(current, SdkTracerProvider) else None


def client_interceptors(provider: TracerProvider | None = None) -> list[TracingInterceptor]:
    """The Temporal tracing interceptor when tracing is on (workers built on the client
    inherit it), else nothing: no spans, no headers."""
    provider = enabled_provider(provider)
    if provider is None:
        return []
    return [TracingInterceptor(provider.get_tracer(TRACER_NAME))]


def instrument_fastapi(app: object, provider: TracerProvider | None = None) -> None:
    """Server spans for every API request (the webhook's span starts the case's trace)."""
    provider = enabled_provider(provider)
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider,  # type: ignore[arg-type]  # typed as object: core/ must not import FastAPI
                                       excluded_urls="healthz,metrics")


def instrument_http_clients(provider: TracerProvider) -> None:
    """Client spans for outgoing HTTP requests: the Stripe SDK's (`http_client_span`)."""
    global _http_tracer
    _http_tracer = provider.get_tracer(TRACER_NAME)


def uninstrument_http_clients() -> None:
    global _http_tracer
    _http_tracer = None


@contextmanager
def http_client_span(method: str, url: str) -> Iterator[Span | None]:
    """A CLIENT span around one outgoing request, with OpenTelemetry's HTTP attribute
    names (the caller adds the status code); None when tracing is off."""
    if _http_tracer is None:
        yield None
        return
    verb = method.upper()
    with _http_tracer.start_as_current_span(
            verb, kind=SpanKind.CLIENT,
            attributes={"http.request.method": verb, "url.full": url}) as span:
        yield span
