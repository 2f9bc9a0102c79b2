"""Shared fixtures. Every server a test needs is started here, on free ports, and stopped
afterwards: the suite passes on a clean machine with nothing running."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core import binaries, search_attributes
from core.codec import codec_from_settings, data_converter
from core.config import load_settings
from stack import dev_server
from stack.net import free_port, wait_for_port
from tests.workflow_doubles import end_cases_left_running

# The SDK waits 5 s for a server to start by default; a machine busy with other suites
# has been seen to need more (a flaky "did not start within 5s").
SERVER_STARTUP = binaries.SERVER_STARTUP

@pytest_asyncio.fixture(autouse=True)
async def _end_cases_left_running() -> AsyncIterator[None]:
    """After each test, the cases it started and left running are terminated (see
    tests.workflow_doubles.end_cases_left_running)."""
    yield
    await end_cases_left_running()


async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server with our search attributes registered (it rejects
    unknown ones and the workflow task would then retry forever). Tests that move its
    clock by hand (`env.sleep`) need one of their own: after that, a shared server no
    longer skips time for the tests that follow."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binaries.temporal_test_server(),
        data_converter=pydantic_data_converter,
        test_server_startup_timeout=SERVER_STARTUP,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes=search_attributes.indexed_types(),
        )
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server the workflow tests share."""
    async for env in time_skipping_server():
        yield env


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (in memory) with our search attributes. Its client
    encrypts like every Refund Desk client (core.client.connect) with the settings' keys
    (the development key unless the environment sets others), so the two can share cases."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binaries.temporal_cli(),
        data_converter=data_converter(codec_from_settings(load_settings())),
        search_attributes=search_attributes.ALL,
        dev_server_extra_args=dev_server.KEEP_SEARCH_ATTRIBUTE_CACHE,  # as `make run` does
        dev_server_startup_timeout=SERVER_STARTUP,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def localstripe_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """localstripe on a free loopback port with its own state file, through the same
    wrapper as `make run` (stack/localstripe_server.py: Stripe's idempotency keys)."""
    port = free_port()
    state: Path = tmp_path_factory.mktemp("localstripe") / "state.pickle"
    proc = subprocess.Popen(
        [*binaries.localstripe_command(port, state), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
