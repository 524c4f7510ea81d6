"""The official `openai` SDK's Responses API and the OpenAI Agents SDK against `python -m app`,
answered by the mock and by the fake OpenAI and Anthropic upstreams on loopback: create,
both ways of streaming, a previous_response_id chain of three, a function tool round trip and
an agent with one function tool. Each conversation is read back through /api/v1 with its
exact cost, and every body and stream event the SDKs received is checked against OpenAI's
pinned Responses schemas.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

from tests.e2e.conftest import LiveServer, start_server, stop_server
from tests.e2e.test_clients_openai import read_back
from tests.fakes.upstream import FakeToolCall, FakeUpstream, Reply, running_upstream
from tests.openai_schema.traffic import Recorder

MODELS = ["mock", "gpt-4o", "claude-sonnet-4-6"]
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather now in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


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
        tmp_path_factory.mktemp("responses-clients") / "server.log",
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
    assert_responses_shaped(recording)
    await recording.aclose()


def client_of(server: LiveServer, recorder: Recorder) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{server.base_url}/v1",
        api_key="not-checked",
        max_retries=0,
        http_client=recorder.client(),
    )


def assert_responses_shaped(recorder: Recorder) -> None:
    """Every response body and stream event the client got is valid under the pinned schema."""
    violations = recorder.response_violations()
    assert not violations, "\n\n".join(violations)


def conversation_of(recorder: Recorder) -> str:
    """The one conversation the recorded calls went to (`X-Conversation-ID`)."""
    ids = {e.conversation_id for e in recorder.responses if e.conversation_id is not None}
    [conversation_id] = ids
    return conversation_id


@pytest.mark.parametrize("model", MODELS)
class TestResponsesThroughEachProvider:
    async def test_a_chain_of_three_created_and_streamed_is_one_stored_charged_conversation(
        self, server: LiveServer, fake: FakeUpstream, recorder: Recorder, model: str
    ) -> None:
        client = client_of(server, recorder)
        fake.script(Reply("Red."), Reply("Green."), Reply("Blue."))

        first = await client.responses.create(
            model=model, input="Name a colour.", instructions="One word."
        )
        streamed = await client.responses.create(
            model=model, input="Another.", previous_response_id=first.id, stream=True
        )
        events = [event async for event in streamed]
        second = events[-1].response  # type: ignore[union-attr]
        async with client.responses.stream(
            model=model, input="And one more.", previous_response_id=second.id
        ) as stream:
            async for _ in stream:
                pass
            third = await stream.get_final_response()

        assert [events[0].type, events[-1].type] == ["response.created", "response.completed"]
        assert first.status == second.status == third.status == "completed"
        assert third.previous_response_id == second.id
        stored = await read_back(server, conversation_of(recorder))
        stored.assert_charged_exactly()
        assert stored.roles == ["user", "assistant"] * 3
        replies = [m for m in stored.messages if m["role"] == "assistant"]
        assert [f"resp_{m['id']}" for m in replies] == [first.id, second.id, third.id]
        assert third.output_text == replies[-1]["content"] != ""
        retrieved = await client.responses.retrieve(third.id)
        assert retrieved.output_text == third.output_text
        items = await client.responses.input_items.list(third.id)
        assert [item.type for item in items.data] == ["message"]
        await client.responses.delete(first.id)  # its body is checked by the recorder
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)
        if model != "mock":
            # The provider saw the whole stored chain, in order, before the new input.
            sent = json.dumps(fake.requests[2].json)
            said = ["Name a colour.", "Red.", "Another.", "Green.", "And one more."]
            assert [sent.index(text) for text in said] == sorted(sent.index(t) for t in said)

    async def test_a_function_tool_round_trip_continues_with_previous_response_id(
        self, server: LiveServer, fake: FakeUpstream, recorder: Recorder, model: str
    ) -> None:
        client = client_of(server, recorder)
        fake.script(
            Reply(
                "",
                tool_calls=(FakeToolCall("get_weather", '{"city": "Paris"}'),),
                finish_reason="tool_calls",
            ),
            Reply("Sunny in Paris."),
        )

        first = await client.responses.create(
            model=model, input="Call get_weather for Paris.", tools=[WEATHER]
        )
        [call] = [item for item in first.output if item.type == "function_call"]
        assert call.name == "get_weather"
        second = await client.responses.create(
            model=model,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
            tools=[WEATHER],
        )

        assert second.status == "completed"
        assert second.output_text
        stored = await read_back(server, conversation_of(recorder))
        assert stored.roles == ["user", "assistant", "tool", "assistant"]
        assert stored.messages[1]["tool_calls"][0]["id"] == call.call_id
        stored.assert_charged_exactly()


class TestAgentsSDK:
    async def test_an_agent_with_one_function_tool_runs_through_the_service(
        self, server: LiveServer, recorder: Recorder
    ) -> None:
        set_tracing_disabled(True)
        asked: list[str] = []

        @function_tool
        def get_weather(city: str) -> str:
            """The weather now in a city."""
            asked.append(city)
            return f"Sunny in {city}"

        agent = Agent(
            name="forecaster",
            instructions="Answer with the weather.",
            tools=[get_weather],
            model=OpenAIResponsesModel(model="mock", openai_client=client_of(server, recorder)),
        )
        result = await Runner.run(agent, "Use get_weather for the city Paris.")

        assert asked
        assert "get_weather" in str(result.final_output)
        calls = recorder.responses
        assert len(calls) == 2
        stored = await read_back(server, calls[-1].conversation_id or "")
        assert stored.roles[-2:] == ["tool", "assistant"]
        stored.assert_charged_exactly()

    async def test_an_agent_chaining_with_previous_response_id_continues_one_conversation(
        self, server: LiveServer, recorder: Recorder
    ) -> None:
        set_tracing_disabled(True)

        @function_tool
        def get_time(city: str) -> str:
            """The local time in a city."""
            return f"It is noon in {city}"

        agent = Agent(
            name="clock",
            instructions="Answer with the time.",
            tools=[get_time],
            model=OpenAIResponsesModel(model="mock", openai_client=client_of(server, recorder)),
        )
        result = await Runner.run(
            agent, "Use get_time for the city Lima.", auto_previous_response_id=True
        )

        assert "get_time" in str(result.final_output)
        first, second = (call.request_json() for call in recorder.responses)
        assert second["previous_response_id"].startswith("resp_")
        assert [item["type"] for item in second["input"]] == ["function_call_output"]
        stored = await read_back(server, conversation_of(recorder))
        assert stored.roles == ["user", "assistant", "tool", "assistant"]
        stored.assert_charged_exactly()
