"""The one Temporal client factory: every process connects through here so that the
pydantic data converter is never forgotten."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from core.config import Settings, get_settings


async def connect(settings: Settings | None = None, *, address: str | None = None) -> Client:
    settings = settings or get_settings()
    return await Client.connect(
        address or settings.TEMPORAL_ADDRESS,
        namespace=settings.TEMPORAL_NAMESPACE,
        data_converter=pydantic_data_converter,
    )
