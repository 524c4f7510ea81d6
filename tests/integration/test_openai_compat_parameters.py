"""Every field of OpenAI's chat completions body, on every provider: it reaches the model
(as is, or mapped to the provider's own field), is stored with the reply, or is a 400 that
names it. Never accepted and dropped.

The tables below are the /v1 parameter table of docs/api/openai-compatible.md as data.
`ChatCompletionCreate` gaining a field without a row here fails
`test_every_field_has_a_row_for_every_provider`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from app.core.config import Settings
from app.providers.registry import ProviderRegistry
from app.schemas.openai_compat import ChatCompletionCreate
from tests.fakes.providers import RecordingMock
from tests.fakes.upstream import Fail, FakeUpstream

StartApp = Callable[..., Any]
HI: list[Any] = [{"role": "user", "content": "Hi"}]
SERVED = {"model", "messages", "stream", "stream_options"}  # the service's own, every provider

# A value of each field that asks for something (OpenAI's default would be a no-op).
SAMPLES: dict[str, Any] = {
    "audio": {"voice": "alloy", "format": "wav"},
    "frequency_penalty": 0.5,
    "function_call": "auto",
    "functions": [{"name": "lookup", "parameters": {"type": "object"}}],
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "max_completion_tokens": 64,
    "max_tokens": 48,
    "metadata": {"ticket": "T-1"},
    "modalities": ["text", "audio"],
    "moderation": {"model": "omni-moderation-latest"},
    "n": 2,
    "parallel_tool_calls": False,
    "prediction": {"type": "content", "content": "A draft."},
    "presence_penalty": -0.5,
    "prompt_cache_key": "tenant-1",
    "prompt_cache_options": {"mode": "implicit", "ttl": "30m"},
    "prompt_cache_retention": "24h",
    "reasoning_effort": "low",
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "person",
            "schema": {"type": "object", "additionalProperties": False},
            "strict": True,
        },
    },
    "safety_identifier": "user-hash-1",
    "seed": 7,
    "service_tier": "auto",
    "stop": ["END"],
    "store": True,
    "temperature": 0.3,
    "tool_choice": "auto",
    "tools": [{"type": "function", "function": {"name": "lookup"}}],
    "top_logprobs": 2,
    "top_p": 0.5,
    "user": "end-user-1",
    "verbosity": "low",
    "web_search_options": {"search_context_size": "low"},
}


@dataclass(frozen=True)
class Sent:
    """The upstream body carries `key: value` (`value` None: the sample, as sent)."""

    key: str | None = None
    value: Any = None


@dataclass(frozen=True)
class Stored:
    """The reply's stored metadata keeps it (`request_metadata`)."""


@dataclass(frozen=True)
class Refused:
    """A 400 whose `param` names the field."""


Expectation = Sent | Stored | Refused | tuple[Sent, Stored]
REFUSED = Refused()
AS_IS = Sent()
# Refused everywhere: audio output, more than one choice, logprobs plumbing, and the
# deprecated `functions` (`tools` replaced them).
_NOWHERE = dict.fromkeys(
    (
        "audio",
        "function_call",
        "functions",
        "logprobs",
        "modalities",
        "n",
        "top_logprobs",
    ),
    REFUSED,
)
# Fields that only mean something beside another, sent with it.
COMPANIONS: dict[str, dict[str, Any]] = {
    "tool_choice": {"tools": SAMPLES["tools"]},
    "parallel_tool_calls": {"tools": SAMPLES["tools"]},
}
OPENAI: dict[str, Expectation] = {
    **{name: AS_IS for name in SAMPLES if name not in _NOWHERE},
    **_NOWHERE,
    "metadata": (AS_IS, Stored()),
}
ANTHROPIC: dict[str, Expectation] = {
    **dict.fromkeys(SAMPLES, REFUSED),
    "max_completion_tokens": Sent("max_tokens"),
    "max_tokens": AS_IS,
    "metadata": Stored(),
    "reasoning_effort": Sent("thinking", {"type": "enabled", "budget_tokens": 1024}),
    "response_format": Sent(
        "output_config",
        {
            "format": {
                "type": "json_schema",
                "schema": {"type": "object", "additionalProperties": False},
            }
        },
    ),
    "tools": Sent(
        "tools", [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}]
    ),
    "tool_choice": Sent("tool_choice", {"type": "auto"}),
    "parallel_tool_calls": Sent("tool_choice", {"type": "auto", "disable_parallel_tool_use": True}),
    "safety_identifier": Sent("metadata", {"user_id": "user-hash-1"}),
    "service_tier": AS_IS,
    "stop": Sent("stop_sequences"),
    "user": Sent("metadata", {"user_id": "end-user-1"}),
}
# The mock has no wire: "sent" means its `ChatRequest` carries the value.
MOCK: dict[str, Expectation] = {
    **dict.fromkeys(SAMPLES, REFUSED),
    **dict.fromkeys(
        (
            "frequency_penalty",
            "logit_bias",
            "max_completion_tokens",
            "max_tokens",
            "prediction",
            "presence_penalty",
            "prompt_cache_key",
            "prompt_cache_options",
            "prompt_cache_retention",
            "reasoning_effort",
            "parallel_tool_calls",
            "response_format",
            "safety_identifier",
            "seed",
            "service_tier",
            "stop",
            "temperature",
            "tool_choice",
            "tools",
            "top_p",
            "user",
            "verbosity",
        ),
        AS_IS,
    ),
    "metadata": Stored(),
}
PROVIDERS: dict[str, tuple[str, dict[str, Expectation]]] = {
    "openai": ("gpt-4o", OPENAI),
    "azure": ("azure/gpt-4o", OPENAI),
    "openai_compatible": (
        "openai_compatible/llama3.1",
        {**OPENAI, "max_completion_tokens": Sent("max_tokens")},
    ),
    "anthropic": ("claude-sonnet-4-6", ANTHROPIC),
    "mock": ("mock", MOCK),
}


@pytest.fixture
async def client(
    start_app: StartApp, make_settings: Callable[..., Settings], upstream: FakeUpstream
) -> httpx.AsyncClient:
    """Every provider configured against the fake upstream, with no retries of ours."""
    settings = make_settings(
        **upstream.provider_settings(all_providers=True), provider_max_retries=0
    )
    started: httpx.AsyncClient = await start_app(settings)
    return started


@pytest.fixture
async def mock_client(
    start_app: StartApp, make_settings: Callable[..., Settings], recording_mock: RecordingMock
) -> httpx.AsyncClient:
    registry = ProviderRegistry({"mock": recording_mock}, "mock")
    started: httpx.AsyncClient = await start_app(make_settings(), providers=registry)
    return started


@pytest.fixture
def recording_mock() -> RecordingMock:
    return RecordingMock()


def test_every_field_has_a_row_for_every_provider() -> None:
    fields = set(ChatCompletionCreate.model_fields) - SERVED
    assert set(SAMPLES) == fields
    for _, table in PROVIDERS.values():
        assert set(table) == fields


async def _stored_metadata(client: httpx.AsyncClient, response: httpx.Response) -> Any:
    conversation = await client.get(
        f"/api/v1/conversations/{response.headers['x-conversation-id']}"
    )
    return conversation.json()["messages"][-1]["metadata"]


async def _check_each_field(
    client: httpx.AsyncClient,
    model: str,
    table: dict[str, Expectation],
    received: Callable[[], dict[str, Any]],
) -> None:
    for name, expected in table.items():
        sample = SAMPLES[name]
        body = {"model": model, "messages": HI, **COMPANIONS.get(name, {}), name: sample}
        response = await client.post("/v1/chat/completions", json=body)
        if isinstance(expected, Refused):
            assert response.status_code == 400, (name, response.text)
            assert response.json()["error"]["param"] == name
            continue
        assert response.status_code == 200, (name, response.text)
        for check in expected if isinstance(expected, tuple) else (expected,):
            if isinstance(check, Stored):
                stored = await _stored_metadata(client, response)
                assert stored["request_metadata"] == sample, name
            else:
                body = received()
                key = check.key or name
                assert key in body, (name, body)
                assert body[key] == (sample if check.value is None else check.value), name


@pytest.mark.parametrize("provider", ["openai", "azure", "openai_compatible", "anthropic"])
async def test_each_field_reaches_the_provider_or_is_a_400_naming_it(
    client: httpx.AsyncClient, upstream: FakeUpstream, provider: str
) -> None:
    model, table = PROVIDERS[provider]
    await _check_each_field(client, model, table, lambda: upstream.requests[-1].json)


async def test_each_field_reaches_the_mock_or_is_a_400_naming_it(
    mock_client: httpx.AsyncClient, recording_mock: RecordingMock
) -> None:
    def received() -> dict[str, Any]:
        request = recording_mock.requests[-1]
        fields = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "stop": list(request.stop) or None,
        }
        return {**{k: v for k, v in fields.items() if v is not None}, **request.options}

    await _check_each_field(mock_client, "mock", MOCK, received)


class TestNoOps:
    @pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4-6", "mock"])
    async def test_values_that_ask_for_nothing_are_accepted_and_not_sent(
        self, client: httpx.AsyncClient, upstream: FakeUpstream, model: str
    ) -> None:
        # What LangChain and other clients have sent by default, and null for everything.
        no_ops = {
            "n": 1,
            "logprobs": False,
            "top_logprobs": 0,
            "frequency_penalty": 0,
            "presence_penalty": 0,
            "logit_bias": {},
            "store": False,
            "modalities": ["text"],
            "response_format": {"type": "text"},
            "tools": [],
            "functions": [],
            "tool_choice": "none",
            "stream_options": {"include_usage": True},
            **{name: None for name in SAMPLES if name not in ("n",)},
        }

        response = await client.post(
            "/v1/chat/completions", json={"model": model, "messages": HI, **no_ops}
        )

        assert response.status_code == 200, response.text
        if model != "mock":
            sent = upstream.requests[-1].json
            assert not set(sent) & (set(SAMPLES) - {"max_tokens", "stream_options"}), sent


def sdk(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0
    )


class TestThroughTheOpenAISDK:
    async def test_sampling_and_output_options_reach_openai_as_sent(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        schema = SAMPLES["response_format"]

        await sdk(client).chat.completions.create(
            model="o4-mini",
            messages=HI,
            seed=7,
            frequency_penalty=0.5,
            presence_penalty=-0.5,
            logit_bias={"50256": -100},
            max_completion_tokens=64,
            reasoning_effort="low",
            response_format=schema,
        )

        sent = upstream.requests[-1].json
        assert (sent["seed"], sent["frequency_penalty"], sent["presence_penalty"]) == (7, 0.5, -0.5)
        assert sent["logit_bias"] == {"50256": -100}
        # Not renamed: OpenAI's reasoning models refuse `max_tokens`.
        assert sent["max_completion_tokens"] == 64
        assert "max_tokens" not in sent
        assert sent["reasoning_effort"] == "low"
        assert sent["response_format"] == schema

    async def test_max_completion_tokens_becomes_max_tokens_at_anthropic(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        await sdk(client).chat.completions.create(
            model="claude-sonnet-4-6", messages=HI, max_completion_tokens=64
        )

        sent = upstream.requests[-1].json
        assert sent["max_tokens"] == 64
        assert "max_completion_tokens" not in sent

    async def test_an_unknown_field_is_a_400_naming_it_and_nothing_is_stored(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        with pytest.raises(openai.BadRequestError) as raised:
            await sdk(client).chat.completions.create(
                model="gpt-4o", messages=HI, extra_body={"top_k": 40}
            )

        error = raised.value
        assert error.param == "top_k"
        assert "Unrecognized request argument supplied: top_k" in error.message
        assert upstream.requests == []
        conversations = await client.get("/api/v1/conversations")
        assert conversations.json()["items"] == []

    async def test_a_servers_own_fields_reach_the_openai_compatible_upstream_untouched(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        extra = {"top_k": 40, "repetition_penalty": 1.1, "options": {"num_ctx": 8192}}

        await sdk(client).chat.completions.create(
            model="openai_compatible/llama3.1", messages=HI, seed=3, extra_body=extra
        )

        sent = upstream.requests[-1].json
        assert {key: sent[key] for key in extra} == extra
        assert sent["seed"] == 3

    async def test_an_option_only_one_provider_lacks_is_a_400_naming_both(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        with pytest.raises(openai.BadRequestError) as raised:
            await sdk(client).chat.completions.create(
                model="claude-sonnet-4-6", messages=HI, seed=7
            )

        assert raised.value.param == "seed"
        assert "'anthropic'" in raised.value.message
        assert upstream.requests == []

    async def test_the_system_fingerprint_comes_back_streamed_stored_and_replayed(
        self, client: httpx.AsyncClient, upstream: FakeUpstream
    ) -> None:
        api = sdk(client)
        key = {"Idempotency-Key": "fingerprint-1"}

        completion = await api.chat.completions.create(
            model="gpt-4o", messages=HI, extra_headers=key
        )
        replayed = await api.chat.completions.create(model="gpt-4o", messages=HI, extra_headers=key)
        stream = await api.chat.completions.create(
            model="gpt-4o",
            messages=HI,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        mocked = await api.chat.completions.create(model="mock", messages=HI)

        assert completion.system_fingerprint == "fp_f00dfake01"
        assert replayed.system_fingerprint == "fp_f00dfake01"
        assert len(upstream.requests) == 2  # the replay called nobody
        finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishing[0].system_fingerprint == "fp_f00dfake01"
        assert chunks[-1].usage is not None
        assert chunks[-1].system_fingerprint == "fp_f00dfake01"
        assert mocked.system_fingerprint == "fp_mock"

    async def test_models_retrieve_finds_a_configured_model_and_404s_an_unknown_one(
        self, client: httpx.AsyncClient
    ) -> None:
        api = sdk(client)

        mock = await api.models.retrieve("mock")
        routed = await api.models.retrieve("claude-haiku-4-5")
        with pytest.raises(openai.NotFoundError) as raised:
            await api.models.retrieve("no-such-model")

        assert (mock.id, mock.object, mock.owned_by) == ("mock", "model", "mock")
        assert (routed.id, routed.owned_by) == ("claude-haiku-4-5", "anthropic")
        assert raised.value.code == "model_not_found"
        assert raised.value.param == "model"


class TestFallbacks:
    @pytest.mark.parametrize(("options", "calls"), [({}, 2), ({"seed": 7}, 1)])
    async def test_a_fallback_that_cannot_honour_the_fields_is_skipped(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        upstream: FakeUpstream,
        options: dict[str, Any],
        calls: int,
    ) -> None:
        settings = make_settings(
            openai_api_key=upstream.api_key,
            openai_base_url=f"{upstream.url}/v1",
            anthropic_api_key=upstream.api_key,
            anthropic_base_url=upstream.url,
            provider_max_retries=0,
            fallback_models="anthropic:claude-sonnet-4-6",
        )
        client = await start_app(settings)
        upstream.script(Fail(500))

        response = await client.post(
            "/v1/chat/completions", json={"model": "gpt-4o", "messages": HI, **options}
        )

        # Claude has no `seed`: it would answer another request than the one asked.
        assert response.status_code == (200 if calls == 2 else 502), response.text
        assert [r.path for r in upstream.requests][:calls] == [
            "/v1/chat/completions",
            "/v1/messages",
        ][:calls]
        assert len(upstream.requests) == calls
