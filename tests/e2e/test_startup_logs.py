"""What `python -m app` prints as it starts: JSON from the first line when JSON is asked for,
and each start-up warning once (not once per worker), and only when it is true."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import start_server, stop_server

NO_KEY = "no provider key is configured; replies come from the built-in mock provider"


def started_lines(env: dict[str, str], tmp_path: Path) -> list[dict[str, object]]:
    server = start_server(
        {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/chat.db", "LOG_FORMAT": "json", **env},
        tmp_path / "server.log",
    )
    stop_server(server)
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON log line: {line!r}")
    return parsed


def test_every_line_is_json_and_the_mock_warning_is_said_once_for_two_workers(
    tmp_path: Path,
) -> None:
    lines = started_lines({"WEB_CONCURRENCY": "2"}, tmp_path)

    warnings = [line for line in lines if line.get("event") == NO_KEY]
    assert len(warnings) == 1
    assert lines[0]["level"] in ("warning", "info")


def test_no_mock_warning_when_a_provider_is_configured_even_if_mock_is_the_default(
    tmp_path: Path,
) -> None:
    lines = started_lines(
        {"OPENAI_API_KEY": "sk-test-not-real", "DEFAULT_PROVIDER": "mock"}, tmp_path
    )

    assert not [line for line in lines if line.get("event") == NO_KEY]
    assert "sk-test-not-real" not in json.dumps(lines)


def test_no_mock_warning_when_only_a_self_hosted_server_is_configured(tmp_path: Path) -> None:
    lines = started_lines({"OPENAI_COMPATIBLE_BASE_URL": "http://127.0.0.1:9/v1"}, tmp_path)

    assert not [line for line in lines if line.get("event") == NO_KEY]
