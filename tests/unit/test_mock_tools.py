"""The mock provider with tools, JSON replies, reasoning and images: what it calls, with which
arguments and ids, what it answers after tool results, all the same streamed or in one piece,
and with no key."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema_rs
import pytest

from app.providers.base import (
    ChatMessage,
    ChatRequest,
    Finished,
    ReasoningDelta,
    ReplyBuilder,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    WholeReply,
)
from app.providers.context import prompt_tokens
from app.providers.json_schema_sample import sample_instance
from app.providers.mock import MOCK_OPTIONS, MockProvider, estimate_tokens, reply_words

WEATHER_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "hourly": {"type": ["boolean", "null"]},
    },
    "required": ["city", "unit", "days", "hourly"],
    "additionalProperties": False,
}
TIME_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"zone": {"type": "string"}, "at": {"type": "string", "format": "date-time"}},
    "required": ["zone"],
}


def function(name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "description": f"The {name} tool."}
    if parameters is not None:
        spec["parameters"] = parameters
    return {"type": "function", "function": spec}


TOOLS = [
    function("get_weather", WEATHER_PARAMETERS),
    function("get_time", TIME_PARAMETERS),
    function("ping"),
]


def ask(text: str, **options: Any) -> ChatRequest:
    return ChatRequest("mock", (ChatMessage("user", text),), options=options)


async def streamed(request: ChatRequest) -> tuple[list[StreamEvent], WholeReply]:
    """Every event the mock streams, and the reply they add up to."""
    events = [event async for event in MockProvider().stream(request)]
    builder = ReplyBuilder()
    for event in events[:-1]:
        assert not isinstance(event, Finished)
        builder.add(event)
    finished = events[-1]
    assert isinstance(finished, Finished)
    return events, builder.whole(finished)


def valid(schema: dict[str, Any], value: object) -> bool:
    return bool(jsonschema_rs.validator_for(schema, validate_formats=True).is_valid(value))


class TestToolCalls:
    async def test_a_tool_the_user_names_is_called_with_arguments_valid_for_it(self) -> None:
        reply = await MockProvider().complete(ask("What does get_weather say?", tools=TOOLS))

        assert reply.text == ""
        assert reply.finished.reason == "tool_calls"
        assert [call.name for call in reply.tool_calls] == ["get_weather"]
        assert valid(WEATHER_PARAMETERS, json.loads(reply.tool_calls[0].arguments))

    @pytest.mark.parametrize(
        "options",
        [
            {"tools": TOOLS},
            {"tools": TOOLS, "reasoning_effort": "high"},
            {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": True},
        ],
    )
    async def test_streamed_and_one_shot_replies_carry_the_same_calls(
        self, options: dict[str, Any]
    ) -> None:
        request = ask("Ask GET_TIME and get_weather for city: Lyon", **options)

        _, drained = await streamed(request)
        whole = await MockProvider().complete(request)

        assert whole == drained
        assert len(whole.tool_calls) == 2

    async def test_a_call_streams_its_id_and_name_first_then_its_arguments_in_pieces(
        self,
    ) -> None:
        events, reply = await streamed(ask("get_weather please", tools=TOOLS))

        deltas = [event for event in events if isinstance(event, ToolCallDelta)]
        (call,) = reply.tool_calls
        assert deltas[0] == ToolCallDelta(0, "", id=call.id, name=call.name)
        assert all(d.id is None and d.name is None and d.index == 0 for d in deltas[1:])
        assert len(deltas) > 2
        assert "".join(d.arguments for d in deltas) == call.arguments
        assert not any(isinstance(event, TextDelta) for event in events)

    async def test_several_named_tools_are_called_in_the_order_of_the_tools_list(
        self,
    ) -> None:
        reply = await MockProvider().complete(ask("ping, then get_time, get_weather", tools=TOOLS))

        assert [call.name for call in reply.tool_calls] == ["get_weather", "get_time", "ping"]
        assert len({call.id for call in reply.tool_calls}) == 3
        assert json.loads(reply.tool_calls[2].arguments) == {}

    async def test_without_parallel_tool_calls_only_the_first_named_tool_is_called(
        self,
    ) -> None:
        request = ask("ping and get_time", tools=TOOLS, parallel_tool_calls=False)

        reply = await MockProvider().complete(request)

        assert [call.name for call in reply.tool_calls] == ["get_time"]

    async def test_required_calls_the_first_tool_when_the_user_names_none(self) -> None:
        reply = await MockProvider().complete(ask("hello", tools=TOOLS, tool_choice="required"))

        assert [call.name for call in reply.tool_calls] == ["get_weather"]
        assert reply.finished.reason == "tool_calls"

    async def test_a_function_tool_choice_names_is_called_whatever_the_user_says(
        self,
    ) -> None:
        choice = {"type": "function", "function": {"name": "get_time"}}

        reply = await MockProvider().complete(ask("get_weather", tools=TOOLS, tool_choice=choice))

        assert [call.name for call in reply.tool_calls] == ["get_time"]
        assert valid(TIME_PARAMETERS, json.loads(reply.tool_calls[0].arguments))

    @pytest.mark.parametrize(
        ("text", "choice"),
        [
            ("get_weather", "none"),  # named, but calls are off
            ("what is the weather?", "auto"),  # no tool named
            ("sometimes I ping_pong", "auto"),  # names inside other words
        ],
    )
    async def test_the_mock_answers_in_text_when_no_tool_is_called(
        self, text: str, choice: str
    ) -> None:
        request = ask(text, tools=TOOLS, tool_choice=choice)

        reply = await MockProvider().complete(request)

        assert reply.tool_calls == ()
        assert reply.finished.reason == "stop"
        assert reply.text == " ".join(reply_words(request))

    async def test_values_the_user_spells_out_become_string_arguments(self) -> None:
        text = 'get_weather for city: "New York", unit=fahrenheit. And get_time zone=UTC.'

        reply = await MockProvider().complete(ask(text, tools=TOOLS))

        weather, time = (json.loads(call.arguments) for call in reply.tool_calls)
        assert (weather["city"], weather["unit"], time["zone"]) == (
            "New York",
            "fahrenheit",
            "UTC",
        )

    async def test_a_value_outside_an_enum_is_not_used(self) -> None:
        reply = await MockProvider().complete(ask("get_weather unit: kelvin", tools=TOOLS))

        assert json.loads(reply.tool_calls[0].arguments)["unit"] == "celsius"

    async def test_call_ids_are_fixed_by_the_prompt(self) -> None:
        mock = MockProvider()

        first = await mock.complete(ask("get_weather", tools=TOOLS))
        again = await mock.complete(ask("get_weather", tools=TOOLS))
        other = await mock.complete(ask("get_weather now", tools=TOOLS))

        assert re.fullmatch(r"call_[0-9a-f]{24}", first.tool_calls[0].id)
        assert first.tool_calls == again.tool_calls
        assert other.tool_calls[0].id != first.tool_calls[0].id

    async def test_the_calls_are_counted_as_completion_tokens(self) -> None:
        reply = await MockProvider().complete(ask("get_weather", tools=TOOLS))

        (call,) = reply.tool_calls
        expected = estimate_tokens(call.name) + estimate_tokens(call.arguments)
        assert reply.finished.usage.completion_tokens == expected


def after_calls(*results: str, **options: Any) -> ChatRequest:
    """A prompt whose last messages answer the mock's calls to get_weather and get_time."""
    calls = (ToolCall("call_a", "get_weather", "{}"), ToolCall("call_b", "get_time", "{}"))
    messages = (
        ChatMessage("user", "get_weather and get_time"),
        ChatMessage("assistant", "", tool_calls=calls),
        *(ChatMessage("tool", r, tool_call_id=c.id) for r, c in zip(results, calls, strict=False)),
    )
    return ChatRequest("mock", messages, options={"tools": TOOLS, **options})


class TestAfterToolResults:
    async def test_the_reply_reports_each_result_under_its_tool_s_name(self) -> None:
        reply = await MockProvider().complete(after_calls("18 C and dry", '{"time": "09:30"}'))

        assert reply.finished.reason == "stop"
        assert reply.tool_calls == ()
        assert reply.text == (
            "The tool get_weather returned: 18 C and dry."
            ' The tool get_time returned: {"time": "09:30"}.'
        )

    async def test_no_tool_is_called_again_even_when_one_is_required(self) -> None:
        request = after_calls("18 C", "09:30", tool_choice="required")

        _, drained = await streamed(request)

        assert drained.tool_calls == ()
        assert drained.text.startswith("The tool get_weather returned: 18 C.")
        assert drained == await MockProvider().complete(request)

    async def test_a_long_result_is_cut_short(self) -> None:
        reply = await MockProvider().complete(after_calls("x" * 5000))

        assert len(reply.text) < 300
        assert reply.text.endswith("…")


# Schemas in the subset OpenAI's structured outputs accept, and a few beyond it.
SCHEMAS: dict[str, dict[str, Any]] = {
    "flat": {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "confident": {"type": "boolean"}},
        "required": ["answer", "confident"],
        "additionalProperties": False,
    },
    "numbers": {
        "type": "object",
        "properties": {
            "score": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "count": {"type": "integer", "minimum": 10, "maximum": 20, "multipleOf": 3},
            "below": {"type": "integer", "maximum": -5},
            "step": {"type": "number", "minimum": 0.5, "multipleOf": 0.25},
        },
        "required": ["score", "count", "below", "step"],
    },
    "strings": {
        "type": "object",
        "properties": {
            "kind": {"type": "string", "enum": ["a", "b"]},
            "fixed": {"const": "v1"},
            "email": {"type": "string", "format": "email"},
            "when": {"type": "string", "format": "date"},
            "id": {"type": "string", "format": "uuid"},
            "short": {"type": "string", "maxLength": 3},
            "long": {"type": "string", "minLength": 400},
        },
        "required": ["kind", "fixed", "email", "when", "id", "short", "long"],
    },
    "arrays": {
        "type": "object",
        "properties": {
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 3},
            "none": {"type": "array", "items": {"type": "integer"}, "maxItems": 0},
        },
        "required": ["tags", "none"],
    },
    "nullable_and_unions": {
        "type": "object",
        "properties": {
            "maybe": {"type": ["null", "string"]},
            "either": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 3}]},
            "one": {"oneOf": [{"type": "string", "enum": ["x"]}, {"type": "integer"}]},
        },
        "required": ["maybe", "either", "one"],
    },
    "recursive_defs": {
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/node"}},
        "required": ["root"],
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                    "parent": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
                },
                "required": ["name", "children", "parent"],
                "additionalProperties": False,
            }
        },
    },
    "draft_7_definitions": {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "array",
        "items": {"$ref": "#/definitions/point"},
        "definitions": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
            }
        },
    },
}


class TestJsonReplies:
    async def test_json_object_wraps_what_the_mock_would_have_said(self) -> None:
        plain = await MockProvider().complete(ask("hello"))

        reply = await MockProvider().complete(ask("hello", response_format={"type": "json_object"}))

        assert json.loads(reply.text) == {"reply": plain.text}

    @pytest.mark.parametrize("name", sorted(SCHEMAS))
    async def test_a_json_schema_reply_is_valid_against_the_schema(self, name: str) -> None:
        schema = SCHEMAS[name]
        response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}
        request = ask("hello", response_format=response_format)

        _, drained = await streamed(request)
        whole = await MockProvider().complete(request)

        assert whole == drained
        assert whole.finished.reason == "stop"
        assert valid(schema, json.loads(whole.text))

    @pytest.mark.parametrize("name", sorted(SCHEMAS))
    def test_the_same_schema_always_gets_the_same_instance(self, name: str) -> None:
        assert sample_instance(SCHEMAS[name]) == sample_instance(SCHEMAS[name])

    async def test_the_reply_s_words_fill_the_schema_s_strings(self) -> None:
        schema = SCHEMAS["flat"]
        response_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}

        reply = await MockProvider().complete(ask("hello", response_format=response_format))

        assert json.loads(reply.text)["answer"] == " ".join(reply_words(ask("hello")))

    async def test_a_json_reply_is_counted_like_text_and_cut_at_max_tokens(self) -> None:
        request = ask("hello", response_format={"type": "json_object"})
        cut = ChatRequest("mock", request.messages, max_tokens=5, options=request.options)

        whole = await MockProvider().complete(request)
        short = await MockProvider().complete(cut)

        assert whole.finished.usage.completion_tokens >= estimate_tokens(whole.text)
        assert short.finished.reason == "length"
        assert short.finished.usage.completion_tokens <= 5


class TestReasoning:
    async def test_reasoning_streams_before_the_text_and_is_counted(self) -> None:
        request = ask("hello", reasoning_effort="low")

        events, drained = await streamed(request)

        kinds = [type(event) for event in events]
        assert kinds.index(TextDelta) > kinds.index(ReasoningDelta)
        assert max(i for i, k in enumerate(kinds) if k is ReasoningDelta) < kinds.index(TextDelta)
        usage = drained.finished.usage
        assert usage.reasoning_tokens > 0
        plain = await MockProvider().complete(ask("hello"))
        assert drained.text == plain.text
        assert usage.completion_tokens == plain.finished.usage.completion_tokens + (
            usage.reasoning_tokens
        )
        assert drained == await MockProvider().complete(request)

    async def test_reasoning_effort_none_asks_for_none(self) -> None:
        reply = await MockProvider().complete(ask("hello", reasoning_effort="none"))

        assert (reply.reasoning, reply.finished.usage.reasoning_tokens) == ("", 0)

    async def test_reasoning_spends_from_max_tokens(self) -> None:
        options = {"reasoning_effort": "medium"}
        request = ChatRequest("mock", (ChatMessage("user", "hi"),), max_tokens=12, options=options)

        reply = await MockProvider().complete(request)

        assert reply.finished.reason == "length"
        assert reply.finished.usage.completion_tokens <= 12


class TestImages:
    async def test_the_reply_says_how_many_images_it_sees(self) -> None:
        image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        parts = ({"type": "text", "text": "what is this?"}, image, image)
        request = ChatRequest("mock", (ChatMessage("user", "what is this?", parts=parts),))

        reply = await MockProvider().complete(request)

        assert reply.text.startswith("I see 2 images. ")
        # An image of unknown size counts as 1024x1024 at high detail: 765 tokens each.
        text_only = ChatRequest("mock", (ChatMessage("user", "what is this?"),))
        assert reply.finished.usage.prompt_tokens == (
            prompt_tokens(text_only, estimate_tokens) + 2 * 765
        )


class TestPlainReplies:
    async def test_options_that_ask_for_nothing_more_leave_the_reply_as_it_was(self) -> None:
        plain = await MockProvider().complete(ask("hello"))

        seeded = await MockProvider().complete(ask("hello", seed=7, temperature=0.2))

        assert seeded == plain
        assert plain.text == " ".join(reply_words(ask("hello")))
        # Four characters a token, four per message, three to prime the reply.
        assert plain.finished.usage.prompt_tokens == estimate_tokens("hello") + 4 + 3

    def test_the_mock_honours_function_tools_and_json_replies(self) -> None:
        assert MOCK_OPTIONS.honours("tools", TOOLS)
        assert MOCK_OPTIONS.honours("tool_choice", "required")
        assert MOCK_OPTIONS.honours("parallel_tool_calls", False)
        assert MOCK_OPTIONS.honours("response_format", {"type": "json_object"})
        assert MOCK_OPTIONS.honours("response_format", {"type": "json_schema"})

    def test_tools_it_cannot_call_are_refused(self) -> None:
        custom = [{"type": "custom", "custom": {"name": "grammar"}}]

        assert not MOCK_OPTIONS.honours("tools", custom)
        assert not MOCK_OPTIONS.honours("response_format", {"type": "xml"})
