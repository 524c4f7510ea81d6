"""`from` and `to` of a usage report: any RFC 3339 time, compared in UTC, never a 500.

A time at the calendar's edge whose offset carries it past the calendar in UTC
(`0001-01-01T00:00:00+14:00`) is a 422 naming the parameter, like any other bad value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from tests.factories import create_conversation, send_message

USAGE = "/api/v1/usage"


class TestReportBounds:
    @pytest.mark.parametrize(
        ("parameter", "value"),
        [
            ("to", "0001-01-01T00:00:00+14:00"),
            ("from", "0001-01-01T13:59:59.999999+14:00"),
            ("from", "9999-12-31T23:59:59-14:00"),
            ("to", "9999-12-31T10:00:00-23:59"),
        ],
    )
    async def test_a_bound_outside_the_calendar_in_utc_is_a_validation_error(
        self, client: httpx.AsyncClient, parameter: str, value: str
    ) -> None:
        response = await client.get(USAGE, params={parameter: value})

        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["code"] == "validation_error"
        assert body["request_id"] == response.headers["x-request-id"]
        assert [error["loc"] for error in body["errors"]] == [["query", parameter]]

    @pytest.mark.parametrize(
        "bounds",
        [
            {"from": "0001-01-01T00:00:00-14:00"},
            {"from": "0001-01-01T14:00:00+14:00"},
            {"to": "9999-12-31T23:59:59+14:00"},
            {"from": "0001-01-01T00:00:00", "to": "9999-12-31T23:59:59.999999"},
        ],
    )
    async def test_a_bound_at_the_calendars_edge_that_stays_inside_it_is_a_report(
        self, client: httpx.AsyncClient, bounds: dict[str, str]
    ) -> None:
        conversation = await create_conversation(client)
        await send_message(client, conversation["id"], "Count me.")

        response = await client.get(USAGE, params=bounds)

        assert response.status_code == 200, response.text
        assert [item["requests"] for item in response.json()["items"]] == [1]

    async def test_bounds_with_offsets_select_the_same_instants_as_in_utc(
        self, client: httpx.AsyncClient
    ) -> None:
        conversation = await create_conversation(client)
        await send_message(client, conversation["id"], "When was I?")
        now = datetime.now(UTC)
        far_east, far_west = timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))

        around = await client.get(
            USAGE,
            params={
                "from": (now - timedelta(minutes=5)).astimezone(far_east).isoformat(),
                "to": (now + timedelta(minutes=5)).astimezone(far_west).isoformat(),
            },
        )
        after = await client.get(
            USAGE, params={"from": (now + timedelta(minutes=5)).astimezone(far_west).isoformat()}
        )

        assert [item["requests"] for item in around.json()["items"]] == [1]
        assert after.json()["items"] == []
