"""A finished reply is stored and charged even when no database connection is free at once.

Its final transaction waits out a pool that stays busy past `DB_POOL_TIMEOUT_SECONDS`
(retrying only the checkout, so nothing can be stored twice) instead of ending the stream
with an error and leaving the reply `in_progress` and uncharged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from app.core.config import Settings
from tests.factories import create_conversation
from tests.fakes.providers import FAKE_MODEL, FAKE_PROVIDER, StallingProvider, registry_with
from tests.sse import stream_message

StartApp = Callable[..., Any]
StateOf = Callable[[httpx.AsyncClient], dict[str, Any]]

# One connection, and a refusal after 0.2 s of waiting for it.
ONE_BUSY_CONNECTION = {"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_seconds": 0.2}


class TestStoringAFinishedReply:
    async def test_a_reply_finishing_while_the_pool_is_busy_is_stored_and_charged_once(
        self,
        start_app: StartApp,
        make_settings: Callable[..., Settings],
        state_of: StateOf,
    ) -> None:
        provider = StallingProvider()
        client = await start_app(
            make_settings(**ONE_BUSY_CONNECTION), providers=registry_with(provider)
        )
        conversation = await create_conversation(client, provider=FAKE_PROVIDER, model=FAKE_MODEL)
        reading = asyncio.create_task(stream_message(client, conversation["id"], "Take your time"))
        await provider.wait_until_entered(1)

        # Hold the pool's only connection well past its timeout while the reply finishes.
        holder = state_of(client)["sessionmaker"]()
        await holder.connection()
        provider.release()
        await asyncio.sleep(1.0)
        await holder.close()
        stream = await asyncio.wait_for(reading, timeout=30)

        assert stream.terminal.event == "done"
        stored = (await client.get(f"/api/v1/conversations/{conversation['id']}")).json()
        reply = stored["messages"][-1]
        assert reply["status"] == "completed"
        assert reply["content"] == provider.reply
        # Charged once: the fake model has no price, so its tokens are what the totals count.
        assert stored["total_tokens"] == reply["total_tokens"] > 0
        assert reply["cost_usd"] is None
        assert Decimal(str(stored["total_cost_usd"])) == 0
