"""The one Temporal client factory: every process (worker, API, CLI, incident tools)
connects through here, so none forgets the pydantic converter, the payload encryption
(core.codec), the connection settings of the SDK's environment configuration
(core.connection: TLS, API key, profile file) or the tracing interceptor (core.tracing)."""

from __future__ import annotations

from opentelemetry.trace import TracerProvider
from temporalio.client import Client
from temporalio.runtime import Runtime

from core import tracing
from core.codec import codec_from_settings, data_converter
from core.config import Settings, get_settings
from core.connection import explain, load_connection


async def connect(settings: Settings | None = None, *, address: str | None = None,
                  runtime: Runtime | None = None,
                  tracer_provider: TracerProvider | None = None) -> Client:
    """A connected client. `runtime`: the worker's, with its Prometheus endpoint;
    `tracer_provider`: tests pass their own, processes use the one core.tracing set up.
    Raises ConfigError (bad settings) or TemporalConnectError (naming the setting)."""
    settings = settings or get_settings()
    conn = load_connection(settings, address=address)
    converter = data_converter(codec_from_settings(settings))
    try:
        return await Client.connect(
            **conn.connect_kwargs(),
            data_converter=converter,
            interceptors=tracing.client_interceptors(tracer_provider),
            runtime=runtime,
        )
    except Exception as exc:
        raise explain(exc, conn) from None
