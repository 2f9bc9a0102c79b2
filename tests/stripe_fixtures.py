"""Fixtures for the Stripe activity tests (import them into a test module)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from activities.stripe_activities import StripeActivities
from core.config import Settings, load_settings
from tests.stripe_replay_server import API_KEY, StripeReplayServer


def settings_for(api_base: str) -> Settings:
    return load_settings(STRIPE_API_BASE=api_base, STRIPE_API_KEY=API_KEY)


@pytest.fixture
async def stripe_acts(localstripe_url: str) -> AsyncIterator[StripeActivities]:
    """The activities, straight against localstripe (their connections closed after)."""
    acts = StripeActivities(settings_for(localstripe_url))
    yield acts
    await acts.close()


@pytest.fixture
def stripe_replay(localstripe_url: str) -> Iterator[StripeReplayServer]:
    """A replay/proxy server in front of localstripe (recorded answers, dropped responses)."""
    server = StripeReplayServer(upstream=localstripe_url).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def stripe_replay_acts(stripe_replay: StripeReplayServer
                             ) -> AsyncIterator[StripeActivities]:
    """The activities, talking to Stripe through the replay server."""
    acts = StripeActivities(settings_for(stripe_replay.url))
    yield acts
    await acts.close()
