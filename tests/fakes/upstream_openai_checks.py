"""What OpenAI Chat Completions refuses in a request body, for the fake upstream.

Pure functions of the body: each gives the 400 that api.openai.com gives, worded as it words
it, or `None`. Messages (roles, tool results without their call's id, tool calls without id or
function, null content, malformed content parts), the pairing of tool calls with tool
results, and tool definitions (`tool_choice` and `parallel_tool_calls` only beside them).
"""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]
Rejection = tuple[int, JsonObject]

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
# As OpenAI lists them when it refuses another.
_ROLES_WORDED = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'"
_PART_TYPES_WORDED = "'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'"


def openai_error(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> JsonObject:
    """An error body as OpenAI writes it."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def reject_body(body: Any, *, model_required: bool) -> Rejection | None:
    """The 400 OpenAI gives for a body it cannot take (Azure names no model), if any."""
    if not isinstance(body, dict):
        return 400, openai_error(
            "We could not parse the JSON body of your request. (HINT: This likely means "
            "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
            "payload, but what was sent was not valid JSON.",
            "invalid_request_error",
        )
    if model_required and not body.get("model"):
        return 400, openai_error("you must provide a model parameter", "invalid_request_error")
    messages = body.get("messages")
    if not isinstance(messages, list):
        return _missing("messages")
    if not messages:
        return _empty("messages")
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            return _not_one_of(role, _ROLES_WORDED, f"messages[{index}].role")
        if rejection := _reject_message(index, message):
            return rejection
    return _reject_tool_turns(messages) or _reject_tools(body)


def _missing(param: str) -> Rejection:
    return 400, openai_error(
        f"Missing required parameter: '{param}'.",
        "invalid_request_error",
        "missing_required_parameter",
        param,
    )


def _not_one_of(value: object, supported: str, param: str) -> Rejection:
    return 400, openai_error(
        f"Invalid value: '{value}'. Supported values are: {supported}.",
        "invalid_request_error",
        "invalid_value",
        param,
    )


def _empty(param: str) -> Rejection:
    return 400, openai_error(
        f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an "
        "empty array instead.",
        "invalid_request_error",
        "empty_array",
        param,
    )


def _reject_message(index: int, message: JsonObject) -> Rejection | None:
    """What OpenAI refuses in one message: a tool result without its call's id, a tool call
    without id or function, content that is null where it may not be or a malformed part."""
    role, content = message["role"], message.get("content")
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        return 400, openai_error(
            "Missing parameter 'tool_call_id': messages with role 'tool' must have a "
            "'tool_call_id'.",
            "invalid_request_error",
            param=f"messages.[{index}].tool_call_id",
        )
    calls = message.get("tool_calls") if role == "assistant" else None
    for number, call in enumerate(calls or ()):
        where = f"messages[{index}].tool_calls[{number}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not call.get("id"):
            return _missing(f"{where}.id")
        if not isinstance(function, dict):
            return _missing(f"{where}.function")
        for key in ("name", "arguments"):
            if not isinstance(function.get(key), str):
                return _missing(f"{where}.function.{key}")
    if content is None and not calls:
        if "content" not in message:
            return _missing(f"messages[{index}].content")
        return 400, openai_error(
            "Invalid value for 'content': expected a string, got null.",
            "invalid_request_error",
            param=f"messages.[{index}].content",
        )
    if isinstance(content, list):
        return _reject_parts(index, content)
    return None


def _reject_parts(index: int, parts: list[Any]) -> Rejection | None:
    if not parts:
        return _empty(f"messages[{index}].content")
    for number, part in enumerate(parts):
        where = f"messages[{index}].content[{number}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in PART_TYPES:
            return _not_one_of(kind, _PART_TYPES_WORDED, f"{where}.type")
        if kind not in part:  # each part holds its payload under its type's name
            return _missing(f"{where}.{kind}")
        if kind == "image_url" and not (part["image_url"] or {}).get("url"):
            return _missing(f"{where}.image_url.url")
    return None


def _reject_tool_turns(messages: list[JsonObject]) -> Rejection | None:
    """OpenAI's pairing rule: an assistant's tool calls are answered, each by a tool message
    right after it, and a tool message answers a call of the assistant message before it."""
    unanswered: list[str] = []
    asked_at = 0
    for index, message in enumerate(messages):
        if message["role"] == "tool":
            if message["tool_call_id"] not in unanswered:
                return 400, openai_error(
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    "invalid_request_error",
                    param=f"messages.[{index}].role",
                )
            unanswered.remove(message["tool_call_id"])
            continue
        if unanswered:
            break
        if message["role"] == "assistant" and message.get("tool_calls"):
            unanswered = [call["id"] for call in message["tool_calls"]]
            asked_at = index
    if unanswered:
        return 400, openai_error(
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(unanswered)}",
            "invalid_request_error",
            param=f"messages.[{asked_at}].role",
        )
    return None


def _reject_tools(body: JsonObject) -> Rejection | None:
    """Tool definitions that are there and whole; tool options only beside them."""
    tools = body.get("tools")
    if isinstance(tools, list):
        if not tools:
            return _empty("tools")
        for number, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict):
                return _missing(f"tools[{number}].function")
            if not function.get("name"):
                return _missing(f"tools[{number}].function.name")
        return None
    for option in ("tool_choice", "parallel_tool_calls"):
        if body.get(option) is not None:
            return 400, openai_error(
                f"Invalid value for '{option}': '{option}' is only allowed when 'tools' are "
                "specified.",
                "invalid_request_error",
                param=option,
            )
    return None
