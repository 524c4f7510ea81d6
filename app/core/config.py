"""Typed configuration from the environment (or `.env`), validated once at start-up."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./data/chat.db"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


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
    redis_url: str | None = None
    ready_timeout_seconds: float = Field(default=2.0, gt=0, le=30)

    default_provider: str | None = None
    default_model: str | None = None
    provider_timeout_seconds: float = Field(default=60.0, gt=0, le=600)
    openai_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    azure_openai_api_key: SecretStr | None = None

    # The offline mock provider: priced like a real model so costs are exercised end to end.
    mock_input_price_per_mtok: Decimal = Field(default=Decimal("1.00"), ge=0, allow_inf_nan=False)
    mock_output_price_per_mtok: Decimal = Field(default=Decimal("2.00"), ge=0, allow_inf_nan=False)
    mock_chunk_delay_ms: float = Field(default=0.0, ge=0, le=10_000)

    auth_enabled: bool = False
    max_body_bytes: int = Field(default=1_048_576, ge=1_024, le=64 * 1_048_576)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must start with postgresql+asyncpg:// or sqlite+aiosqlite://")
        return value

    @field_validator("redis_url", "default_provider", "default_model", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Settings:
        if "*" in self.cors_origins and len(self.cors_origins) > 1:
            raise ValueError("CORS_ORIGINS: '*' cannot be combined with explicit origins")
        return self

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
        name = str(item["loc"][0]).upper() if item["loc"] else "configuration"
        parts.append(f"{name}: {item['msg']}")
    return "invalid configuration: " + "; ".join(parts)
