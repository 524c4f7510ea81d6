"""Configuration from the environment: the contract's defaults, and refusals that name, not echo."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Environment, Settings, describe_invalid_settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment with none of the service's variables set, whatever the shell exported."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def refusal(monkeypatch: pytest.MonkeyPatch, **variables: str) -> str:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    return describe_invalid_settings(caught.value)


class TestDefaults:
    def test_with_nothing_set_the_service_uses_sqlite_under_data(
        self, environment: pytest.MonkeyPatch
    ) -> None:
        settings = Settings(_env_file=None)

        assert settings.database_url == "sqlite+aiosqlite:///./data/chat.db"
        assert settings.is_sqlite
        assert settings.sqlite_path == Path("data/chat.db")

    def test_with_nothing_set_the_contracts_defaults_apply(
        self, environment: pytest.MonkeyPatch
    ) -> None:
        settings = Settings(_env_file=None)

        assert settings.app_env is Environment.DEVELOPMENT
        assert settings.effective_log_format == "console"
        assert settings.host == "127.0.0.1"
        assert settings.port == 8000
        assert settings.max_body_bytes == 1_048_576
        assert settings.auth_enabled is False
        assert settings.redis_url is None
        assert settings.default_provider is None
        assert settings.openai_api_key is None
        assert settings.cors_origins == []
        assert settings.mock_input_price_per_mtok == Decimal("1.00")

    def test_outside_development_logs_are_json_lines(self, environment: pytest.MonkeyPatch) -> None:
        environment.setenv("APP_ENV", "production")
        environment.setenv("AUTH_ENABLED", "true")

        assert Settings(_env_file=None).effective_log_format == "json"

    def test_an_api_key_is_never_shown_in_the_settings_repr(
        self, environment: pytest.MonkeyPatch
    ) -> None:
        environment.setenv("OPENAI_API_KEY", "sk-repr-secret-0b1c")

        settings = Settings(_env_file=None)

        assert "sk-repr-secret-0b1c" not in repr(settings)
        assert "sk-repr-secret-0b1c" not in str(settings.model_dump())
        assert settings.openai_api_key is not None
        assert settings.openai_api_key.get_secret_value() == "sk-repr-secret-0b1c"


class TestDescribeInvalidSettings:
    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("PORT", "notanumber-7e1a"),
            ("PORT", "70000"),
            ("DATABASE_URL", "mysql://admin:hunter2-5c9d@db.internal/chat"),
            ("MAX_BODY_BYTES", "12"),
            ("MAX_BODY_BYTES", "lots-8f2e"),
        ],
    )
    def test_an_invalid_variable_gives_one_line_naming_it_and_not_its_value(
        self, environment: pytest.MonkeyPatch, variable: str, value: str
    ) -> None:
        line = refusal(environment, **{variable: value})

        assert "\n" not in line
        assert line.startswith(f"invalid configuration: {variable}: ")
        assert value not in line

    def test_several_invalid_variables_are_all_named_on_the_same_line(
        self, environment: pytest.MonkeyPatch
    ) -> None:
        line = refusal(
            environment,
            PORT="notanumber",
            DATABASE_URL="mysql://admin:hunter2@db/chat",
            MAX_BODY_BYTES="12",
        )

        assert "\n" not in line
        for variable in ("PORT", "DATABASE_URL", "MAX_BODY_BYTES"):
            assert f"{variable}: " in line
        assert "hunter2" not in line
        assert "notanumber" not in line


class TestStartUpRefusal:
    def test_python_m_app_with_an_invalid_port_exits_2_with_one_line_naming_port(
        self, tmp_path: Path
    ) -> None:
        environment = {
            **{k: v for k, v in os.environ.items() if k.upper() not in ("DATABASE_URL",)},
            "PORT": "notanumber",
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'never.db'}",
        }

        result = subprocess.run(
            [sys.executable, "-m", "app"],
            cwd=PROJECT_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("invalid configuration: PORT: ")
        assert "notanumber" not in line
        assert result.stdout == ""
        assert not (tmp_path / "never.db").exists()
