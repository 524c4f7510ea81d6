"""Azure OpenAI and OpenAI-compatible servers: one wire format, different clients, prices
and context windows; checked against the fake upstream."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from app.core.config import ModelPriceOverride, Settings
from tests.factories import create_conversation, send_message
from tests.fakes.upstream import DEFAULT_TEXT, FakeUpstream, RawBody, Reply
from tests.sse import stream_message

StartApp = Callable[..., Any]
LOCAL_MODEL = "llama3.1"


def azure_settings(
    make_settings: Callable[..., Settings], fake: FakeUpstream, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "azure_openai_api_key": fake.api_key,
        "azure_openai_endpoint": fake.url,
        "azure_openai_deployments": {"gpt-4o": "gpt-4o"},
    }
    return make_settings(**{**values, **overrides})


def compatible_settings(
    make_settings: Callable[..., Settings], fake: FakeUpstream, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "openai_compatible_base_url": f"{fake.url}/v1",
        "openai_compatible_api_key": fake.api_key,
        "openai_compatible_models": [LOCAL_MODEL, "qwen2.5"],
    }
    return make_settings(**{**values, **overrides})


def override(**rates: Any) -> dict[str, ModelPriceOverride]:
    return {f"openai_compatible:{LOCAL_MODEL}": ModelPriceOverride(**rates)}


class TestAzure:
    async def test_the_model_is_sent_to_its_deployment_with_the_api_version_and_key(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        upstream.azure_deployments = {"prod-4o"}
        settings = azure_settings(
            make_settings, upstream, azure_openai_deployments={"gpt-4o": "prod-4o"}
        )
        client: httpx.AsyncClient = await start_app(settings)
        conversation = await create_conversation(client, provider="azure", model="gpt-4o")

        await send_message(client, conversation["id"], "Hi")

        [request] = upstream.requests
        assert request.path == "/openai/deployments/prod-4o/chat/completions"
        assert request.query == {"api-version": settings.azure_openai_api_version}
        assert request.headers["api-key"] == upstream.api_key
        assert request.json["messages"] == [{"role": "user", "content": "Hi"}]

    async def test_the_reported_model_is_stored_and_priced_from_azure_s_list(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        client: httpx.AsyncClient = await start_app(azure_settings(make_settings, upstream))
        conversation = await create_conversation(client, provider="azure", model="gpt-4o")
        upstream.script(Reply("Hi.", prompt_tokens=1000, completion_tokens=200, cached_tokens=400))

        result = await send_message(client, conversation["id"], "Hi")

        message = result["message"]
        assert (message["provider"], message["model"]) == ("azure", upstream.azure_model)
        assert message["model"] == "gpt-4o-2024-11-20"
        assert Decimal(str(message["cost_usd"])) == Decimal("0.004")
        assert message["pricing"]["source"] == "genai-prices 0.2.3"
        assert message["pricing"]["input_per_mtok"] == 2.5

    async def test_a_model_without_a_deployment_is_a_422_and_calls_nobody(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        client: httpx.AsyncClient = await start_app(azure_settings(make_settings, upstream))
        conversation = await create_conversation(client, provider="azure", model="gpt-4o")

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": "Hi", "model": "gpt-4.1"},
        )

        assert response.status_code == 422
        assert response.json()["code"] == "unknown_model"
        assert upstream.requests == []


class TestOpenAICompatible:
    async def test_the_request_goes_to_the_configured_base_url_with_its_key(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        client: httpx.AsyncClient = await start_app(compatible_settings(make_settings, upstream))
        conversation = await create_conversation(client, provider="openai_compatible")

        result = await send_message(client, conversation["id"], "Hi")

        [request] = upstream.requests
        assert request.path == "/v1/chat/completions"
        assert request.headers["authorization"] == f"Bearer {upstream.api_key}"
        assert request.json["model"] == LOCAL_MODEL  # the first listed model is the default
        assert result["message"]["provider"] == "openai_compatible"

    async def test_a_server_without_a_key_still_gets_a_placeholder_bearer(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        upstream.api_key = "not-needed"
        settings = compatible_settings(make_settings, upstream, openai_compatible_api_key=None)
        client: httpx.AsyncClient = await start_app(settings)
        conversation = await create_conversation(client, provider="openai_compatible")

        await send_message(client, conversation["id"], "Hi")

        assert upstream.requests[0].headers["authorization"] == "Bearer not-needed"

    async def test_a_model_outside_the_configured_list_is_a_422_unknown_model(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        client: httpx.AsyncClient = await start_app(compatible_settings(make_settings, upstream))
        conversation = await create_conversation(client, provider="openai_compatible")

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": "Hi", "model": "mistral"},
        )
        other = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages",
            json={"content": "Hi", "model": "qwen2.5"},
        )

        assert response.status_code == 422
        assert response.json()["code"] == "unknown_model"
        assert other.status_code == 201
        assert [r.json["model"] for r in upstream.requests] == ["qwen2.5"]

    async def test_a_self_hosted_model_costs_nothing_by_default(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        client: httpx.AsyncClient = await start_app(compatible_settings(make_settings, upstream))
        conversation = await create_conversation(client, provider="openai_compatible")
        upstream.script(Reply("Local.", prompt_tokens=1000, completion_tokens=200))

        result = await send_message(client, conversation["id"], "Hi")

        message = result["message"]
        assert Decimal(str(message["cost_usd"])) == 0
        assert message["pricing"]["source"] == "self-hosted"
        assert message["pricing"]["input_per_mtok"] == 0
        assert message["pricing"]["output_per_mtok"] == 0
        assert (message["prompt_tokens"], message["completion_tokens"]) == (1000, 200)

    async def test_a_price_override_is_charged_instead_of_zero(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        rates = override(input_per_mtok=Decimal("0.4"), output_per_mtok=Decimal("1.6"))
        settings = compatible_settings(make_settings, upstream, price_overrides=rates)
        client: httpx.AsyncClient = await start_app(settings)
        conversation = await create_conversation(client, provider="openai_compatible")
        upstream.script(Reply("Local.", prompt_tokens=1000, completion_tokens=200))

        result = await send_message(client, conversation["id"], "Hi")

        expected = (1000 * Decimal("0.4") + 200 * Decimal("1.6")) / 1_000_000
        message = result["message"]
        assert Decimal(str(message["cost_usd"])) == expected == Decimal("0.00072")
        assert message["pricing"]["source"] == "PRICE_OVERRIDES"
        assert message["pricing"]["input_per_mtok"] == 0.4

    async def test_a_long_history_is_trimmed_to_the_window_but_kept_in_full_in_storage(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        # A 300-token window keeps 150 for the reply; each question is ~54 estimated tokens.
        rates = override(input_per_mtok=0, output_per_mtok=0, context_window=300)
        settings = compatible_settings(make_settings, upstream, price_overrides=rates)
        client: httpx.AsyncClient = await start_app(settings)
        system = "Answer briefly."
        conversation = await create_conversation(
            client, provider="openai_compatible", system_prompt=system
        )
        questions = [f"Question {i}: " + "x" * 148 for i in range(4)]

        for question in questions:
            await send_message(client, conversation["id"], question)

        # From the third turn on, only the newest question and the exchange before it fit.
        assert [len(r.json["messages"]) for r in upstream.requests] == [2, 4, 4, 4]
        assert upstream.requests[-1].json["messages"] == [
            {"role": "system", "content": system},
            {"role": "user", "content": questions[2]},
            {"role": "assistant", "content": DEFAULT_TEXT},
            {"role": "user", "content": questions[3]},
        ]
        stored = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == questions
        assert len(stored["messages"]) == 8
        assert all(m["status"] == "completed" for m in stored["messages"])


class TestLooselyTypedServers:
    """Self-hosted servers do not all fill every field as OpenAI does: a field of the wrong
    type counts as absent, a negative token count as 0, and a reply without a finish reason
    is an unfinished one (retried, then 502), never a crash."""

    async def test_missing_model_and_odd_usage_are_read_as_absent(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        client = await start_app(compatible_settings(make_settings, upstream))
        conversation = await create_conversation(client, provider="openai_compatible")
        body = {
            "choices": [{"message": {"content": "Hi 👋"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": -3, "completion_tokens": "7", "prompt_tokens_details": 1},
        }
        upstream.script(RawBody(json.dumps(body).encode()))

        message = (await send_message(client, conversation["id"], "Hi"))["message"]

        assert (message["content"], message["status"]) == ("Hi 👋", "completed")
        assert message["model"] == LOCAL_MODEL
        assert (message["prompt_tokens"], message["completion_tokens"]) == (0, 0)

    async def test_a_reply_without_choices_is_unfinished(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        client = await start_app(
            compatible_settings(make_settings, upstream, provider_max_retries=0)
        )
        conversation = await create_conversation(client, provider="openai_compatible")
        upstream.script(RawBody(b'{"choices": null, "model": 5}'))

        response = await client.post(
            f"/api/v1/conversations/{conversation['id']}/messages", json={"content": "Hi"}
        )

        assert response.status_code == 502, response.text
        assert response.json()["code"] == "upstream_error"

    async def test_a_stream_with_null_usage_and_no_model_still_completes(
        self, start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
    ) -> None:
        client = await start_app(compatible_settings(make_settings, upstream))
        conversation = await create_conversation(client, provider="openai_compatible")
        chunks = [
            {"choices": [{"delta": {"role": "assistant"}}]},
            {"choices": [{"delta": {"content": "Hel"}}], "usage": None},
            {"choices": [{"delta": {"content": 5}}]},
            {"choices": "none"},
            {"choices": [{"delta": {"content": "lo"}, "finish_reason": "stop"}]},
        ]
        sse = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
        upstream.script(RawBody(sse.encode(), "text/event-stream"))

        stream = await stream_message(client, conversation["id"], "Hi")

        assert stream.terminal.event == "done"
        message = stream.terminal.json()["message"]
        assert (message["content"], message["model"]) == ("Hello", LOCAL_MODEL)
