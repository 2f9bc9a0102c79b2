"""Recorded RefundCase histories replay cleanly with the current workflow code, so a change
that would break running cases (non-determinism) fails here first. Regenerate the
histories with `RECORD_HISTORIES=1 pytest tests/test_workflow_*.py tests/test_e2e*.py`
(see tests/histories/README.md); a deliberate change to running behaviour goes through
`workflow.patched` and keeps the old histories."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.refund_case import RefundCase

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_recorded() -> None:
    names = {p.stem for p in HISTORIES}
    assert {"e2e_agent_approve", "two_approvers", "ack_sla_breach", "continued_as_new"} <= names


def workflow_id(history_json: str) -> str:
    """The case id, from the recorded RefundRequest input (the workflow reads its own id,
    e.g. to tell its refunds from others, so the replay must use the same one)."""
    started = json.loads(history_json)["events"][0]["workflowExecutionStartedEventAttributes"]
    start = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
    if "state" in start:  # a run that continued a case: its ContinuedCase
        return str(start["state"]["case_id"])
    return f"refund-{start['request_id']}"


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    text = path.read_text("utf-8")
    history = WorkflowHistory.from_json(workflow_id(text), text)
    replayer = Replayer(workflows=[RefundCase], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None
