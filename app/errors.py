"""Domain errors. Each declares its HTTP status and contract `code`; one handler renders them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from http import HTTPStatus
from typing import Any
from uuid import UUID


class ChatAPIError(Exception):
    """Base of every error a client may see; `detail` must never hold secrets or message text."""

    # Class-wide for most errors; an instance may carry another (a provider's own 4xx).
    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    code: str = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class ConversationNotFound(ChatAPIError):
    status = HTTPStatus.NOT_FOUND
    code = "conversation_not_found"

    def __init__(self, conversation_id: UUID) -> None:
        super().__init__(f"conversation {conversation_id} does not exist")


class MessageNotFound(ChatAPIError):
    status = HTTPStatus.NOT_FOUND
    code = "message_not_found"

    def __init__(self, message_id: UUID) -> None:
        super().__init__(f"message {message_id} does not exist")


class ResponseNotFound(ChatAPIError):
    """A Responses API id that is not the caller's (missing, deleted or another user's)."""

    status = HTTPStatus.NOT_FOUND
    code = "response_not_found"

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id '{response_id}' not found.")


class PreviousResponseNotFound(ChatAPIError):
    """`previous_response_id` names no response of the caller's: the same 404 either way."""

    status = HTTPStatus.NOT_FOUND
    code = "previous_response_not_found"

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Previous response with id '{response_id}' not found.")


class InvalidCursor(ChatAPIError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "validation_error"

    def __init__(self) -> None:
        super().__init__(
            "cursor is not valid for this list",
            extra={"errors": [{"loc": ["query", "cursor"], "msg": "invalid cursor"}]},
        )


class InvalidRange(ChatAPIError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "validation_error"

    def __init__(self) -> None:
        super().__init__(
            "`from` must be before `to`",
            extra={"errors": [{"loc": ["query", "from"], "msg": "must be before `to`"}]},
        )


class GenerationInProgress(ChatAPIError):
    status = HTTPStatus.CONFLICT
    code = "generation_in_progress"

    def __init__(self, conversation_id: UUID) -> None:
        super().__init__(
            f"a reply is already being generated in conversation {conversation_id}; "
            "wait for it, attach to its stream, or cancel it"
        )


class UnknownModel(ChatAPIError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "unknown_model"


class ProviderNotConfigured(ChatAPIError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "provider_not_configured"

    def __init__(self, provider: str) -> None:
        super().__init__(f"provider {provider!r} is not configured on this service")


class Unauthenticated(ChatAPIError):
    status = HTTPStatus.UNAUTHORIZED
    code = "unauthenticated"

    def __init__(self, detail: str = "missing or invalid credentials") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class UpstreamError(ChatAPIError):
    """The provider failed; the detail names the provider, never its key or raw response.

    `retryable` says whether another attempt may succeed (connection errors, 408, 409, 429,
    5xx, 529); `retry_after` is the provider's own hint in seconds, when it gave one.
    """

    status = HTTPStatus.BAD_GATEWAY
    code = "upstream_error"

    def __init__(
        self,
        detail: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail, headers=headers)
        self.retryable = retryable
        self.retry_after = retry_after


class UpstreamRejected(UpstreamError):
    """The provider refused the request itself (a 4xx the client can act on: context too
    long, an invalid parameter): its status, masked message, code and param reach the client.

    Never retried and never passed to a fallback model: the same request would be refused
    again. The message must already be masked (`app.core.redaction`) and capped.
    """

    code = "upstream_rejected"

    def __init__(
        self,
        provider: str,
        status: int,
        message: str,
        *,
        provider_type: str | None = None,
        provider_code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = _known_status(status, HTTPStatus.BAD_REQUEST)
        self.extra = {
            "provider": provider,
            "provider_type": provider_type,
            "provider_code": provider_code,
            "param": param,
        }


class UpstreamTimeout(UpstreamError):
    status = HTTPStatus.GATEWAY_TIMEOUT
    code = "upstream_timeout"

    def __init__(self, provider: str, seconds: float) -> None:
        super().__init__(
            f"provider {provider!r} did not answer within {seconds:g} s", retryable=True
        )


class UpstreamRateLimited(UpstreamError):
    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "upstream_rate_limited"

    def __init__(self, provider: str, retry_after: float | None) -> None:
        wait = max(1, math.ceil(retry_after or 1))
        super().__init__(
            f"provider {provider!r} is rate limiting this service",
            retryable=True,
            retry_after=retry_after,
            headers={"Retry-After": str(wait)},
        )


class BudgetExceeded(ChatAPIError):
    status = HTTPStatus.PAYMENT_REQUIRED
    code = "budget_exceeded"

    def __init__(self, budget_usd: Decimal, month: str) -> None:
        super().__init__(
            f"the monthly budget of {budget_usd} USD is spent for {month}",
            extra={"budget_usd": float(budget_usd)},
        )


class RateLimited(ChatAPIError):
    """The caller used up a per-user limit (requests or tokens per minute)."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "rate_limited"

    def __init__(self, what: str, limit: int, reset_s: int) -> None:
        wait = str(max(1, reset_s))
        super().__init__(
            f"the limit of {limit} {what} per minute is used up; retry in {wait} s",
            headers={
                "Retry-After": wait,
                "RateLimit-Limit": str(limit),
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": wait,
            },
        )


class TooManyConcurrent(ChatAPIError):
    """The caller already has as many streams open, or replies running, as one user may."""

    status = HTTPStatus.TOO_MANY_REQUESTS
    code = "too_many_concurrent"
    RETRY_AFTER_S = 5

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(
            f"the limit of {limit} concurrent {what} per user is reached; "
            "wait for one to end, then retry",
            headers={"Retry-After": str(self.RETRY_AFTER_S)},
        )


class IdempotencyKeyReused(ChatAPIError):
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was already used for a different request")


class IdempotencyInProgress(ChatAPIError):
    status = HTTPStatus.CONFLICT
    code = "idempotency_in_progress"

    def __init__(self) -> None:
        super().__init__(
            "a request with this Idempotency-Key is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        )


class TurnNotStored(ChatAPIError):
    """The database went away in the middle of a turn: what of it is stored, and what will be.

    A 503 like any database outage, but one that may have stored the caller's message: the
    body names the turn's conversation and reply (`conversation_id`, `reply_id`), so a client
    can look before sending the message again. The reply's end is written when the database
    returns (or, if its process stops first, the reply is failed as abandoned).
    """

    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "not_ready"

    def __init__(self, conversation_id: UUID, reply_id: UUID, detail: str) -> None:
        super().__init__(
            detail,
            headers={"Retry-After": "5"},
            extra={"conversation_id": str(conversation_id), "reply_id": str(reply_id)},
        )


class ReplyEndedElsewhere(ChatAPIError):
    """A reply's outcome arrived after the reply had been ended by someone else: cancelled, or
    failed as abandoned while this process could not reach the database."""

    status = HTTPStatus.CONFLICT
    code = "generation_abandoned"

    def __init__(self, reply_id: UUID, stored_status: str) -> None:
        super().__init__(
            f"reply {reply_id} was ended ({stored_status}) before its outcome could be stored",
            extra={"reply_id": str(reply_id)},
        )


class ReportedFailure(ChatAPIError):
    """A failure read back from a reply's event log or stored row, as it was first raised:
    its status, code, detail, `Retry-After` and extension fields (see `failure_fields`)."""

    def __init__(self, fields: Mapping[str, Any], detail: str) -> None:
        fields = dict(fields)
        self.code = str(fields.pop("code", None) or UpstreamError.code)
        self.status = _known_status(fields.pop("status", None), UpstreamError.status)
        retry_after = fields.pop("retry_after", None)
        fields.pop("message", None)
        fields.pop("detail", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        super().__init__(detail, headers=headers, extra=fields)


def failure_fields(error: ChatAPIError) -> dict[str, Any]:
    """What a logged or stored failure keeps beside its code and detail, so that it can be
    answered later (a stream that failed before its first token) exactly as when raised."""
    fields: dict[str, Any] = {"status": error.status.value, **error.extra}
    if "Retry-After" in error.headers:
        fields["retry_after"] = error.headers["Retry-After"]
    return fields


def _known_status(status: object, default: HTTPStatus) -> HTTPStatus:
    """`status` as an HTTPStatus, or `default` when it is none a response can carry."""
    try:
        return HTTPStatus(status) if isinstance(status, int) else default
    except ValueError:
        return default
