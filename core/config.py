"""Configuration in one place: environment variables (or a `.env` file) with the names
of DESIGN.md. Defaults are the embedded local stack, so `make run` needs no setup; a
missing or malformed value fails at start-up with a message naming the variable."""

from __future__ import annotations

import functools
import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

ROOT = Path(__file__).resolve().parent.parent

# Secrets that only make sense on a developer machine. Production refuses them.
DEV_INTAKE_SECRET = "dev-intake-secret"
DEV_STRIPE_WEBHOOK_SECRET = "whsec_dev_refund_desk"
DEV_INBOUND_SECRET = "dev-inbound-secret"
# Development keys of the payload codec and of the customer reference (both refused in
# production). Fixed, so that the local stack's saved histories stay readable.
DEV_PAYLOAD_KEY_ID = "dev-1"
DEV_PAYLOAD_KEY = "cmVmdW5kLWRlc2stZGV2ZWxvcG1lbnQta2V5LTAwMDE="  # 32 bytes, base64
DEV_CUSTOMER_REF_KEY = "dev-customer-ref-key"
DEV_CONSOLE_SESSION_SECRET = "dev-console-session-secret"
DEV_AGENT_TOKENS = {
    "dev-alice": {"agent": "alice", "role": "agent"},
    "dev-bob": {"agent": "bob", "role": "agent"},
    "dev-carol": {"agent": "carol", "role": "lead"},
}


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names it."""


class AgentIdentity(BaseModel):
    agent: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._@-]+$")
    role: Literal["agent", "lead", "viewer"] = "agent"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=True)

    REFUND_DESK_ENV: Literal["development", "production"] = "development"

    TEMPORAL_ADDRESS: str = "localhost:7233"
    TEMPORAL_NAMESPACE: str = "default"
    # The Temporal SDK's environment configuration (core.connection reads them through
    # temporalio.envconfig, together with the profile file). Declared here so that a
    # `.env` file works for them too and a malformed value is named at start-up.
    TEMPORAL_API_KEY: SecretStr | None = None
    TEMPORAL_TLS: bool | None = None
    TEMPORAL_TLS_SERVER_CA_CERT_PATH: Path | None = None
    TEMPORAL_TLS_SERVER_CA_CERT_DATA: str | None = None
    TEMPORAL_TLS_CLIENT_CERT_PATH: Path | None = None
    TEMPORAL_TLS_CLIENT_CERT_DATA: str | None = None
    TEMPORAL_TLS_CLIENT_KEY_PATH: Path | None = None
    TEMPORAL_TLS_CLIENT_KEY_DATA: SecretStr | None = None
    TEMPORAL_TLS_SERVER_NAME: str | None = None
    TEMPORAL_PROFILE: str | None = None
    TEMPORAL_CONFIG_FILE: Path | None = None

    # Payload encryption (core.codec): key id -> base64 AES key (16, 24 or 32 bytes), from
    # this JSON and/or a key file of the same shape; PAYLOAD_ENCRYPTION_KEY_ID encrypts.
    # Neither set: the development key (refused in production).
    PAYLOAD_ENCRYPTION_KEYS: dict[str, SecretStr] = Field(default_factory=dict)
    PAYLOAD_ENCRYPTION_KEY_FILE: Path | None = None
    PAYLOAD_ENCRYPTION_KEY_ID: str | None = None
    # Origins of the Temporal UI allowed to call the codec server (CORS).
    CODEC_CORS_ORIGINS: list[str] = Field(
        default_factory=lambda: ["http://localhost:8233", "http://127.0.0.1:8233"])
    # Key of RefundCustomer's keyed hash of the email (core.customer_ref).
    CUSTOMER_REF_KEY: SecretStr = SecretStr(DEV_CUSTOMER_REF_KEY)

    # Telemetry: the worker's Prometheus endpoint (host:port; unset: off), the bearer
    # token of the API's /metrics (unset: open) and OTLP traces (unset: off).
    WORKER_METRICS_ADDRESS: str | None = None
    METRICS_TOKEN: SecretStr | None = None
    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = None

    STRIPE_API_KEY: str = "sk_test_refund_desk_local"
    STRIPE_API_BASE: str = "http://127.0.0.1:8420"
    STRIPE_WEBHOOK_SECRET: str = DEV_STRIPE_WEBHOOK_SECRET
    # Stripe's request rate limit (25/s in test mode, 100/s live): each worker process
    # paces its Stripe requests to it (several processes must split it), and Temporal caps
    # the Stripe activities' task queue to it, across all workers (activities.stripe_models).
    STRIPE_MAX_REQUESTS_PER_SECOND: float = Field(25.0, gt=0, le=10_000)

    SENDGRID_API_KEY: str | None = None
    SENDGRID_API_HOST: str = "https://api.sendgrid.com"
    SENDGRID_INBOUND_SECRET: str = DEV_INBOUND_SECRET
    SENDGRID_EVENTS_PUBLIC_KEY: str | None = None
    # `?secret=` (or basic-auth password) of the Event Webhook URL; production needs this
    # or SENDGRID_EVENTS_PUBLIC_KEY.
    SENDGRID_EVENTS_SECRET: str | None = None
    # Key of the tag in reply addresses (core.reply_address); unset: SENDGRID_INBOUND_SECRET.
    REPLY_ADDRESS_SECRET: str | None = None
    EMAIL_FROM: str = "Refund Desk <refunds@example.com>"
    REPLY_DOMAIN: str = "reply.example.com"
    OPS_EMAIL: str = "ops@example.com"
    # Links in ops emails: the case in the Temporal UI and in the HTTP API / console.
    TEMPORAL_UI_URL: str = Field("http://localhost:8233", pattern=r"^https?://\S+$")
    API_PUBLIC_URL: str = Field("http://localhost:8000", pattern=r"^https?://\S+$")
    OUTBOX_DIR: Path = ROOT / ".data" / "outbox"

    REFUND_POLICY_FILE: Path = ROOT / "policies" / "default.yaml"
    # The worker's memory: cases kept in its sticky cache (evicted ones are replayed from
    # history when they next wake) and activities run at once. A cached case holds about
    # 0.3 MB (bench/worker_memory.py): with 500, 10,000 parked cases held the worker at
    # 251 MiB, flat past the first 1,000.
    WORKER_MAX_CACHED_WORKFLOWS: int = Field(500, ge=0)
    WORKER_MAX_CONCURRENT_ACTIVITIES: int = Field(100, ge=1)
    # Which queues this worker process polls: both, or one of them. The Stripe queue in
    # a process of its own makes each request when its token is spent, even while the
    # cases' worker is busy (a stall there bunched requests into 429s).
    WORKER_QUEUES: Literal["all", "cases", "stripe"] = "all"
    INTAKE_WEBHOOK_SECRET: str = DEV_INTAKE_SECRET
    AGENT_TOKENS: dict[str, AgentIdentity] = Field(
        default_factory=lambda: {k: AgentIdentity(**v) for k, v in DEV_AGENT_TOKENS.items()}
    )

    # The agent console (/console): signed session cookies; sign-in with an agent token, or
    # behind an SSO proxy with a trusted header (CONSOLE_TRUSTED_HEADER set).
    CONSOLE_SESSION_SECRET: str = DEV_CONSOLE_SESSION_SECRET
    CONSOLE_SESSION_HOURS: float = Field(12, gt=0, le=24 * 30)
    CONSOLE_COOKIE_SECURE: bool | None = Field(
        None, description="Secure cookie flag; unset: on in production, off in development")
    CONSOLE_TRUSTED_HEADER: str | None = Field(
        None, pattern=r"^[A-Za-z0-9-]+$",
        description="e.g. X-Forwarded-Email (oauth2-proxy): the proxy's signed-in user")
    CONSOLE_TRUSTED_PROXIES: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32", "::1/128"],
        description="Addresses (CIDR) allowed to send the trusted header")
    CONSOLE_SSO_USERS: dict[str, AgentIdentity] = Field(
        default_factory=dict, description="Trusted-header value -> agent id and role")
    CONSOLE_SSO_DEFAULT_ROLE: Literal["none", "viewer"] = "none"
    CONSOLE_SIGN_OUT_URL: str | None = Field(
        None, description="Where sign-out sends the browser in SSO mode, e.g. /oauth2/sign_out")

    # Local stack (`make run`): where state lives and which ports it binds.
    DATA_DIR: Path = ROOT / ".data"
    TEMPORAL_PORT: int = Field(7233, ge=1, le=65535)
    TEMPORAL_UI_PORT: int = Field(8233, ge=1, le=65535)
    LOCALSTRIPE_PORT: int = Field(8420, ge=1, le=65535)
    API_HOST: str = "127.0.0.1"
    API_PORT: int = Field(8000, ge=1, le=65535)

    @field_validator("SENDGRID_EVENTS_PUBLIC_KEY", "SENDGRID_EVENTS_SECRET",
                     "REPLY_ADDRESS_SECRET", "TEMPORAL_API_KEY", "TEMPORAL_TLS",
                     "TEMPORAL_TLS_SERVER_CA_CERT_PATH", "TEMPORAL_TLS_SERVER_CA_CERT_DATA",
                     "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_CERT_DATA",
                     "TEMPORAL_TLS_CLIENT_KEY_PATH", "TEMPORAL_TLS_CLIENT_KEY_DATA",
                     "TEMPORAL_TLS_SERVER_NAME", "TEMPORAL_PROFILE", "TEMPORAL_CONFIG_FILE",
                     "PAYLOAD_ENCRYPTION_KEY_FILE", "PAYLOAD_ENCRYPTION_KEY_ID",
                     "WORKER_METRICS_ADDRESS", "METRICS_TOKEN", "OTEL_EXPORTER_OTLP_ENDPOINT",
                     "CONSOLE_TRUSTED_HEADER", "CONSOLE_SIGN_OUT_URL",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        # docker compose passes `${VAR:-}` as an empty string
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("TEMPORAL_ADDRESS", "WORKER_METRICS_ADDRESS")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", v):
            raise ValueError("expected host:port, e.g. localhost:7233")
        return v

    @field_validator("TEMPORAL_CONFIG_FILE", "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
                     "TEMPORAL_TLS_CLIENT_CERT_PATH", "TEMPORAL_TLS_CLIENT_KEY_PATH",
                     "PAYLOAD_ENCRYPTION_KEY_FILE")
    @classmethod
    def _readable_file(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @field_validator("CODEC_CORS_ORIGINS")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if not re.fullmatch(r"https?://[^\s/]+", origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return v

    @field_validator("OTEL_EXPORTER_OTLP_ENDPOINT")
    @classmethod
    def _otlp_url(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v):
            raise ValueError("expected an http(s) URL, e.g. http://otel-collector:4318")
        return v

    @field_validator("CONSOLE_TRUSTED_PROXIES")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for value in v:
            ipaddress.ip_network(value, strict=False)  # ValueError names the bad value
        return v

    @field_validator("STRIPE_API_KEY")
    @classmethod
    def _stripe_key(cls, v: str) -> str:
        if not v.startswith(("sk_", "rk_")):
            raise ValueError("a Stripe secret or restricted key starts with sk_ or rk_")
        return v

    @field_validator("STRIPE_API_BASE", "SENDGRID_API_HOST")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", v):
            raise ValueError("expected an http(s) URL")
        return v.rstrip("/")

    @field_validator("EMAIL_FROM", "OPS_EMAIL")
    @classmethod
    def _email(cls, v: str) -> str:
        if not re.search(r"[^@\s<]+@[^@\s>]+\.[^@\s>]+", v):
            raise ValueError("expected an email address")
        return v

    @model_validator(mode="after")
    def _no_dev_secrets_in_production(self) -> Settings:
        if self.REFUND_DESK_ENV != "production":
            return self
        problems = []
        if self.INTAKE_WEBHOOK_SECRET == DEV_INTAKE_SECRET:
            problems.append("INTAKE_WEBHOOK_SECRET: missing (the development default is refused)")
        if self.STRIPE_WEBHOOK_SECRET == DEV_STRIPE_WEBHOOK_SECRET:
            problems.append("STRIPE_WEBHOOK_SECRET: missing (the development default is refused)")
        if self.SENDGRID_INBOUND_SECRET == DEV_INBOUND_SECRET:
            problems.append("SENDGRID_INBOUND_SECRET: missing (the development default is "
                            "refused)")
        if not self.sendgrid_events_authenticated:
            problems.append("SENDGRID_EVENTS_PUBLIC_KEY: missing (production needs it or "
                            "SENDGRID_EVENTS_SECRET: the event webhook would accept anything)")
        if self.CONSOLE_SESSION_SECRET == DEV_CONSOLE_SESSION_SECRET:
            problems.append("CONSOLE_SESSION_SECRET: missing (the development default is "
                            "refused)")
        if any(token.startswith("dev-") for token in self.AGENT_TOKENS):
            problems.append("AGENT_TOKENS: missing (the development tokens are refused)")
        if not (self.PAYLOAD_ENCRYPTION_KEYS or self.PAYLOAD_ENCRYPTION_KEY_FILE) or any(
                key.get_secret_value() == DEV_PAYLOAD_KEY
                for key in self.PAYLOAD_ENCRYPTION_KEYS.values()):
            problems.append("PAYLOAD_ENCRYPTION_KEYS: missing (or PAYLOAD_ENCRYPTION_KEY_FILE; "
                            "the development key is refused)")
        if self.CUSTOMER_REF_KEY.get_secret_value() == DEV_CUSTOMER_REF_KEY:
            problems.append("CUSTOMER_REF_KEY: missing (the development default is refused)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def console_cookie_secure(self) -> bool:
        if self.CONSOLE_COOKIE_SECURE is not None:
            return self.CONSOLE_COOKIE_SECURE
        return self.REFUND_DESK_ENV == "production"

    @property
    def sendgrid_enabled(self) -> bool:
        return bool(self.SENDGRID_API_KEY)

    @property
    def sendgrid_events_authenticated(self) -> bool:
        """False: the event webhook accepts any POST (allowed in development only)."""
        return bool(self.SENDGRID_EVENTS_PUBLIC_KEY or self.SENDGRID_EVENTS_SECRET)


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning pydantic's error into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            lines.append(f"  {name}: {err['msg']}")
        raise ConfigError("Refund Desk configuration is invalid:\n" + "\n".join(lines)) from None
    except SettingsError as exc:  # a complex value (AGENT_TOKENS) that is not JSON
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"Refund Desk configuration is invalid:\n  {exc}{cause}") from None


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
