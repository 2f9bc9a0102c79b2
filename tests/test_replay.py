"""Recorded RefundCase histories replay cleanly with the current workflow code, so a change
that would break running cases (non-determinism) fails here first. Regenerate the
histories with `RECORD_HISTORIES=1 pytest tests/test_workflow_*.py tests/test_e2e*.py`
(see tests/histories/README.md); a deliberate change to running behaviour goes through
`workflow.patched` and keeps the old histories.

Histories recorded on the dev server hold encrypted payloads (core.codec, the development
key); those of the time-skipping server plain ones. The replayer decodes both with the
same converter as production: the codec passes unencrypted payloads through."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from core.codec import ENCODING, data_converter, development_codec
from policies import library as policy_library
from policies.loader import DEFAULT_POLICY
from workflows.refund_case import RefundCase

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
TEST_CODEC = development_codec()


def test_histories_are_recorded() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"e2e_agent_approve", "two_approvers", "ack_sla_breach", "continued_as_new",
            "e2e_encrypted", "incident_case", "incident_case_permits_alongside",
            "incident_joined_permits_alongside", "lean_auto_approve", "incident_case_lean",
            "at_rest_auto_approve"} <= names


def test_dev_server_histories_hold_ciphertext_only() -> None:
    text = (Path(__file__).parent / "histories" / "e2e_encrypted.json").read_text("utf-8")
    started = json.loads(text)["events"][0]["workflowExecutionStartedEventAttributes"]
    metadata = started["input"]["payloads"][0]["metadata"]
    assert base64.b64decode(metadata["encoding"]) == ENCODING
    assert "@example.com" not in text


def workflow_id(history_json: str) -> str:
    """The case id, from the recorded RefundRequest input (the workflow reads its own id,
    e.g. to tell its refunds from others, so the replay must use the same one)."""
    started = json.loads(history_json)["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = json_format.ParseDict(started["input"]["payloads"][0], Payload())
    start = json.loads(TEST_CODEC.decrypt(payload).data)
    if "state" in start:  # a run that continued a case: its ContinuedCase
        return str(start["state"]["case_id"])
    return f"refund-{start['request_id']}"


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    text = path.read_text("utf-8")
    history = WorkflowHistory.from_json(workflow_id(text), text)
    # Cases pin their policy by hash: the replaying worker holds the versions, as a real
    # worker holds every policy file beside the one in force.
    policy_library.hold_folder(DEFAULT_POLICY.parent)
    replayer = Replayer(workflows=[RefundCase], data_converter=data_converter(TEST_CODEC))
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None
