"""OpenAPI descriptions of the OpenAI-format errors each /v1 route can return."""

from __future__ import annotations

from typing import Any

from app.schemas.openai_compat import OpenAIErrorBody

_DESCRIPTIONS = {
    400: "invalid_request_error: the body is not valid (`param` names the field)",
    401: "invalid_api_key: missing, invalid, expired or revoked credentials",
    404: "model_not_found, or an X-Conversation-ID that is not the caller's",
    409: "a reply is already running in the conversation, or the Idempotency-Key is in use",
    413: "body larger than the configured limit",
    429: "rate_limit_exceeded (with Retry-After), or insufficient_quota (budget spent)",
    502: "api_error: the provider failed",
    504: "server_error: the provider timed out",
}


def openai_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {"description": _DESCRIPTIONS[status], "model": OpenAIErrorBody}
        for status in statuses
    }
