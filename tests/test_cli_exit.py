"""The CLI as scripts use it: a separate process per call, exit codes as the README
documents them, and no abort at interpreter exit (sdk-python issue 300: the SDK's threads
could end a finished command with exit 134)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from core.config import ROOT

ABORT = 134


def run_cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "starter.py", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def cli_env(dev_env: WorkflowEnvironment, tmp_path: Path) -> dict[str, str]:
    return {**os.environ,
            "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "TEMPORAL_NAMESPACE": dev_env.client.namespace,
            "OUTBOX_DIR": str(tmp_path / "outbox"), "DATA_DIR": str(tmp_path)}


async def test_unknown_case_has_its_own_exit_code(cli_env: dict[str, str]) -> None:
    missing = f"refund-nope-{uuid.uuid4().hex[:8]}"
    for argv in (("status", missing), ("feedback", missing, "--rating", "5"),
                 ("approve", missing, "--agent", "alice")):
        done = run_cli(cli_env, *argv)
        assert done.returncode == 5, (argv, done.returncode, done.stderr)
        assert f"no case '{missing}'" in done.stderr
        assert "Traceback" not in done.stderr


async def test_out_of_range_rating_is_bad_input_without_a_traceback(
        cli_env: dict[str, str]) -> None:
    done = run_cli(cli_env, "feedback", "refund-x", "--rating", "9")
    assert done.returncode == 2
    assert "--rating" in done.stderr and "Traceback" not in done.stderr


async def test_repeated_calls_never_abort_at_exit(cli_env: dict[str, str]) -> None:
    """A bounded loop here; bench/cli_exit_drill.py runs the 200-call drill."""
    codes = [run_cli(cli_env, "status", f"refund-loop-{i}").returncode for i in range(12)]
    assert ABORT not in codes
    assert set(codes) == {5}
