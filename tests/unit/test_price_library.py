"""List prices from the bundled genai-prices snapshot, and the order in which a PriceBook
looks for a price: configured first, then free self-hosted, then the library."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.core.config import ModelPriceOverride, Settings
from app.providers.base import Usage
from app.services.pricing.price import Price
from app.services.pricing.price_book import PriceBook, build_price_book
from app.services.pricing.price_library import SOURCE, GenAIPrices

LIBRARY = GenAIPrices()
GPT_4O = Price(Decimal("2.5"), Decimal("10"), cached_input_per_mtok=Decimal("1.25"), source=SOURCE)
CUSTOM = Price(Decimal("1"), Decimal("2"), source="configured")


class TestGenAIPrices:
    def test_the_source_names_the_pinned_version(self) -> None:
        assert SOURCE == "genai-prices 0.2.3"

    @pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"])
    def test_a_dated_snapshot_resolves_to_its_model_s_price(self, model: str) -> None:
        price = LIBRARY.price_of("openai", model, prompt_tokens=1_000)

        assert price == GPT_4O
        assert price is not None
        assert price.source == SOURCE

    def test_azure_models_are_priced_from_azure_s_list(self) -> None:
        assert LIBRARY.price_of("azure", "gpt-4o-2024-11-20", prompt_tokens=0) == GPT_4O

    def test_claude_has_cache_read_and_write_rates(self) -> None:
        price = LIBRARY.price_of("anthropic", "claude-sonnet-4-5", prompt_tokens=1_000)

        assert price == Price(
            Decimal("3"),
            Decimal("15"),
            cached_input_per_mtok=Decimal("0.3"),
            cache_write_per_mtok=Decimal("3.75"),
            cache_write_1h_per_mtok=Decimal("6"),  # twice the input price
        )

    def test_a_prompt_above_200k_tokens_pays_the_higher_tier_for_every_token(self) -> None:
        at_threshold = LIBRARY.price_of("anthropic", "claude-sonnet-4-5", prompt_tokens=200_000)
        above = LIBRARY.price_of("anthropic", "claude-sonnet-4-5", prompt_tokens=200_001)

        assert at_threshold is not None
        assert above is not None
        assert (at_threshold.input_per_mtok, at_threshold.output_per_mtok) == (
            Decimal("3"),
            Decimal("15"),
        )
        assert (above.input_per_mtok, above.output_per_mtok) == (Decimal("6"), Decimal("22.5"))
        assert (above.cached_input_per_mtok, above.cache_write_per_mtok) == (
            Decimal("0.6"),
            Decimal("7.5"),
        )
        assert above.cost_of(Usage(prompt_tokens=250_000)) == Decimal("1.5")

    @pytest.mark.parametrize(
        ("provider", "model"),
        [
            ("openai", "my-finetune-xyz"),
            ("anthropic", "claude-nonexistent-9"),
            ("openai_compatible", "gpt-4o"),
            ("mock", "mock"),
        ],
    )
    def test_an_unknown_model_or_provider_has_no_price(self, provider: str, model: str) -> None:
        assert LIBRARY.price_of(provider, model, prompt_tokens=0) is None
        assert LIBRARY.context_window(provider, model) is None

    def test_context_windows_come_with_the_prices(self) -> None:
        assert LIBRARY.context_window("openai", "gpt-4o-2024-08-06") == 128_000
        assert LIBRARY.context_window("anthropic", "claude-sonnet-4-5") == 200_000


class TestPriceBookOrder:
    def test_a_configured_price_beats_the_library(self) -> None:
        book = PriceBook({("openai", "gpt-4o"): CUSTOM}, library=LIBRARY)

        assert book.price_of("openai", "gpt-4o") == CUSTOM
        assert book.price_of("openai", "gpt-4o-mini") == LIBRARY.price_of(
            "openai", "gpt-4o-mini", 0
        )

    def test_the_requested_model_is_the_fallback_for_an_unknown_reported_one(self) -> None:
        book = PriceBook({}, library=LIBRARY)

        price = book.price_of("azure", "gpt-4o-custom-deploy", requested_model="gpt-4o")

        assert price == GPT_4O
        assert book.price_of("azure", "gpt-4o-custom-deploy") is None

    def test_the_reported_model_s_price_comes_before_the_requested_one(self) -> None:
        book = PriceBook({}, library=LIBRARY)

        price = book.price_of("openai", "gpt-4o-mini-2024-07-18", requested_model="gpt-4o")

        assert price == LIBRARY.price_of("openai", "gpt-4o-mini", 0)

    def test_a_configured_price_for_the_requested_model_beats_the_library(self) -> None:
        book = PriceBook({("azure", "gpt-4o"): CUSTOM}, library=LIBRARY)

        assert book.price_of("azure", "gpt-4o-2024-11-20", requested_model="gpt-4o") == CUSTOM

    def test_a_free_provider_costs_zero_unless_a_price_is_configured(self) -> None:
        book = PriceBook(
            {("openai_compatible", "paid"): CUSTOM},
            library=LIBRARY,
            free_providers=frozenset({"openai_compatible"}),
        )

        free = book.price_of("openai_compatible", "llama3.1")

        assert free == Price(Decimal(0), Decimal(0))
        assert free is not None
        assert free.source == "self-hosted"
        assert book.price_of("openai_compatible", "paid") == CUSTOM
        assert book.cost_of("openai_compatible", "llama3.1", Usage(1_000, 1_000)) == 0

    def test_the_tier_is_chosen_from_the_prompt_size(self) -> None:
        book = PriceBook({}, library=LIBRARY)
        usage = Usage(prompt_tokens=300_000, completion_tokens=1_000)

        # 300,000 in at $6 and 1,000 out at $22.50 per million tokens.
        assert book.cost_of("anthropic", "claude-sonnet-4-5", usage) == Decimal("1.8225")

    def test_configured_context_windows_beat_the_library(self) -> None:
        book = PriceBook({}, library=LIBRARY, context_windows={("openai", "gpt-4o"): 1_000})

        assert book.context_window("openai", "gpt-4o") == 1_000
        assert book.context_window("openai", "gpt-4o-mini") == 128_000
        assert book.context_window("openai", "unknown-model") is None


class TestBuildPriceBook:
    def test_price_overrides_are_configured_prices_with_their_windows(self) -> None:
        override = ModelPriceOverride(
            input_per_mtok=Decimal("0.4"),
            output_per_mtok=Decimal("1.6"),
            cached_input_per_mtok=Decimal("0.1"),
            context_window=32_000,
        )
        settings = Settings(
            _env_file=None,
            price_overrides={"openai_compatible:llama3.1": override, "openai:gpt-4o": override},
        )

        book = build_price_book(settings)

        expected = Price(Decimal("0.4"), Decimal("1.6"), cached_input_per_mtok=Decimal("0.1"))
        for provider, model in [("openai_compatible", "llama3.1"), ("openai", "gpt-4o")]:
            price = book.price_of(provider, model)
            assert price == expected
            assert price is not None
            assert price.source == "PRICE_OVERRIDES"
            assert book.context_window(provider, model) == 32_000
        assert book.price_of("openai", "gpt-4o-2024-08-06") == GPT_4O

    def test_price_overrides_parse_from_the_environment_s_json(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(
            "PRICE_OVERRIDES",
            '{"openai_compatible:qwen2.5": {"input_per_mtok": "0.2", "output_per_mtok": 0.6}}',
        )

        book = build_price_book(Settings(_env_file=None))

        assert book.price_of("openai_compatible", "qwen2.5") == Price(
            Decimal("0.2"), Decimal("0.6")
        )
