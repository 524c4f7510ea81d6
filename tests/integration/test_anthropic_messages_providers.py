"""/v1/messages routed to OpenAI and Anthropic through the fake upstreams (raw HTTP over the
ASGI app): what each provider receives for Anthropic's fields, the refusals of fields it cannot
honour, thinking blocks sent back to Claude, prompt-caching breakpoints (sent to Claude where
the client put them, to no one else, never stored), and a failure after the stream began."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.providers.mock import MockProvider
from app.providers.registry import ProviderRegistry
from tests.fakes.providers import FAKE_MODEL, FailingProvider
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
        assert sent["system"] == [
            {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}
        ]
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


EPHEMERAL: Any = {"type": "ephemeral"}
ONE_HOUR: Any = {"type": "ephemeral", "ttl": "1h"}


def marked(text: str, control: Any = EPHEMERAL) -> Any:
    return {"type": "text", "text": text, "cache_control": control}


def tool_loop(result: Any) -> Any:
    """A question, Claude's call, and the user turn that answers it with `result`."""
    call: Any = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    return [*HI, {"role": "assistant", "content": [call]}, {"role": "user", "content": [result]}]


async def stored_messages(client: httpx.AsyncClient, response: httpx.Response) -> str:
    """The conversation's stored messages as /api/v1 serves them (raw JSON text)."""
    conversation_id = response.headers["x-conversation-id"]
    page = await client.get(f"/api/v1/conversations/{conversation_id}/messages")
    assert page.status_code == 200, page.text
    return page.text


class TestCacheBreakpointsToClaude:
    """`cache_control` reaches Claude on the block that ends the prefix the client marked."""

    async def test_a_system_breakpoint_sends_the_system_as_blocks_marked_where_it_was(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        system = [
            {"type": "text", "text": "You are a coding agent."},
            marked("Here are the rules."),
            {"type": "text", "text": "Today is Monday."},
        ]

        response = await create(client, model=CLAUDE, system=system)

        assert response.status_code == 200, response.text
        # Unmarked blocks before a marked one are joined to it as every system prompt is.
        assert upstream.requests[0].json["system"] == [
            marked("You are a coding agent.\n\nHere are the rules."),
            {"type": "text", "text": "Today is Monday."},
        ]

    async def test_a_tool_definition_breakpoint_marks_that_tool(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        clock: Any = {"name": "get_time", "input_schema": {"type": "object"}}

        response = await create(
            client, model=CLAUDE, tools=[WEATHER, {**clock, "cache_control": EPHEMERAL}]
        )

        assert response.status_code == 200, response.text
        tools = upstream.requests[0].json["tools"]
        assert [tool.get("cache_control") for tool in tools] == [None, EPHEMERAL]

    async def test_a_breakpoint_on_the_last_block_of_the_last_user_turn(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        said = [
            *HI,
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": [{"type": "text", "text": "Go on. "}, marked("Now.")]},
        ]

        response = await create(client, model=CLAUDE, messages=said)

        assert response.status_code == 200, response.text
        sent = upstream.requests[0].json["messages"]
        assert sent[:2] == [
            {"role": "user", "content": "Hello there"},
            {"role": "assistant", "content": "Hi."},
        ]
        assert sent[2] == {"role": "user", "content": [marked("Go on. Now.")]}

    async def test_a_breakpoint_on_a_middle_block_of_a_user_turn_ends_the_prefix_there(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        image: Any = {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
        text_only = [
            {"type": "text", "text": "Context. "},
            marked("Docs. "),
            marked("Ask?", ONE_HOUR),
        ]
        text_only.append({"type": "text", "text": " Really?"})
        with_image = [{"type": "text", "text": "See:"}, {**image, "cache_control": EPHEMERAL}]
        with_image.append({"type": "text", "text": "What is it?"})

        texts = await create(
            client, model=CLAUDE, messages=[{"role": "user", "content": text_only}]
        )
        parts = await create(
            client, model=CLAUDE, messages=[{"role": "user", "content": with_image}]
        )

        assert (texts.status_code, parts.status_code) == (200, 200)
        assert upstream.requests[0].json["messages"][0]["content"] == [
            marked("Context. Docs. "),
            marked("Ask?", ONE_HOUR),
            {"type": "text", "text": " Really?"},
        ]
        assert upstream.requests[1].json["messages"][0]["content"] == [
            {"type": "text", "text": "See:"},
            {**image, "cache_control": EPHEMERAL},
            {"type": "text", "text": "What is it?"},
        ]

    async def test_a_breakpoint_on_a_tool_result_and_one_inside_it_mark_the_result(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        result: Any = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "21 C"}
        inside: Any = {**result, "content": [marked("21 C", ONE_HOUR)]}

        on_result = await create(
            client,
            model=CLAUDE,
            tools=[WEATHER],
            messages=tool_loop({**result, "cache_control": EPHEMERAL}),
        )
        on_its_text = await create(
            client, model=CLAUDE, tools=[WEATHER], messages=tool_loop(inside)
        )

        assert (on_result.status_code, on_its_text.status_code) == (200, 200)
        sent = [r.json["messages"][2]["content"] for r in upstream.requests]
        assert sent == [
            [{**result, "cache_control": EPHEMERAL}],
            [{**result, "cache_control": ONE_HOUR}],
        ]

    async def test_a_one_hour_ttl_and_a_tool_use_breakpoint_reach_a_stream(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        call: Any = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
        said = tool_loop({"type": "tool_result", "tool_use_id": "toolu_1", "content": "21 C"})
        said[1] = {"role": "assistant", "content": [{**call, "cache_control": EPHEMERAL}]}

        response = await create(
            client,
            model=CLAUDE,
            stream=True,
            system=[marked("Be terse.", ONE_HOUR)],
            tools=[WEATHER],
            messages=said,
        )

        assert response.status_code == 200, response.text
        [sent] = [r.json for r in upstream.requests]
        assert sent["stream"] is True
        assert sent["system"] == [marked("Be terse.", ONE_HOUR)]
        assert sent["messages"][1]["content"] == [{**call, "cache_control": EPHEMERAL}]

    async def test_more_than_four_breakpoints_is_a_400_naming_cache_control_and_nothing_runs(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        five = [marked(f"Block {n}. ") for n in range(5)]

        response = await create(client, model=CLAUDE, messages=[{"role": "user", "content": five}])
        on_openai = await create(client, model=GPT, messages=[{"role": "user", "content": five}])

        assert refusal_of(response) == (
            "cache_control: A maximum of 4 blocks with cache_control may be provided. Found 5."
        )
        assert refusal_of(on_openai).startswith("cache_control")
        assert upstream.requests == []
        listed = await client.get("/api/v1/conversations")
        assert listed.json()["items"] == []

    async def test_breakpoints_are_never_stored_nor_branch_a_repeated_history(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        image: Any = {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
        first_turn: Any = {
            "role": "user",
            "content": [{**image, "cache_control": EPHEMERAL}, marked("What is it?")],
        }
        upstream.script(Reply("A cat."), Reply("Yes."))

        first = await create(
            client, model=CLAUDE, system=[marked("Be terse.")], messages=[first_turn]
        )
        # The next turn repeats the history, its breakpoints kept, and marks the new turn too.
        again = await client.post(
            URL,
            json={
                "model": CLAUDE,
                "max_tokens": 100,
                "messages": [
                    first_turn,
                    {"role": "assistant", "content": "A cat."},
                    {"role": "user", "content": [marked("Sure?")]},
                ],
            },
            headers={"X-Conversation-ID": first.headers["x-conversation-id"]},
        )

        assert (first.status_code, again.status_code) == (200, 200), again.text
        stored = await stored_messages(client, again)
        assert "cache_control" not in stored
        items = json.loads(stored)["items"]
        # The repeated turns matched the stored ones: the new ones follow the first reply.
        assert [m["role"] for m in items] == ["user", "assistant", "user", "assistant"]
        assert items[1]["id"].replace("-", "") == first.json()["id"].removeprefix("msg_")
        assert items[0]["parts"][0]["image_url"] == {"url": "https://x.test/a.png"}
        assert upstream.requests[0].json["messages"][0]["content"][0]["cache_control"] == EPHEMERAL

    async def test_cache_reads_and_writes_of_a_marked_prompt_are_charged_at_their_rates(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(
            Reply(
                "Cached.",
                prompt_tokens=10_000,
                cached_tokens=6_000,
                cache_write_tokens=2_000,
                completion_tokens=500,
            )
        )

        response = await create(client, model=CLAUDE, system=[marked("Be terse.")])

        assert response.status_code == 200, response.text
        usage = response.json()["usage"]
        assert (usage["cache_read_input_tokens"], usage["cache_creation_input_tokens"]) == (
            6_000,
            2_000,
        )
        assert usage["input_tokens"] == 2_000
        # 2,000 uncached at $3, 6,000 read at $0.30, 2,000 written at $3.75, 500 out at $15.
        expected = (
            2_000 * Decimal("3")
            + 6_000 * Decimal("0.3")
            + 2_000 * Decimal("3.75")
            + 500 * Decimal("15")
        ) / 1_000_000
        items = json.loads(await stored_messages(client, response), parse_float=Decimal)["items"]
        reply = items[-1]
        assert (reply["cached_tokens"], reply["cache_write_tokens"]) == (6_000, 2_000)
        assert reply["cost_usd"] == expected == Decimal("0.0228")

    @pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
    async def test_one_hour_cache_writes_are_charged_at_twice_the_input_price(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
    ) -> None:
        upstream.script(
            Reply(
                "Cached for an hour.",
                prompt_tokens=10_000,
                cached_tokens=6_000,
                cache_write_tokens=2_000,
                cache_write_1h_tokens=1_500,
                completion_tokens=500,
            )
        )

        response = await create(
            client, model=CLAUDE, system=[marked("Be terse.", ONE_HOUR)], stream=stream
        )

        assert response.status_code == 200, response.text
        # 2,000 uncached at $3, 6,000 read at $0.30, 500 written for 5 minutes at $3.75,
        # 1,500 for an hour at $6 (genai-prices' rate for Claude Sonnet), 500 out at $15.
        expected = (
            2_000 * Decimal("3")
            + 6_000 * Decimal("0.3")
            + 500 * Decimal("3.75")
            + 1_500 * Decimal("6")
            + 500 * Decimal("15")
        ) / 1_000_000
        items = json.loads(await stored_messages(client, response), parse_float=Decimal)["items"]
        reply = items[-1]
        assert (reply["cached_tokens"], reply["cache_write_tokens"]) == (6_000, 2_000)
        assert reply["cache_write_1h_tokens"] == 1_500
        assert reply["cost_usd"] == expected == Decimal("0.026175")
        # The bill can be explained from what is stored: each rate it was charged at.
        assert reply["pricing"]["cache_write_per_mtok"] == Decimal("3.75")
        assert reply["pricing"]["cache_write_1h_per_mtok"] == Decimal("6")
        if not stream:
            assert response.json()["usage"]["cache_creation"] == {
                "ephemeral_5m_input_tokens": 500,
                "ephemeral_1h_input_tokens": 1_500,
            }

    async def test_count_tokens_takes_breakpoints_and_counts_as_without_them(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        bare: Any = {"model": CLAUDE, "system": "Be terse.", "tools": [WEATHER], "messages": HI}
        with_marks = {
            **bare,
            "system": [marked("Be terse.")],
            "tools": [{**WEATHER, "cache_control": ONE_HOUR}],
            "messages": [{"role": "user", "content": [marked("Hello there")]}],
        }

        counted = await client.post(f"{URL}/count_tokens", json=bare)
        counted_marked = await client.post(f"{URL}/count_tokens", json=with_marks)

        assert (counted.status_code, counted_marked.status_code) == (200, 200), counted_marked.text
        assert counted_marked.json() == counted.json()
        assert upstream.requests == []


class TestCacheBreakpointsToOpenAI:
    async def test_breakpoints_are_accepted_and_nothing_of_them_is_sent(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        result: Any = {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": [marked("21 C")],
        }
        said = tool_loop(result)
        said[0] = {"role": "user", "content": [marked("Hello there", ONE_HOUR)]}

        response = await create(
            client,
            model=GPT,
            system=[marked("Be terse.")],
            tools=[{**WEATHER, "cache_control": EPHEMERAL}],
            messages=said,
        )

        assert response.status_code == 200, response.text
        [sent] = upstream.requests
        assert "cache_control" not in json.dumps(sent.json)
        assert sent.json["messages"][0] == {"role": "system", "content": "Be terse."}
        assert "cache_control" not in await stored_messages(client, response)


ANSWER_SCHEMA: Any = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}
FORMAT: Any = {"type": "json_schema", "schema": ANSWER_SCHEMA}


class TestOutputConfig:
    """Anthropic's `output_config`: exactly as sent to Claude; `response_format` and
    `reasoning_effort` to OpenAI; a 400 naming the field where it cannot be honoured."""

    @pytest.mark.parametrize(
        ("output_config", "stream"),
        [
            ({"effort": "max"}, False),
            ({"format": FORMAT}, False),
            ({"effort": "low", "format": FORMAT}, False),
            ({"effort": "low", "format": FORMAT}, True),
            ({"effort": None, "format": FORMAT}, True),
        ],
    )
    async def test_claude_gets_output_config_exactly_as_sent(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, output_config: Any, stream: bool
    ) -> None:
        response = await create(client, model=CLAUDE, output_config=output_config, stream=stream)

        assert response.status_code == 200, response.text
        [sent] = [r.json for r in upstream.requests]
        assert sent["output_config"] == output_config
        assert sent.get("stream", False) is stream
        assert "thinking" not in sent  # an effort is not turned into a budget as well

    async def test_output_config_and_thinking_both_reach_claude(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        thinking = {"type": "enabled", "budget_tokens": 2000}
        response = await create(
            client,
            model=CLAUDE,
            max_tokens=4000,
            thinking=thinking,
            output_config={"effort": "high", "format": FORMAT},
        )

        assert response.status_code == 200, response.text
        [sent] = [r.json for r in upstream.requests]
        assert (sent["thinking"], sent["max_tokens"]) == (thinking, 4000)
        assert sent["output_config"] == {"effort": "high", "format": FORMAT}

    @pytest.mark.parametrize("stream", [False, True])
    async def test_openai_gets_a_json_schema_response_format_and_a_reasoning_effort(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, stream: bool
    ) -> None:
        response = await create(
            client, model=GPT, output_config={"effort": "high", "format": FORMAT}, stream=stream
        )

        assert response.status_code == 200, response.text
        [sent] = [r.json for r in upstream.requests]
        assert sent["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": ANSWER_SCHEMA},
        }
        assert sent["reasoning_effort"] == "high"
        assert "output_config" not in sent

    @pytest.mark.parametrize("effort", ["low", "medium", "xhigh", "max"])
    async def test_each_effort_reaches_openai_as_the_same_reasoning_effort(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, effort: str
    ) -> None:
        # OpenAI's own `reasoning_effort` has all five words (the pinned SDK's ReasoningEffort),
        # and its provider honours every value, as /v1/chat/completions sends them.
        response = await create(client, model=GPT, output_config={"effort": effort})

        assert response.status_code == 200, response.text
        [sent] = [r.json for r in upstream.requests]
        assert sent["reasoning_effort"] == effort
        assert "response_format" not in sent

    async def test_an_effort_outranks_the_band_of_a_thinking_budget_on_openai(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        response = await create(
            client,
            model=GPT,
            max_tokens=10000,
            thinking={"type": "enabled", "budget_tokens": 8000},  # alone: "medium"
            output_config={"effort": "low"},
        )

        assert response.status_code == 200, response.text
        assert upstream.requests[0].json["reasoning_effort"] == "low"

    @pytest.mark.parametrize(
        ("output_config", "field"),
        [
            ({"effort": "high", "verbosity": "low"}, "output_config.verbosity"),
            ({"format": {**FORMAT, "name": "answer"}}, "output_config.format.name"),
            ({"format": {"type": "json_schema"}}, "output_config.format.schema"),
            ({"format": {"type": "json_object", "schema": {}}}, "output_config.format.type"),
            ({"effort": "minimal"}, "output_config.effort"),
        ],
    )
    @pytest.mark.parametrize("model", [CLAUDE, GPT])
    async def test_a_field_or_value_the_sdk_lacks_is_a_400_naming_it(
        self,
        client: httpx.AsyncClient,
        upstream: FakeUpstream,
        output_config: Any,
        field: str,
        model: str,
    ) -> None:
        response = await create(client, model=model, output_config=output_config)

        assert refusal_of(response).startswith(field)
        assert upstream.requests == []

    @pytest.mark.parametrize("model", [CLAUDE, GPT])
    async def test_count_tokens_takes_output_config_checked_as_a_create_would_be(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, model: str
    ) -> None:
        bare: Any = {"model": model, "messages": HI}
        output_config = {"effort": "high", "format": FORMAT}

        counted = await client.post(f"{URL}/count_tokens", json=bare)
        configured = await client.post(
            f"{URL}/count_tokens", json={**bare, "output_config": output_config}
        )

        assert (counted.status_code, configured.status_code) == (200, 200), configured.text
        # Like response_format on /v1/chat/completions, the schema is not counted.
        assert configured.json() == counted.json()
        assert upstream.requests == []


class TestOutputConfigRefused:
    """On a provider that honours neither `reasoning_effort` nor `response_format` (a test
    provider declaring no options): each half is a 400 naming it, nothing runs or is kept."""

    @pytest.mark.parametrize(
        ("output_config", "field"),
        [({"effort": "low"}, "output_config.effort"), ({"format": FORMAT}, "output_config.format")],
    )
    async def test_what_the_provider_cannot_honour_is_a_400_naming_it(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        output_config: Any,
        field: str,
    ) -> None:
        provider = FailingProvider(RuntimeError("must not be called"))
        # The default provider, so its model is found by name (as a self-hosted server's).
        registry = ProviderRegistry({"mock": MockProvider(), provider.name: provider}, "fake")
        client = await start_app(make_settings(), providers=registry)

        response = await create(client, model=FAKE_MODEL, output_config=output_config)

        assert refusal_of(response).startswith(field)
        assert provider.calls == 0
        listed = await client.get("/api/v1/conversations")
        assert listed.json()["items"] == []
