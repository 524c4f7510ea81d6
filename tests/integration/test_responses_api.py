"""/v1/responses over the ASGI app, driven by the official `openai` SDK: input items reach
the provider as the model should see them, previous_response_id continues the stored
conversation server-side, refusals name the Responses field, and every response is a stored,
charged turn readable through /api/v1 and only by its owner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from app.core.config import Settings
from tests.auth import bearer
from tests.fakes.upstream import CutStream, FakeToolCall, FakeUpstream, Reply, Stall
from tests.openai_schema.responses import response_body_errors, stream_event_errors
from tests.sse import parse_frames

StartApp = Callable[..., Any]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city now.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def sdk(client: httpx.AsyncClient, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://testserver/v1", api_key=api_key, http_client=client, max_retries=0
    )


async def stored(client: httpx.AsyncClient, conversation_id: str, **headers: str) -> Any:
    response = await client.get(f"/api/v1/conversations/{conversation_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def assert_costs_add_up(conversation: Any) -> None:
    """The conversation's total is exactly the sum of its messages' costs (Decimal)."""
    costs = [Decimal(str(m["cost_usd"] or 0)) for m in conversation["messages"]]
    assert Decimal(str(conversation["total_cost_usd"])) == sum(costs, Decimal(0))
    assert sum(costs, Decimal(0)) > 0


@pytest.fixture
async def upstream_client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    settings = make_settings(**upstream.provider_settings(), provider_max_retries=0)
    started: httpx.AsyncClient = await start_app(settings)
    return started


class TestCreate:
    async def test_a_text_input_is_a_stored_charged_conversation_read_back_as_the_response(
        self, client: httpx.AsyncClient
    ) -> None:
        raw = await sdk(client).responses.with_raw_response.create(
            model="mock", input="Hello there", instructions="Be brief.", metadata={"k": "v"}
        )
        response = raw.parse()
        conversation = await stored(client, raw.headers["x-conversation-id"])

        [said, reply] = conversation["messages"]
        assert response.id == f"resp_{reply['id']}"
        assert response.status == "completed"
        assert response.output_text == reply["content"] != ""
        assert response.instructions == "Be brief."
        assert response.metadata == {"k": "v"}
        assert response.usage is not None
        assert response.usage.input_tokens == reply["prompt_tokens"]
        assert response.usage.output_tokens == reply["completion_tokens"]
        assert (said["role"], said["content"]) == ("user", "Hello there")
        assert conversation["system_prompt"] == "Be brief."
        assert_costs_add_up(conversation)
        again = await sdk(client).responses.retrieve(response.id)
        assert again.model_dump() == response.model_dump()

    async def test_input_items_reach_the_provider_as_the_chat_it_should_see(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        await sdk(upstream_client).responses.create(
            model="gpt-4o",
            instructions="Be terse.",
            input=[
                {"role": "developer", "content": "Answer in English."},
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
            ],
            tools=[WEATHER],  # type: ignore[list-item]
            max_output_tokens=50,
            temperature=0.5,
        )

        [request] = upstream.requests
        assert request.json["messages"] == [
            {"role": "system", "content": "Be terse.\n\nAnswer in English."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        ]
        assert request.json["tools"][0]["function"]["name"] == "get_weather"
        assert (request.json["max_completion_tokens"], request.json["temperature"]) == (50, 0.5)

    async def test_a_function_call_comes_back_as_a_function_call_item(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(
            Reply(
                "",
                tool_calls=(FakeToolCall("get_weather", '{"city":"Lima"}', "call_9"),),
                finish_reason="tool_calls",
            )
        )
        response = await sdk(upstream_client).responses.create(
            model="gpt-4o",
            input="Weather in Lima?",
            tools=[WEATHER],  # type: ignore[list-item]
        )

        [call] = response.output
        assert call.type == "function_call"
        assert (call.call_id, call.name, call.arguments) == (
            "call_9",
            "get_weather",
            '{"city":"Lima"}',
        )


class TestRefusals:
    @pytest.mark.parametrize(
        ("extra", "param"),
        [
            ({"store": False}, "store"),
            ({"background": True}, "background"),
            ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
            ({"include": ["file_search_call.results"]}, "include"),
            ({"truncation": "auto"}, "truncation"),
            ({"conversation": "conv_1"}, "conversation"),
            ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
            ({"frobnicate": 1}, "frobnicate"),
            ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input.0.type"),
        ],
    )
    async def test_what_cannot_be_honoured_is_a_400_naming_the_field(
        self, client: httpx.AsyncClient, extra: dict[str, Any], param: str
    ) -> None:
        body = {"model": "mock", "input": "Hi", **extra}
        response = await client.post("/v1/responses", json=body)

        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
        listed = await client.get("/api/v1/conversations")
        assert listed.json()["items"] == []

    async def test_an_option_the_provider_cannot_honour_is_named_as_the_client_sent_it(
        self, upstream_client: httpx.AsyncClient
    ) -> None:
        response = await upstream_client.post(
            "/v1/responses",
            json={"model": "claude-sonnet-4-6", "input": "Hi", "text": {"verbosity": "low"}},
        )

        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "text.verbosity"


class TestPreviousResponse:
    async def test_a_chain_of_three_sends_the_whole_stored_conversation_to_the_model(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Reply("One."), Reply("Two."), Reply("Three."))
        client = sdk(upstream_client)
        first = await client.responses.create(model="gpt-4o", input="Count: 1", instructions="A")
        second = await client.responses.create(
            model="gpt-4o", input="Count: 2", previous_response_id=first.id
        )
        raw = await client.responses.with_raw_response.create(
            model="gpt-4o", input="Count: 3", previous_response_id=second.id, instructions="B"
        )

        assert raw.parse().previous_response_id == second.id
        assert upstream.requests[2].json["messages"] == [
            {"role": "system", "content": "B"},  # instructions are not carried over
            {"role": "user", "content": "Count: 1"},
            {"role": "assistant", "content": "One."},
            {"role": "user", "content": "Count: 2"},
            {"role": "assistant", "content": "Two."},
            {"role": "user", "content": "Count: 3"},
        ]
        assert "system" not in [m["role"] for m in upstream.requests[1].json["messages"]]
        conversation = await stored(upstream_client, raw.headers["x-conversation-id"])
        assert [m["content"] for m in conversation["messages"]] == [
            "Count: 1",
            "One.",
            "Count: 2",
            "Two.",
            "Count: 3",
            "Three.",
        ]
        assert_costs_add_up(conversation)

    async def test_continuing_an_earlier_response_branches_the_conversation(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await sdk(client).responses.create(model="mock", input="A")
        await sdk(client).responses.create(model="mock", input="B", previous_response_id=first.id)
        raw = await sdk(client).responses.with_raw_response.create(
            model="mock", input="C", previous_response_id=first.id
        )

        conversation = await stored(client, raw.headers["x-conversation-id"])
        branch = [m["content"] for m in conversation["messages"] if m["role"] == "user"]
        assert branch == ["A", "C"]
        items = await sdk(client).responses.input_items.list(raw.parse().id)
        assert [item.type for item in items.data] == ["message"]

    async def test_a_function_tool_round_trip_continues_with_only_the_output(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(
            Reply(
                "",
                tool_calls=(FakeToolCall("get_weather", '{"city":"Rome"}', "call_r"),),
                finish_reason="tool_calls",
            ),
            Reply("Sunny in Rome."),
        )
        client = sdk(upstream_client)
        first = await client.responses.create(
            model="gpt-4o",
            input="Rome?",
            tools=[WEATHER],  # type: ignore[list-item]
        )
        second = await client.responses.create(
            model="gpt-4o",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": "call_r", "output": "Sunny"}],
            tools=[WEATHER],  # type: ignore[list-item]
        )

        assert second.output_text == "Sunny in Rome."
        sent = upstream.requests[1].json["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
        assert sent[1]["tool_calls"][0]["id"] == "call_r"

    async def test_an_unknown_previous_response_is_a_404_naming_it(
        self, client: httpx.AsyncClient
    ) -> None:
        for unknown in ("resp_00000000-0000-7000-8000-000000000000", "nope"):
            response = await client.post(
                "/v1/responses",
                json={"model": "mock", "input": "Hi", "previous_response_id": unknown},
            )
            assert response.status_code == 404, response.text
            assert response.json()["error"]["param"] == "previous_response_id"


class TestOwnership:
    async def test_another_user_s_response_is_404_everywhere(
        self,
        start_app: StartApp,
        auth_settings: Callable[..., Settings],
        issue_key: Callable[..., Any],
    ) -> None:
        client = await start_app(auth_settings())
        alice, bob = await issue_key("alice"), await issue_key("bob")
        mine = await sdk(client, alice).responses.create(model="mock", input="Secret")

        continued = await client.post(
            "/v1/responses",
            json={"model": "mock", "input": "Hi", "previous_response_id": mine.id},
            headers=bearer(bob),
        )
        assert continued.status_code == 404
        assert continued.json()["error"]["param"] == "previous_response_id"
        for method, path in [
            ("GET", f"/v1/responses/{mine.id}"),
            ("GET", f"/v1/responses/{mine.id}/input_items"),
            ("DELETE", f"/v1/responses/{mine.id}"),
        ]:
            response = await client.request(method, path, headers=bearer(bob))
            assert response.status_code == 404, (method, path)
        assert (await sdk(client, alice).responses.retrieve(mine.id)).id == mine.id


class TestReadAndDelete:
    async def test_input_items_list_what_the_response_was_given(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await sdk(client).responses.create(model="mock", input="One")
        second = await sdk(client).responses.create(
            model="mock",
            previous_response_id=first.id,
            input=[{"role": "user", "content": "Two"}, {"role": "user", "content": "Three"}],
        )

        page = await sdk(client).responses.input_items.list(second.id, order="asc")
        assert [item.content[0].text for item in page.data] == ["Two", "Three"]  # type: ignore[union-attr]
        newest = await client.get(f"/v1/responses/{second.id}/input_items", params={"limit": 1})
        body = newest.json()
        assert (body["object"], body["has_more"]) == ("list", True)
        assert body["first_id"] == body["last_id"] == page.data[-1].id

    async def test_a_deleted_response_is_neither_retrievable_nor_continuable(
        self, client: httpx.AsyncClient
    ) -> None:
        raw = await sdk(client).responses.with_raw_response.create(model="mock", input="Hi")
        response = raw.parse()

        deleted = await client.delete(f"/v1/responses/{response.id}")
        assert deleted.json() == {"id": response.id, "object": "response", "deleted": True}
        assert (await client.get(f"/v1/responses/{response.id}")).status_code == 404
        continued = await client.post(
            "/v1/responses",
            json={"model": "mock", "input": "Hi", "previous_response_id": response.id},
        )
        assert continued.status_code == 404
        # The charged messages stay in the conversation: the spend is the record of the call.
        assert_costs_add_up(await stored(client, raw.headers["x-conversation-id"]))


class TestIdempotencyAndStreaming:
    async def test_an_idempotency_key_replays_the_response_without_a_second_turn(
        self, client: httpx.AsyncClient
    ) -> None:
        body = {"model": "mock", "input": "Once"}
        key = {"Idempotency-Key": "responses-key-1"}
        first = await client.post("/v1/responses", json=body, headers=key)
        again = await client.post("/v1/responses", json=body, headers=key)

        assert again.headers["idempotency-replayed"] == "true"
        assert again.json() == first.json()
        listed = await client.get("/api/v1/conversations")
        assert len(listed.json()["items"]) == 1

    async def test_a_stream_is_typed_events_ending_in_the_stored_response(
        self, client: httpx.AsyncClient
    ) -> None:
        async with client.stream(
            "POST", "/v1/responses", json={"model": "mock", "input": "Hi", "stream": True}
        ) as streamed:
            text = (await streamed.aread()).decode()
            conversation_id = streamed.headers["x-conversation-id"]
        frames = [f for f in parse_frames(text) if f.data is not None]

        kinds = [f.event for f in frames]
        assert kinds[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        assert kinds[-1] == "response.completed"
        events = [json.loads(f.data or "") for f in frames]
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert [e["type"] for e in events] == kinds
        deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        final = events[-1]["response"]
        conversation = await stored(client, conversation_id)
        assert (
            final["output"][0]["content"][0]["text"]
            == deltas
            == conversation["messages"][-1]["content"]
        )
        assert final["id"] == f"resp_{conversation['messages'][-1]['id']}"


class TestStreamedCallsAndFormats:
    async def test_a_streamed_function_call_is_typed_events_valid_under_the_schema(
        self, client: httpx.AsyncClient
    ) -> None:
        body = {"model": "mock", "input": "Call get_weather please.", "tools": [WEATHER]}
        async with client.stream("POST", "/v1/responses", json={**body, "stream": True}) as sse:
            text = (await sse.aread()).decode()
        events = [json.loads(f.data or "") for f in parse_frames(text) if f.data is not None]

        assert [e for e in events if stream_event_errors(e)] == []
        kinds = [e["type"] for e in events]
        assert "response.function_call_arguments.delta" in kinds
        [done] = [e for e in events if e["type"] == "response.function_call_arguments.done"]
        final = events[-1]["response"]
        [call] = [item for item in final["output"] if item["type"] == "function_call"]
        assert (call["name"], call["arguments"]) == ("get_weather", done["arguments"])
        assert kinds[-1] == "response.completed"
        assert response_body_errors("GET", "/v1/responses/x", final) == []

    async def test_text_format_json_schema_answers_json_valid_for_it(
        self, client: httpx.AsyncClient
    ) -> None:
        schema = {
            "type": "object",
            "properties": {"colour": {"type": "string"}},
            "required": ["colour"],
            "additionalProperties": False,
        }
        response = await sdk(client).responses.create(
            model="mock",
            input="A colour?",
            text={"format": {"type": "json_schema", "name": "colour", "schema": schema}},
        )

        assert set(json.loads(response.output_text)) == {"colour"}
        assert response.text is not None
        assert response.text.format is not None
        assert response.text.format.type == "json_schema"


class TestOneRunningReply:
    async def test_a_second_continuation_while_one_runs_is_a_409(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(Reply("First."), Stall(seconds=0.5))
        first = await sdk(upstream_client).responses.create(model="gpt-4o", input="One")
        body = {"model": "gpt-4o", "input": "Two", "previous_response_id": first.id}
        running = asyncio.create_task(upstream_client.post("/v1/responses", json=body))
        await upstream.wait_for_requests(2)

        second = await upstream_client.post("/v1/responses", json={**body, "input": "Three"})

        assert second.status_code == 409, second.text
        assert second.json()["error"]["code"] == "generation_in_progress"
        assert (await running).status_code == 200


class TestFailures:
    async def test_a_reply_cut_mid_stream_ends_with_one_error_event_and_reads_back_failed(
        self, upstream_client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        upstream.script(CutStream(after_chunks=2))
        body = {"model": "gpt-4o", "input": "Hi", "stream": True}
        async with upstream_client.stream("POST", "/v1/responses", json=body) as sse:
            text = (await sse.aread()).decode()
        events = [json.loads(f.data or "") for f in parse_frames(text) if f.data is not None]

        assert [e for e in events if stream_event_errors(e)] == []
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "error"
        assert kinds.count("error") == 1
        assert not {"response.completed", "response.incomplete"} & set(kinds)
        response_id = events[0]["response"]["id"]
        stored = (await upstream_client.get(f"/v1/responses/{response_id}")).json()
        assert stored["status"] == "failed"
        assert stored["error"]["code"] == "server_error"


class TestReasoning:
    async def test_visible_reasoning_streams_as_a_reasoning_item_before_the_text(
        self, client: httpx.AsyncClient
    ) -> None:
        body = {"model": "mock", "input": "Hi", "reasoning": {"effort": "low"}, "stream": True}
        async with client.stream("POST", "/v1/responses", json=body) as sse:
            text = (await sse.aread()).decode()
        events = [json.loads(f.data or "") for f in parse_frames(text) if f.data is not None]

        assert [e for e in events if stream_event_errors(e)] == []
        kinds = [e["type"] for e in events]
        assert kinds.index("response.reasoning_text.delta") < kinds.index(
            "response.output_text.delta"
        )
        final = events[-1]["response"]
        assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
        assert final["reasoning"]["effort"] == "low"
        assert final["usage"]["output_tokens_details"]["reasoning_tokens"] > 0
