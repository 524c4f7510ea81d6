"""Errors under /v1 in OpenAI's shape, so OpenAI clients' exception types and retries work.

The service raises its usual domain errors everywhere and `api/problems.py` renders them as
problem+json; for paths under /v1 (but /v1/messages, Anthropic's) `app.api.error_shapes`
rewrites those bodies into `{"error": {"message", "type", "param", "code"}}` with the status
OpenAI would use (`OPENAI_ERRORS`). Success bodies and streams pass through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.api.error_shapes import Headers, Rewritten
from app.schemas.openai_compat import error_body

OPENAI_PREFIX = "/v1"
# Response headers an OpenAI client may use, or HTTP requires (`Allow` on a 405, `Connection:
# close` after a body that never arrived); the problem's content headers are replaced.
_KEPT_HEADERS = frozenset(
    {
        b"allow",
        b"connection",
        b"retry-after",
        b"x-request-id",
        b"www-authenticate",
        b"ratelimit-limit",
        b"ratelimit-remaining",
        b"ratelimit-reset",
        b"x-conversation-id",
    }
)


@dataclass(frozen=True, slots=True)
class OpenAIError:
    status: int
    type: str
    code: str | None
    param: str | None = None
    # OpenAI's SDKs honour `x-should-retry`: a spent budget will not come back in seconds.
    retry: bool | None = None


# Our problem `code` -> what OpenAI answers in that situation.
_BY_CODE: dict[str, OpenAIError] = {
    "validation_error": OpenAIError(400, "invalid_request_error", None),
    "bad_request": OpenAIError(400, "invalid_request_error", None),
    "unsupported_media_type": OpenAIError(400, "invalid_request_error", None),
    "payload_too_large": OpenAIError(413, "invalid_request_error", "payload_too_large"),
    "unauthenticated": OpenAIError(401, "invalid_request_error", "invalid_api_key"),
    "not_found": OpenAIError(404, "invalid_request_error", "unknown_url"),
    "conversation_not_found": OpenAIError(
        404, "invalid_request_error", "not_found", "X-Conversation-ID"
    ),
    "message_not_found": OpenAIError(404, "invalid_request_error", "not_found"),
    "response_not_found": OpenAIError(404, "invalid_request_error", "not_found"),
    "previous_response_not_found": OpenAIError(
        404, "invalid_request_error", "previous_response_not_found", "previous_response_id"
    ),
    "unknown_model": OpenAIError(404, "invalid_request_error", "model_not_found", "model"),
    "provider_not_configured": OpenAIError(
        404, "invalid_request_error", "model_not_found", "model"
    ),
    "method_not_allowed": OpenAIError(405, "invalid_request_error", "method_not_allowed"),
    "rate_limited": OpenAIError(429, "requests", "rate_limit_exceeded"),
    "too_many_concurrent": OpenAIError(429, "requests", "too_many_concurrent"),
    "upstream_rate_limited": OpenAIError(429, "requests", "rate_limit_exceeded"),
    "budget_exceeded": OpenAIError(429, "insufficient_quota", "insufficient_quota", retry=False),
    # Our own header, so our contract's status: well-formed, but the key means another body.
    "idempotency_key_reused": OpenAIError(422, "invalid_request_error", "idempotency_key_reused"),
    "idempotency_in_progress": OpenAIError(409, "invalid_request_error", "idempotency_in_progress"),
    "generation_in_progress": OpenAIError(409, "invalid_request_error", "generation_in_progress"),
    "upstream_error": OpenAIError(502, "api_error", "upstream_error"),
    "upstream_timeout": OpenAIError(504, "server_error", "upstream_timeout"),
    "not_ready": OpenAIError(503, "server_error", "service_unavailable"),
    "internal_error": OpenAIError(500, "server_error", "internal_error"),
}


def openai_error_of(status: int, code: str) -> OpenAIError:
    """OpenAI's status, type and code for one of our problems."""
    known = _BY_CODE.get(code)
    if known is not None:
        return known
    return OpenAIError(status, "invalid_request_error" if status < 500 else "server_error", code)


def _param_of(problem: dict[str, Any]) -> str | None:
    """The field a validation problem is about, dotted, as OpenAI's `param` names it."""
    errors = problem.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None
    loc = [str(part) for part in errors[0].get("loc", ())]
    if loc and loc[0] in ("body", "query", "header", "path"):
        loc = loc[1:]
    # Pydantic names the union branch that failed ("str", "list[TextPart]"): not a field.
    fields = [part for part in loc if not any(mark in part for mark in "[]'") and part != "str"]
    return ".".join(fields) or None


def _message_of(problem: dict[str, Any], param: str | None) -> str:
    detail = str(problem.get("detail") or problem.get("title") or "error")
    if problem.get("reply_id") and problem.get("conversation_id"):
        # A 503 after the turn may have been stored names what was stored; OpenAI's error
        # object has no field for it, so the message carries it.
        detail += f" (conversation {problem['conversation_id']}, reply {problem['reply_id']})"
    errors = problem.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        msg = str(errors[0].get("msg", ""))
        where = f"'{param}'" if param else "the request body"
        return f"Invalid value for {where}: {msg}" if msg else detail
    return detail


def _provider_error(status: int, problem: dict[str, Any]) -> OpenAIError:
    """A provider's refusal of the request, as the provider said it: OpenAI's SDK then raises
    the class of that status (`BadRequestError` for a 400) and does not retry it."""

    def field(name: str) -> str | None:
        value = problem.get(name)
        return value if isinstance(value, str) else None

    return OpenAIError(
        status,
        field("provider_type") or "invalid_request_error",
        field("provider_code"),
        field("param"),
    )


def translate_problem(status: int, problem: dict[str, Any]) -> tuple[OpenAIError, dict[str, Any]]:
    """OpenAI's error (status and body) for one problem+json body."""
    code = str(problem.get("code") or "")
    if code == "upstream_rejected":
        error = _provider_error(status, problem)
        param = error.param
    else:
        error = openai_error_of(status, code)
        param = _param_of(problem) if error.code is None else error.param
    body = error_body(_message_of(problem, param), error.type, param=param, code=error.code)
    return error, body


class OpenAIErrorShape:
    """OpenAI's error format (`ErrorShape`): its status, body and the headers its SDKs read."""

    def rewrite(self, status: int, problem: dict[str, Any], headers: Headers) -> Rewritten:
        error, body = translate_problem(status, problem)
        kept = [
            (name, value)
            for name, value in headers
            if name.lower() in _KEPT_HEADERS or name.lower().startswith(b"x-")
        ]
        if error.retry is not None:
            kept.append((b"x-should-retry", b"true" if error.retry else b"false"))
        return Rewritten(error.status, body, kept)

    def on_success(self, headers: Headers) -> Headers:
        return headers


OPENAI_ERRORS = OpenAIErrorShape()
