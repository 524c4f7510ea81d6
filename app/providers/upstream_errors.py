"""What an SDK's exception means for the service: one place maps both SDKs to domain errors.

The provider's raw message never reaches a client or a log: a 401 body can quote part of the
key and any body can echo the prompt. A refusal of our credentials (401, 403) or account (402)
is told in our words; a refusal of the request itself (another 4xx but 408, 409, 429) passes
on the provider's message with keys and personal data masked and its length capped, since the
client is the one who can fix it.
"""

from __future__ import annotations

import json
import math
import sys
from email.utils import parsedate_to_datetime
from time import time
from typing import cast

import aiohttp
import httpx2
import openai

from app.core.redaction import redact
from app.errors import (
    ChatAPIError,
    UnknownModel,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)

# Statuses worth another attempt: timeouts, lock conflicts, rate limits, server errors and
# Anthropic's 529 "overloaded".
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# Refusals of the service's key or account: nothing the client can change, so a 502.
_OUR_CREDENTIALS = frozenset({401, 402, 403})
# The longest provider message passed on; theirs are a sentence or two.
MAX_MESSAGE_CHARS = 1000


def _sdk_classes(name: str) -> tuple[type[BaseException], ...]:
    """`openai.<name>`, and `anthropic.<name>` once the Anthropic SDK is loaded: only then can
    its errors exist, and it is imported only when configured (it takes ~2 s to import)."""
    anthropic = sys.modules.get("anthropic")
    found: type[BaseException] = getattr(openai, name)
    return (found,) if anthropic is None else (found, getattr(anthropic, name))


def translate_upstream_error(
    provider: str, error: BaseException, *, timeout_s: float
) -> ChatAPIError | None:
    """The domain error for an SDK or transport failure, or `None` when it is not one."""
    timed_out = (*_sdk_classes("APITimeoutError"), httpx2.TimeoutException)
    if isinstance(error, timed_out) and not _connection_failed(error):
        return UpstreamTimeout(provider, timeout_s)
    if isinstance(error, _sdk_classes("APIStatusError")):
        # Anthropic's APIStatusError has the same three attributes.
        status_error = cast(openai.APIStatusError, error)
        return _from_status(
            provider, status_error.status_code, status_error.response.headers, status_error.body
        )
    # Anthropic's streams let a cut connection escape unwrapped, as an httpx2 TransportError.
    # (The SDKs' timeout errors are connection errors too: a failed connection lands here.)
    if isinstance(error, (*_sdk_classes("APIConnectionError"), httpx2.TransportError)):
        return UpstreamError(f"could not reach provider {provider!r}", retryable=True)
    # Both SDKs raise a bare JSONDecodeError on a body that is not JSON.
    if isinstance(error, (*_sdk_classes("APIResponseValidationError"), json.JSONDecodeError)):
        return UpstreamError(f"provider {provider!r} sent a malformed response", retryable=True)
    if isinstance(error, _sdk_classes("APIError")):
        # An `error` event inside a stream (usually "overloaded"): the SDK's catch-all.
        return UpstreamError(f"provider {provider!r} reported an error", retryable=True)
    return None


def _connection_failed(error: BaseException) -> bool:
    """Whether a "timeout" was really a refused or dropped connection.

    The SDKs' aiohttp transport reports every aiohttp connection error as httpx2's
    ConnectTimeout, a refused connection or a server hanging up before its answer included;
    the original is at the end of the `raise ... from` chain.
    """
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    if isinstance(root, (TimeoutError, aiohttp.ServerTimeoutError)):
        return False
    return isinstance(root, (OSError, aiohttp.ClientConnectionError))


def _from_status(provider: str, status: int, headers: httpx2.Headers, body: object) -> ChatAPIError:
    retry_after = parse_retry_after(headers)
    kind = _error_type(body)
    if status == 429:
        return UpstreamRateLimited(provider, retry_after)
    if status in _OUR_CREDENTIALS:
        return UpstreamError(f"provider {provider!r} rejected the service's credentials")
    if status == 404 and kind in (None, "model_not_found", "not_found_error", "DeploymentNotFound"):
        return UnknownModel(f"provider {provider!r} does not offer the requested model")
    if 400 <= status < 500 and status not in RETRYABLE_STATUSES:
        return _rejected(provider, status, body)
    described = f"provider {provider!r} answered {status}" + (f" ({kind})" if kind else "")
    return UpstreamError(described, retryable=status in RETRYABLE_STATUSES, retry_after=retry_after)


def _rejected(provider: str, status: int, body: object) -> UpstreamRejected:
    """The provider's refusal of the request, its message masked and capped."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    fields = inner if isinstance(inner, dict) else {}
    message = fields.get("message")
    if isinstance(message, str) and message.strip():
        text = redact(message.strip())
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    else:
        text = f"provider {provider!r} refused the request ({status})"
    return UpstreamRejected(
        provider,
        status,
        text,
        provider_type=_identifier(fields.get("type")),
        provider_code=_identifier(fields.get("code")),
        param=_short(fields.get("param")),
    )


def _identifier(value: object) -> str | None:
    """A machine-readable field as sent (`context_length_exceeded`), else nothing."""
    return value if isinstance(value, str) and value.isidentifier() and len(value) <= 64 else None


def _short(value: object) -> str | None:
    """A field name (`messages`, `messages.0.content`): short, and no free text."""
    if not isinstance(value, str) or len(value) > 128:
        return None
    return value if all(c.isalnum() or c in "._[]-" for c in value) else None


def parse_retry_after(headers: httpx2.Headers) -> float | None:
    """Seconds to wait from `retry-after-ms`, `retry-after` (seconds or an HTTP date)."""
    milliseconds = _finite(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return max(0.0, milliseconds / 1000)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


def _finite(text: str | None) -> float | None:
    """`text` as a number; `None` when it is none, or `inf`/`nan` (no wait can be computed)."""
    try:
        number = float(text) if text else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _error_type(body: object) -> str | None:
    """The provider's machine-readable error kind (`rate_limit_error`, `invalid_api_key`)."""
    if not isinstance(body, dict):
        return None
    inner = body.get("error", body)
    if not isinstance(inner, dict):
        return None
    for key in ("code", "type"):
        value = inner.get(key)
        if isinstance(value, str) and value.isidentifier():
            return value
    return None
