"""A turn is read, then claimed only if its conversation has not changed since the read.

`TurnRepo` on the app's own pool (both backends): the claim is what keeps a prompt's history
whole without holding the conversation locked while the turn is decided.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db.base import utcnow
from app.db.driver import statements
from app.db.models import Message, MessageRole, MessageStatus
from app.providers.base import ChatMessage
from app.repositories.turns import Claim, TurnRepo, TurnView
from app.repositories.usage import month_of
from app.services.turns.turn_messages import chain
from tests.factories import create_conversation, send_message

StateOf = Callable[[httpx.AsyncClient], dict[str, Any]]
Sessions = async_sessionmaker[AsyncSession]


def turn_messages(
    conversation_id: UUID, text: str, parent: UUID | None = None
) -> tuple[Message, Message]:
    """A user message following `parent` and its in-progress reply, as a turn builds them."""
    now = utcnow()
    said = Message(
        conversation_id=conversation_id,
        role=MessageRole.USER,
        content=text,
        status=MessageStatus.COMPLETED,
        created_at=now,
    )
    reply = Message(
        conversation_id=conversation_id,
        role=MessageRole.ASSISTANT,
        status=MessageStatus.IN_PROGRESS,
        provider="mock",
        model="mock",
        created_at=now,
    )
    chain(parent, [said, reply])
    return said, reply


async def view(sessions: Sessions, conversation_id: UUID, owner: str | None = None) -> TurnView:
    async with statements(sessions, single_statements=True) as run:
        seen = await TurnRepo(run).view(conversation_id, owner, month_of(utcnow()))
    assert seen is not None
    return seen


class _Refused(Exception):
    pass


async def claim(sessions: Sessions, conversation_id: UUID, seen_count: int, text: str) -> Claim:
    """Claim as a turn does: a refused claim ends its transaction by raising."""
    leaf = (await view(sessions, conversation_id)).conversation.active_leaf_id
    try:
        async with statements(sessions, single_statements=True) as run:
            outcome = await TurnRepo(run).claim(
                conversation_id, seen_count, turn_messages(conversation_id, text, leaf)
            )
            if outcome is Claim.RUNNING:
                raise _Refused
    except _Refused:
        return Claim.RUNNING
    return outcome


async def new_conversation(
    client: httpx.AsyncClient, state_of: StateOf, **fields: Any
) -> tuple[Sessions, UUID]:
    """A conversation made through the API, and the app's own sessions to reach it with."""
    conversation = await create_conversation(client, **fields)
    return state_of(client)["sessionmaker"], UUID(conversation["id"])


class TestTurnClaims:
    async def test_a_claim_after_another_turn_landed_is_stale_and_stores_nothing(
        self, client: httpx.AsyncClient, state_of: StateOf
    ) -> None:
        sessions, conversation_id = await new_conversation(client, state_of)
        await send_message(client, str(conversation_id), "first")
        before = await view(sessions, conversation_id)

        await send_message(client, str(conversation_id), "landed in between")
        stale = await claim(sessions, conversation_id, before.message_count, "too late")

        assert stale is Claim.STALE
        stored = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
        assert stored["message_count"] == 4
        assert [m["content"] for m in stored["messages"]][::2] == ["first", "landed in between"]
        # Read again, the history holds the turn that landed, and the claim goes through.
        again = await view(sessions, conversation_id)
        assert [message.content for message in again.history][2] == "landed in between"
        assert await claim(sessions, conversation_id, again.message_count, "now") is Claim.CLAIMED

    async def test_a_claim_while_a_reply_runs_is_refused_and_stores_nothing(
        self, client: httpx.AsyncClient, state_of: StateOf
    ) -> None:
        sessions, conversation_id = await new_conversation(client, state_of)
        first = await view(sessions, conversation_id)
        assert await claim(sessions, conversation_id, 0, "running") is Claim.CLAIMED

        running = await view(sessions, conversation_id)
        # Claimed with the current count, so only the running reply stands in the way.
        refused = await claim(sessions, conversation_id, running.message_count, "second")

        assert (first.reply_running, running.reply_running) == (False, True)
        assert refused is Claim.RUNNING
        stored = (await client.get(f"/api/v1/conversations/{conversation_id}")).json()
        assert stored["message_count"] == 2
        assert [m["status"] for m in stored["messages"]] == ["completed", "in_progress"]

    async def test_the_view_is_the_prompt_history_in_order_and_the_month_spent(
        self, client: httpx.AsyncClient, state_of: StateOf
    ) -> None:
        sessions, conversation_id = await new_conversation(
            client, state_of, system_prompt="Be brief"
        )
        said = ["one 🎉", "two'); DROP TABLE messages;--", "three"]
        replies = [await send_message(client, str(conversation_id), text) for text in said]

        seen = await view(sessions, conversation_id)

        expected: list[ChatMessage] = []
        for text, turn in zip(said, replies, strict=True):
            reply = turn["message"]["content"]
            expected += [ChatMessage("user", text), ChatMessage("assistant", reply)]
        assert seen.history == expected
        assert seen.message_count == 6
        assert seen.conversation.system_prompt == "Be brief"
        assert not seen.reply_running
        charged = sum(Decimal(str(turn["cost_usd"])) for turn in replies)
        assert seen.month_spent == charged > 0

    async def test_the_view_of_someone_elses_or_a_missing_conversation_is_none(
        self, client: httpx.AsyncClient, state_of: StateOf
    ) -> None:
        sessions, conversation_id = await new_conversation(client, state_of)

        stored = await client.get(f"/api/v1/conversations/{conversation_id}")
        owner = stored.json()["user_id"]

        async with statements(sessions, single_statements=True) as run:
            turns = TurnRepo(run)
            month = month_of(utcnow())
            mine = await turns.view(conversation_id, owner, month)
            theirs = await turns.view(conversation_id, "someone-else", month)
            missing = await turns.view(UUID(int=0), None, month)

        assert mine is not None
        assert mine.conversation.id == conversation_id
        assert (theirs, missing) == (None, None)
