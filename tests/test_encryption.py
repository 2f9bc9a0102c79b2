"""Customer data is encrypted in Temporal's history (core.codec) on the real dev server:
a case opened through the API, asked for information and answered by the customer, run to
its end by the real worker. Read with a client without the codec, its history holds only
ciphertext; with the codec (the worker's, the codec server's, or `temporal workflow show
--codec-endpoint`) it reads as usual."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from google.protobuf.message import Message
from prometheus_client.parser import text_string_to_metric_families
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from core import binaries
from core.client import connect
from core.codec import ENCODINGS
from core.contract import CaseResult, CaseState
from core.models import CustomerReplySignal
from stack.net import free_port, wait_for_port
from stack.stripe_seed import seed_charge
from tests.api_support import api_settings, eventually, http, request_body, signed_intake
from tests.test_e2e_refund import quick_policy
from tests.workflow_doubles import record_history
from worker import build_worker

API_KEY = "sk_test_refund_desk_codec"


def walk(message: Message, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every Payload and every string field in a protobuf message."""
    if isinstance(message, Payload):
        yield path, message
        return
    for field, value in message.ListFields():
        here = f"{path}.{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key in value:
                item = value[key]
                if isinstance(item, Message):
                    yield from walk(item, f"{here}[{key}]")
                else:
                    yield f"{here}[{key}]", item
        elif field.is_repeated:
            for i, item in enumerate(value):
                if isinstance(item, Message):
                    yield from walk(item, f"{here}[{i}]")
                else:
                    yield f"{here}[{i}]", item
        elif isinstance(value, Message):
            yield from walk(value, here)
        else:
            yield here, value


# Search attributes are indexed by Temporal, so not encrypted: they must hold no customer
# data at all (RefundCustomer is core.customer_ref's keyed hash). Patch markers (the ids of
# workflow.patched) are written by the SDK's core without the codec.
NOT_ENCODED = ("search_attributes", "marker_recorded_event_attributes")


@pytest.fixture()
def settings(localstripe_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    return api_settings(STRIPE_API_BASE=localstripe_url, STRIPE_API_KEY=API_KEY,
                        SENDGRID_API_KEY=None, OUTBOX_DIR=tmp_path / "outbox",
                        REFUND_POLICY_FILE=quick_policy(tmp_path / "policy.yaml"))


async def test_history_holds_ciphertext_and_decodes_with_the_codec(
        dev_env: WorkflowEnvironment, localstripe_url: str, settings: Any) -> None:
    target = dev_env.client.service_client.config.target_host
    client = await connect(settings, address=target)  # what every process uses
    task_queue = f"codec-{uuid.uuid4().hex[:8]}"
    marker = uuid.uuid4().hex[:10]
    email = f"lee.{marker}@example.com"
    message = f"The export button crashes since Tuesday {marker}"
    reply = f"My ticket number is RQ-{marker}, screenshot attached"
    charge = await asyncio.to_thread(seed_charge, localstripe_url, API_KEY, email=email,
                                     amount=4900, currency="usd")

    async def factory() -> Client:
        return client

    app = create_app(settings, factory, task_queue=task_queue)
    body = request_body(f"codec-{uuid.uuid4().hex[:10]}", customer_email=email,
                        charge_id=charge.charge_id, reason="technical_issue", message=message,
                        amount=4900)
    async with build_worker(client, settings, task_queue=task_queue), http(app) as api:
        raw, headers = signed_intake(body)
        resp = await api.post("/webhooks/refund-requests", content=raw, headers=headers)
        assert resp.status_code == 202, resp.text
        handle = client.get_workflow_handle(resp.json()["case_id"], result_type=CaseResult)

        async def asked() -> bool:
            state = await handle.query("state", result_type=CaseState)
            return state.status == "awaiting_info"
        await eventually(asked)
        # A client without the codec cannot read the worker's answer either.
        plain = await Client.connect(target, namespace=dev_env.client.namespace,
                                     data_converter=pydantic_data_converter)
        with pytest.raises(KeyError, match="Unknown payload encoding binary/encrypted"):
            await plain.get_workflow_handle(handle.id).query("state")
        await handle.signal("customer_reply", CustomerReplySignal(
            text=reply, attachments=["ticket-RQ.png"], channel="api"))
        state = await _completed(handle)
    await record_history(handle, "e2e_encrypted")

    # With the codec: the usual case.
    assert state.request.customer_email == email and state.request.message == message
    assert [r.text for r in state.replies] == [reply]
    assert state.refund is not None and state.refund.amount == 4900

    # Without it: ciphertext.
    history = await plain.get_workflow_handle(handle.id).fetch_history()
    secrets = [email.encode(), marker.encode(), email.split("@")[0].encode()]
    payloads = checked = 0
    for event in history.events:
        for path, value in walk(event):
            if isinstance(value, Payload):
                data = value.SerializeToString()
                assert not any(s in data for s in secrets), f"{path} holds customer data"
                # Temporal headers (tracing) are not payload data.
                if ".header." not in path and not any(n in path for n in NOT_ENCODED):
                    assert value.metadata["encoding"] in ENCODINGS, (path, value.metadata)
                    payloads += 1
            elif isinstance(value, str | bytes):
                text = value.encode() if isinstance(value, str) else value
                assert not any(s in text for s in secrets), f"{path}: {value!r}"
                checked += 1
    assert payloads >= 20 and checked > 50  # the walk really saw the history


async def _completed(handle: Any) -> CaseState:
    async def done() -> CaseState | None:
        state = await handle.query("state", result_type=CaseState)
        if state.waiting_for == "the customer's feedback":
            await handle.signal("feedback", {"rating": 5, "comment": ""})
        return state if state.status == "completed" else None
    await eventually(done, timeout=60)
    await handle.result()
    state: CaseState = await handle.query("state", result_type=CaseState)
    return state


async def test_temporal_workflow_show_decodes_through_the_codec_server(
        dev_env: WorkflowEnvironment, settings: Any) -> None:
    """The CLI with --codec-endpoint (and the API's token) prints the input readable;
    without it, or with a wrong token, it prints no customer data."""
    marker = uuid.uuid4().hex[:10]
    email = f"kim.{marker}@example.com"
    from core.models import RefundRequest

    request = RefundRequest(request_id=f"show-{uuid.uuid4().hex[:10]}", customer_email=email,
                            charge_id="ch_show", reason="other", message=f"hello {marker}")
    # No worker: the started event's input is all this test needs.
    await dev_env.client.start_workflow("RefundCase", request, id=request.case_id,
                                        task_queue=f"nobody-{uuid.uuid4().hex[:8]}")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    serving = asyncio.create_task(server.serve())
    try:
        await asyncio.to_thread(wait_for_port, port, 15)
        endpoint = f"http://127.0.0.1:{port}/codec"
        decoded = await _show(dev_env, request.case_id, "--codec-endpoint", endpoint,
                              "--codec-auth", "Bearer tok-vic")
        refused = await _show(dev_env, request.case_id, "--codec-endpoint", endpoint,
                              "--codec-auth", "Bearer not-a-token", "--command-timeout", "3s",
                              check=False)
        encrypted = await _show(dev_env, request.case_id)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        server.should_exit = True
        await serving
        await dev_env.client.get_workflow_handle(request.case_id).terminate("test done")
    started = decoded["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = started["input"]["payloads"][0]
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(payload["data"]))["customer_email"] == email
    assert email not in json.dumps(encrypted) and marker not in json.dumps(encrypted)
    assert email not in refused
    outcomes = {(s.labels["route"], s.labels["outcome"]) for f in
                text_string_to_metric_families(metrics) for s in f.samples
                if s.name == "refund_desk_api_outcomes_total"}
    assert {("/codec/decode", "decoded"), ("/codec/decode", "unauthorized")} <= outcomes


async def _show(env: WorkflowEnvironment, workflow_id: str, *extra: str,
                check: bool = True) -> Any:
    proc = await asyncio.create_subprocess_exec(
        binaries.temporal_cli(), "workflow", "show", "-w", workflow_id, "--output", "json",
        "--address", env.client.service_client.config.target_host,
        "--namespace", env.client.namespace, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if not check:
        return out.decode() + err.decode()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)
