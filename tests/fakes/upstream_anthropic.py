"""The wire format of Anthropic's Messages API, for the fake upstream.

Pure functions of the request and of what to answer, as `upstream_openai` is for OpenAI.
It validates what adapters get wrong (turns that do not alternate or do not start with the
user, missing `max_tokens`, empty content, tool results without their call, tool choices
without tools, thinking budgets, thinking blocks sent back altered) and rejects it with 400s
worded as the API's. Replies carry thinking blocks (signed, see `thinking_signature`), text
and `tool_use` blocks, in that order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.upstream import Reply

JsonObject = dict[str, Any]
Rejection = tuple[int, JsonObject]
Headers = list[tuple[str, str]]

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
MIN_THINKING_BUDGET = 1024
# The fake's own key for signing thinking: a block sent back altered fails as at the API.
_SIGNING_KEY = b"fake-anthropic-thinking"
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


def thinking_signature(thinking: str) -> str:
    """The `signature` the fake gives a thinking block (the API's is opaque base64 too)."""
    digest = hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).digest()
    return base64.b64encode(b"\x12\x03fake" + digest * 3).decode()


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


def _blocks(content: Any) -> list[JsonObject]:
    """A turn's content blocks (a string is one text block, unless empty)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _open_objects(schema: Any) -> Iterator[Any]:
    """The object schemas inside `schema` that do not forbid unnamed properties."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and schema.get("additionalProperties") is not False:
            yield schema
        for value in schema.values():
            yield from _open_objects(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _open_objects(value)


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
        return (
            self._reject_messages(body["messages"])
            or self._reject_tools(body)
            or self._reject_thinking(body)
            or self._reject_output_config(body)
        )

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
        return self._reject_blocks(turns)

    def _reject_blocks(self, turns: list[tuple[int, Any]]) -> Rejection | None:
        """Each `tool_use` answered by a `tool_result` in the next turn (results first in it),
        and no result without its call; images of a type the API reads; thinking blocks
        with the signature they were given."""
        calls: list[str] = []  # the ids the previous assistant turn called
        called_at = 0  # that turn's index
        for index, message in turns:
            blocks = _blocks(message.get("content"))
            if message["role"] == "user":
                results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
                if results != [b.get("tool_use_id") for b in blocks[: len(results)]]:
                    return self._invalid(
                        f"messages.{index}: `tool_result` blocks must come first in the "
                        "content of a user message, before any other content"
                    )
                for at, result in enumerate(results):
                    if result not in calls:
                        return self._invalid(
                            f"messages.{index}.content.{at}: unexpected `tool_use_id` found in "
                            f"`tool_result` blocks: {result}. Each `tool_result` block must "
                            "have a corresponding `tool_use` block in the previous message."
                        )
                if missing := [call for call in calls if call not in results]:
                    return self._unanswered(called_at, missing)
                calls = []
            else:
                calls = [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
                called_at = index
            for at, block in enumerate(blocks):
                if rejection := self._reject_block(f"messages.{index}.content.{at}", block):
                    return rejection
        if calls:
            return self._unanswered(called_at, calls)
        return None

    def _unanswered(self, index: int, calls: list[str]) -> Rejection:
        return self._invalid(
            f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
            f"immediately after: {', '.join(calls)}. Each `tool_use` block must have a "
            "corresponding `tool_result` block in the next message."
        )

    def _reject_block(self, where: str, block: JsonObject) -> Rejection | None:
        kind = block.get("type")
        if kind == "thinking":
            if block.get("signature") != thinking_signature(str(block.get("thinking", ""))):
                return self._invalid(f"{where}: Invalid `signature` in `thinking` block")
        elif kind == "image":
            source = block.get("source") or {}
            if source.get("type") == "base64" and source.get("media_type") not in IMAGE_TYPES:
                return self._invalid(
                    f"{where}.source.base64.media_type: Input should be 'image/jpeg', "
                    "'image/png', 'image/gif' or 'image/webp'"
                )
            if source.get("type") not in ("base64", "url"):
                return self._invalid(f"{where}.source: Input tag does not match any expected")
        elif kind == "text" and not block.get("text"):
            return self._invalid(f"{where}: text content blocks must be non-empty")
        return None

    def _reject_tools(self, body: JsonObject) -> Rejection | None:
        tools = body.get("tools") or []
        for index, tool in enumerate(tools):
            if not re.fullmatch(r"[a-zA-Z0-9_-]{1,128}", str(tool.get("name", ""))):
                return self._invalid(
                    f"tools.{index}.custom.name: String should match pattern "
                    "'^[a-zA-Z0-9_-]{1,128}$'"
                )
            schema = tool.get("input_schema")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return self._invalid(f"tools.{index}.custom.input_schema.type: Field required")
        choice = body.get("tool_choice")
        if choice is None:
            return None
        if not tools:
            return self._invalid(
                "tool_choice: tool_choice may only be specified while providing tools."
            )
        if choice.get("type") == "tool" and choice.get("name") not in [t["name"] for t in tools]:
            return self._invalid(f"tool_choice.tool.name: Tool '{choice.get('name')}' not found")
        thinking = body.get("thinking") or {}
        if thinking.get("type") == "enabled" and choice.get("type") in ("any", "tool"):
            return self._invalid("Thinking may not be enabled when tool_choice forces tool use.")
        return None

    def _reject_thinking(self, body: JsonObject) -> Rejection | None:
        thinking = body.get("thinking") or {}
        if thinking.get("type") != "enabled":
            return None
        budget = thinking.get("budget_tokens", 0)
        if budget < MIN_THINKING_BUDGET:
            return self._invalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
            )
        if body["max_tokens"] <= budget:
            return self._invalid(
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                "documentation at https://docs.claude.com/en/docs/build-with-claude/"
                "extended-thinking#max-tokens-and-context-window-size"
            )
        return None

    def _reject_output_config(self, body: JsonObject) -> Rejection | None:
        output_format = (body.get("output_config") or {}).get("format")
        if output_format is None:
            return None
        if output_format.get("type") != "json_schema" or "schema" not in output_format:
            return self._invalid("output_config.format.schema: Field required")
        if any(True for _ in _open_objects(output_format["schema"])):
            return self._invalid(
                "output_config.format.schema: For 'object' type, 'additionalProperties' must "
                "be explicitly set to false"
            )
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

    def usage(
        self, prompt: int, completion: int, cached: int, cache_write: int, reasoning: int = 0
    ) -> JsonObject:
        """`prompt` counts every input token, as OpenAI's `prompt_tokens` does; Anthropic's
        `input_tokens` are only those neither read from nor written to the cache. Thinking
        tokens are part of `output_tokens`, broken out in `output_tokens_details`."""
        usage: JsonObject = {
            "input_tokens": max(prompt - cached - cache_write, 0),
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cached,
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
