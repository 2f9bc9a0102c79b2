"""Connecting to a Temporal that wants mutual TLS and an API key, configured only through
the SDK's environment variables (core.connection): the worker process and the API reach
the dev server through nginx (tests/tls_proxy.py) with certificates made for the test; a
wrong CA, a missing client certificate or a wrong API key fails with a message that names
the setting to fix."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core.client import connect
from core.config import ROOT
from core.connection import TemporalConnectError
from stack.stripe_seed import seed_charge
from tests.api_support import api_settings, eventually, http, request_body, signed_intake
from tests.tls_proxy import API_KEY, Certificates, TLSProxy, make_certificates, nginx_binary

STRIPE_KEY = "sk_test_refund_desk_tls"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(dev_env: WorkflowEnvironment, certs: Certificates,
                tmp_path: Path) -> AsyncIterator[TLSProxy]:
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed: `apt-get install nginx-light` (`make test` "
                    "installs it when it runs as root)")
    port = dev_env.client.service_client.config.target_host.rsplit(":", 1)[1]
    proxy = TLSProxy(nginx, tmp_path, certs, upstream=f"127.0.0.1:{port}")
    try:
        yield proxy
    finally:
        proxy.stop()


def tls_env(proxy: TLSProxy, certs: Certificates, **over: str | None) -> dict[str, str]:
    """The SDK variables of an mTLS + API key cluster; None removes one."""
    env: dict[str, str | None] = {
        "TEMPORAL_ADDRESS": proxy.address,
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(certs.ca),
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(certs.client_cert),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(certs.client_key),
        "TEMPORAL_API_KEY": API_KEY,
    }
    env.update(over)
    return {k: v for k, v in env.items() if v is not None}


@pytest.fixture()
def worker_env(localstripe_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """What a worker process needs besides Temporal: no TEMPORAL_* from the caller's
    environment leaks in."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    yield {**base, "STRIPE_API_BASE": localstripe_url, "STRIPE_API_KEY": STRIPE_KEY,
           "OUTBOX_DIR": str(tmp_path / "outbox"), "PYTHONUNBUFFERED": "1"}


async def test_worker_and_api_work_through_mutual_tls_and_an_api_key(
        proxy: TLSProxy, certs: Certificates, worker_env: dict[str, str],
        localstripe_url: str, tmp_path: Path, dev_env: WorkflowEnvironment) -> None:
    worker = subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT,
                              env={**worker_env, **tls_env(proxy, certs)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    settings = api_settings(**tls_env(proxy, certs))
    app = create_app(settings)  # its client: core.client.connect(settings), through nginx
    email = f"tls-{uuid.uuid4().hex[:8]}@example.com"
    charge = await asyncio.to_thread(seed_charge, localstripe_url, STRIPE_KEY, email=email,
                                     amount=4200, currency="usd")
    body = request_body(f"tls-{uuid.uuid4().hex[:8]}", customer_email=email,
                        charge_id=charge.charge_id, reason="fraud_suspected", amount=4200)
    try:
        async with http(app) as api:
            health = await api.get("/healthz")
            assert health.status_code == 200, health.text
            raw, headers = signed_intake(body)
            started = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
            assert started.status_code == 202, started.text
            case_id = started.json()["case_id"]

            async def held_for_an_agent() -> dict[str, Any] | None:
                resp = await api.get(f"/cases/{case_id}",
                                     headers={"Authorization": "Bearer tok-vic"})
                state = resp.json() if resp.status_code == 200 else {}
                return state if state.get("status") == "awaiting_agent" else None
            # The worker (through the proxy) acknowledged, looked the charge up, decided.
            state = await eventually(held_for_an_agent, timeout=60)
        assert state["facts"]["charge_id"] == charge.charge_id
        assert "email_sent" in [t["kind"] for t in state["timeline"]]  # the acknowledgment
    finally:
        worker.terminate()
        output, _ = await asyncio.to_thread(worker.communicate, timeout=20)
        await dev_env.client.get_workflow_handle(f"refund-{body['request_id']}").terminate(
            "test done")
    assert f"on {proxy.address}" in output  # it really connected through the proxy


WRONG = {
    "wrong_ca": ({"TEMPORAL_TLS_SERVER_CA_CERT_PATH": "OTHER_CA"},
                 "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
    "no_client_certificate": ({"TEMPORAL_TLS_CLIENT_CERT_PATH": None,
                               "TEMPORAL_TLS_CLIENT_KEY_PATH": None},
                              "TEMPORAL_TLS_CLIENT_CERT_PATH"),
    "wrong_api_key": ({"TEMPORAL_API_KEY": "not-the-key"}, "TEMPORAL_API_KEY"),
}


@pytest.mark.parametrize("case", list(WRONG))
async def test_a_wrong_setting_is_named(case: str, proxy: TLSProxy, certs: Certificates,
                                        worker_env: dict[str, str]) -> None:
    change, setting = WRONG[case]
    change = {k: (str(certs.other_ca) if v == "OTHER_CA" else v) for k, v in change.items()}
    env = tls_env(proxy, certs, **change)

    with pytest.raises(TemporalConnectError) as err:
        await connect(api_settings(**env))
    assert setting in str(err.value), str(err.value)

    async with http(create_app(api_settings(**env))) as api:
        health = await api.get("/healthz")
    assert health.status_code == 503 and setting in health.json()["reason"], health.text

    worker = await asyncio.to_thread(
        subprocess.run, [sys.executable, "worker.py"], cwd=ROOT, env={**worker_env, **env},
        capture_output=True, text=True, timeout=60, check=False)
    assert worker.returncode == 1, worker.stderr
    assert setting in worker.stderr and "Traceback" not in worker.stderr, worker.stderr
