"""The month a charge is filed under: the `user_monthly_usage.month` key, `YYYY-MM` in UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from app.repositories.usage import month_of


def test_a_month_is_the_year_and_the_zero_padded_month() -> None:
    assert month_of(datetime(2026, 1, 31, 23, 59, 59, tzinfo=UTC)) == "2026-01"
    assert month_of(datetime(2026, 12, 1, tzinfo=UTC)) == "2026-12"


def test_it_matches_the_strftime_it_replaced() -> None:
    for month in range(1, 13):
        moment = datetime(2027, month, 15, tzinfo=UTC)
        assert month_of(moment) == moment.strftime("%Y-%m")
