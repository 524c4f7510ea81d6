"""What Anthropic's Messages API refuses in a request body, for the fake upstream.

Pure functions of the body: each gives the message of the API's 400 `invalid_request_error`,
worded as the API's, or `None`. It checks what adapters get wrong: turns that do not
alternate or do not start with the user, missing `max_tokens`, empty content, tool results
without their call, tool choices without tools, thinking budgets, thinking blocks sent back
altered (signed by `thinking_signature`), open structured-output schemas, more than 4
`cache_control` breakpoints.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterator
from typing import Any

JsonObject = dict[str, Any]

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
MIN_THINKING_BUDGET = 1024
MAX_CACHE_BREAKPOINTS = 4
# The fake's own key for signing thinking: a block sent back altered fails as at the API.
_SIGNING_KEY = b"fake-anthropic-thinking"


def thinking_signature(thinking: str) -> str:
    """The `signature` the fake gives a thinking block (the API's is opaque base64 too)."""
    digest = hmac.new(_SIGNING_KEY, thinking.encode(), hashlib.sha256).digest()
    return base64.b64encode(b"\x12\x03fake" + digest * 3).decode()


def refusal_of(body: Any) -> str | None:
    """The message of the API's 400 for a body it cannot take, if any."""
    if not isinstance(body, dict):
        return "There was an error parsing the body of your request."
    for required in ("model", "max_tokens", "messages"):
        if required not in body:
            return f"{required}: Field required"
    return (
        _reject_messages(body["messages"])
        or _reject_tools(body)
        or _reject_thinking(body)
        or _reject_output_config(body)
        or _reject_cache_breakpoints(body)
    )


def _reject_messages(messages: Any) -> str | None:
    """Stricter than the API on purpose: the API merges consecutive same-role turns, the
    fake refuses them (and an assistant first), so an adapter's slip shows up here.
    `system` messages (typed by anthropic 2.x) are accepted and not part of the turns."""
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    turns = [
        (index, message)
        for index, message in enumerate(messages)
        if not (isinstance(message, dict) and message.get("role") == "system")
    ]
    previous = None
    for position, (index, message) in enumerate(turns):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user', 'assistant' or 'system'"
        if position == 0 and role != "user":
            return 'messages: first message must use the "user" role'
        if role == previous:
            return (
                'messages: roles must alternate between "user" and "assistant", but found '
                f'multiple "{role}" roles in a row'
            )
        last_assistant = position == len(turns) - 1 and role == "assistant"
        if _is_empty(message.get("content")) and not last_assistant:
            return (
                f"messages.{index}: all messages must have non-empty content except for "
                "the optional final assistant message"
            )
        previous = role
    return _reject_blocks(turns)


def _reject_blocks(turns: list[tuple[int, Any]]) -> str | None:
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
                return (
                    f"messages.{index}: `tool_result` blocks must come first in the "
                    "content of a user message, before any other content"
                )
            for at, result in enumerate(results):
                if result not in calls:
                    return (
                        f"messages.{index}.content.{at}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {result}. Each `tool_result` block must "
                        "have a corresponding `tool_use` block in the previous message."
                    )
            if missing := [call for call in calls if call not in results]:
                return _unanswered(called_at, missing)
            calls = []
        else:
            calls = [str(b.get("id")) for b in blocks if b.get("type") == "tool_use"]
            called_at = index
        for at, block in enumerate(blocks):
            if refusal := _reject_block(f"messages.{index}.content.{at}", block):
                return refusal
    if calls:
        return _unanswered(called_at, calls)
    return None


def _unanswered(index: int, calls: list[str]) -> str:
    return (
        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
        f"immediately after: {', '.join(calls)}. Each `tool_use` block must have a "
        "corresponding `tool_result` block in the next message."
    )


def _reject_block(where: str, block: JsonObject) -> str | None:
    kind = block.get("type")
    if kind == "thinking":
        if block.get("signature") != thinking_signature(str(block.get("thinking", ""))):
            return f"{where}: Invalid `signature` in `thinking` block"
    elif kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64" and source.get("media_type") not in IMAGE_TYPES:
            return (
                f"{where}.source.base64.media_type: Input should be 'image/jpeg', "
                "'image/png', 'image/gif' or 'image/webp'"
            )
        if source.get("type") not in ("base64", "url"):
            return f"{where}.source: Input tag does not match any expected"
    elif kind == "text" and not block.get("text"):
        return f"{where}: text content blocks must be non-empty"
    return None


def _reject_tools(body: JsonObject) -> str | None:
    tools = body.get("tools") or []
    for index, tool in enumerate(tools):
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,128}", str(tool.get("name", ""))):
            return (
                f"tools.{index}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'"
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return f"tools.{index}.custom.input_schema.type: Field required"
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if not tools:
        return "tool_choice: tool_choice may only be specified while providing tools."
    if choice.get("type") == "tool" and choice.get("name") not in [t["name"] for t in tools]:
        return f"tool_choice.tool.name: Tool '{choice.get('name')}' not found"
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled" and choice.get("type") in ("any", "tool"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    return None


def _reject_thinking(body: JsonObject) -> str | None:
    thinking = body.get("thinking") or {}
    if thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens", 0)
    if budget < MIN_THINKING_BUDGET:
        return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    if body["max_tokens"] <= budget:
        return (
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            "documentation at https://docs.claude.com/en/docs/build-with-claude/"
            "extended-thinking#max-tokens-and-context-window-size"
        )
    return None


def _reject_output_config(body: JsonObject) -> str | None:
    output_format = (body.get("output_config") or {}).get("format")
    if output_format is None:
        return None
    if output_format.get("type") != "json_schema" or "schema" not in output_format:
        return "output_config.format.schema: Field required"
    if any(True for _ in _open_objects(output_format["schema"])):
        return (
            "output_config.format.schema: For 'object' type, 'additionalProperties' must "
            "be explicitly set to false"
        )
    return None


def _reject_cache_breakpoints(body: JsonObject) -> str | None:
    """At most 4 blocks with `cache_control` in tools, system and messages (those inside a
    `tool_result` count too)."""
    blocks: list[Any] = [*(body.get("tools") or []), *_blocks(body.get("system"))]
    for message in body["messages"]:
        for block in _blocks(message.get("content") if isinstance(message, dict) else None):
            blocks.append(block)
            if block.get("type") == "tool_result":
                blocks.extend(_blocks(block.get("content")))
    found = sum(isinstance(b, dict) and b.get("cache_control") is not None for b in blocks)
    if found > MAX_CACHE_BREAKPOINTS:
        return (
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {found}."
        )
    return None


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
