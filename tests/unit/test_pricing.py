"""What a reply costs: exact `Decimal` arithmetic, cached tokens, one rounding to 10 places."""

from __future__ import annotations

from decimal import Decimal

import pytest

from app.core.config import Settings
from app.providers.base import Usage
from app.services.pricing.price import Price
from app.services.pricing.price_book import PriceBook, build_price_book

# GPT-4o's list price: $2.50 in, $1.25 cached in, $10.00 out per million tokens.
GPT_4O = Price(Decimal("2.50"), Decimal("10.00"), cached_input_per_mtok=Decimal("1.25"))


def places(amount: Decimal) -> int:
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent


class TestPriceCostOf:
    def test_input_and_output_tokens_are_charged_at_their_own_rates(self) -> None:
        cost = GPT_4O.cost_of(Usage(prompt_tokens=1_000, completion_tokens=500))

        assert cost == Decimal("0.0075")  # 1000 * 2.50 / 1e6 + 500 * 10 / 1e6

    def test_the_result_is_an_exact_decimal_not_a_float_approximation(self) -> None:
        # 0.1 + 0.2 style inputs: a float pipeline would give 0.30000000000000004-like noise.
        price = Price(Decimal("0.1"), Decimal("0.2"))

        cost = price.cost_of(Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000))

        assert isinstance(cost, Decimal)
        assert cost == Decimal("0.3")

    def test_cached_tokens_are_charged_at_the_cached_rate_and_not_again_as_input(self) -> None:
        usage = Usage(prompt_tokens=1_000, cached_tokens=400, completion_tokens=100)

        cost = GPT_4O.cost_of(usage)

        # 600 uncached * 2.50 + 400 cached * 1.25 + 100 out * 10.00 = 3000 per million
        assert cost == Decimal("0.003")

    def test_cached_tokens_cost_the_input_price_when_no_cached_price_is_known(self) -> None:
        price = Price(Decimal("3"), Decimal("15"))
        with_cache = Usage(prompt_tokens=1_000, cached_tokens=800)
        without_cache = Usage(prompt_tokens=1_000)

        assert price.cost_of(with_cache) == price.cost_of(without_cache) == Decimal("0.003")

    def test_cache_writes_are_charged_at_the_cache_write_rate(self) -> None:
        # Claude-style prices: $3 in, $0.30 cache read, $3.75 cache write, $15 out.
        price = Price(
            Decimal("3"),
            Decimal("15"),
            cached_input_per_mtok=Decimal("0.30"),
            cache_write_per_mtok=Decimal("3.75"),
        )
        usage = Usage(
            prompt_tokens=1_000, cached_tokens=200, cache_write_tokens=300, completion_tokens=10
        )

        # 500 * 3 + 200 * 0.30 + 300 * 3.75 + 10 * 15 = 1500 + 60 + 1125 + 150 = 2835
        assert price.cost_of(usage) == Decimal("0.002835")

    def test_one_hour_cache_writes_are_charged_at_their_own_rate(self) -> None:
        # Claude-style: a five-minute write costs $3.75, a one-hour write $6.
        price = Price(
            Decimal("3"),
            Decimal("15"),
            cached_input_per_mtok=Decimal("0.30"),
            cache_write_per_mtok=Decimal("3.75"),
            cache_write_1h_per_mtok=Decimal("6"),
        )
        usage = Usage(prompt_tokens=1_000, cache_write_tokens=300, cache_write_1h_tokens=100)

        # 700 * 3 + 200 * 3.75 + 100 * 6 = 2100 + 750 + 600 = 3450
        assert price.cost_of(usage) == Decimal("0.00345")

    def test_one_hour_writes_cost_the_cache_write_rate_when_no_own_rate_is_known(self) -> None:
        price = Price(Decimal("3"), Decimal("15"), cache_write_per_mtok=Decimal("3.75"))
        hour = Usage(prompt_tokens=1_000, cache_write_tokens=300, cache_write_1h_tokens=300)
        minutes = Usage(prompt_tokens=1_000, cache_write_tokens=300)

        assert price.cost_of(hour) == price.cost_of(minutes) == Decimal("0.003225")

    def test_a_one_hour_count_above_the_writes_is_never_charged_twice(self) -> None:
        price = Price(Decimal("3"), Decimal("15"), cache_write_1h_per_mtok=Decimal("6"))
        usage = Usage(prompt_tokens=1_000, cache_write_tokens=100, cache_write_1h_tokens=500)

        # 900 * 3 + 100 * 6: the one-hour count is capped at the writes it is part of.
        assert price.cost_of(usage) == Decimal("0.0033")

    def test_cost_is_quantized_to_the_ten_places_money_is_stored_with(self) -> None:
        cost = GPT_4O.cost_of(Usage(prompt_tokens=1, completion_tokens=1))

        assert cost == Decimal("0.0000125")
        assert places(cost) == 10

    def test_amounts_below_the_tenth_place_are_rounded_once_half_to_even(self) -> None:
        tiny = Price(Decimal("0.00005"), Decimal("0"))

        # 3 tokens * 0.00005 / 1e6 = 1.5e-10 -> 2e-10; 1 token = 0.5e-10 -> 0
        assert tiny.cost_of(Usage(prompt_tokens=3)) == Decimal("2e-10")
        assert tiny.cost_of(Usage(prompt_tokens=1)) == Decimal(0)

    def test_no_tokens_cost_nothing(self) -> None:
        assert GPT_4O.cost_of(Usage()) == Decimal(0)

    def test_a_cached_count_above_the_prompt_never_makes_the_cost_negative(self) -> None:
        cost = GPT_4O.cost_of(Usage(prompt_tokens=100, cached_tokens=150))

        assert cost >= 0

    def test_a_very_long_conversation_keeps_every_digit(self) -> None:
        usage = Usage(prompt_tokens=2_000_000_000, completion_tokens=123_456_789)

        assert GPT_4O.cost_of(usage) == Decimal("6234.56789")


class TestPriceBook:
    def test_a_priced_model_has_a_cost(self) -> None:
        book = PriceBook({("openai", "gpt-4o"): GPT_4O})

        assert book.cost_of("openai", "gpt-4o", Usage(prompt_tokens=1_000)) == Decimal("0.0025")

    @pytest.mark.parametrize(
        ("provider", "model"), [("openai", "gpt-4o-mini"), ("azure", "gpt-4o"), ("", "")]
    )
    def test_an_unpriced_model_costs_none_never_a_guess(self, provider: str, model: str) -> None:
        book = PriceBook({("openai", "gpt-4o"): GPT_4O})

        assert book.price_of(provider, model) is None
        assert book.cost_of(provider, model, Usage(prompt_tokens=1_000)) is None

    def test_the_mock_model_is_priced_from_settings(self) -> None:
        settings = Settings(
            _env_file=None, mock_input_price_per_mtok="0.5", mock_output_price_per_mtok="1.5"
        )

        book = build_price_book(settings)

        assert book.price_of("mock", "mock") == Price(Decimal("0.5"), Decimal("1.5"))
        usage = Usage(prompt_tokens=2_000, completion_tokens=1_000)
        assert book.cost_of("mock", "mock", usage) == Decimal("0.0025")
