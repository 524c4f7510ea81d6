"""openai-python, LangChain and pydantic-ai against `python -m app` answered by real
provider wires: the fake OpenAI and Anthropic upstreams on loopback, scripted with tool calls.
A tool round trip, parallel streamed calls, `.parse()`, an image, bound tools and an agent's
tool and output type reach each provider in its own shape, come back in OpenAI's (every body
and chunk valid under the pinned schema), and are stored and charged exactly as the provider
reported them.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.e2e.conftest import LiveServer, start_server, stop_server
from tests.e2e.test_clients_openai import (
    GET_TIME,
    GET_WEATHER,
    Forecast,
    assert_openai_shaped,
    calls_of,
    read_back,
    tiny_png,
)
from tests.fakes.upstream import FakeToolCall, FakeUpstream, Reply, running_upstream
from tests.openai_schema.traffic import Recorder

MODELS = ["gpt-4o", "claude-sonnet-4-6"]
PARIS = FakeToolCall("get_weather", '{"city": "Paris"}')
LIMA_TIME = FakeToolCall("get_time", '{"city": "Lima"}')


@tool
def get_weather(city: str) -> str:
    """The weather now in a city."""
    return f"Sunny in {city}"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeUpstream]:
    async with running_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def server(
    database_url: str, fake: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    environment = {name.upper(): str(value) for name, value in fake.provider_settings().items()}
    live = start_server(
        {"DATABASE_URL": database_url, "PROVIDER_MAX_RETRIES": "0", **environment},
        tmp_path_factory.mktemp("upstream-clients") / "server.log",
    )
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture
async def recorder(fake: FakeUpstream) -> AsyncIterator[Recorder]:
    fake.reset()
    recording = Recorder()
    yield recording
    await recording.aclose()


def client_of(server: LiveServer, recorder: Recorder) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1",
        api_key="not-checked",
        max_retries=0,
        http_client=recorder.client(),
    )


def sent_to_provider(fake: FakeUpstream, index: int) -> dict[str, Any]:
    body: dict[str, Any] = fake.requests[index].json
    return body


@pytest.mark.parametrize("model", MODELS)
class TestThroughTheProviders:
    async def test_a_tool_round_trip_is_sent_stored_and_charged_as_reported(
        self,
        server: LiveServer,
        fake: FakeUpstream,
        recorder: Recorder,
        clean_database: None,
        model: str,
    ) -> None:
        client = client_of(server, recorder)
        fake.script(
            Reply("", tool_calls=(PARIS,), finish_reason="tool_calls", prompt_tokens=40),
            Reply("Sunny in Paris.", prompt_tokens=60, completion_tokens=5),
        )
        question: Any = {"role": "user", "content": "What is the weather in Paris?"}

        first = await client.chat.completions.create(
            model=model, messages=[question], tools=[GET_WEATHER]
        )
        [call] = first.choices[0].message.tool_calls or []
        conversation_id = recorder.completions[0].conversation_id
        assert conversation_id is not None
        second = await client.chat.completions.create(
            model=model,
            messages=[
                question,
                first.choices[0].message,
                {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"},
            ],
            tools=[GET_WEATHER],
            extra_headers={"X-Conversation-ID": conversation_id},
        )

        assert first.choices[0].finish_reason == "tool_calls"
        assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
        assert second.choices[0].message.content == "Sunny in Paris."
        answered = sent_to_provider(fake, 1)["messages"]
        if model.startswith("claude"):
            assert answered[-1]["content"][0]["type"] == "tool_result"
            assert answered[-1]["content"][0]["tool_use_id"] == call.id
        else:
            assert answered[-1] == {
                "role": "tool",
                "tool_call_id": call.id,
                "content": "Sunny, 21 C",
            }
        stored = await read_back(server, conversation_id)
        assert stored.roles == ["user", "assistant", "tool", "assistant"]
        assert calls_of(stored.messages[1]["tool_calls"]) == calls_of([call])
        assert [m["prompt_tokens"] for m in stored.messages[1::2]] == [40, 60]
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)

    async def test_parallel_calls_stream_as_deltas_that_add_up_to_the_calls(
        self,
        server: LiveServer,
        fake: FakeUpstream,
        recorder: Recorder,
        clean_database: None,
        model: str,
    ) -> None:
        client = client_of(server, recorder)
        fake.script(Reply("", tool_calls=(PARIS, LIMA_TIME), finish_reason="tool_calls"))

        chunks = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Weather in Paris, time in Lima?"}],
            tools=[GET_WEATHER, GET_TIME],
            stream=True,
            stream_options={"include_usage": True},
        )
        calls: dict[int, list[str]] = {}
        finish = None
        async for chunk in chunks:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for piece in choice.delta.tool_calls or ():
                    call = calls.setdefault(piece.index, ["", "", ""])
                    call[0] = piece.id or call[0]
                    if piece.function is not None:
                        call[1] = piece.function.name or call[1]
                        call[2] += piece.function.arguments or ""

        assert finish == "tool_calls"
        assert [(name, json.loads(args)) for _, name, args in calls.values()] == [
            ("get_weather", {"city": "Paris"}),
            ("get_time", {"city": "Lima"}),
        ]
        conversation_id = recorder.completions[0].conversation_id
        assert conversation_id is not None
        stored = await read_back(server, conversation_id)
        assert calls_of(stored.messages[-1]["tool_calls"]) == [
            (call_id, name, args) for call_id, name, args in calls.values()
        ]
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)

    async def test_parse_sends_the_schema_and_returns_the_model(
        self,
        server: LiveServer,
        fake: FakeUpstream,
        recorder: Recorder,
        clean_database: None,
        model: str,
    ) -> None:
        client = client_of(server, recorder)
        forecast = Forecast(city="Paris", temperature_c=21, conditions="sunny", hourly_c=[20.5])
        fake.script(Reply(forecast.model_dump_json()))

        parsed = await client.chat.completions.parse(
            model=model,
            messages=[{"role": "user", "content": "Forecast for Paris"}],
            response_format=Forecast,
        )

        assert parsed.choices[0].message.parsed == forecast
        sent = sent_to_provider(fake, 0)
        if model.startswith("claude"):
            schema = sent["output_config"]["format"]["schema"]
        else:
            schema = sent["response_format"]["json_schema"]["schema"]
        assert set(schema["properties"]) == set(Forecast.model_fields)
        assert_openai_shaped(recorder)

    async def test_an_image_reaches_the_provider_in_its_own_shape(
        self,
        server: LiveServer,
        fake: FakeUpstream,
        recorder: Recorder,
        clean_database: None,
        model: str,
    ) -> None:
        client = client_of(server, recorder)
        data = base64.b64encode(tiny_png()).decode()
        image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
        parts: Any = [{"type": "text", "text": "What colour is this?"}, image]
        fake.script(Reply("Red."))

        answer = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": parts}]
        )

        assert answer.choices[0].message.content == "Red."
        content = sent_to_provider(fake, 0)["messages"][0]["content"]
        if model.startswith("claude"):
            assert content[1] == {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": data},
            }
        else:
            assert content == parts
        conversation_id = recorder.completions[0].conversation_id
        assert conversation_id is not None
        stored = await read_back(server, conversation_id)
        assert stored.messages[0]["parts"] == parts
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)


@pytest.mark.parametrize("model", MODELS)
class TestFrameworksThroughTheProviders:
    async def test_langchain_bound_tools_round_trip(
        self,
        server: LiveServer,
        fake: FakeUpstream,
        recorder: Recorder,
        clean_database: None,
        model: str,
    ) -> None:
        chat = ChatOpenAI(
            model=model,
            base_url=f"{server.base_url}/v1",
            api_key="not-checked",
            max_retries=0,
            http_async_client=recorder.client(),
        ).bind_tools([get_weather])
        fake.script(
            Reply("", tool_calls=(PARIS,), finish_reason="tool_calls"),
            Reply("Sunny in Paris, 21 C."),
        )
        asked = [HumanMessage("What is the weather in Paris?")]

        call = await chat.ainvoke(asked)
        [tool_call] = call.tool_calls
        result = await get_weather.ainvoke(tool_call)
        answer = await chat.ainvoke([*asked, call, result])

        assert (tool_call["name"], tool_call["args"]) == ("get_weather", {"city": "Paris"})
        assert answer.content == "Sunny in Paris, 21 C."
        _, last_id = recorder.conversation_ids()
        stored = await read_back(server, last_id)
        assert stored.roles == ["user", "assistant", "tool", "assistant"]
        assert stored.messages[2]["tool_call_id"] == tool_call["id"]
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)

    async def test_a_pydantic_ai_agent_calls_its_tool_and_returns_its_output_type(
        self,
        server: LiveServer,
        fake: FakeUpstream,
        recorder: Recorder,
        clean_database: None,
        model: str,
    ) -> None:
        provider = OpenAIProvider(
            base_url=f"{server.base_url}/v1", api_key="not-checked", http_client=recorder.client()
        )
        agent = Agent(OpenAIChatModel(model, provider=provider), output_type=Forecast)
        cities: list[str] = []

        @agent.tool_plain
        def get_weather(city: str) -> str:
            """The weather now in a city."""
            cities.append(city)
            return "sunny, 21 C"

        forecast = Forecast(city="Paris", temperature_c=21, conditions="sunny", hourly_c=[21.0])
        fake.script(
            Reply("", tool_calls=(PARIS,), finish_reason="tool_calls"),
            # pydantic-ai's structured output is a call of its `final_result` tool.
            Reply(
                "",
                tool_calls=(FakeToolCall("final_result", forecast.model_dump_json()),),
                finish_reason="tool_calls",
            ),
        )

        result = await agent.run("Forecast for Paris, checking the weather first.")

        assert cities == ["Paris"]
        assert result.output == forecast
        _, last_id = recorder.conversation_ids()
        stored = await read_back(server, last_id)
        assert stored.roles == ["user", "assistant", "tool", "assistant"]
        assert calls_of(stored.messages[3]["tool_calls"])[0][1] == "final_result"
        stored.assert_charged_exactly()
        assert_openai_shaped(recorder)
