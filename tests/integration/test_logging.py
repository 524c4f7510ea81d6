"""What the service writes to its log: one access line per request, the request id, no secrets."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import structlog

from app.core.config import Settings
from app.core.logging import configure_logging
from app.errors import UpstreamError
from tests.factories import create_conversation
from tests.fakes.providers import FAKE_MODEL, FAKE_PROVIDER, FailingProvider, registry_with

StartApp = Callable[..., Any]
Lines = list[dict[str, Any]]

MARKER = "zebra-marker-4f1c9e"  # message text that must never reach a log line
API_KEY = "sk-test-api-key-7d2b5a"
BEARER = "tok-bearer-secret-91e3f0"
SECRETS = (MARKER, API_KEY, BEARER)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture
def read_log(capsys: pytest.CaptureFixture[str]) -> Callable[[], Lines]:
    """Every JSON line written since the last read; a line that is not JSON fails the test."""

    def read() -> Lines:
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    return read


@pytest.fixture
def log_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(openai_api_key=API_KEY, default_provider="mock")


def access_lines(lines: Lines, request_id: str) -> Lines:
    return [
        line for line in lines if line["event"] == "request" and line["request_id"] == request_id
    ]


def assert_no_secrets(lines: Lines) -> None:
    text = "\n".join(json.dumps(line) for line in lines)
    for secret in SECRETS:
        assert secret not in text


class TestAccessLog:
    @pytest.mark.parametrize(
        ("method", "path", "route", "status"),
        [
            ("GET", "/health", "/health", 200),
            ("GET", "/api/v1/conversations", "/api/v1/conversations", 200),
            ("POST", "/api/v1/conversations", "/api/v1/conversations", 201),
            (
                "GET",
                "/api/v1/conversations/{id}",
                "/api/v1/conversations/{conversation_id}",
                200,
            ),
            (
                "GET",
                "/api/v1/conversations/{id}/messages",
                "/api/v1/conversations/{conversation_id}/messages",
                200,
            ),
            (
                "GET",
                "/api/v1/conversations/0192f5b0-0000-7000-8000-000000000000",
                "/api/v1/conversations/{conversation_id}",
                404,
            ),
            ("GET", "/no/such/route", "unmatched", 404),
        ],
    )
    async def test_each_request_writes_one_access_line_with_its_route_template(
        self,
        start_app: StartApp,
        settings: Settings,
        read_log: Callable[[], Lines],
        method: str,
        path: str,
        route: str,
        status: int,
    ) -> None:
        client: httpx.AsyncClient = await start_app(settings)
        conversation_id = (await create_conversation(client))["id"]
        request_id = f"access-{uuid.uuid4().hex[:8]}"
        read_log()

        response = await client.request(
            method,
            path.replace("{id}", conversation_id),
            headers={"X-Request-ID": request_id},
            json={} if method == "POST" else None,
        )

        assert response.status_code == status
        [line] = access_lines(read_log(), request_id)
        assert line["method"] == method
        assert line["route"] == route
        assert line["status"] == status
        assert isinstance(line["duration_ms"], int | float)
        assert line["duration_ms"] >= 0
        assert line["logger"] == "app.access"
        assert line["level"] == "info"

    async def test_the_callers_request_id_is_echoed_and_on_every_line_of_the_request(
        self, start_app: StartApp, settings: Settings, read_log: Callable[[], Lines]
    ) -> None:
        failing = FailingProvider(RuntimeError("the provider fell over"))
        client: httpx.AsyncClient = await start_app(settings, providers=registry_with(failing))
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        read_log()

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": "Hello"},
            headers={"X-Request-ID": "caller-id-42"},
        )

        assert response.status_code == 502
        assert response.headers["x-request-id"] == "caller-id-42"
        assert response.json()["request_id"] == "caller-id-42"
        lines = read_log()
        assert {line["event"] for line in lines} >= {
            "provider raised an unexpected error",
            "turn failed",
            "request",
        }
        assert {line.get("request_id") for line in lines} == {"caller-id-42"}

    async def test_a_request_without_a_usable_id_gets_a_new_one_in_header_and_log(
        self, start_app: StartApp, settings: Settings, read_log: Callable[[], Lines]
    ) -> None:
        client: httpx.AsyncClient = await start_app(settings)
        read_log()

        response = await client.get("/health", headers={"X-Request-ID": "not a safe id; drop it"})

        request_id = response.headers["x-request-id"]
        assert request_id != "not a safe id; drop it"
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        [line] = access_lines(read_log(), request_id)
        assert line["route"] == "/health"


class TestSecretsStayOutOfTheLog:
    async def test_a_successful_turn_logs_no_message_text_key_or_token(
        self, start_app: StartApp, log_settings: Settings, read_log: Callable[[], Lines]
    ) -> None:
        client: httpx.AsyncClient = await start_app(log_settings)
        auth = {"Authorization": f"Bearer {BEARER}"}
        conversation = await create_conversation(client, title=f"About {MARKER}")

        sent = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": f"My secret is {MARKER}", "metadata": {"note": MARKER}},
            headers=auth,
        )
        searched = await client.get("/api/v1/conversations", params={"q": MARKER}, headers=auth)

        assert sent.status_code == 201
        assert searched.status_code == 200
        lines = read_log()
        assert any(line["event"] == "turn completed" for line in lines)
        assert_no_secrets(lines)

    @pytest.mark.parametrize(
        "body",
        [
            {"content": MARKER, "temperature": 9},
            {"content": MARKER, "max_tokens": "many"},
            {"content": MARKER * 30_000},
            {"content": f"nul \x00 {MARKER}"},
            {"content": MARKER, "metadata": {MARKER: float("nan")}},
        ],
        ids=["out-of-range", "wrong-type", "too-long", "nul-byte", "nan"],
    )
    async def test_a_rejected_body_is_not_echoed_in_the_log_or_the_response(
        self,
        start_app: StartApp,
        log_settings: Settings,
        read_log: Callable[[], Lines],
        body: dict[str, Any],
    ) -> None:
        client: httpx.AsyncClient = await start_app(log_settings)
        conversation = await create_conversation(client)
        read_log()

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            content=json.dumps(body, allow_nan=True),
            headers={"Authorization": f"Bearer {BEARER}", "Content-Type": "application/json"},
        )

        assert response.status_code in (413, 422), response.text
        assert MARKER not in response.text
        assert_no_secrets(read_log())

    async def test_a_wrong_content_type_is_refused_without_logging_the_body(
        self, start_app: StartApp, log_settings: Settings, read_log: Callable[[], Lines]
    ) -> None:
        client: httpx.AsyncClient = await start_app(log_settings)
        conversation = await create_conversation(client)
        read_log()

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            content=f"content={MARKER}",
            headers={"Content-Type": "text/plain", "Authorization": f"Bearer {BEARER}"},
        )

        assert response.status_code == 415
        assert_no_secrets(read_log())

    @pytest.mark.parametrize(
        "error",
        [UpstreamError("provider 'fake' returned 500"), RuntimeError("the provider fell over")],
        ids=["upstream-error", "crash"],
    )
    async def test_a_failed_turn_logs_no_message_text_key_or_token(
        self,
        start_app: StartApp,
        log_settings: Settings,
        read_log: Callable[[], Lines],
        error: Exception,
    ) -> None:
        client: httpx.AsyncClient = await start_app(
            log_settings, providers=registry_with(FailingProvider(error))
        )
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        read_log()

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": f"Please keep {MARKER} private"},
            headers={"Authorization": f"Bearer {BEARER}"},
        )

        assert response.status_code == 502
        lines = read_log()
        assert any(line["event"] == "turn failed" for line in lines)
        assert_no_secrets(lines)


class TestConsoleFormat:
    async def test_development_logs_readable_lines_with_the_request_id(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        settings = make_settings(app_env="development", log_format=None)
        assert settings.effective_log_format == "console"
        client: httpx.AsyncClient = await start_app(settings)
        capsys.readouterr()

        response = await client.get("/health", headers={"X-Request-ID": "console-1"})

        assert response.status_code == 200
        lines = ANSI.sub("", capsys.readouterr().out).splitlines()
        [line] = [line for line in lines if "request_id=console-1" in line]
        assert not line.startswith("{")
        assert "request" in line
        assert "route=/health" in line
        assert "status=200" in line
        assert "[info" in line

    async def test_a_provider_crash_in_development_logs_a_traceback_without_message_text(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        settings = make_settings(
            app_env="development", log_format=None, openai_api_key=API_KEY, default_provider="mock"
        )
        failing = FailingProvider(RuntimeError("the provider fell over"))
        client: httpx.AsyncClient = await start_app(settings, providers=registry_with(failing))
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        capsys.readouterr()

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": f"Please keep {MARKER} private"},
            headers={"Authorization": f"Bearer {BEARER}"},
        )

        assert response.status_code == 502
        output = ANSI.sub("", capsys.readouterr().out)
        assert "provider raised an unexpected error" in output
        assert "RuntimeError" in output
        for secret in SECRETS:
            assert secret not in output


class TestConfigureLogging:
    def test_json_lines_keep_their_traceback_after_console_logging_in_the_same_process(
        self, make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
    ) -> None:
        log = structlog.get_logger(f"tests.logging.{uuid.uuid4().hex}")
        configure_logging(make_settings(log_format="console"))
        log.info("first use, in console format")
        configure_logging(make_settings(log_format="json"))
        capsys.readouterr()

        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it broke")

        [line] = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
        assert line["event"] == "it broke"
        assert "Traceback" in line["exception"]
        assert "ValueError: boom" in line["exception"]
