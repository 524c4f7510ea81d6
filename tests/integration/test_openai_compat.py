"""/v1/chat/completions and /v1/models with the mock provider, driven by the official
`openai` SDK over the ASGI app: OpenAI's shapes, what is stored, and OpenAI's errors."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from app.core.config import Settings
from tests.auth import bearer
from tests.sse import parse_frames

StartApp = Callable[..., Any]
URL = "/v1/chat/completions"
HI = [{"role": "user", "content": "Hello there"}]


def sdk(client: httpx.AsyncClient, api_key: str = "unused") -> openai.AsyncOpenAI:
    """The official SDK over the test client; no retries, so every error reaches the test."""
    return openai.AsyncOpenAI(
        base_url="http://testserver/v1", api_key=api_key, http_client=client, max_retries=0
    )


async def stored(client: httpx.AsyncClient, conversation_id: str, **headers: str) -> Any:
    response = await client.get(f"/api/v1/conversations/{conversation_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


class TestCompletion:
    async def test_the_reply_is_a_chat_completion_stored_and_charged_as_a_conversation(
        self, client: httpx.AsyncClient
    ) -> None:
        raw = await sdk(client).chat.completions.with_raw_response.create(
            model="mock", messages=[{"role": "user", "content": "Hello there"}]
        )
        completion = raw.parse()
        conversation = await stored(client, raw.headers["x-conversation-id"])

        reply = conversation["messages"][-1]
        assert completion.object == "chat.completion"
        assert completion.id == f"chatcmpl-{reply['id']}"
        assert completion.model == "mock"
        [choice] = completion.choices
        assert choice.message.role == "assistant"
        assert choice.message.content == reply["content"] != ""
        assert choice.finish_reason == "stop"
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == reply["prompt_tokens"] > 0
        assert completion.usage.completion_tokens == reply["completion_tokens"] > 0
        assert completion.usage.total_tokens == reply["total_tokens"]
        assert completion.usage.prompt_tokens_details is not None
        assert completion.usage.prompt_tokens_details.cached_tokens == 0
        assert [(m["role"], m["content"]) for m in conversation["messages"]] == [
            ("user", "Hello there"),
            ("assistant", choice.message.content),
        ]
        assert conversation["title"] == "Hello there"
        assert (conversation["provider"], conversation["model"]) == ("mock", "mock")
        assert Decimal(str(reply["cost_usd"])) > 0
        assert Decimal(str(conversation["total_cost_usd"])) == Decimal(str(reply["cost_usd"]))

    async def test_system_messages_become_the_system_prompt_and_history_is_stored_in_order(
        self, client: httpx.AsyncClient
    ) -> None:
        messages: list[Any] = [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "First "},
                    {"type": "text", "text": "question"},
                ],
            },
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "Second question"},
        ]
        raw = await sdk(client).chat.completions.with_raw_response.create(
            model="mock", messages=messages, temperature=0.5, top_p=0.9, max_completion_tokens=200
        )
        conversation = await stored(client, raw.headers["x-conversation-id"])

        assert conversation["system_prompt"] == "Be brief."
        assert conversation["title"] == "First question"
        assert [(m["role"], m["content"]) for m in conversation["messages"][:3]] == [
            ("user", "First question"),
            ("assistant", "First answer"),
            ("user", "Second question"),
        ]
        assert conversation["message_count"] == 4

    async def test_x_conversation_id_appends_only_the_new_user_messages_and_the_reply(
        self, client: httpx.AsyncClient
    ) -> None:
        api = sdk(client)
        first = await api.chat.completions.with_raw_response.create(model="mock", messages=HI)
        conversation_id = first.headers["x-conversation-id"]
        answer = first.parse().choices[0].message.content
        follow_up: list[Any] = [
            *HI,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "Tell me more"},
        ]

        second = await api.chat.completions.with_raw_response.create(
            model="mock",
            messages=follow_up,
            extra_headers={"X-Conversation-ID": conversation_id},
        )

        assert second.headers["x-conversation-id"] == conversation_id
        conversation = await stored(client, conversation_id)
        assert [(m["role"], m["content"]) for m in conversation["messages"]] == [
            ("user", "Hello there"),
            ("assistant", answer),
            ("user", "Tell me more"),
            ("assistant", second.parse().choices[0].message.content),
        ]
        assert conversation["message_count"] == 4

    async def test_an_explicit_provider_slash_model_is_routed_to_that_provider(
        self, client: httpx.AsyncClient
    ) -> None:
        completion = await sdk(client).chat.completions.create(model="mock/mock", messages=HI)

        assert completion.model == "mock"

    async def test_an_idempotency_key_replays_the_first_completion_without_a_second_turn(
        self, client: httpx.AsyncClient
    ) -> None:
        body = {"model": "mock", "messages": HI}
        key = {"Idempotency-Key": "chat-key-1"}

        first = await client.post(URL, json=body, headers=key)
        again = await client.post(URL, json=body, headers=key)

        assert first.status_code == again.status_code == 200
        assert again.json() == first.json()
        assert again.headers["idempotency-replayed"] == "true"
        assert again.headers["x-conversation-id"] == first.headers["x-conversation-id"]
        listed = (await client.get("/api/v1/conversations")).json()["items"]
        assert len(listed) == 1

    async def test_a_new_conversation_with_a_thousand_messages_is_stored_whole_and_in_order(
        self, client: httpx.AsyncClient
    ) -> None:
        # The most a client may send (MAX_MESSAGES), ending with the user's turn.
        said = [
            {"role": "user" if n % 2 == 0 else "assistant", "content": f"turn {n} 🎉"}
            for n in range(999)
        ]

        response = await client.post(URL, json={"model": "mock", "messages": said})

        assert response.status_code == 200, response.text
        conversation_id = response.headers["x-conversation-id"]
        conversation = await stored(client, conversation_id)
        first = await client.get(
            f"/api/v1/conversations/{conversation_id}/messages", params={"limit": 200}
        )
        assert conversation["message_count"] == 1000
        contents = [m["content"] for m in first.json()["items"]]
        assert contents == [f"turn {n} 🎉" for n in range(200)]


class TestStreaming:
    async def test_chunks_open_with_the_role_then_content_finish_usage_and_done(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            URL,
            json={
                "model": "mock",
                "messages": HI,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [f for f in parse_frames(response.text) if f.data is not None]
        assert frames[-1].data == "[DONE]"
        chunks = [f.json() for f in frames[:-1]]
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert len({c["id"] for c in chunks}) == 1
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        finish, usage = chunks[-2], chunks[-1]
        assert finish["choices"][0]["finish_reason"] == "stop"
        assert finish["choices"][0]["delta"] == {}
        assert usage["choices"] == []
        text = "".join(c["choices"][0]["delta"]["content"] for c in chunks[1:-2])
        conversation = await stored(client, response.headers["x-conversation-id"])
        reply = conversation["messages"][-1]
        assert chunks[0]["id"] == f"chatcmpl-{reply['id']}"
        assert (text, reply["status"]) == (reply["content"], "completed")
        assert usage["usage"]["prompt_tokens"] == reply["prompt_tokens"]
        assert usage["usage"]["completion_tokens"] == reply["completion_tokens"]
        assert usage["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}

    async def test_the_sdk_stream_reassembles_the_stored_reply_without_usage_unless_asked(
        self, client: httpx.AsyncClient
    ) -> None:
        stream = await sdk(client).chat.completions.create(model="mock", messages=HI, stream=True)
        pieces, usages = [], []
        async for chunk in stream:
            usages.append(chunk.usage)
            pieces.extend(choice.delta.content or "" for choice in chunk.choices)

        listed = (await client.get("/api/v1/conversations")).json()["items"]
        conversation = await stored(client, listed[0]["id"])
        assert "".join(pieces) == conversation["messages"][-1]["content"]
        assert usages
        assert all(usage is None for usage in usages)

    async def test_an_idempotency_key_replays_the_same_reply_s_stream(
        self, client: httpx.AsyncClient
    ) -> None:
        body = {"model": "mock", "messages": HI, "stream": True}
        key = {"Idempotency-Key": "chat-stream-key-1"}

        first = await client.post(URL, json=body, headers=key)
        again = await client.post(URL, json=body, headers=key)

        assert first.status_code == again.status_code == 200
        assert again.text == first.text
        assert again.headers["x-conversation-id"] == first.headers["x-conversation-id"]
        listed = (await client.get("/api/v1/conversations")).json()["items"]
        assert len(listed) == 1


class TestErrors:
    @pytest.mark.parametrize(
        ("body", "param"),
        [
            ({"messages": HI}, "model"),
            ({"model": "mock", "messages": []}, "messages"),
            ({"model": "mock", "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
            ({"model": "mock", "messages": HI, "n": 2}, "n"),
            ({"model": "mock", "messages": HI, "temperature": 3}, "temperature"),
            (
                {"model": "mock", "messages": [*HI, {"role": "assistant", "content": "x"}]},
                "messages",
            ),
        ],
    )
    async def test_an_invalid_body_is_400_invalid_request_error_naming_the_field(
        self, client: httpx.AsyncClient, body: dict[str, Any], param: str
    ) -> None:
        response = await client.post(URL, json=body)

        assert response.status_code == 400
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", param)
        assert set(error) == {"message", "type", "param", "code"}

    async def test_the_sdk_raises_bad_request_error_for_an_invalid_request(
        self, client: httpx.AsyncClient
    ) -> None:
        with pytest.raises(openai.BadRequestError) as raised:
            await sdk(client).chat.completions.create(model="mock", messages=HI, n=3)

        assert raised.value.param == "n"

    async def test_an_unknown_model_is_404_model_not_found(self, client: httpx.AsyncClient) -> None:
        with pytest.raises(openai.NotFoundError) as raised:
            await sdk(client).chat.completions.create(model="no-such-model", messages=HI)

        assert raised.value.code == "model_not_found"
        assert raised.value.param == "model"

    async def test_a_model_of_an_unconfigured_provider_is_404_model_not_found(
        self, client: httpx.AsyncClient
    ) -> None:
        with pytest.raises(openai.NotFoundError) as raised:
            await sdk(client).chat.completions.create(model="claude-sonnet-4-6", messages=HI)

        assert raised.value.code == "model_not_found"

    async def test_an_unknown_conversation_is_404_and_stores_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        with pytest.raises(openai.NotFoundError) as raised:
            await sdk(client).chat.completions.create(
                model="mock",
                messages=HI,
                extra_headers={"X-Conversation-ID": "01a21398-0000-7000-8000-000000000000"},
            )

        assert raised.value.code == "not_found"
        assert (await client.get("/api/v1/conversations")).json()["items"] == []

    async def test_an_unknown_route_under_v1_is_an_openai_404(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/v1/embeddingz")

        assert response.status_code == 404
        assert response.json()["error"]["type"] == "invalid_request_error"


class TestAuthLimitsAndBudget:
    async def test_without_a_key_it_is_401_invalid_api_key(
        self, start_app: StartApp, auth_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(auth_settings())

        with pytest.raises(openai.AuthenticationError) as raised:
            await sdk(client, api_key="sk-not-a-key").chat.completions.create(
                model="mock", messages=HI
            )

        assert raised.value.code == "invalid_api_key"

    async def test_an_issued_key_owns_the_conversation_and_another_user_cannot_append(
        self,
        start_app: StartApp,
        auth_settings: Callable[..., Settings],
        issue_key: Callable[..., Any],
    ) -> None:
        client = await start_app(auth_settings())
        alice, bob = await issue_key("alice"), await issue_key("bob")

        raw = await sdk(client, alice).chat.completions.with_raw_response.create(
            model="mock", messages=HI, user="someone-else"
        )
        conversation_id = raw.headers["x-conversation-id"]

        assert (await stored(client, conversation_id, **bearer(alice)))["user_id"] == "alice"
        with pytest.raises(openai.NotFoundError):
            await sdk(client, bob).chat.completions.create(
                model="mock", messages=HI, extra_headers={"X-Conversation-ID": conversation_id}
            )

    async def test_the_request_rate_limit_is_429_rate_limit_exceeded_with_retry_after(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(rate_limit_rpm=1))
        api = sdk(client)
        await api.models.list()

        with pytest.raises(openai.RateLimitError) as raised:
            await api.chat.completions.create(model="mock", messages=HI)

        assert raised.value.code == "rate_limit_exceeded"
        assert int(raised.value.response.headers["retry-after"]) >= 1

    async def test_a_spent_budget_is_429_insufficient_quota_not_to_be_retried(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        client = await start_app(make_settings(user_budget_usd=0))

        with pytest.raises(openai.RateLimitError) as raised:
            await sdk(client).chat.completions.create(model="mock", messages=HI)

        assert raised.value.code == "insufficient_quota"
        assert raised.value.type == "insufficient_quota"
        assert raised.value.response.headers["x-should-retry"] == "false"
        assert (await client.get("/api/v1/conversations")).json()["items"] == []

    async def test_a_budget_spent_mid_conversation_refuses_the_next_call_and_stores_nothing(
        self, start_app: StartApp, make_settings: Callable[..., Settings]
    ) -> None:
        # The mock's first reply costs more than this: the month is spent after one call.
        client = await start_app(make_settings(user_budget_usd=Decimal("0.00001")))
        first = await client.post(URL, json={"model": "mock", "messages": HI})
        conversation_id = first.headers["x-conversation-id"]
        said = [*HI, {"role": "assistant", "content": "Hi"}, {"role": "user", "content": "More"}]

        with pytest.raises(openai.RateLimitError) as raised:
            await sdk(client).chat.completions.create(
                model="mock", messages=said, extra_headers={"X-Conversation-ID": conversation_id}
            )

        assert first.status_code == 200, first.text
        assert raised.value.code == "insufficient_quota"
        conversation = await stored(client, conversation_id)
        assert conversation["message_count"] == len(conversation["messages"]) == 2


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
        marker = "zebra-marker-openai-5e21"
        said = [{"role": "system", "content": marker}, {"role": "user", "content": marker}]
        capsys.readouterr()

        ok = await client.post(URL, json={"model": "mock", "messages": said}, headers=bearer(key))
        streamed = await client.post(
            URL, json={"model": "mock", "messages": said, "stream": True}, headers=bearer(key)
        )
        invalid = await client.post(
            URL, json={"model": marker, "messages": said, "n": marker}, headers=bearer(key)
        )
        refused = await client.post(
            URL, json={"model": "mock", "messages": said}, headers=bearer(marker)
        )

        assert [ok.status_code, streamed.status_code] == [200, 200]
        assert [invalid.status_code, refused.status_code] == [400, 401]
        assert marker not in invalid.text
        logged = capsys.readouterr().out
        assert '"request"' in logged
        assert marker not in logged
        assert key not in logged


class TestModels:
    async def test_the_configured_models_are_listed_in_openai_format(
        self, client: httpx.AsyncClient
    ) -> None:
        page = await sdk(client).models.list()

        assert [(m.id, m.object, m.owned_by) for m in page.data] == [("mock", "model", "mock")]

    async def test_the_routes_are_documented_under_their_own_tag(
        self, client: httpx.AsyncClient
    ) -> None:
        paths = (await client.get("/openapi.json")).json()["paths"]

        assert paths["/v1/chat/completions"]["post"]["tags"] == ["openai-compatible"]
        assert paths["/v1/models"]["get"]["tags"] == ["openai-compatible"]
