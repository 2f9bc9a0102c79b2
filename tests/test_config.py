"""Settings: embedded defaults work, and a bad value fails at start-up naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.config import ROOT, ConfigError, load_settings


def test_defaults_are_the_local_stack():
    s = load_settings()
    assert s.TEMPORAL_ADDRESS == "localhost:7233"
    assert s.STRIPE_API_BASE == "http://127.0.0.1:8420"
    assert not s.sendgrid_enabled
    assert s.REFUND_POLICY_FILE.exists()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TEMPORAL_ADDRESS", "no-port-here", "host:port"),
        ("STRIPE_API_KEY", "pk_test_123", "sk_"),
        ("STRIPE_API_BASE", "not a url", "URL"),
        ("API_PORT", "eighty", "integer"),
        ("API_PORT", "70000", "less than or equal"),
        ("EMAIL_FROM", "nobody", "email"),
        ("AGENT_TOKENS", "{not json", "AGENT_TOKENS"),
    ],
)
def test_malformed_setting_is_named(monkeypatch, name, value, says):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert name in str(err.value)
    assert says in str(err.value)


def test_production_refuses_development_secrets(monkeypatch):
    monkeypatch.setenv("REFUND_DESK_ENV", "production")
    with pytest.raises(ConfigError) as err:
        load_settings()
    for name in ("INTAKE_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET", "SENDGRID_INBOUND_SECRET",
                 "AGENT_TOKENS"):
        assert name in str(err.value)


def test_agent_tokens_from_json(monkeypatch):
    monkeypatch.setenv("AGENT_TOKENS", '{"tok-1": {"agent": "dana", "role": "lead"}}')
    s = load_settings()
    assert s.AGENT_TOKENS["tok-1"].agent == "dana"
    assert s.AGENT_TOKENS["tok-1"].role == "lead"


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("TEMPORAL_NAMESPACE=refunds-staging\n")
    out = subprocess.run(
        [sys.executable, "-c",
         "from core.config import load_settings; print(load_settings().TEMPORAL_NAMESPACE)"],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "refunds-staging"


def test_bad_setting_stops_the_dev_command_with_its_name():
    out = subprocess.run(
        [sys.executable, "starter.py", "dev"], cwd=ROOT, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "TEMPORAL_PORT": "not-a-port"}, timeout=60, check=False,
    )
    assert out.returncode == 2
    assert "TEMPORAL_PORT" in out.stderr
