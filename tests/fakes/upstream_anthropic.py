"""The wire format of Anthropic's Messages API, for the fake upstream.

Pure functions of the request and of what to answer, as `upstream_openai` is for OpenAI.
It validates what adapters get wrong (turns that do not alternate or do not start with the
user, missing `max_tokens`, empty content) and rejects it with 400s worded as the API's.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]
Rejection = tuple[int, JsonObject]
Headers = list[tuple[str, str]]

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}

# (type, message) per status, as api.anthropic.com words them.
ANTHROPIC_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key has no permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: (
        "rate_limit_error",
        "This request would exceed the rate limit for your organization of 50,000 input "
        "tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    ),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out"),
    529: ("overloaded_error", "Overloaded"),
}


def _random_id(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _event(name: str, payload: JsonObject) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""


def _is_empty(content: Any) -> bool:
    return content in ("", []) or content is None


@dataclass
class AnthropicDialect:
    """`POST /v1/messages`, with the key (`x-api-key` or bearer) and `anthropic-version`."""

    api_key: str
    message_id: str = field(default_factory=lambda: f"msg_01{_random_id(22)}")
    request_id: str = field(default_factory=lambda: f"req_011C{_random_id(20)}")
    malformed_body: bytes = b'{"id": "msg_01", "type": "message", "role": "assistant", "content": ['

    def headers(self) -> Headers:
        return [("request-id", self.request_id), ("anthropic-organization-id", "fake-org")]

    def _error(self, error_type: str, message: str) -> JsonObject:
        return {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": self.request_id,
        }

    def _invalid(self, message: str) -> Rejection:
        return 400, self._error("invalid_request_error", message)

    def reject(self, query: dict[str, str], headers: dict[str, str], body: Any) -> Rejection | None:
        """The error the API gives before reaching a model, if any: auth, version, the body."""
        # The API takes the key as `x-api-key` or, as this SDK (anthropic 2.x) sends it,
        # as `Authorization: Bearer <key>`.
        authorization = headers.get("authorization", "")
        key = headers.get("x-api-key") or authorization.removeprefix("Bearer ").strip()
        if not key:
            return 401, self._error("authentication_error", "x-api-key header is required")
        if key != self.api_key:
            return 401, self._error("authentication_error", "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return self._invalid("anthropic-version: header is required")
        if not isinstance(body, dict):
            return self._invalid("There was an error parsing the body of your request.")
        for required in ("model", "max_tokens", "messages"):
            if required not in body:
                return self._invalid(f"{required}: Field required")
        return self._reject_messages(body["messages"])

    def _reject_messages(self, messages: Any) -> Rejection | None:
        """Stricter than the API on purpose: the API merges consecutive same-role turns, the
        fake refuses them (and an assistant first), so an adapter's slip shows up here.
        `system` messages (typed by anthropic 2.x) are accepted and not part of the turns."""
        if not isinstance(messages, list) or not messages:
            return self._invalid("messages: at least one message is required")
        turns = [
            (index, message)
            for index, message in enumerate(messages)
            if not (isinstance(message, dict) and message.get("role") == "system")
        ]
        previous = None
        for position, (index, message) in enumerate(turns):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("user", "assistant"):
                return self._invalid(
                    f"messages.{index}.role: Input should be 'user', 'assistant' or 'system'"
                )
            if position == 0 and role != "user":
                return self._invalid('messages: first message must use the "user" role')
            if role == previous:
                return self._invalid(
                    'messages: roles must alternate between "user" and "assistant", but found '
                    f'multiple "{role}" roles in a row'
                )
            last_assistant = position == len(turns) - 1 and role == "assistant"
            if _is_empty(message.get("content")) and not last_assistant:
                return self._invalid(
                    f"messages.{index}: all messages must have non-empty content except for "
                    "the optional final assistant message"
                )
            previous = role
        return None

    def wants_stream(self, body: Any) -> bool:
        return bool(body.get("stream"))

    def reported_model(self, body: Any) -> str:
        return str(body.get("model", ""))

    def prompt_text(self, body: Any) -> str:
        system = _text_of(body.get("system"))
        return system + "".join(_text_of(m.get("content")) for m in body.get("messages", []))

    def error(self, status: int, message: str | None, error_type: str | None) -> JsonObject:
        default_type, default_message = ANTHROPIC_ERRORS.get(
            status,
            ("api_error", "Internal server error")
            if status >= 500
            else ("invalid_request_error", "Invalid request."),
        )
        return self._error(error_type or default_type, message or default_message)

    def usage(self, prompt: int, completion: int, cached: int, cache_write: int) -> JsonObject:
        """`prompt` counts every input token, as OpenAI's `prompt_tokens` does; Anthropic's
        `input_tokens` are only those neither read from nor written to the cache."""
        return {
            "input_tokens": max(prompt - cached - cache_write, 0),
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cached,
            "output_tokens": completion,
            "service_tier": "standard",
        }

    def _message(self, content: list[JsonObject], model: str, usage: JsonObject) -> JsonObject:
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }

    def message(self, text: str, model: str, finish_reason: str, usage: JsonObject) -> JsonObject:
        body = self._message([{"type": "text", "text": text}], model, usage)
        body["stop_reason"] = STOP_REASONS.get(finish_reason, finish_reason)
        return body

    def stream(
        self, pieces: list[str], model: str, finish_reason: str, usage: JsonObject, body: Any
    ) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """The events of a streamed reply: (before the text, one per piece of text, after it)."""
        start = self._message([], model, {**usage, "output_tokens": 1})
        head = [
            _event("message_start", {"type": "message_start", "message": start}),
            _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            _event("ping", {"type": "ping"}),
        ]
        content = [
            _event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                },
            )
            for p in pieces
        ]
        stop_reason = STOP_REASONS.get(finish_reason, finish_reason)
        tail = [
            _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]
        return head, content, tail
