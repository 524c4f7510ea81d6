"""What the mock provider does with tools and JSON: which tools it calls and with what
arguments, how it reports their results, and the JSON it answers with.

All of it is a fixed function of the request, so tests can predict every call and id.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from app.providers.base import ChatMessage, ChatRequest, ToolCall, ToolCallDelta
from app.providers.json_schema_sample import sample_instance

# A string argument the user spelled out: `city: Paris`, `city=Paris`, `unit = "deg C"`.
_GIVEN_VALUE = re.compile(
    r"""(?<![\w-])([A-Za-z_][\w-]*)\s*[:=]\s*(?:"([^"]*)"|'([^']*)'|([^\s,;"']+))"""
)
# What a string argument is when the user did not give it.
ARGUMENT_TEXT = "sample"
# A tool result longer than this is cut in the reply that reports it.
_RESULT_CHARS = 200
_ARGUMENT_PIECES = 4


def tool_calls(request: ChatRequest, last: ChatMessage) -> tuple[ToolCall, ...]:
    """The calls the mock makes to answer `last` (a user message): the function
    `tool_choice` names; else the tools the message names (only the first of them when
    `parallel_tool_calls` is false); else, when `tool_choice` is "required", the first tool."""
    options = request.options
    functions = [
        tool["function"]
        for tool in options.get("tools") or ()
        if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping)
    ]
    choice = options.get("tool_choice", "auto")
    if not functions or choice == "none":
        return ()
    forced = _mapping(choice.get("function")).get("name") if isinstance(choice, Mapping) else None
    if forced:
        chosen = [next((f for f in functions if f.get("name") == forced), {"name": forced})]
    else:
        chosen = [f for f in functions if _names(last.content, str(f.get("name") or ""))]
        if options.get("parallel_tool_calls") is False:
            chosen = chosen[:1]
        if not chosen and choice == "required":
            chosen = functions[:1]
    if not chosen:
        return ()
    given = given_values(last.content)
    prompt = _prompt_digest(request.messages)
    return tuple(
        ToolCall(_call_id(prompt, index), str(function.get("name")), _arguments(function, given))
        for index, function in enumerate(chosen)
    )


def call_deltas(index: int, call: ToolCall) -> list[ToolCallDelta]:
    """How a call streams: its id and name first, then its arguments in a few pieces."""
    head = ToolCallDelta(index, "", id=call.id, name=call.name)
    return [head, *(ToolCallDelta(index, piece) for piece in argument_pieces(call.arguments))]


def argument_pieces(arguments: str) -> list[str]:
    size = max(1, math.ceil(len(arguments) / _ARGUMENT_PIECES))
    return [arguments[at : at + size] for at in range(0, len(arguments), size)]


def tool_results_text(messages: Sequence[ChatMessage]) -> str:
    """A reply that reports the tool results closing `messages`, each under its tool's name."""
    results: list[ChatMessage] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    names = {call.id: call.name for message in messages for call in message.tool_calls}
    return " ".join(
        f"The tool {names.get(result.tool_call_id or '', 'call')} returned: "
        f"{_sentence(result.content)}"
        for result in reversed(results)
    )


def json_reply_text(response_format: object, said: str) -> str | None:
    """The reply as the JSON `response_format` asks for (None when it asks for none): valid
    against a `json_schema`'s schema, with `said` in its strings; else `{"reply": said}`."""
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    schema = _mapping(response_format.get("json_schema")).get("schema")
    if kind == "json_schema" and isinstance(schema, Mapping):
        value = sample_instance(schema, text=said)
    else:
        value = {"reply": said}
    return json.dumps(value, ensure_ascii=False)


def given_values(text: str) -> dict[str, str]:
    """The `name: value` and `name=value` pairs written in `text` (the first of each name)."""
    values: dict[str, str] = {}
    for match in _GIVEN_VALUE.finditer(text):
        name, quoted, single, bare = match.groups()
        value = quoted if quoted is not None else single if single is not None else bare
        values.setdefault(name, value.rstrip(".!?)") if bare is not None else value)
    return values


def _arguments(function: Mapping[str, Any], given: Mapping[str, str]) -> str:
    parameters = function.get("parameters")
    value = sample_instance(parameters, text=ARGUMENT_TEXT, strings=given) if parameters else {}
    return json.dumps(value if isinstance(value, dict) else {}, ensure_ascii=False)


def _names(text: str, name: str) -> bool:
    """Whether `text` mentions `name` as a word of its own, in any case."""
    if not name:
        return False
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE) is not None


def _prompt_digest(messages: Sequence[ChatMessage]) -> bytes:
    digest = hashlib.sha256()
    for message in messages:
        digest.update(f"{message.role}\x1f{message.content}\x1e".encode("utf-8", "surrogatepass"))
    return digest.digest()


def _call_id(prompt: bytes, index: int) -> str:
    """`call_` and 24 hex digits, fixed by the prompt and the call's place in the reply."""
    return "call_" + hashlib.sha256(prompt + str(index).encode()).hexdigest()[:24]


def _sentence(text: str) -> str:
    """`text` as a sentence of the reply: cut when long, with a full stop."""
    text = " ".join(text.split()) or "nothing"
    if len(text) > _RESULT_CHARS:
        return text[: _RESULT_CHARS - 1] + "…"
    return text if text.endswith((".", "!", "?")) else text + "."


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
