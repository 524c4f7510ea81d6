"""What an SDK's exception means for the service: the domain error, retryable or not, with
the provider's own wait, and never the provider's raw message."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from app.errors import (
    UnknownModel,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from app.providers.upstream_errors import (
    MAX_MESSAGE_CHARS,
    parse_retry_after,
    translate_upstream_error,
)

REQUEST = httpx2.Request("POST", "https://api.example.test/v1/chat/completions")
SECRET = "sk-proj-leaked-1234567890"


def status_error(
    sdk: Any, status: int, body: object = None, headers: dict[str, str] | None = None
) -> Exception:
    """The SDK's status error for a response, its message quoting the provider's body."""
    response = httpx2.Response(status, headers=headers or {}, request=REQUEST)
    error: Exception = sdk.APIStatusError(
        f"Error code: {status} - {SECRET}", response=response, body=body
    )
    return error


def translate(error: BaseException) -> Any:
    return translate_upstream_error("openai", error, timeout_s=1.5)


class TestParseRetryAfter:
    @pytest.mark.parametrize(
        ("headers", "seconds"),
        [
            ({"retry-after": "3"}, 3.0),
            ({"retry-after": "0.25"}, 0.25),
            ({"retry-after": "-4"}, 0.0),
            ({"retry-after-ms": "1500"}, 1.5),
            ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
            ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
            ({"retry-after": "whenever"}, None),
            ({"retry-after": "inf"}, None),
            ({"retry-after": "1e999"}, None),
            ({"retry-after": "nan"}, None),
            ({"retry-after-ms": "inf", "retry-after": "2"}, 2.0),
            ({"retry-after": ""}, None),
            ({}, None),
        ],
    )
    def test_seconds_milliseconds_and_garbage(
        self, headers: dict[str, str], seconds: float | None
    ) -> None:
        assert parse_retry_after(httpx2.Headers(headers)) == seconds

    def test_an_http_date_is_the_seconds_until_then(self) -> None:
        later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

        waited = parse_retry_after(httpx2.Headers({"retry-after": later}))

        assert waited is not None
        assert 28 <= waited <= 30

    def test_a_date_in_the_past_means_now(self) -> None:
        earlier = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)

        assert parse_retry_after(httpx2.Headers({"retry-after": earlier})) == 0.0


class TestTranslateStatus:
    @pytest.mark.parametrize("sdk", [openai, anthropic])
    @pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504, 529])
    def test_server_side_failures_are_retryable_502s(self, sdk: Any, status: int) -> None:
        error = translate(status_error(sdk, status))

        assert type(error) is UpstreamError
        assert (error.status, error.code, error.retryable) == (502, "upstream_error", True)

    @pytest.mark.parametrize("sdk", [openai, anthropic])
    @pytest.mark.parametrize("status", [401, 402, 403])
    def test_refusals_of_our_credentials_are_502s_not_worth_retrying(
        self, sdk: Any, status: int
    ) -> None:
        error = translate(status_error(sdk, status))

        assert type(error) is UpstreamError
        assert (error.status, error.retryable) == (502, False)

    @pytest.mark.parametrize("sdk", [openai, anthropic])
    @pytest.mark.parametrize("status", [400, 413, 422])
    def test_refusals_of_the_request_keep_their_status_and_are_not_retried(
        self, sdk: Any, status: int
    ) -> None:
        body = {"error": {"type": "invalid_request_error", "message": "Too long.", "param": "x"}}

        error = translate(status_error(sdk, status, body))

        assert isinstance(error, UpstreamRejected)
        assert (error.status, error.code, error.retryable) == (status, "upstream_rejected", False)
        assert error.detail == "Too long."
        assert (error.extra["provider_type"], error.extra["param"]) == (
            "invalid_request_error",
            "x",
        )

    def test_a_refused_request_s_message_is_capped(self) -> None:
        body = {"error": {"type": "invalid_request_error", "message": "word " * 1000}}

        error = translate(status_error(openai, 400, body))

        assert len(error.detail) == MAX_MESSAGE_CHARS

    @pytest.mark.parametrize("sdk", [openai, anthropic])
    def test_a_rate_limit_is_a_429_carrying_the_provider_s_wait(self, sdk: Any) -> None:
        error = translate(status_error(sdk, 429, headers={"retry-after": "12"}))

        assert isinstance(error, UpstreamRateLimited)
        assert (error.status, error.code, error.retryable) == (429, "upstream_rate_limited", True)
        assert error.retry_after == 12
        assert error.headers == {"Retry-After": "12"}

    def test_a_rate_limit_without_a_wait_tells_the_client_one_second(self) -> None:
        error = translate(status_error(openai, 429))

        assert isinstance(error, UpstreamRateLimited)
        assert error.retry_after is None
        assert error.headers == {"Retry-After": "1"}

    @pytest.mark.parametrize("value", ["inf", "1e999", "nan"])
    def test_a_retry_after_that_is_no_number_of_seconds_is_ignored(self, value: str) -> None:
        error = translate(status_error(openai, 429, headers={"retry-after": value}))

        assert isinstance(error, UpstreamRateLimited)
        assert error.retry_after is None
        assert error.headers == {"Retry-After": "1"}

    def test_a_server_error_keeps_its_retry_after_for_the_retry_loop(self) -> None:
        error = translate(status_error(openai, 503, headers={"retry-after": "2"}))

        assert error.retry_after == 2

    @pytest.mark.parametrize(
        "body",
        [
            None,
            {"error": {"code": "model_not_found", "message": "no"}},
            {"type": "error", "error": {"type": "not_found_error", "message": "no"}},
            {"error": {"code": "DeploymentNotFound", "message": "no"}},
        ],
    )
    def test_a_missing_model_is_a_422_unknown_model(self, body: object) -> None:
        error = translate(status_error(openai, 404, body))

        assert isinstance(error, UnknownModel)
        assert (error.status, error.code) == (422, "unknown_model")

    def test_another_404_is_a_refusal_with_the_provider_s_status(self) -> None:
        body = {"error": {"type": "invalid_request_error", "code": "unknown_url"}}

        error = translate(status_error(openai, 404, body))

        assert isinstance(error, UpstreamRejected)
        assert (error.status, error.extra["provider_code"]) == (404, "unknown_url")

    def test_a_rejected_key_says_so_without_the_provider_s_message(self) -> None:
        body = {"error": {"code": "invalid_api_key", "message": f"Incorrect key {SECRET}"}}

        error = translate(status_error(openai, 401, body))

        assert "credentials" in error.detail
        assert SECRET not in error.detail
        assert SECRET not in str(error)

    @pytest.mark.parametrize("status", [400, 401, 404, 429, 500])
    def test_the_raw_message_never_reaches_the_detail(self, status: int) -> None:
        body = {"error": {"type": "some_error", "message": SECRET, "code": SECRET}}

        error = translate(status_error(anthropic, status, body))

        assert SECRET not in error.detail
        assert SECRET not in json.dumps(error.headers)


class TestTranslateTransport:
    @pytest.mark.parametrize(
        "raised",
        [
            openai.APITimeoutError(request=REQUEST),
            anthropic.APITimeoutError(request=REQUEST),
            httpx2.ReadTimeout("read timed out", request=REQUEST),
        ],
    )
    def test_timeouts_are_504s_naming_the_limit(self, raised: Exception) -> None:
        error = translate(raised)

        assert isinstance(error, UpstreamTimeout)
        assert (error.status, error.code, error.retryable) == (504, "upstream_timeout", True)
        assert "1.5 s" in error.detail

    @pytest.mark.parametrize(
        "raised",
        [
            openai.APIConnectionError(request=REQUEST),
            anthropic.APIConnectionError(request=REQUEST),
            httpx2.RemoteProtocolError("incomplete chunked read", request=REQUEST),
            httpx2.ConnectError("refused", request=REQUEST),
        ],
    )
    def test_connection_failures_are_retryable_502s(self, raised: Exception) -> None:
        error = translate(raised)

        assert type(error) is UpstreamError
        assert (error.status, error.retryable) == (502, True)

    def test_a_body_that_is_not_json_is_a_retryable_502(self) -> None:
        error = translate(json.JSONDecodeError("Expecting value", "{", 1))

        assert type(error) is UpstreamError
        assert error.retryable
        assert "malformed" in error.detail

    @pytest.mark.parametrize("sdk", [openai, anthropic])
    def test_an_error_event_inside_a_stream_is_retryable(self, sdk: Any) -> None:
        error = translate(sdk.APIError("Overloaded", request=REQUEST, body=None))

        assert type(error) is UpstreamError
        assert error.retryable

    @pytest.mark.parametrize("raised", [ValueError("bug"), RuntimeError("bug"), KeyError("x")])
    def test_anything_else_is_not_an_upstream_error(self, raised: Exception) -> None:
        assert translate(raised) is None
