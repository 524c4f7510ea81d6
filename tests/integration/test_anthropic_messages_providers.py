"""/v1/messages routed to OpenAI and Anthropic through the fake upstreams (raw HTTP over the
ASGI app): what each provider receives for Anthropic's fields, the refusals of fields it cannot
honour, thinking blocks sent back to Claude, and a failure after the stream began."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from tests.fakes.upstream import CutStream, FakeToolCall, FakeUpstream, Reply
from tests.sse import parse_frames

StartApp = Callable[..., Any]
URL = "/v1/messages"
CLAUDE, GPT = "claude-sonnet-4-6", "gpt-4o"
HI: Any = [{"role": "user", "content": "Hello there"}]
WEATHER: Any = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture
async def client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    """OpenAI and Anthropic both configured against the fake, with no retries of ours."""
    settings = make_settings(**upstream.provider_settings(), provider_max_retries=0)
    started: httpx.AsyncClient = await start_app(settings)
    return started


async def create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(URL, json={"max_tokens": 100, "messages": HI, **body})


def refusal_of(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"
    message: str = response.json()["error"]["message"]
    return message


class TestToAnthropic:
    async def test_thinking_budget_tools_and_metadata_reach_anthropic_exactly(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        response = await create(
            client,
            model=CLAUDE,
            max_tokens=5000,
            system=[{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
            thinking={"type": "enabled", "budget_tokens": 3000},
            tools=[WEATHER],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
            stop_sequences=["END"],
            metadata={"user_id": "end-user-1"},
        )

        assert response.status_code == 200, response.text
        [sent] = [r.json for r in upstream.requests]
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 3000}
        assert sent["max_tokens"] == 5000  # the budget is inside it, as Anthropic counts
        assert sent["system"] == "Be terse."
        assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
        assert sent["tools"][0]["input_schema"] == WEATHER["input_schema"]
        assert sent["stop_sequences"] == ["END"]
        assert sent["metadata"] == {"user_id": "end-user-1"}

    async def test_thinking_blocks_sent_back_reach_claude_with_their_signature(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(
            Reply(
                "",
                reasoning="Paris, so weather.",
                tool_calls=(FakeToolCall("get_weather", '{"city": "Paris"}'),),
                finish_reason="tool_calls",
            ),
            Reply("Sunny."),
        )
        first = await create(
            client,
            model=CLAUDE,
            max_tokens=3000,
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=[WEATHER],
        )
        content = first.json()["content"]
        [use] = [block for block in content if block["type"] == "tool_use"]
        result: Any = {"type": "tool_result", "tool_use_id": use["id"], "content": "Sunny"}
        second = await create(
            client,
            model=CLAUDE,
            max_tokens=3000,
            thinking={"type": "enabled", "budget_tokens": 1024},
            tools=[WEATHER],
            messages=[
                *HI,
                {"role": "assistant", "content": content},
                {"role": "user", "content": [result]},
            ],
        )

        assert second.status_code == 200, second.text
        assert [b["type"] for b in content] == ["thinking", "tool_use"]
        assert content[0]["signature"]
        assistant = upstream.requests[1].json["messages"][1]["content"]
        assert assistant[0] == content[0]
        assert assistant[-1]["input"] == {"city": "Paris"}

    async def test_adaptive_thinking_reaches_anthropic_as_sent(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        thinking = {"type": "adaptive", "display": "summarized"}
        response = await create(client, model=CLAUDE, thinking=thinking)

        assert response.status_code == 200, response.text
        assert upstream.requests[0].json["thinking"] == thinking

    async def test_a_pdf_document_reaches_claude_as_a_document_and_openai_as_a_file(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        pdf = base64.b64encode(b"%PDF-1.4 tiny").decode()
        document: Any = {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
            "title": "notes.pdf",
        }
        said = [{"role": "user", "content": [document, {"type": "text", "text": "Summarise"}]}]

        to_claude = await create(client, model=CLAUDE, messages=said)
        to_openai = await create(client, model=GPT, messages=said)

        assert (to_claude.status_code, to_openai.status_code) == (200, 200)
        [block, _] = upstream.requests[0].json["messages"][0]["content"]
        assert block == {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": pdf},
            "title": "notes.pdf",
        }
        [part, _] = upstream.requests[1].json["messages"][0]["content"]
        assert part["file"]["file_data"] == f"data:application/pdf;base64,{pdf}"

    @pytest.mark.parametrize(
        ("field", "value"), [("temperature", 0.5), ("top_p", 0.9), ("top_k", 5)]
    )
    async def test_sampling_options_claude_no_longer_takes_are_refused_by_name(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, field: str, value: Any
    ) -> None:
        response = await create(client, model=CLAUDE, **{field: value})

        assert refusal_of(response).startswith(field)
        assert upstream.requests == []


class TestToOpenAI:
    async def test_thinking_becomes_a_reasoning_effort_band_and_tool_choice_openais(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        response = await create(
            client,
            model=GPT,
            max_tokens=10000,
            thinking={"type": "enabled", "budget_tokens": 8000},
            tools=[WEATHER],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            temperature=0.2,
            metadata={"user_id": "end-user-2"},
            stop_sequences=["END"],
            service_tier="standard_only",
        )

        assert response.status_code == 200, response.text
        [sent] = [r.json for r in upstream.requests]
        assert sent["reasoning_effort"] == "medium"
        assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("required", False)
        assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
        assert (sent["temperature"], sent["user"], sent["stop"]) == (0.2, "end-user-2", ["END"])
        assert sent["service_tier"] == "default"

    async def test_tool_use_and_results_become_openai_calls_and_tool_messages(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        call: Any = {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"a": 1}}
        result: Any = {"type": "tool_result", "tool_use_id": "toolu_9", "content": "ok"}
        response = await create(
            client,
            model=GPT,
            tools=[WEATHER],
            messages=[
                *HI,
                {"role": "assistant", "content": [{"type": "text", "text": "Let me see."}, call]},
                {"role": "user", "content": [result, {"type": "text", "text": "And?"}]},
            ],
        )

        assert response.status_code == 200, response.text
        sent = upstream.requests[0].json["messages"]
        assert sent[1]["tool_calls"][0]["function"] == {
            "name": "get_weather",
            "arguments": '{"a": 1}',
        }
        assert sent[2] == {"role": "tool", "tool_call_id": "toolu_9", "content": "ok"}
        assert sent[3]["role"] == "user"

    async def test_top_k_is_refused_by_name(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        response = await create(client, model=GPT, top_k=3)

        assert refusal_of(response).startswith("top_k")
        assert upstream.requests == []


class TestStreamFailure:
    async def test_a_failure_after_the_stream_began_is_an_error_event_that_ends_it(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(CutStream(after_chunks=2))
        async with client.stream(
            "POST", URL, json={"model": GPT, "max_tokens": 100, "messages": HI, "stream": True}
        ) as response:
            text = (await response.aread()).decode()
        frames = [f for f in parse_frames(text) if f.event not in (None, "ping")]

        assert response.status_code == 200
        assert frames[0].event == "message_start"
        assert frames[-1].event == "error"
        error = json.loads(frames[-1].data or "")
        assert error["type"] == "error"
        assert error["error"]["type"] == "api_error"
        assert "message_stop" not in [f.event for f in frames]
