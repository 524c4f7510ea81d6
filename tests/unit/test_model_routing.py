"""`ProviderRegistry.route`: which provider a bare model name from an OpenAI client reaches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

import pytest

from app.errors import UnknownModel
from app.providers.base import ChatRequest, StreamEvent
from app.providers.mock import MockProvider
from app.providers.registry import ProviderRegistry


@dataclass
class Named:
    """A provider that serves nothing; `models=None` accepts any name, as real APIs do."""

    name: str
    default_model: str
    models: Collection[str] | None = None

    def supports(self, model: str) -> bool:
        return self.models is None or model in self.models

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError
        yield  # pragma: no cover


def registry(*providers: Named, default: str = "mock", **listed: list[str]) -> ProviderRegistry:
    return ProviderRegistry(
        {"mock": MockProvider(), **{p.name: p for p in providers}},
        default,
        listed_models=listed,
    )


OPENAI = Named("openai", "gpt-4o-mini")
ANTHROPIC = Named("anthropic", "claude-sonnet-4-6")
AZURE = Named("azure", "gpt-4o", models={"gpt-4o", "gpt-4o-mini"})
LOCAL = Named("openai_compatible", "llama3.1")


def routed(registry: ProviderRegistry, model: str, **options: object) -> tuple[str, str]:
    choice = registry.route(model, **options)  # type: ignore[arg-type]
    return choice.provider.name, choice.model


class TestRoute:
    def test_an_explicit_provider_slash_model_wins(self) -> None:
        both = registry(OPENAI, AZURE)

        assert routed(both, "azure/gpt-4o") == ("azure", "gpt-4o")
        assert routed(both, "openai/my-finetune") == ("openai", "my-finetune")

    def test_a_slash_that_names_no_provider_is_part_of_the_model_name(self) -> None:
        local = registry(LOCAL, default="openai_compatible")

        assert routed(local, "meta-llama/Llama-3-8B") == (
            "openai_compatible",
            "meta-llama/Llama-3-8B",
        )

    def test_mock_reaches_the_mock(self) -> None:
        assert routed(registry(OPENAI, default="openai"), "mock") == ("mock", "mock")

    @pytest.mark.parametrize(
        "model", ["gpt-4o", "gpt-5", "o1-mini", "o3", "o4-mini", "chatgpt-4o-latest"]
    )
    def test_openai_families_reach_openai_before_azure(self, model: str) -> None:
        assert routed(registry(AZURE, OPENAI, ANTHROPIC), model)[0] == "openai"

    def test_without_openai_a_gpt_name_reaches_azure_if_it_is_deployed(self) -> None:
        only_azure = registry(AZURE)

        assert routed(only_azure, "gpt-4o") == ("azure", "gpt-4o")
        with pytest.raises(UnknownModel):
            only_azure.route("gpt-4.1")

    def test_claude_names_reach_anthropic(self) -> None:
        assert routed(registry(OPENAI, ANTHROPIC), "claude-haiku-4-5") == (
            "anthropic",
            "claude-haiku-4-5",
        )

    def test_a_listed_model_reaches_the_provider_that_lists_it(self) -> None:
        both = registry(OPENAI, LOCAL, openai_compatible=["qwen2.5"])

        assert routed(both, "qwen2.5") == ("openai_compatible", "qwen2.5")

    def test_a_name_the_price_book_knows_reaches_its_provider(self) -> None:
        both = registry(OPENAI, ANTHROPIC)

        def known(provider: str, model: str) -> bool:
            return (provider, model) == ("anthropic", "sonnet-legacy")

        assert routed(both, "sonnet-legacy", known=known) == ("anthropic", "sonnet-legacy")

    def test_a_self_hosted_default_takes_any_other_name(self) -> None:
        assert routed(registry(LOCAL, default="openai_compatible"), "phi3") == (
            "openai_compatible",
            "phi3",
        )

    @pytest.mark.parametrize("default", ["mock", "openai"])
    def test_an_unknown_name_is_unknown_model(self, default: str) -> None:
        with pytest.raises(UnknownModel):
            registry(OPENAI, default=default).route("no-such-model")

    def test_a_family_whose_provider_is_not_configured_is_unknown_model(self) -> None:
        with pytest.raises(UnknownModel):
            registry(OPENAI).route("claude-sonnet-4-6")
