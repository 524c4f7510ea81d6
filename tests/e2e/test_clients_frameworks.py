"""LangChain's `ChatOpenAI` and pydantic-ai's `Agent` against `python -m app` on loopback,
with the mock provider: tools bound and called, structured output in every way each framework
asks for it. What they sent is stored (read back through /api/v1), charged exactly, and every
body and chunk they received is valid under OpenAI's pinned schema.

Neither framework sends `X-Conversation-ID`, so each of their calls is a conversation of its
own holding the whole history the framework sent: the last one holds the full exchange.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel
from pydantic_ai import Agent, NativeOutput, ToolOutput
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.e2e.conftest import LiveServer
from tests.e2e.test_clients_openai import assert_openai_shaped, calls_of, read_back
from tests.openai_schema.traffic import Recorder

QUESTION = "What is the get_weather in city: Paris?"


class Forecast(BaseModel):
    city: str
    temperature_c: int
    conditions: Literal["sunny", "cloudy", "rain"]


class Reply(BaseModel):
    """The fields the mock writes in JSON mode (`{"reply": ...}`)."""

    reply: str


@tool
def get_weather(city: str) -> str:
    """The weather now in a city."""
    return f"Sunny in {city}"


def chat_openai(server: LiveServer, recorder: Recorder) -> ChatOpenAI:
    return ChatOpenAI(
        model="mock",
        base_url=f"{server.base_url}/v1",
        api_key="not-checked",  # the server runs with auth off, as the e2e conftest starts it
        max_retries=0,
        http_async_client=recorder.client(),
    )


def openai_chat_model(server: LiveServer, recorder: Recorder) -> OpenAIChatModel:
    provider = OpenAIProvider(
        base_url=f"{server.base_url}/v1", api_key="not-checked", http_client=recorder.client()
    )
    return OpenAIChatModel("mock", provider=provider)


class TestLangChainChatOpenAI:
    async def test_bound_tools_are_called_and_their_result_is_answered(
        self, server: LiveServer, recorder: Recorder, clean_database: None
    ) -> None:
        model = chat_openai(server, recorder).bind_tools([get_weather])
        asked = [HumanMessage(QUESTION)]

        call = await model.ainvoke(asked)
        [tool_call] = call.tool_calls
        result = await get_weather.ainvoke(tool_call)
        answer = await model.ainvoke([*asked, call, result])

        assert (tool_call["name"], tool_call["args"]) == ("get_weather", {"city": "Paris"})
        assert call.response_metadata["finish_reason"] == "tool_calls"
        assert (result.tool_call_id, result.content) == (tool_call["id"], "Sunny in Paris")
        assert answer.content == "The tool get_weather returned: Sunny in Paris."
        assert answer.response_metadata["finish_reason"] == "stop"
        first_id, last_id = recorder.conversation_ids()
        first = await read_back(server, first_id)
        assert first.roles == ["user", "assistant"]
        [(call_id, name, arguments)] = calls_of(first.messages[1]["tool_calls"])
        assert (call_id, name, json.loads(arguments)) == (
            tool_call["id"],
            "get_weather",
            {"city": "Paris"},
        )
        first.assert_charged_exactly()
        last = await read_back(server, last_id)
        assert last.roles == ["user", "assistant", "tool", "assistant"]
        assert calls_of(last.messages[1]["tool_calls"]) == calls_of(first.messages[1]["tool_calls"])
        assert (last.messages[2]["tool_call_id"], last.messages[2]["content"]) == (
            tool_call["id"],
            "Sunny in Paris",
        )
        assert last.messages[3]["content"] == answer.content
        last.assert_charged_exactly()
        assert_openai_shaped(recorder)

    async def test_streamed_tool_call_chunks_add_up_to_the_calls_of_the_whole_reply(
        self, server: LiveServer, recorder: Recorder, clean_database: None
    ) -> None:
        model = chat_openai(server, recorder).bind_tools([get_weather])

        whole = await model.ainvoke(QUESTION)
        streamed: AIMessageChunk | None = None
        async for chunk in model.astream(QUESTION):
            assert isinstance(chunk, AIMessageChunk)
            streamed = chunk if streamed is None else streamed + chunk

        assert streamed is not None
        assert streamed.tool_calls == whole.tool_calls
        assert streamed.response_metadata["finish_reason"] == "tool_calls"
        for conversation_id in recorder.conversation_ids():
            stored = await read_back(server, conversation_id)
            assert [name for _, name, _ in calls_of(stored.messages[1]["tool_calls"])] == [
                "get_weather"
            ]
            stored.assert_charged_exactly()
        assert_openai_shaped(recorder)

    @pytest.mark.parametrize(
        ("method", "schema"),
        [("function_calling", Forecast), ("json_schema", Forecast), ("json_mode", Reply)],
    )
    async def test_structured_output_is_an_instance_of_the_model(
        self,
        server: LiveServer,
        recorder: Recorder,
        clean_database: None,
        method: Literal["function_calling", "json_schema", "json_mode"],
        schema: type[BaseModel],
    ) -> None:
        model = chat_openai(server, recorder).with_structured_output(schema, method=method)

        output = await model.ainvoke("Tomorrow's forecast for Oslo, in JSON.")

        assert isinstance(output, schema)
        sent = recorder.completions[0].request_json()
        stored = await read_back(server, recorder.conversation_ids()[0])
        assert stored.roles == ["user", "assistant"]
        reply = stored.messages[1]
        if method == "function_calling":
            assert sent["tool_choice"] == {"type": "function", "function": {"name": "Forecast"}}
            [(_, name, arguments)] = calls_of(reply["tool_calls"])
            assert (name, schema.model_validate_json(arguments)) == ("Forecast", output)
        else:
            expected = "json_schema" if method == "json_schema" else "json_object"
            assert sent["response_format"]["type"] == expected
            assert schema.model_validate_json(reply["content"]) == output
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)

    async def test_json_mode_with_fields_the_mock_does_not_write_fails_instead_of_none(
        self, server: LiveServer, recorder: Recorder, clean_database: None
    ) -> None:
        # JSON mode gives no schema to follow, so the mock writes `{"reply": ...}`: a model
        # with other fields cannot be filled, and LangChain must say so rather than return None.
        model = chat_openai(server, recorder).with_structured_output(Forecast, method="json_mode")

        with pytest.raises(OutputParserException, match="validation errors for Forecast"):
            await model.ainvoke("Tomorrow's forecast for Oslo, in JSON.")

        stored = await read_back(server, recorder.conversation_ids()[0])
        assert json.loads(stored.messages[1]["content"]).keys() == {"reply"}
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)


class TestPydanticAIAgent:
    async def test_the_agent_calls_the_tool_its_prompt_names_and_answers_with_the_result(
        self, server: LiveServer, recorder: Recorder, clean_database: None
    ) -> None:
        agent = Agent(openai_chat_model(server, recorder))
        cities: list[str] = []

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """The weather now in a city."""
            cities.append(city)
            return f"Sunny in {city}"

        result = await agent.run(QUESTION)

        assert cities == ["Paris"]
        assert result.output == "The tool get_weather returned: Sunny in Paris."
        _, last_id = recorder.conversation_ids()
        stored = await read_back(server, last_id)
        assert stored.roles == ["user", "assistant", "tool", "assistant"]
        [(call_id, name, arguments)] = calls_of(stored.messages[1]["tool_calls"])
        assert (name, json.loads(arguments)) == ("get_weather", {"city": "Paris"})
        assert (stored.messages[2]["tool_call_id"], stored.messages[2]["content"]) == (
            call_id,
            "Sunny in Paris",
        )
        assert stored.messages[3]["content"] == result.output
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)

    @pytest.mark.parametrize(
        "output_type",
        [Forecast, ToolOutput(Forecast), NativeOutput(Forecast)],
        ids=["default", "tool", "native"],
    )
    async def test_output_type_makes_the_output_an_instance_of_the_model(
        self, server: LiveServer, recorder: Recorder, clean_database: None, output_type: Any
    ) -> None:
        agent = Agent(openai_chat_model(server, recorder), output_type=output_type)

        result = await agent.run("Tomorrow's forecast for Oslo.")

        assert isinstance(result.output, Forecast)
        [conversation_id] = recorder.conversation_ids()
        stored = await read_back(server, conversation_id)
        assert stored.roles == ["user", "assistant"]
        reply = stored.messages[1]
        if isinstance(output_type, NativeOutput):
            assert Forecast.model_validate_json(reply["content"]) == result.output
        else:
            # Output as a tool the model must call: `tool_choice: "required"`.
            assert recorder.completions[0].request_json()["tool_choice"] == "required"
            [(_, name, arguments)] = calls_of(reply["tool_calls"])
            assert (name, Forecast.model_validate_json(arguments)) == (
                "final_result",
                result.output,
            )
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)
