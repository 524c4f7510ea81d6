"""PII_REDACTION in log lines and provider prompts, security headers, and CORS."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.api.security_headers import SecurityHeadersMiddleware
from app.core.config import Settings
from app.errors import UpstreamError
from app.providers.base import ChatRequest, Finished, StreamEvent, TextDelta, Usage
from tests.factories import create_conversation
from tests.fakes.providers import FAKE_MODEL, FAKE_PROVIDER, FailingProvider, registry_with

StartApp = Callable[..., Any]

EMAIL = "ana.lovelace@example.com"
CARD = "4111 1111 1111 1111"
API_KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
PII = (EMAIL, CARD, API_KEY, JWT)
CARRYING_PII = f"mail {EMAIL}, card {CARD}, key {API_KEY}, token {JWT}"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
}
ORIGIN = "https://chat.example.com"


@dataclass
class RecordingProvider:
    """Replies "Noted." and keeps every request it was sent."""

    name: str = FAKE_PROVIDER
    default_model: str = FAKE_MODEL
    requests: list[ChatRequest] = field(default_factory=list)

    def supports(self, model: str) -> bool:
        return model == self.default_model

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        self.requests.append(request)
        yield TextDelta("Noted.")
        yield Finished(
            reason="stop", usage=Usage(prompt_tokens=5, completion_tokens=2), model=request.model
        )


def sent_text(request: ChatRequest) -> str:
    return "\n".join([request.system_prompt or "", *(m.content for m in request.messages)])


def assert_no_pii(output: str) -> None:
    for value in PII:
        assert value not in output
    assert "ana.lovelace" not in output


@pytest.fixture
def read_output(capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """Everything written to the log since the last read, colour codes removed."""

    def read() -> str:
        return ANSI.sub("", capsys.readouterr().out)

    return read


class TestLogsCarryNoPersonalData:
    @pytest.mark.parametrize(
        "error",
        [UpstreamError(f"provider said: {CARRYING_PII}"), RuntimeError(f"boom: {CARRYING_PII}")],
        ids=["upstream-error", "crash"],
    )
    @pytest.mark.parametrize("log_format", ["json", "console"])
    async def test_requests_and_provider_errors_carrying_pii_leave_none_in_the_log(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        read_output: Callable[[], str],
        error: Exception,
        log_format: str,
    ) -> None:
        settings = make_settings(log_format=log_format, openai_api_key=API_KEY)
        assert settings.pii_redaction == "logs"
        client: httpx.AsyncClient = await start_app(
            settings, providers=registry_with(FailingProvider(error))
        )
        conversation = await create_conversation(
            client, provider=FAKE_PROVIDER, model=FAKE_MODEL, title=CARRYING_PII
        )
        headers = {"Authorization": f"Bearer {JWT}", "X-Api-Key": API_KEY, "X-Email": EMAIL}
        read_output()

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": CARRYING_PII, "metadata": {"email": EMAIL}},
            headers=headers,
        )
        rejected = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": CARRYING_PII, "temperature": CARD},
            headers=headers,
        )

        assert response.status_code == 502
        assert rejected.status_code == 422
        output = read_output()
        assert "turn failed" in output
        if isinstance(error, RuntimeError):
            assert "RuntimeError" in output  # the traceback is there, masked
            assert "[email]" in output
        assert_no_pii(output)

    async def test_with_redaction_off_the_crash_text_reaches_the_log(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        read_output: Callable[[], str],
    ) -> None:
        """The control: it is the redaction that keeps the traceback's PII out."""
        failing = FailingProvider(RuntimeError(f"boom: {EMAIL}"))
        client: httpx.AsyncClient = await start_app(
            make_settings(pii_redaction="off"), providers=registry_with(failing)
        )
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        read_output()

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "Hi"}
        )

        assert response.status_code == 502
        assert EMAIL in read_output()

    async def test_every_json_line_stays_json_and_keeps_its_request_id(
        self,
        start_app: StartApp,
        settings: Settings,
        read_output: Callable[[], str],
    ) -> None:
        client: httpx.AsyncClient = await start_app(settings)
        read_output()

        response = await client.get("/health")

        request_id = response.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", request_id)
        lines = [json.loads(line) for line in read_output().splitlines()]
        assert any(line.get("request_id") == request_id for line in lines)


class TestProviderRedaction:
    @pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
    async def test_provider_mode_masks_what_the_provider_gets_not_what_is_stored(
        self, start_app: StartApp, make_settings: Callable[..., Settings], stream: bool
    ) -> None:
        recording = RecordingProvider()
        client: httpx.AsyncClient = await start_app(
            make_settings(pii_redaction="provider"), providers=registry_with(recording)
        )
        conversation = await create_conversation(
            client,
            provider=FAKE_PROVIDER,
            model=FAKE_MODEL,
            system_prompt=f"The user's email is {EMAIL}.",
        )
        url = f"/api/v1/conversations/{conversation['id']}/messages"
        first = await client.post(url, json={"content": f"My card is {CARD}"})
        second = await client.post(url, json={"content": CARRYING_PII, "stream": stream})

        assert first.status_code == 201, first.text
        assert second.status_code == (200 if stream else 201), second.text
        last = recording.requests[-1]
        assert last.system_prompt == "The user's email is [email]."
        assert [m.content for m in last.messages] == [
            "My card is [card]",
            "Noted.",
            "mail [email], card [card], key [secret], token [secret]",
        ]
        assert_no_pii(sent_text(last))
        stored = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        contents = [m["content"] for m in stored["messages"] if m["role"] == "user"]
        assert contents == [f"My card is {CARD}", CARRYING_PII]
        assert stored["system_prompt"] == f"The user's email is {EMAIL}."

    async def test_text_parts_beside_an_image_are_masked_too(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        recording = RecordingProvider()
        client: httpx.AsyncClient = await start_app(
            make_settings(pii_redaction="provider"), providers=registry_with(recording)
        )
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        image = {"type": "image_url", "image_url": {"url": "https://example.com/card.png"}}
        parts = [{"type": "text", "text": f"My card is {CARD}"}, image]

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": parts}
        )

        assert response.status_code == 201, response.text
        [sent] = recording.requests[-1].messages
        assert sent.content == "My card is [card]"
        assert list(sent.parts) == [{"type": "text", "text": "My card is [card]"}, image]
        stored = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        assert stored["messages"][0]["parts"] == parts

    @pytest.mark.parametrize("mode", ["off", "logs"])
    async def test_other_modes_send_the_original_text(
        self, start_app: StartApp, make_settings: Callable[..., Settings], mode: str
    ) -> None:
        recording = RecordingProvider()
        client: httpx.AsyncClient = await start_app(
            make_settings(pii_redaction=mode), providers=registry_with(recording)
        )
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": CARRYING_PII}
        )

        assert response.status_code == 201, response.text
        [request] = recording.requests
        assert request.messages[-1].content == CARRYING_PII


class TestPiiRedactionSetting:
    def test_defaults_to_logs_and_reads_the_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        assert Settings(_env_file=None).pii_redaction == "logs"
        monkeypatch.setenv("PII_REDACTION", "Provider")
        assert Settings(_env_file=None).pii_redaction == "provider"

    def test_an_unknown_mode_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="pii_redaction"):
            Settings(_env_file=None, pii_redaction="sometimes")


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert "strict-transport-security" not in response.headers


class TestSecurityHeaders:
    async def test_on_health_an_api_route_a_404_and_a_415(self, client: httpx.AsyncClient) -> None:
        conversation = await create_conversation(client)
        responses = [
            await client.get("/health"),
            await client.get("/api/v1/conversations"),
            await client.get(f"/api/v1/conversations/{conversation['id']}"),
            await client.get("/no/such/route"),
            await client.post("/api/v1/conversations", content="x", headers={"Content-Type": "a"}),
        ]
        assert [r.status_code for r in responses] == [200, 200, 200, 404, 415]
        for response in responses:
            assert_security_headers(response)

    async def test_on_a_failed_turn_and_an_unhandled_crash(
        self, start_app: StartApp, settings: Settings, app_of: Callable[..., FastAPI]
    ) -> None:
        failing = FailingProvider(RuntimeError("the provider fell over"))
        client: httpx.AsyncClient = await start_app(settings, providers=registry_with(failing))

        async def crash() -> None:
            raise RuntimeError("a bug")

        app_of(client).add_api_route("/crash-for-test", crash)
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)

        failed = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "Hi"}
        )
        crashed = await client.get("/crash-for-test")

        assert failed.status_code == 502
        assert crashed.status_code == 500
        assert crashed.json()["code"] == "internal_error"
        assert_security_headers(failed)
        assert_security_headers(crashed)

    async def test_the_playground_keeps_its_own_policy(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/playground")

        assert response.status_code == 200
        assert "frame-ancestors" in response.headers["content-security-policy"]
        assert response.headers.get_list("x-content-type-options") == ["nosniff"]
        assert_security_headers(response)

    async def test_a_header_the_route_set_is_not_overridden(self) -> None:
        async def framed(_: Any) -> PlainTextResponse:
            return PlainTextResponse("ok", headers={"X-Frame-Options": "SAMEORIGIN"})

        app = SecurityHeadersMiddleware(Starlette(routes=[Route("/", framed)]))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            response = await client.get("/")

        assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]
        assert response.headers["referrer-policy"] == "no-referrer"

    async def test_hsts_only_in_production(self) -> None:
        async def ok(_: Any) -> PlainTextResponse:
            return PlainTextResponse("ok")

        inner = Starlette(routes=[Route("/", ok)])
        for hsts, expected in ((True, "max-age=63072000; includeSubDomains"), (False, None)):
            app = SecurityHeadersMiddleware(inner, hsts=hsts)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as client:
                response = await client.get("/")
            assert response.headers.get("strict-transport-security") == expected


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type",
    }


class TestCors:
    async def test_a_preflight_from_an_allowed_origin_is_answered(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client: httpx.AsyncClient = await start_app(make_settings(cors_origins=ORIGIN))

        response = await client.options("/api/v1/conversations", headers=preflight(ORIGIN))

        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        assert_security_headers(response)

    async def test_a_preflight_from_another_origin_gets_no_cors_headers(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client: httpx.AsyncClient = await start_app(make_settings(cors_origins=ORIGIN))

        response = await client.options(
            "/api/v1/conversations", headers=preflight("https://evil.example")
        )

        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers

    async def test_a_simple_request_from_an_allowed_origin_sees_the_exposed_headers(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client: httpx.AsyncClient = await start_app(make_settings(cors_origins=ORIGIN))

        allowed = await client.get("/api/v1/conversations", headers={"Origin": ORIGIN})
        other = await client.get("/api/v1/conversations", headers={"Origin": "https://x.example"})

        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        assert "X-Request-ID" in allowed.headers["access-control-expose-headers"]
        assert "access-control-allow-origin" not in other.headers

    async def test_no_cors_origins_means_no_cors_headers(self, client: httpx.AsyncClient) -> None:
        response = await client.options("/api/v1/conversations", headers=preflight(ORIGIN))

        assert "access-control-allow-origin" not in response.headers

    async def test_a_wildcard_allows_any_origin_without_credentials(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client: httpx.AsyncClient = await start_app(make_settings(cors_origins="*"))

        response = await client.options("/api/v1/conversations", headers=preflight(ORIGIN))

        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in response.headers

    def test_a_wildcard_mixed_with_origins_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="CORS_ORIGINS"):
            Settings(_env_file=None, cors_origins=f"*,{ORIGIN}")
