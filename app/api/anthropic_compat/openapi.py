"""OpenAPI descriptions of the Anthropic-format errors each /v1/messages route can return."""

from __future__ import annotations

from typing import Any

from app.schemas.anthropic_messages import AnthropicErrorBody

_DESCRIPTIONS = {
    400: "invalid_request_error: the body is not valid, or names an option the provider "
    "cannot honour (the message names the field)",
    401: "authentication_error: missing, invalid, expired or revoked credentials",
    404: "not_found_error: an unknown model, or an X-Conversation-ID that is not the caller's",
    409: "a reply is already running in the conversation, or the Idempotency-Key is in use",
    413: "invalid_request_error: body larger than the configured limit",
    429: "rate_limit_error (with Retry-After), or a spent budget (x-should-retry: false)",
    500: "api_error: the provider failed",
    504: "timeout_error: the provider timed out",
    529: "overloaded_error: the provider or this service is overloaded",
}


def anthropic_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"description": _DESCRIPTIONS[status], "model": AnthropicErrorBody}
        for status in statuses
    }
