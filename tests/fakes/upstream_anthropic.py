"""The wire format of Anthropic's Messages API, for the fake upstream.

Pure functions of the request and of what to answer, as `upstream_openai` is for OpenAI.
What adapters get wrong in a body is refused by `upstream_anthropic_checks`, with 400s worded
as the API's. Replies carry thinking blocks (signed, see `thinking_signature`), text and
`tool_use` blocks, in that order.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.fakes.upstream_anthropic_checks import JsonObject, refusal_of, thinking_signature

if TYPE_CHECKING:
    from tests.fakes.upstream import Reply

Rejection = tuple[int, JsonObject]
Headers = list[tuple[str, str]]

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
# How many characters of a tool call's JSON each `input_json_delta` carries.
ARGUMENT_PIECE = 8

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


def tool_use_id() -> str:
    """A new `tool_use` block id, shaped as the API's."""
    return f"toolu_01{_random_id(22)}"


def _event(name: str, payload: JsonObject) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def _text_of(content: Any) -> str:
    """The text a prompt's content holds: text blocks, tool calls' input, tool results."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            parts.append(json.dumps(block.get("input", {})))
        elif kind == "tool_result":
            parts.append(_text_of(block.get("content")))
    return "".join(parts)


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
        refusal = refusal_of(body)
        return self._invalid(refusal) if refusal else None

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

    def usage(
        self,
        prompt: int,
        completion: int,
        cached: int,
        cache_write: int,
        reasoning: int = 0,
        cache_write_1h: int = 0,
    ) -> JsonObject:
        """`prompt` counts every input token, as OpenAI's `prompt_tokens` does; Anthropic's
        `input_tokens` are only those neither read from nor written to the cache. Cache
        writes are split by lifetime in `cache_creation`, as the API reports them. Thinking
        tokens are part of `output_tokens`, broken out in `output_tokens_details`."""
        usage: JsonObject = {
            "input_tokens": max(prompt - cached - cache_write, 0),
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cached,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache_write - cache_write_1h,
                "ephemeral_1h_input_tokens": cache_write_1h,
            },
            "output_tokens": completion,
            "service_tier": "standard",
        }
        if reasoning:
            usage["output_tokens_details"] = {"thinking_tokens": reasoning}
        return usage

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

    def _calls(self, reply: Reply) -> list[tuple[str, str, str]]:
        """(id, name, arguments JSON text) of each of the reply's tool calls."""
        return [(call.id or tool_use_id(), call.name, call.arguments) for call in reply.tool_calls]

    def message(
        self, text: str, model: str, finish_reason: str, usage: JsonObject, reply: Reply
    ) -> JsonObject:
        content: list[JsonObject] = []
        if reply.reasoning:
            content.append(
                {
                    "type": "thinking",
                    "thinking": reply.reasoning,
                    "signature": thinking_signature(reply.reasoning),
                }
            )
        if text or not (reply.tool_calls or reply.reasoning):
            content.append({"type": "text", "text": text})
        content.extend(
            {"type": "tool_use", "id": id_, "name": name, "input": json.loads(arguments)}
            for id_, name, arguments in self._calls(reply)
        )
        body = self._message(content, model, usage)
        body["stop_reason"] = STOP_REASONS.get(finish_reason, finish_reason)
        return body

    def stream(
        self,
        pieces: list[str],
        model: str,
        finish_reason: str,
        usage: JsonObject,
        body: Any,
        reply: Reply,
    ) -> tuple[list[bytes], list[bytes], list[bytes]]:
        """The events of a streamed reply: (before the text: its start and any thinking block;
        one per piece of text; after it: its end, the tool calls' blocks, the message's end)."""
        start = self._message([], model, {**usage, "output_tokens": 1})
        head = [_event("message_start", {"type": "message_start", "message": start})]
        index = 0
        if reply.reasoning:
            head.extend(self._thinking_events(index, reply.reasoning))
            index += 1
        with_text = bool(pieces) or not (reply.tool_calls or reply.reasoning)
        content: list[bytes] = []
        tail: list[bytes] = []
        if with_text:
            head.append(_block_start(index, {"type": "text", "text": ""}))
            content = [_block_delta(index, {"type": "text_delta", "text": p}) for p in pieces]
            tail.append(_block_stop(index))
            index += 1
        head.append(_event("ping", {"type": "ping"}))
        for id_, name, arguments in self._calls(reply):
            block = {"type": "tool_use", "id": id_, "name": name, "input": {}}
            tail.append(_block_start(index, block))
            # The API starts a call's input with an empty piece, then streams the JSON text.
            json_pieces = range(0, len(arguments), ARGUMENT_PIECE)
            for piece in ["", *(arguments[at : at + ARGUMENT_PIECE] for at in json_pieces)]:
                delta = {"type": "input_json_delta", "partial_json": piece}
                tail.append(_block_delta(index, delta))
            tail.append(_block_stop(index))
            index += 1
        delta_usage = {"output_tokens": usage["output_tokens"]}
        if "output_tokens_details" in usage:
            delta_usage["output_tokens_details"] = usage["output_tokens_details"]
        stop_reason = STOP_REASONS.get(finish_reason, finish_reason)
        tail += [
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": delta_usage,
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]
        return head, content, tail

    def _thinking_events(self, index: int, thinking: str) -> list[bytes]:
        """A thinking block: its start, its text in pieces, its signature, its end."""
        events = [_block_start(index, {"type": "thinking", "thinking": "", "signature": ""})]
        events += [
            _block_delta(index, {"type": "thinking_delta", "thinking": piece})
            for piece in re.findall(r"\s*\S+|\s+$", thinking)
        ]
        signature = {"type": "signature_delta", "signature": thinking_signature(thinking)}
        events += [_block_delta(index, signature), _block_stop(index)]
        return events


def _block_start(index: int, block: JsonObject) -> bytes:
    payload = {"type": "content_block_start", "index": index, "content_block": block}
    return _event("content_block_start", payload)


def _block_delta(index: int, delta: JsonObject) -> bytes:
    payload = {"type": "content_block_delta", "index": index, "delta": delta}
    return _event("content_block_delta", payload)


def _block_stop(index: int) -> bytes:
    return _event("content_block_stop", {"type": "content_block_stop", "index": index})
