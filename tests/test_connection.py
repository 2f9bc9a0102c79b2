"""core.connection: the client's settings are read the way the Temporal SDK reads its
environment configuration (profile file, then environment), and a failed connection names
the setting to fix. No server here: tests/test_tls.py connects for real."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from core.config import ConfigError, load_settings
from core.connection import Connection, explain, load_connection


def profile_file(tmp_path: Path, cert: Path) -> Path:
    path = tmp_path / "temporal.toml"
    path.write_text(f"""
[profile.default]
address = "default.example:7233"

[profile.cloud]
address = "refunds.a1b2c.tmprl.cloud:7233"
namespace = "refunds.a1b2c"
api_key = "key-from-profile"

[profile.mtls]
address = "temporal.internal:7233"
namespace = "refunds"
[profile.mtls.tls]
server_name = "temporal.internal"
server_ca_cert_path = "{cert}"
client_cert_path = "{cert}"
client_key_path = "{cert}"
""")
    return path


@pytest.fixture()
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "x.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n")
    return path


def test_defaults_are_the_local_dev_server(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/temporalio/temporal.toml
    conn = load_connection(load_settings())
    assert (conn.target_host, conn.namespace, conn.tls, conn.api_key) == (
        "localhost:7233", "default", False, None)


def test_a_profile_of_the_config_file_is_used(tmp_path, pem):
    path = profile_file(tmp_path, pem)
    cloud = load_connection(load_settings(TEMPORAL_CONFIG_FILE=path, TEMPORAL_PROFILE="cloud"))
    assert cloud.target_host == "refunds.a1b2c.tmprl.cloud:7233"
    assert cloud.namespace == "refunds.a1b2c"
    assert cloud.api_key == "key-from-profile" and cloud.tls is True  # API key implies TLS
    mtls = load_connection(load_settings(TEMPORAL_CONFIG_FILE=path, TEMPORAL_PROFILE="mtls"))
    assert isinstance(mtls.tls, TLSConfig) and mtls.tls.domain == "temporal.internal"
    assert mtls.tls.client_cert == pem.read_bytes()
    assert mtls.client_cert == "TEMPORAL_TLS_CLIENT_CERT_PATH"


def test_the_environment_overrides_the_profile(tmp_path, pem):
    path = profile_file(tmp_path, pem)
    conn = load_connection(load_settings(TEMPORAL_CONFIG_FILE=path, TEMPORAL_PROFILE="cloud",
                                         TEMPORAL_NAMESPACE="other.a1b2c",
                                         TEMPORAL_API_KEY="key-from-env"))
    assert conn.namespace == "other.a1b2c" and conn.api_key == "key-from-env"
    assert conn.target_host == "refunds.a1b2c.tmprl.cloud:7233"
    # An explicit address (tests, tools) wins over both.
    assert load_connection(load_settings(TEMPORAL_CONFIG_FILE=path),
                           address="127.0.0.1:1").target_host == "127.0.0.1:1"


def test_grpc_metadata_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TEMPORAL_GRPC_META_X_TENANT", "acme")
    assert load_connection(load_settings()).rpc_metadata == {"x-tenant": "acme"}


@pytest.mark.parametrize(("over", "says"), [
    ({"TEMPORAL_PROFILE": "nope"}, "TEMPORAL_PROFILE"),
    ({"TEMPORAL_TLS_CLIENT_CERT_PATH": "PEM"}, "TEMPORAL_TLS_CLIENT_KEY_PATH"),
])
def test_bad_client_configuration_is_named(tmp_path, pem, over, says):
    over = {k: (pem if v == "PEM" else v) for k, v in over.items()}
    with pytest.raises(ConfigError) as err:
        load_connection(load_settings(TEMPORAL_CONFIG_FILE=profile_file(tmp_path, pem), **over))
    assert says in str(err.value)


@pytest.mark.parametrize("name", ["TEMPORAL_TLS_SERVER_CA_CERT_PATH", "TEMPORAL_CONFIG_FILE"])
def test_a_missing_file_is_named_at_start_up(name, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_settings(**{name: tmp_path / "missing.pem"})
    assert name in str(err.value) and "no such file" in str(err.value)


def test_a_profile_certificate_that_cannot_be_read_is_named(tmp_path, pem):
    path = profile_file(tmp_path, pem)
    pem.unlink()
    with pytest.raises(ConfigError) as err:
        load_connection(load_settings(TEMPORAL_CONFIG_FILE=path, TEMPORAL_PROFILE="mtls"))
    assert "TEMPORAL_TLS_" in str(err.value) and str(pem) in str(err.value)


TLS = Connection("t:7233", "ns", tls=TLSConfig(), server_ca="TEMPORAL_TLS_SERVER_CA_CERT_PATH",
                 client_cert="TEMPORAL_TLS_CLIENT_CERT_PATH", api_key="k")


@pytest.mark.parametrize(("raw", "conn", "names"), [
    ("InvalidCertificate(UnknownIssuer)", TLS, "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
    ("InvalidCertificate(NotValidForNameContext {...})", TLS, "TEMPORAL_TLS_SERVER_NAME"),
    ("received fatal alert: CertificateRequired", Connection("t:1", "n", tls=True),
     "TEMPORAL_TLS_CLIENT_CERT_PATH"),
    ("received fatal alert: BadCertificate", TLS, "TEMPORAL_TLS_CLIENT_CERT_PATH"),
    ("Status { code: Unauthenticated, message: \"bad key\" }", TLS, "TEMPORAL_API_KEY"),
    ("Status { code: PermissionDenied }", TLS, "TEMPORAL_NAMESPACE"),
    ("h2 protocol error: GoAway FRAME_SIZE_ERROR", Connection("t:1", "n"), "TEMPORAL_TLS=true"),
    ("tcp connect error: Connection refused", Connection("t:1", "n"), "TEMPORAL_ADDRESS"),
])
def test_a_failed_connection_names_the_setting(raw, conn, names):
    message = str(explain(RuntimeError(raw), conn))
    assert names in message and raw[:20] in message
