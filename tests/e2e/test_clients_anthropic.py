"""The official `anthropic` SDK against `python -m app` on /v1/messages, for the mock and for
real provider wires (the fake OpenAI and Anthropic upstreams on loopback): create, stream, a
tool round trip, count_tokens, a prompt-caching breakpoint and the SDK's error classes. Every
body and stream event the SDK reads is valid under Anthropic's pinned schemas; every
conversation is read back through /api/v1 with its exact cost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest

from tests.anthropic_schema import schema_violations
from tests.e2e.conftest import LiveServer, create_key, start_server, stop_server
from tests.e2e.test_clients_openai import Stored
from tests.fakes.upstream import (
    LONG_TEXT,
    Fail,
    FakeToolCall,
    FakeUpstream,
    Reply,
    StallMidStream,
    running_upstream,
)
from tests.fakes.upstream_anthropic_checks import thinking_signature
from tests.openai_schema.traffic import Recorder

MOCK, OPENAI, CLAUDE = "mock", "gpt-4o", "claude-sonnet-4-6"
MODELS = [MOCK, OPENAI, CLAUDE]
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather now in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
QUESTION: Any = {"role": "user", "content": "What is the weather in Paris?"}


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
        {
            "DATABASE_URL": database_url,
            "AUTH_ENABLED": "true",
            "PROVIDER_MAX_RETRIES": "0",
            **environment,
        },
        tmp_path_factory.mktemp("anthropic-clients") / "server.log",
    )
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture(scope="module")
def key(server: LiveServer, database_url: str) -> str:
    return create_key(database_url, "alice")


@pytest.fixture
async def recorder(fake: FakeUpstream) -> AsyncIterator[Recorder]:
    fake.reset()
    recording = Recorder()
    yield recording
    await recording.aclose()


def client_of(server: LiveServer, key: str, recorder: Recorder) -> anthropic.AsyncAnthropic:
    """The SDK as a user would point it at the service (`ANTHROPIC_BASE_URL`)."""
    return anthropic.AsyncAnthropic(
        base_url=server.base_url, api_key=key, max_retries=0, http_client=recorder.client()
    )


def script(fake: FakeUpstream, model: str, *replies: Reply | Fail) -> None:
    """What the fake upstream answers next (the mock needs no script)."""
    if model != MOCK:
        fake.script(*replies)


async def read_back(server: LiveServer, key: str, conversation_id: str) -> Stored:
    """The conversation and its messages through /api/v1, money read as `Decimal`."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=10) as http:
        conversation = await http.get(f"/api/v1/conversations/{conversation_id}")
        page = await http.get(f"/api/v1/conversations/{conversation_id}/messages")
    assert conversation.status_code == 200, conversation.text
    assert page.status_code == 200, page.text
    return Stored(
        json.loads(conversation.text, parse_float=Decimal),
        json.loads(page.text, parse_float=Decimal)["items"],
    )


def last_conversation(recorder: Recorder) -> str:
    conversation_id = recorder.exchanges[-1].conversation_id
    assert conversation_id is not None
    return conversation_id


def assert_anthropic_shaped(recorder: Recorder) -> None:
    """Every body, event and error the SDK read is valid under the pinned schemas."""
    assert recorder.exchanges, "the SDK sent nothing"
    violations = schema_violations(recorder)
    assert not violations, "\n\n".join(violations)


@pytest.mark.parametrize("model", MODELS)
class TestThroughEveryProvider:
    async def test_create_is_stored_and_charged_as_reported(
        self, server: LiveServer, key: str, fake: FakeUpstream, recorder: Recorder, model: str
    ) -> None:
        script(fake, model, Reply("Bonjour.", prompt_tokens=30, completion_tokens=4))

        message = await client_of(server, key, recorder).messages.create(
            model=model, max_tokens=100, system="Be brief.", messages=[QUESTION]
        )
        stored = await read_back(server, key, last_conversation(recorder))

        [block] = message.content
        assert block.type == "text"
        assert block.text == stored.messages[-1]["content"] != ""
        assert message.stop_reason == "end_turn"
        assert message.id == "msg_" + stored.messages[-1]["id"].replace("-", "")
        assert message.usage.output_tokens == stored.messages[-1]["completion_tokens"]
        if model != MOCK:
            assert (message.usage.input_tokens, block.text) == (30, "Bonjour.")
        assert stored.roles == ["user", "assistant"]
        assert stored.conversation["system_prompt"] == "Be brief."
        stored.assert_charged_exactly()
        assert_anthropic_shaped(recorder)

    async def test_a_stream_reads_as_text_and_as_the_final_message(
        self, server: LiveServer, key: str, fake: FakeUpstream, recorder: Recorder, model: str
    ) -> None:
        script(fake, model, Reply("It is sunny in Paris today.", prompt_tokens=25))

        async with client_of(server, key, recorder).messages.stream(
            model=model, max_tokens=100, messages=[QUESTION]
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        stored = await read_back(server, key, last_conversation(recorder))

        assert text == final.content[0].text == stored.messages[-1]["content"] != ""  # type: ignore[union-attr]
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens == stored.messages[-1]["completion_tokens"]
        stored.assert_charged_exactly()
        assert_anthropic_shaped(recorder)

    async def test_a_tool_round_trip_streams_the_call_and_stores_its_result(
        self, server: LiveServer, key: str, fake: FakeUpstream, recorder: Recorder, model: str
    ) -> None:
        client = client_of(server, key, recorder)
        paris = FakeToolCall("get_weather", '{"city": "Paris"}')
        script(
            fake,
            model,
            Reply("", tool_calls=(paris,), finish_reason="tool_calls", prompt_tokens=40),
            Reply("Sunny in Paris.", prompt_tokens=60, completion_tokens=5),
        )

        async with client.messages.stream(
            model=model,
            max_tokens=200,
            messages=[QUESTION],
            tools=[WEATHER],
            tool_choice={"type": "any"},
        ) as stream:
            first = await stream.get_final_message()
        conversation_id = last_conversation(recorder)
        [use] = [block for block in first.content if block.type == "tool_use"]
        second = await client.messages.create(
            model=model,
            max_tokens=200,
            tools=[WEATHER],
            messages=[
                QUESTION,
                {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}],
                },
            ],
            extra_headers={"X-Conversation-ID": conversation_id},
        )
        stored = await read_back(server, key, conversation_id)

        assert first.stop_reason == "tool_use"
        assert use.name == "get_weather"
        assert isinstance(use.input, dict)
        assert second.stop_reason == "end_turn"
        assert stored.roles == ["user", "assistant", "tool", "assistant"]
        assert stored.messages[1]["tool_calls"][0]["id"] == use.id
        assert stored.messages[2]["tool_call_id"] == use.id
        if model == CLAUDE:
            result = fake.requests[1].json["messages"][-1]["content"][0]
            assert (result["type"], result["tool_use_id"]) == ("tool_result", use.id)
        if model == OPENAI:
            assert fake.requests[1].json["messages"][-1]["tool_call_id"] == use.id
        stored.assert_charged_exactly()
        assert_anthropic_shaped(recorder)

    async def test_count_tokens_calls_no_provider_and_stores_nothing(
        self, server: LiveServer, key: str, fake: FakeUpstream, recorder: Recorder, model: str
    ) -> None:
        client = client_of(server, key, recorder)

        bare = await client.messages.count_tokens(model=model, messages=[QUESTION])
        with_tools = await client.messages.count_tokens(
            model=model, messages=[QUESTION], tools=[WEATHER], system="Be brief."
        )

        assert 0 < bare.input_tokens < with_tools.input_tokens
        assert fake.requests == []
        assert all(e.conversation_id is None for e in recorder.exchanges)
        assert_anthropic_shaped(recorder)

    async def test_an_invalid_body_and_an_unknown_option_are_bad_requests_naming_the_field(
        self, server: LiveServer, key: str, fake: FakeUpstream, recorder: Recorder, model: str
    ) -> None:
        client = client_of(server, key, recorder)

        with pytest.raises(anthropic.BadRequestError) as invalid:
            await client.messages.create(model=model, max_tokens=0, messages=[QUESTION])
        with pytest.raises(anthropic.BadRequestError) as unhonoured:
            await client.messages.create(
                model=model, max_tokens=10, messages=[QUESTION], extra_body={"top_k": 3}
            )

        assert invalid.value.body["error"]["message"].startswith("max_tokens")  # type: ignore[index]
        assert "top_k" in str(unhonoured.value.body)
        assert fake.requests == []
        assert_anthropic_shaped(recorder)


async def test_a_claude_tool_loop_with_thinking_streams_and_sends_back_its_signed_thinking(
    server: LiveServer, key: str, fake: FakeUpstream, recorder: Recorder
) -> None:
    client = client_of(server, key, recorder)
    thought = "Paris, so the weather tool."
    fake.script(
        Reply(
            "",
            reasoning=thought,
            tool_calls=(FakeToolCall("get_weather", '{"city": "Paris"}'),),
            finish_reason="tool_calls",
        ),
        Reply("Sunny in Paris."),
    )
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}

    async with client.messages.stream(
        model=CLAUDE, max_tokens=3000, thinking=thinking, tools=[WEATHER], messages=[QUESTION]
    ) as stream:
        first = await stream.get_final_message()
    [said, use] = first.content
    answer = await client.messages.create(
        model=CLAUDE,
        max_tokens=3000,
        thinking=thinking,
        tools=[WEATHER],
        messages=[
            QUESTION,
            {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}],  # type: ignore[union-attr]
            },
        ],
        extra_headers={"X-Conversation-ID": last_conversation(recorder)},
    )

    assert said.type == "thinking"
    assert (said.thinking, said.signature) == (thought, thinking_signature(thought))
    assert fake.requests[0].json["thinking"] == thinking
    # The fake refuses a thinking block whose signature is not the one it gave.
    assert fake.requests[1].json["messages"][1]["content"][0]["signature"] == said.signature
    assert answer.content[-1].text == "Sunny in Paris."  # type: ignore[union-attr]
    assert_anthropic_shaped(recorder)


async def test_a_cache_control_system_block_reaches_claude_marked_and_is_not_stored(
    server: LiveServer, key: str, fake: FakeUpstream, recorder: Recorder
) -> None:
    fake.script(Reply("Sunny.", prompt_tokens=3000, cached_tokens=2000, cache_write_tokens=500))
    system: list[anthropic.types.TextBlockParam] = [
        {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]

    message = await client_of(server, key, recorder).messages.create(
        model=CLAUDE, max_tokens=100, system=system, messages=[QUESTION]
    )
    stored = await read_back(server, key, last_conversation(recorder))

    assert fake.requests[0].json["system"] == system
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (
        2000,
        500,
    )
    assert stored.conversation["system_prompt"] == "Be brief."
    assert "cache_control" not in json.dumps(stored.messages, default=str)
    stored.assert_charged_exactly()
    assert_anthropic_shaped(recorder)


async def test_output_config_reaches_claude_exactly_as_the_sdk_sent_it(
    server: LiveServer, key: str, fake: FakeUpstream, recorder: Recorder
) -> None:
    fake.script(Reply('{"city": "Paris"}'))
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    output_config: anthropic.types.OutputConfigParam = {
        "effort": "high",
        "format": {"type": "json_schema", "schema": schema},
    }

    message = await client_of(server, key, recorder).messages.create(
        model=CLAUDE, max_tokens=100, messages=[QUESTION], output_config=output_config
    )

    assert fake.requests[0].json["output_config"] == output_config
    assert "thinking" not in fake.requests[0].json
    assert message.content[0].type == "text"
    assert json.loads(message.content[0].text) == {"city": "Paris"}
    assert_anthropic_shaped(recorder)


async def finished(server: LiveServer, key: str, conversation_id: str) -> Stored:
    """The conversation once its reply has ended (fails after 5 s)."""
    async with asyncio.timeout(5):
        while True:
            stored = await read_back(server, key, conversation_id)
            if stored.messages and stored.messages[-1]["status"] != "in_progress":
                # Read again: the reply may have ended between the two reads of this one.
                return await read_back(server, key, conversation_id)
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("model", [OPENAI, CLAUDE])
async def test_a_client_that_leaves_mid_stream_still_gets_its_reply_stored_and_charged(
    server: LiveServer, key: str, fake: FakeUpstream, recorder: Recorder, model: str
) -> None:
    fake.script(StallMidStream(after_chunks=1, seconds=0.3))

    async with client_of(server, key, recorder).messages.stream(
        model=model, max_tokens=500, messages=[QUESTION]
    ) as stream:
        async for event in stream:
            if event.type == "content_block_delta":
                break  # leaves: the context closes the connection
    stored = await finished(server, key, last_conversation(recorder))

    assert stored.messages[-1]["status"] == "completed"
    assert stored.messages[-1]["content"] == LONG_TEXT
    stored.assert_charged_exactly()


class TestErrorClasses:
    async def test_a_bad_key_is_an_authentication_error(
        self, server: LiveServer, recorder: Recorder
    ) -> None:
        with pytest.raises(anthropic.AuthenticationError):
            await client_of(server, "sk-not-a-key", recorder).messages.create(
                model=MOCK, max_tokens=10, messages=[QUESTION]
            )
        assert_anthropic_shaped(recorder)

    async def test_an_unknown_model_is_not_found(
        self, server: LiveServer, key: str, recorder: Recorder
    ) -> None:
        with pytest.raises(anthropic.NotFoundError):
            await client_of(server, key, recorder).messages.create(
                model="no-such-model", max_tokens=10, messages=[QUESTION]
            )
        assert_anthropic_shaped(recorder)

    @pytest.mark.parametrize("model", [OPENAI, CLAUDE])
    async def test_an_upstream_rate_limit_is_a_rate_limit_error(
        self, server: LiveServer, key: str, fake: FakeUpstream, recorder: Recorder, model: str
    ) -> None:
        fake.script(Fail(status=429, retry_after="1"))

        with pytest.raises(anthropic.RateLimitError) as raised:
            await client_of(server, key, recorder).messages.create(
                model=model, max_tokens=10, messages=[QUESTION]
            )

        assert raised.value.response.headers["retry-after"]
        assert_anthropic_shaped(recorder)
