"""/v1/messages and /v1/messages/count_tokens with the mock provider, driven by the official
`anthropic` SDK (and raw HTTP where the SDK would refuse to send) over the ASGI app:
Anthropic's shapes and errors, what is stored and what it cost."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from app.core.config import Settings
from tests.auth import bearer
from tests.sse import parse_frames

StartApp = Callable[..., Any]
URL = "/v1/messages"
HI: Any = [{"role": "user", "content": "Hello there"}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather now in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def sdk(client: httpx.AsyncClient, api_key: str = "unused") -> anthropic.AsyncAnthropic:
    """The official SDK over the test client's app (the SDK takes only `httpx2` clients); no
    retries, so every error reaches the test."""
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    over_asgi = httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=transport.app), base_url="http://testserver"
    )
    return anthropic.AsyncAnthropic(
        base_url="http://testserver", api_key=api_key, http_client=over_asgi, max_retries=0
    )


async def stored(client: httpx.AsyncClient, conversation_id: str, **headers: str) -> Any:
    response = await client.get(f"/api/v1/conversations/{conversation_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def assert_charged_exactly(conversation: Any) -> None:
    """The conversation's total is the exact sum of its messages' costs (Decimal)."""
    costs = [Decimal(str(m["cost_usd"])) for m in conversation["messages"] if m["cost_usd"]]
    assert costs
    assert Decimal(str(conversation["total_cost_usd"])) == sum(costs, Decimal(0))


async def post(client: httpx.AsyncClient, body: Any, path: str = URL, **headers: str) -> Any:
    return await client.post(path, json=body, headers=headers)


def error_of(response: httpx.Response, status: int, error_type: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    message: str = body["error"]["message"]
    return message


class TestCreate:
    async def test_the_reply_is_a_message_stored_and_charged_as_a_conversation(
        self, client: httpx.AsyncClient
    ) -> None:
        raw = await sdk(client).messages.with_raw_response.create(
            model="mock", max_tokens=200, system="Be brief.", messages=HI
        )
        message = await raw.parse()
        conversation = await stored(client, raw.headers["x-conversation-id"])

        reply = conversation["messages"][-1]
        assert message.id == "msg_" + reply["id"].replace("-", "")
        assert (message.type, message.role, message.model) == ("message", "assistant", "mock")
        [block] = message.content
        assert block.type == "text"
        assert block.text == reply["content"] != ""
        assert message.stop_reason == "end_turn"
        assert message.usage.input_tokens == reply["prompt_tokens"] > 0
        assert message.usage.output_tokens == reply["completion_tokens"] > 0
        assert conversation["system_prompt"] == "Be brief."
        assert [m["role"] for m in conversation["messages"]] == ["user", "assistant"]
        assert_charged_exactly(conversation)
        assert raw.headers["request-id"]

    async def test_system_blocks_images_and_history_are_stored_in_order(
        self, client: httpx.AsyncClient
    ) -> None:
        png = (
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJ"
            "RU5ErkJggg=="
        )
        messages: Any = [
            {"role": "user", "content": "First"},
            {"role": "assistant", "content": [{"type": "text", "text": "Answer"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": png},
                    },
                ],
            },
        ]
        raw = await sdk(client).messages.with_raw_response.create(
            model="mock",
            max_tokens=100,
            system=[{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}],
            messages=messages,
        )
        conversation = await stored(client, raw.headers["x-conversation-id"])

        said = conversation["messages"]
        assert [m["role"] for m in said] == ["user", "assistant", "user", "assistant"]
        assert said[2]["parts"][1]["image_url"]["url"] == f"data:image/png;base64,{png}"
        assert conversation["system_prompt"] == "One.\n\nTwo."
        assert (await raw.parse()).content[0].text.startswith("I see 1 image.")  # type: ignore[union-attr]

    async def test_a_tool_round_trip_stores_tool_use_and_result_and_charges_both_replies(
        self, client: httpx.AsyncClient
    ) -> None:
        question: Any = {"role": "user", "content": "What is the weather in Paris?"}
        raw = await sdk(client).messages.with_raw_response.create(
            model="mock",
            max_tokens=200,
            messages=[question],
            tools=[WEATHER],
            tool_choice={"type": "any"},
        )
        first = await raw.parse()
        conversation_id = raw.headers["x-conversation-id"]
        [use] = [b for b in first.content if b.type == "tool_use"]
        second = await sdk(client).messages.create(
            model="mock",
            max_tokens=200,
            tools=[WEATHER],
            messages=[
                question,
                {"role": "assistant", "content": first.content},  # type: ignore[typeddict-item]
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"},
                        {"type": "text", "text": "Thanks"},
                    ],
                },
            ],
            extra_headers={"X-Conversation-ID": conversation_id},
        )
        conversation = await stored(client, conversation_id)

        assert first.stop_reason == "tool_use"
        assert use.name == "get_weather"
        assert isinstance(use.input, dict)
        assert second.stop_reason == "end_turn"
        said = conversation["messages"]
        assert [m["role"] for m in said] == ["user", "assistant", "tool", "user", "assistant"]
        assert said[1]["tool_calls"][0]["id"] == use.id
        assert json.loads(said[1]["tool_calls"][0]["function"]["arguments"]) == use.input
        assert (said[2]["tool_call_id"], said[2]["content"]) == (use.id, "Sunny")
        assert_charged_exactly(conversation)

    async def test_an_error_result_reaches_the_model_marked_as_an_error(
        self, client: httpx.AsyncClient
    ) -> None:
        call: Any = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
        response = await post(
            client,
            {
                "model": "mock",
                "max_tokens": 50,
                "tools": [WEATHER],
                "messages": [
                    {"role": "user", "content": "Weather?"},
                    {"role": "assistant", "content": [call]},
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "toolu_1",
                                "is_error": True,
                                "content": [{"type": "text", "text": "no network"}],
                            }
                        ],
                    },
                ],
            },
        )
        conversation = await stored(client, response.headers["x-conversation-id"])

        assert response.status_code == 200, response.text
        assert conversation["messages"][2]["content"] == "Error: no network"

    async def test_the_same_idempotency_key_replays_the_message_without_a_second_charge(
        self, client: httpx.AsyncClient
    ) -> None:
        body = {"model": "mock", "max_tokens": 50, "messages": HI}
        first = await post(client, body, **{"Idempotency-Key": "k-1"})
        again = await post(client, body, **{"Idempotency-Key": "k-1"})
        conversation = await stored(client, first.headers["x-conversation-id"])

        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["idempotency-replayed"] == "true"
        assert again.headers["x-conversation-id"] == first.headers["x-conversation-id"]
        assert len(conversation["messages"]) == 2
        assert_charged_exactly(conversation)

    async def test_thinking_becomes_a_reasoning_effort_band_and_a_thinking_block(
        self, client: httpx.AsyncClient
    ) -> None:
        message = await sdk(client).messages.create(
            model="mock",
            max_tokens=3000,
            messages=HI,
            thinking={"type": "enabled", "budget_tokens": 2048},
        )

        assert [b.type for b in message.content] == ["thinking", "text"]

    async def test_output_config_effort_reasons_and_its_format_shapes_the_reply(
        self, client: httpx.AsyncClient
    ) -> None:
        # The mock honours both: `effort` as `reasoning_effort` (a line of reasoning),
        # `format` as a json_schema `response_format` (a reply valid for the schema).
        schema: Any = {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        }
        message = await sdk(client).messages.create(
            model="mock",
            max_tokens=3000,
            messages=HI,
            output_config={"effort": "max", "format": {"type": "json_schema", "schema": schema}},
        )

        thinking, text = message.content
        assert (thinking.type, text.type) == ("thinking", "text")
        assert text.type == "text"
        reply = json.loads(text.text)
        assert list(reply) == ["answer"]
        assert isinstance(reply["answer"], str)

    async def test_metadata_user_id_is_stored_and_does_not_change_the_owner(
        self, client: httpx.AsyncClient
    ) -> None:
        raw = await sdk(client).messages.with_raw_response.create(
            model="mock", max_tokens=50, messages=HI, metadata={"user_id": "end-user-7"}
        )
        conversation = await stored(client, raw.headers["x-conversation-id"])

        assert conversation["user_id"] == "anonymous"
        reply = conversation["messages"][-1]
        assert reply["metadata"]["request_metadata"] == {"user_id": "end-user-7"}


class TestStreaming:
    async def test_a_stream_retried_with_its_idempotency_key_replays_the_same_events(
        self, client: httpx.AsyncClient
    ) -> None:
        body = {"model": "mock", "max_tokens": 50, "messages": HI, "stream": True}
        key = {"Idempotency-Key": "stream-1"}
        first = await post(client, body, **key)
        again = await post(client, body, **key)
        conversation = await stored(client, first.headers["x-conversation-id"])

        def events(response: httpx.Response) -> list[tuple[str | None, str | None]]:
            return [(f.event, f.data) for f in parse_frames(response.text) if f.event != "ping"]

        assert events(again) == events(first)
        assert again.headers["x-conversation-id"] == first.headers["x-conversation-id"]
        assert len(conversation["messages"]) == 2
        assert_charged_exactly(conversation)

    async def test_events_come_in_anthropics_order_and_the_stream_is_stored(
        self, client: httpx.AsyncClient
    ) -> None:
        async with client.stream(
            "POST", URL, json={"model": "mock", "max_tokens": 100, "messages": HI, "stream": True}
        ) as response:
            text = (await response.aread()).decode()
        frames = [f for f in parse_frames(text) if f.event is not None]
        conversation = await stored(client, response.headers["x-conversation-id"])

        names = [f.event for f in frames if f.event != "ping"]
        assert names[0] == "message_start"
        assert names[1] == "content_block_start"
        assert set(names[2:-3]) == {"content_block_delta"}
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        for frame in frames:
            assert json.loads(frame.data or "{}")["type"] == frame.event
        deltas = [json.loads(f.data or "") for f in frames if f.event == "content_block_delta"]
        reply = conversation["messages"][-1]
        assert "".join(d["delta"]["text"] for d in deltas) == reply["content"]
        end = json.loads(frames[-2].data or "")
        assert end["delta"]["stop_reason"] == "end_turn"
        assert end["usage"]["output_tokens"] == reply["completion_tokens"]
        assert_charged_exactly(conversation)

    async def test_the_sdk_stream_accumulates_tool_use_and_thinking(
        self, client: httpx.AsyncClient
    ) -> None:
        async with sdk(client).messages.stream(
            model="mock",
            max_tokens=3000,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER],
            tool_choice={"type": "tool", "name": "get_weather"},
            thinking={"type": "enabled", "budget_tokens": 1024},
        ) as stream:
            message = await stream.get_final_message()

        assert [b.type for b in message.content] == ["thinking", "tool_use"]
        assert message.stop_reason == "tool_use"
        assert isinstance(message.content[1].input, dict)  # type: ignore[union-attr]


class TestCountTokens:
    async def test_counts_at_least_what_a_create_is_charged_for_and_stores_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        counted = await sdk(client).messages.count_tokens(
            model="mock", messages=HI, system="Be brief."
        )
        with_tools = await sdk(client).messages.count_tokens(
            model="mock", messages=HI, system="Be brief.", tools=[WEATHER]
        )
        raw = await sdk(client).messages.with_raw_response.create(
            model="mock", max_tokens=50, messages=HI, system="Be brief."
        )
        listed = await client.get("/api/v1/conversations")

        # The service's own count for a model without a tokenizer errs high, never low.
        assert counted.input_tokens >= (await raw.parse()).usage.input_tokens > 0
        assert with_tools.input_tokens > counted.input_tokens
        assert len(listed.json()["items"]) == 1


class TestRefusals:
    @pytest.mark.parametrize(
        ("extra", "field"),
        [
            ({"top_k": 5}, "top_k"),
            ({"unknown_option": 1}, "unknown_option"),
            ({"tool_choice": {"type": "any"}}, "tool_choice"),
            ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
            ({"max_tokens": 0}, "max_tokens"),
            ({"messages": [{"role": "user", "content": []}]}, "messages.0.content"),
            ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
            ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, "thinking.budget_tokens"),
            (
                {"max_tokens": 3000, "thinking": {"type": "adaptive", "display": "omitted"}},
                "thinking.display",
            ),
            ({"messages": [*HI, {"role": "assistant", "content": "Prefill"}]}, "messages"),
        ],
    )
    async def test_a_field_that_cannot_be_honoured_is_a_400_naming_it(
        self, client: httpx.AsyncClient, extra: Any, field: str
    ) -> None:
        body = {"model": "mock", "max_tokens": 50, "messages": HI, **extra}
        response = await post(client, body)

        assert error_of(response, 400, "invalid_request_error").startswith(field)

    async def test_an_invalid_body_is_the_sdks_bad_request_error(
        self, client: httpx.AsyncClient
    ) -> None:
        with pytest.raises(anthropic.BadRequestError) as raised:
            await sdk(client).messages.create(model="mock", max_tokens=-1, messages=HI)
        assert raised.value.status_code == 400

    async def test_an_unknown_model_is_the_sdks_not_found_error(
        self, client: httpx.AsyncClient
    ) -> None:
        with pytest.raises(anthropic.NotFoundError) as raised:
            await sdk(client).messages.create(model="no-such-model", max_tokens=5, messages=HI)
        assert raised.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]

    async def test_a_conversation_that_is_not_the_callers_is_not_found(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await post(
            client,
            {"model": "mock", "max_tokens": 5, "messages": HI},
            **{"X-Conversation-ID": "0190d3b4-0000-7000-8000-000000000000"},
        )

        error_of(response, 404, "not_found_error")

    async def test_a_wrong_method_and_an_unknown_path_are_anthropic_shaped(
        self, client: httpx.AsyncClient
    ) -> None:
        wrong_method = await client.get(URL)
        unknown = await post(client, {}, f"{URL}/nope")

        error_of(wrong_method, 405, "invalid_request_error")
        assert wrong_method.headers["allow"] == "POST"
        error_of(unknown, 404, "not_found_error")

    async def test_the_openai_surface_keeps_openais_errors(self, client: httpx.AsyncClient) -> None:
        response = await post(client, {"model": "nope", "messages": HI}, "/v1/chat/completions")

        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"


class TestAuth:
    async def test_an_issued_key_works_as_x_api_key_and_as_bearer(
        self,
        start_app: StartApp,
        auth_settings: Callable[..., Settings],
        issue_key: Callable[..., Any],
    ) -> None:
        client = await start_app(auth_settings())
        key = await issue_key("alice")

        # Tools honouring ANTHROPIC_API_KEY send `x-api-key`; this SDK sends a bearer token.
        by_header = anthropic.AsyncAnthropic(
            base_url="http://testserver",
            api_key=None,
            default_headers={"x-api-key": key},
            http_client=sdk(client)._client,
            max_retries=0,
        )
        raw = await by_header.messages.with_raw_response.create(
            model="mock", max_tokens=5, messages=HI
        )
        by_bearer = await sdk(client, key).messages.count_tokens(model="mock", messages=HI)

        assert raw.http_request.headers["x-api-key"] == key
        assert "authorization" not in raw.http_request.headers
        conversation = await stored(client, raw.headers["x-conversation-id"], **bearer(key))
        assert conversation["user_id"] == "alice"
        assert by_bearer.input_tokens > 0

    async def test_another_users_conversation_is_not_found(
        self,
        start_app: StartApp,
        auth_settings: Callable[..., Settings],
        issue_key: Callable[..., Any],
    ) -> None:
        client = await start_app(auth_settings())
        alice, bob = await issue_key("alice"), await issue_key("bob")
        raw = await sdk(client, alice).messages.with_raw_response.create(
            model="mock", max_tokens=5, messages=HI
        )

        with pytest.raises(anthropic.NotFoundError):
            await sdk(client, bob).messages.create(
                model="mock",
                max_tokens=5,
                messages=HI,
                extra_headers={"X-Conversation-ID": raw.headers["x-conversation-id"]},
            )

    async def test_a_bad_key_is_the_sdks_authentication_error(
        self, start_app: StartApp, auth_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(auth_settings())

        with pytest.raises(anthropic.AuthenticationError) as raised:
            await sdk(client, "sk-not-a-key").messages.create(
                model="mock", max_tokens=5, messages=HI
            )
        assert raised.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]

    async def test_a_spent_budget_is_a_rate_limit_error_not_retried(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(user_budget_usd=0))

        response = await post(client, {"model": "mock", "max_tokens": 5, "messages": HI})

        error_of(response, 429, "rate_limit_error")
        assert response.headers["x-should-retry"] == "false"


class TestLimits:
    async def test_too_many_requests_is_the_sdks_rate_limit_error(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(rate_limit_rpm=1))
        await sdk(client).messages.count_tokens(model="mock", messages=HI)

        with pytest.raises(anthropic.RateLimitError) as raised:
            await sdk(client).messages.count_tokens(model="mock", messages=HI)
        assert raised.value.response.headers["retry-after"]

    async def test_a_body_over_the_limit_is_the_sdks_content_too_large_status(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(max_body_bytes=2048))
        big = [{"role": "user", "content": "x" * 4096}]

        response = await post(client, {"model": "mock", "max_tokens": 5, "messages": big})

        # The pinned SDK's error union has no `request_too_large`: the status says it.
        error_of(response, 413, "invalid_request_error")


class TestLogs:
    async def test_no_message_text_or_key_reaches_a_log_line(
        self,
        start_app: StartApp,
        auth_settings: Callable[..., Settings],
        issue_key: Callable[..., Any],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        client = await start_app(auth_settings())
        key = await issue_key("alice")
        marker = "zebra-marker-anthropic-7c42"
        said = [{"role": "user", "content": marker}]
        body = {"model": "mock", "max_tokens": 50, "system": marker, "messages": said}
        capsys.readouterr()

        ok = await post(client, body, **{"x-api-key": key})
        streamed = await post(client, {**body, "stream": True}, **{"x-api-key": key})
        invalid = await post(client, {**body, "top_k": marker}, **{"x-api-key": key})
        refused = await post(client, body, **{"x-api-key": marker})

        assert [ok.status_code, streamed.status_code] == [200, 200]
        assert [invalid.status_code, refused.status_code] == [400, 401]
        assert marker not in invalid.text
        logged = capsys.readouterr().out
        assert '"request"' in logged
        assert marker not in logged
        assert key not in logged
