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
                 "SENDGRID_EVENTS_PUBLIC_KEY", "SENDGRID_EVENTS_SECRET", "AGENT_TOKENS",
                 "PAYLOAD_ENCRYPTION_KEYS", "CUSTOMER_REF_KEY",
                 "CONSOLE_SESSION_SECRET"):
        assert name in str(err.value)


PRODUCTION = {
    "REFUND_DESK_ENV": "production", "INTAKE_WEBHOOK_SECRET": "i", "STRIPE_WEBHOOK_SECRET": "w",
    "SENDGRID_INBOUND_SECRET": "s", "AGENT_TOKENS": '{"t": {"agent": "a"}}',
    "PAYLOAD_ENCRYPTION_KEYS": '{"k1": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}',
    "CUSTOMER_REF_KEY": "c",
    "CONSOLE_SESSION_SECRET": "c",
}


@pytest.mark.parametrize("events", [
    {},
    {"SENDGRID_EVENTS_PUBLIC_KEY": "", "SENDGRID_EVENTS_SECRET": "  "},  # compose's ${X:-}
])
def test_production_needs_an_authenticated_event_webhook(monkeypatch, events):
    for name, value in {**PRODUCTION, **events}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "SENDGRID_EVENTS_PUBLIC_KEY" in str(err.value)
    assert "INTAKE_WEBHOOK_SECRET" not in str(err.value)


@pytest.mark.parametrize("events", [{"SENDGRID_EVENTS_PUBLIC_KEY": "MFkw..."},
                                    {"SENDGRID_EVENTS_SECRET": "e"}])
def test_production_accepts_a_public_key_or_a_url_secret(monkeypatch, events):
    for name, value in {**PRODUCTION, **events}.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.sendgrid_events_authenticated


def test_development_runs_without_event_webhook_auth_and_empty_means_unset(monkeypatch):
    monkeypatch.setenv("SENDGRID_EVENTS_SECRET", "")
    monkeypatch.setenv("REPLY_ADDRESS_SECRET", "")
    s = load_settings()
    assert s.SENDGRID_EVENTS_SECRET is None and s.REPLY_ADDRESS_SECRET is None
    assert not s.sendgrid_events_authenticated


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
