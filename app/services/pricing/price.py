"""What a model costs per token, and what a reply costs: exact `Decimal` arithmetic only."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from app.providers.base import Usage

_PER_MTOK = Decimal(1_000_000)
# Stored money has 10 places (NUMERIC(18, 10)); round once, here, so totals equal their sums.
_MONEY_PLACES = Decimal("1e-10")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens; cached reads and cache writes default to the input price,
    one-hour cache writes to the cache write price."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal
    cached_input_per_mtok: Decimal | None = None
    cache_write_per_mtok: Decimal | None = None
    cache_write_1h_per_mtok: Decimal | None = None
    source: str = field(default="configured", compare=False)

    def cost_of(self, usage: Usage) -> Decimal:
        cached_rate = self.cached_input_per_mtok
        write_rate = (
            self.input_per_mtok if self.cache_write_per_mtok is None else self.cache_write_per_mtok
        )
        hour_rate = (
            write_rate if self.cache_write_1h_per_mtok is None else self.cache_write_1h_per_mtok
        )
        uncached = max(0, usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens)
        hour_writes = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
        total = (
            uncached * self.input_per_mtok
            + usage.cached_tokens * (self.input_per_mtok if cached_rate is None else cached_rate)
            + (usage.cache_write_tokens - hour_writes) * write_rate
            + hour_writes * hour_rate
            + usage.completion_tokens * self.output_per_mtok
        )
        return (total / _PER_MTOK).quantize(_MONEY_PLACES)
