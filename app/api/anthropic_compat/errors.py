"""Errors under /v1/messages in Anthropic's shape, so the `anthropic` SDKs raise the right
exception class (`BadRequestError`, `AuthenticationError`, `NotFoundError`, ...).

The service raises its usual domain errors and `api/problems.py` renders them as
problem+json; for paths under /v1/messages `app.api.error_shapes` rewrites those bodies into
`{"type": "error", "error": {"type", "message"}}` with Anthropic's status (`ANTHROPIC_ERRORS`).
Success bodies and streams pass through untouched, with a `request-id` header added.
"""

from __future__ import annotations

from typing import Any

from app.api.error_shapes import Headers, Rewritten, under
from app.schemas.anthropic_messages import anthropic_error_body

MESSAGES_PREFIX = "/v1/messages"
_KEPT_HEADERS = frozenset(
    {b"allow", b"connection", b"retry-after", b"www-authenticate", b"x-conversation-id"}
)
# Anthropic's error type for each status it uses, as the pinned SDK's `ErrorObject` union
# names them (it has no `request_too_large`: a 413 is an `invalid_request_error` there); others
# keep their status under the type of their class (a 409 of our Idempotency-Key is still the
# SDK's ConflictError, ...).
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Our statuses Anthropic does not use -> the one it answers that situation with (a spent
# budget is a 429 the SDK must not retry, as on /v1/chat/completions).
_STATUSES = {422: 400, 415: 400, 402: 429, 502: 500, 503: 529}
# By code: our own contract kept (the same key with another body), and a model no provider
# serves, which Anthropic answers as a missing resource.
_BY_CODE = {"idempotency_key_reused": 422, "unknown_model": 404, "provider_not_configured": 404}
# A spent budget does not come back in seconds: the SDK must not retry it.
_NO_RETRY = frozenset({"budget_exceeded"})


def is_messages_path(path: str) -> bool:
    """Whether `path` is part of the Anthropic-format surface."""
    return under(MESSAGES_PREFIX, path)


def anthropic_status_of(status: int, code: str) -> tuple[int, str]:
    """Anthropic's status and error type for one of our problems."""
    status = _BY_CODE.get(code) or _STATUSES.get(status, status)
    if status in _TYPES:
        return status, _TYPES[status]
    return status, "invalid_request_error" if status < 500 else "api_error"


def _field_of(loc: list[Any]) -> str:
    """A validation error's field, dotted; pydantic's union branch names left out."""
    if loc and loc[0] in ("body", "query", "header", "path"):
        loc = loc[1:]
    fields = [str(p) for p in loc if not any(mark in str(p) for mark in "[]'")]
    return ".".join(p for p in fields if p not in ("str", "function-after"))


def message_of(problem: dict[str, Any]) -> str:
    """The problem's text; a validation error names its field (`messages.0.content: ...`)."""
    detail = str(problem.get("detail") or problem.get("title") or "error")
    if problem.get("reply_id") and problem.get("conversation_id"):
        detail += f" (conversation {problem['conversation_id']}, reply {problem['reply_id']})"
    errors = problem.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        field = _field_of(list(errors[0].get("loc", ())))
        msg = str(errors[0].get("msg", "")).removeprefix("Value error, ") or detail
        return f"{field}: {msg}" if field else msg
    return detail


def translate_problem(status: int, problem: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Anthropic's status and error body for one problem+json body."""
    code = str(problem.get("code") or "")
    new_status, error_type = anthropic_status_of(status, code)
    if code == "upstream_rejected" and isinstance(problem.get("provider_type"), str):
        if status in _TYPES:  # the provider's own refusal, as it said it
            error_type = _TYPES[status]
    request_id = problem.get("request_id")
    body = anthropic_error_body(
        error_type, message_of(problem), request_id if isinstance(request_id, str) else None
    )
    return new_status, body


def _request_id_header(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    for name, value in headers:
        if name.lower() == b"x-request-id":
            return [(b"request-id", value)]
    return []


class AnthropicErrorShape:
    """Anthropic's error format (`ErrorShape`); every response gets a `request-id` header."""

    def rewrite(self, status: int, problem: dict[str, Any], headers: Headers) -> Rewritten:
        new_status, body = translate_problem(status, problem)
        kept = [
            (name, value)
            for name, value in headers
            if name.lower() in _KEPT_HEADERS or name.lower().startswith((b"x-", b"ratelimit-"))
        ]
        kept += _request_id_header(headers)
        if str(problem.get("code")) in _NO_RETRY:
            kept.append((b"x-should-retry", b"false"))
        return Rewritten(new_status, body, kept)

    def on_success(self, headers: Headers) -> Headers:
        return headers + _request_id_header(headers)


ANTHROPIC_ERRORS = AnthropicErrorShape()
