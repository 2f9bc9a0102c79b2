"""Configuration in one place: environment variables (or a `.env` file) with the names
of DESIGN.md. Defaults are the embedded local stack, so `make run` needs no setup; a
missing or malformed value fails at start-up with a message naming the variable."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

ROOT = Path(__file__).resolve().parent.parent

# Secrets that only make sense on a developer machine. Production refuses them.
DEV_INTAKE_SECRET = "dev-intake-secret"
DEV_STRIPE_WEBHOOK_SECRET = "whsec_dev_refund_desk"
DEV_INBOUND_SECRET = "dev-inbound-secret"
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

    STRIPE_API_KEY: str = "sk_test_refund_desk_local"
    STRIPE_API_BASE: str = "http://127.0.0.1:8420"
    STRIPE_WEBHOOK_SECRET: str = DEV_STRIPE_WEBHOOK_SECRET
    # Stripe's request rate limit (25/s in test mode, 100/s live): Temporal limits the
    # Stripe activities' task queue to it, across all workers (activities.stripe_models).
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
    OUTBOX_DIR: Path = ROOT / ".data" / "outbox"

    REFUND_POLICY_FILE: Path = ROOT / "policies" / "default.yaml"
    INTAKE_WEBHOOK_SECRET: str = DEV_INTAKE_SECRET
    AGENT_TOKENS: dict[str, AgentIdentity] = Field(
        default_factory=lambda: {k: AgentIdentity(**v) for k, v in DEV_AGENT_TOKENS.items()}
    )

    # Local stack (`make run`): where state lives and which ports it binds.
    DATA_DIR: Path = ROOT / ".data"
    TEMPORAL_PORT: int = Field(7233, ge=1, le=65535)
    TEMPORAL_UI_PORT: int = Field(8233, ge=1, le=65535)
    LOCALSTRIPE_PORT: int = Field(8420, ge=1, le=65535)
    API_HOST: str = "127.0.0.1"
    API_PORT: int = Field(8000, ge=1, le=65535)

    @field_validator("SENDGRID_EVENTS_PUBLIC_KEY", "SENDGRID_EVENTS_SECRET",
                     "REPLY_ADDRESS_SECRET", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        # docker compose passes `${VAR:-}` as an empty string
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("TEMPORAL_ADDRESS")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", v):
            raise ValueError("expected host:port, e.g. localhost:7233")
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
        if any(token.startswith("dev-") for token in self.AGENT_TOKENS):
            problems.append("AGENT_TOKENS: missing (the development tokens are refused)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

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
