"""Typed configuration from the environment (or `.env`), validated once at start-up."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./data/chat.db"
DEFAULT_CONCURRENCY_CAP = 10


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ModelPriceOverride(BaseModel):
    """A price (USD per million tokens) for a model the price library does not know."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: Decimal = Field(ge=0, allow_inf_nan=False)
    output_per_mtok: Decimal = Field(ge=0, allow_inf_nan=False)
    cached_input_per_mtok: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    cache_write_per_mtok: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    cache_write_1h_per_mtok: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    context_window: int | None = Field(default=None, ge=1)


class ConfigurationError(ValueError):
    """Settings that parse but cannot work together; start-up prints it as one line."""


class Settings(BaseSettings):
    """Every knob of the service; names match the environment variables in API.md."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    app_env: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    web_concurrency: int = Field(default=1, ge=1, le=64)
    log_format: Literal["json", "console"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    database_url: str = DEFAULT_SQLITE_URL
    db_pool_size: int = Field(default=10, ge=1, le=500)
    db_max_overflow: int = Field(default=10, ge=0, le=500)
    # How long a request waits for a pooled connection before it is refused (503).
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    redis_url: str | None = None
    # Per client (commands; event log and cancels) and worker; callers wait up to 5 s for one.
    redis_max_connections: int = Field(default=200, ge=2, le=10_000)
    ready_timeout_seconds: float = Field(default=2.0, gt=0, le=30)

    default_provider: str | None = None
    default_model: str | None = None
    # Sized for chat, not the SDKs' 600 s: the longest silence tolerated between two pieces
    # of a reply (and before the first), per attempt.
    provider_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    provider_connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Open connections to each provider, per worker. Each running reply holds one for its
    # whole length (HTTP/1.1), so this caps the replies a worker runs at once; a reply past
    # it waits for a free one (up to PROVIDER_TIMEOUT_SECONDS, then retried). The SDKs'
    # default of 1,000 would queue the rest of thousands of open streams.
    provider_max_connections: int = Field(default=10_000, ge=1, le=1_000_000)
    # Retries after the first attempt, ours alone (the SDKs' own retries are switched off).
    provider_max_retries: int = Field(default=2, ge=0, le=10)
    provider_retry_max_wait_seconds: float = Field(default=20.0, ge=0, le=300)
    # The longest a whole generation may run, retries and fallbacks included.
    generation_timeout_seconds: float = Field(default=600.0, gt=0, le=3600)
    fallback_models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # The model that names a conversation after its first turn, in the background (charged
    # like a reply); routed like a /v1 model name unless TITLE_PROVIDER names the provider.
    # Empty: conversations are not named.
    title_model: str = Field(default="mock", max_length=255)
    title_provider: str | None = None
    price_overrides: dict[str, ModelPriceOverride] = Field(default_factory=dict)
    user_budget_usd: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    # Per-user limits over a sliding minute; unset is off. Shared through Redis when set.
    rate_limit_rpm: int | None = Field(default=None, ge=1, le=1_000_000)
    rate_limit_tpm: int | None = Field(default=None, ge=1, le=1_000_000_000)
    # Per-user caps on open SSE streams and on running replies (429 `too_many_concurrent`),
    # shared through Redis when set. Unset: 10 each with auth on, off with auth off (every
    # caller is then the one "anonymous" user); 0 is off.
    max_concurrent_streams_per_user: int | None = Field(default=None, ge=0, le=100_000)
    max_concurrent_generations_per_user: int | None = Field(default=None, ge=0, le=100_000)
    # How long a stored Idempotency-Key response is replayed.
    idempotency_ttl_seconds: int = Field(default=86_400, ge=1, le=7 * 86_400)
    # How long a reply asked for with `cache: true` (temperature 0) is served again; 0 is off.
    response_cache_ttl_seconds: int = Field(default=3_600, ge=0, le=30 * 86_400)

    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    # Anthropic requires max_tokens on every request; this is used when a message sets none.
    anthropic_default_max_tokens: int = Field(default=4096, ge=1, le=128_000)
    azure_openai_api_key: SecretStr | None = None
    azure_openai_endpoint: str | None = None
    azure_openai_api_version: str = "2024-10-21"
    azure_openai_deployments: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    openai_compatible_base_url: str | None = None
    openai_compatible_api_key: SecretStr | None = None
    openai_compatible_models: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # The offline mock provider: priced like a real model so costs are exercised end to end.
    mock_input_price_per_mtok: Decimal = Field(default=Decimal("1.00"), ge=0, allow_inf_nan=False)
    mock_output_price_per_mtok: Decimal = Field(default=Decimal("2.00"), ge=0, allow_inf_nan=False)
    mock_chunk_delay_ms: float = Field(default=0.0, ge=0, le=10_000)

    # Streaming: a `: ping` after this much silence; partial text saved this often.
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    stream_flush_seconds: float = Field(default=2.0, gt=0, le=60)
    # A running reply untouched this long was left by a dead process and is ended as failed.
    # Unset: longer than any live generation can be silent (provider timeout, flushes, margin).
    abandoned_reply_seconds: float | None = Field(default=None, gt=0, le=86_400)
    # Each process renews its lease on the replies it generates every quarter of this; a
    # reply whose owner's lease is older than this (killed, restarted, cut off from the
    # database) is failed as `generation_abandoned` within about 1.25 times this.
    generation_lease_seconds: float = Field(default=8.0, ge=0.4, le=600)
    # At shutdown, running generations get this long to finish before they are ended.
    shutdown_grace_seconds: float = Field(default=20.0, ge=0, le=600)

    # Unset: on everywhere but development (see `auth_required`).
    auth_enabled: bool | None = None
    jwt_secret: SecretStr | None = None  # HS256
    jwt_public_key: str | None = None  # RS256, PEM
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1_024, le=64 * 1_048_576)
    # From a request's start until its whole body is in; later is a 408, connection closed.
    body_read_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Masks emails, phones, cards, IBANs and keys: in log lines (`logs`), and also in the text
    # sent to providers (`provider`); stored messages always keep what the user wrote.
    pii_redaction: Literal["off", "logs", "provider"] = "logs"

    # Traces go over OTLP/HTTP to this base URL (a collector's :4318); unset, tracing is off.
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = Field(default="chat-api", min_length=1)

    @field_validator("cors_origins", "openai_compatible_models", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("pii_redaction", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("fallback_models", mode="before")
    @classmethod
    def _split_fallbacks(cls, value: object) -> object:
        items = cls._split_list(value)
        if isinstance(items, list):
            for item in items:
                provider, _, model = str(item).partition(":")
                if not provider.strip() or not model.strip():
                    raise ValueError(f"expected provider:model pairs, got {item!r}")
        return items

    @field_validator("azure_openai_deployments", mode="before")
    @classmethod
    def _parse_deployments(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            model, sep, deployment = item.partition("=")
            if not sep or not model.strip() or not deployment.strip():
                raise ValueError(f"expected model=deployment pairs, got {item!r}")
            pairs[model.strip()] = deployment.strip()
        return pairs

    @field_validator(
        "openai_base_url",
        "anthropic_base_url",
        "azure_openai_endpoint",
        "openai_compatible_base_url",
        "otel_exporter_otlp_endpoint",
        mode="before",
    )
    @classmethod
    def _http_url(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip() or None
            if value is not None and not value.startswith(("http://", "https://")):
                raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("price_overrides")
    @classmethod
    def _override_keys(cls, value: dict[str, ModelPriceOverride]) -> dict[str, ModelPriceOverride]:
        for key in value:
            provider, _, model = key.partition(":")
            if not provider or not model:
                raise ValueError(f"keys are provider:model, got {key!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must start with postgresql+asyncpg:// or sqlite+aiosqlite://")
        return value

    @field_validator(
        "redis_url",
        "default_provider",
        "default_model",
        "openai_api_key",
        "anthropic_api_key",
        "azure_openai_api_key",
        "openai_compatible_api_key",
        "user_budget_usd",
        "rate_limit_rpm",
        "rate_limit_tpm",
        "max_concurrent_streams_per_user",
        "max_concurrent_generations_per_user",
        "jwt_secret",
        "jwt_public_key",
        "jwt_issuer",
        "jwt_audience",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Settings:
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            raise ValueError("CORS_ORIGINS: '*' cannot be combined with explicit origins")
        return self

    @model_validator(mode="after")
    def _auth_in_production(self) -> Settings:
        if self.auth_enabled is None:
            self.auth_enabled = self.app_env is not Environment.DEVELOPMENT
        if self.app_env is Environment.PRODUCTION and not self.auth_enabled:
            raise ValueError("AUTH_ENABLED: production refuses to start with auth off")
        return self

    @property
    def stream_cap(self) -> int | None:
        """Open SSE streams one user may have at once; None is no cap."""
        return self._concurrency_cap(self.max_concurrent_streams_per_user)

    @property
    def generation_cap(self) -> int | None:
        """Replies one user may have running at once; None is no cap."""
        return self._concurrency_cap(self.max_concurrent_generations_per_user)

    def _concurrency_cap(self, value: int | None) -> int | None:
        if value is None:
            return DEFAULT_CONCURRENCY_CAP if self.auth_enabled else None
        return value or None

    @property
    def abandoned_after_seconds(self) -> float:
        if self.abandoned_reply_seconds is not None:
            return self.abandoned_reply_seconds
        return self.provider_timeout_seconds + 4 * self.stream_flush_seconds + 30

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sqlite_path(self) -> Path | None:
        """The database file for a file-backed SQLite URL, so start-up can create its folder."""
        if not self.is_sqlite:
            return None
        path = self.database_url.split("///", 1)[-1].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)

    @property
    def effective_log_format(self) -> Literal["json", "console"]:
        if self.log_format is not None:
            return self.log_format
        return "console" if self.app_env is Environment.DEVELOPMENT else "json"


def describe_invalid_settings(error: ValidationError) -> str:
    """One readable line naming each bad variable, never echoing its value (it may be a secret)."""
    parts = []
    for item in error.errors(include_url=False, include_input=False):
        message = item["msg"].removeprefix("Value error, ")
        # A cross-field check (model validator) names its variables in its own message.
        parts.append(f"{str(item['loc'][0]).upper()}: {message}" if item["loc"] else message)
    return "invalid configuration: " + "; ".join(parts)
