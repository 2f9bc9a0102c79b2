"""Where Temporal is and how to reach it, read the way the Temporal SDK's environment
configuration reads it (`temporalio.envconfig`): a profile of the TOML config file
(`TEMPORAL_CONFIG_FILE`, else ~/.config/temporalio/temporal.toml; `TEMPORAL_PROFILE`,
else "default"), overridden by the environment (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
`TEMPORAL_API_KEY`, `TEMPORAL_TLS`, `TEMPORAL_TLS_*`, `TEMPORAL_GRPC_META_*`). So a
self-hosted cluster with mTLS and Temporal Cloud with an API key are configured exactly as
for the `temporal` CLI.

The variables are also Settings fields, so a `.env` file sets them too and a malformed one
is named at start-up; what Settings holds is handed to the SDK's loader as the environment.
A failed connection is explained by naming the setting to look at
(`TemporalConnectError`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from temporalio.envconfig import ClientConfigProfile
from temporalio.service import TLSConfig

from core.config import ConfigError, Settings

# Settings fields that are the SDK's own environment variables.
SDK_VARIABLES = (
    "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_TLS",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH", "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
    "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_CERT_DATA",
    "TEMPORAL_TLS_CLIENT_KEY_PATH", "TEMPORAL_TLS_CLIENT_KEY_DATA",
    "TEMPORAL_TLS_SERVER_NAME", "TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE",
)
GRPC_META_PREFIX = "TEMPORAL_GRPC_META_"


class TemporalConnectError(RuntimeError):
    """Temporal could not be reached; the message names the setting to check."""


@dataclass(frozen=True)
class Connection:
    """The resolved options of Client.connect, plus what they came from (for messages)."""

    target_host: str
    namespace: str
    api_key: str | None = None
    tls: bool | TLSConfig = False
    rpc_metadata: Mapping[str, str] = field(default_factory=dict)
    server_ca: str | None = None  # the setting that gave the CA, None: system roots
    client_cert: str | None = None  # the setting that gave the client certificate

    def connect_kwargs(self) -> dict[str, Any]:
        return {"target_host": self.target_host, "namespace": self.namespace,
                "api_key": self.api_key, "tls": self.tls,
                "rpc_metadata": dict(self.rpc_metadata)}


def sdk_environment(settings: Settings) -> dict[str, str]:
    """The environment the SDK's loader sees: the SDK variables Settings read (environment
    or .env; defaults are left out so that a profile file can supply them) and the process'
    TEMPORAL_GRPC_META_* headers."""
    env = {k: v for k, v in os.environ.items() if k.startswith(GRPC_META_PREFIX)}
    for name in SDK_VARIABLES:
        if name not in settings.model_fields_set:
            continue
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[name] = str(value)
    return env


def load_connection(settings: Settings, *, address: str | None = None) -> Connection:
    """Resolve the connection; a bad profile, file or certificate is a ConfigError naming
    the setting."""
    env = sdk_environment(settings)
    try:
        profile = ClientConfigProfile.load(override_env_vars=env)
    except Exception as exc:  # the bridge's ConfigError: unknown profile, bad TOML, ...
        raise ConfigError(f"Temporal client configuration (TEMPORAL_PROFILE / "
                          f"TEMPORAL_CONFIG_FILE / TEMPORAL_TLS_*): {exc}") from None
    tls: bool | TLSConfig = False
    server_ca = client_cert = None
    if profile.tls is not None:
        try:
            tls = profile.tls.to_connect_tls_config()
        except OSError as exc:
            raise ConfigError(f"TEMPORAL_TLS_* (or the profile's tls section): cannot read "
                              f"{exc.filename}: {exc.strerror}") from None
        server_ca = _source("TEMPORAL_TLS_SERVER_CA_CERT", profile.tls.server_root_ca_cert)
        client_cert = _source("TEMPORAL_TLS_CLIENT_CERT", profile.tls.client_cert)
        if bool(profile.tls.client_cert) != bool(profile.tls.client_private_key):
            raise ConfigError("TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH "
                              "(or _DATA) go together: set both or neither")
    elif profile.api_key:
        tls = True  # an API key implies TLS with the system's roots (Temporal Cloud)
    return Connection(
        target_host=address or profile.address or settings.TEMPORAL_ADDRESS,
        namespace=profile.namespace or settings.TEMPORAL_NAMESPACE,
        api_key=profile.api_key or None,
        tls=tls,
        rpc_metadata=dict(profile.grpc_meta),
        server_ca=server_ca,
        client_cert=client_cert,
    )


def _source(prefix: str, value: object) -> str | None:
    if value is None:
        return None
    return f"{prefix}_PATH" if isinstance(value, Path) else f"{prefix}_PATH or _DATA"


# --- explaining a failed connection --------------------------------------------------

_NAME_MISMATCH = re.compile(r"NotValidForName|not valid for name|hostname mismatch", re.I)
_UNTRUSTED = re.compile(r"UnknownIssuer|InvalidCertificate|certificate verify failed|"
                        r"self[- ]signed", re.I)
_NEEDS_CLIENT_CERT = re.compile(r"CertificateRequired|certificate required|"
                                r"No required SSL certificate", re.I)
_CLIENT_CERT_REFUSED = re.compile(r"BadCertificate|UnknownCA|bad certificate|"
                                  r"SSL certificate error|DecryptError", re.I)
_UNAUTHENTICATED = re.compile(r"Unauthenticated|401 Unauthorized|code: 16\b", re.I)
_PERMISSION = re.compile(r"PermissionDenied|403 Forbidden|code: 7\b", re.I)
_NOT_TLS = re.compile(r"InvalidContentType|CorruptMessage|wrong version number|"
                      r"packet length too long", re.I)
_SPEAKS_TLS = re.compile(r"h2 protocol error|FRAME_SIZE_ERROR|GoAway|"
                         r"connection reset|broken pipe", re.I)
_UNREACHABLE = re.compile(r"Connection refused|tcp connect error|dns error|"
                          r"failed to lookup|No route to host|timed out", re.I)


def explain(exc: BaseException, conn: Connection) -> TemporalConnectError:
    """The SDK's error, with the setting that most likely causes it named first."""
    raw = str(exc) or type(exc).__name__
    return TemporalConnectError(
        f"cannot connect to Temporal at {conn.target_host} (namespace {conn.namespace}): "
        f"{_hint(raw, conn)} [{_short(raw)}]")


def _hint(raw: str, conn: Connection) -> str:
    tls_on = conn.tls is not False
    if tls_on and _NAME_MISMATCH.search(raw):
        return ("the server's certificate is not valid for this host name: set "
                "TEMPORAL_TLS_SERVER_NAME to a name the certificate holds")
    if tls_on and _UNTRUSTED.search(raw):
        if conn.server_ca:
            return (f"the server's certificate is not signed by the CA in {conn.server_ca} "
                    "(wrong CA?)")
        return ("the server's certificate is not signed by a CA this machine trusts: set "
                "TEMPORAL_TLS_SERVER_CA_CERT_PATH to its CA")
    if tls_on and (_NEEDS_CLIENT_CERT.search(raw)
                   or (not conn.client_cert and "400 Bad Request" in raw)):
        if conn.client_cert:
            return f"the server refused the client certificate of {conn.client_cert}"
        return ("the server requires a client certificate (mTLS): set "
                "TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH")
    if tls_on and conn.client_cert and (
            _CLIENT_CERT_REFUSED.search(raw) or "400 Bad Request" in raw):
        return (f"the server refused the client certificate of {conn.client_cert} (not "
                "signed by a CA it trusts?)")
    if _UNAUTHENTICATED.search(raw):
        if conn.api_key:
            return "the server refused the API key in TEMPORAL_API_KEY"
        return "the server wants credentials: set TEMPORAL_API_KEY (or a client certificate)"
    if _PERMISSION.search(raw):
        who = "TEMPORAL_API_KEY" if conn.api_key else "these credentials"
        return (f"{who} may not use namespace {conn.namespace!r} (TEMPORAL_NAMESPACE) on "
                "this server")
    if tls_on and _NOT_TLS.search(raw):
        return ("the server does not speak TLS at TEMPORAL_ADDRESS: unset TEMPORAL_TLS and "
                "the TEMPORAL_TLS_* certificates, or use its TLS port")
    if not tls_on and _SPEAKS_TLS.search(raw):
        return ("the server closed a plaintext connection; if it expects TLS set "
                "TEMPORAL_TLS=true (and TEMPORAL_TLS_* or TEMPORAL_API_KEY)")
    if _UNREACHABLE.search(raw):
        return f"nothing answers at TEMPORAL_ADDRESS={conn.target_host}"
    return ("check TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and the TEMPORAL_TLS_* / "
            "TEMPORAL_API_KEY settings")


def _short(raw: str, limit: int = 300) -> str:
    raw = " ".join(raw.split())
    return raw if len(raw) <= limit else raw[:limit] + "…"
