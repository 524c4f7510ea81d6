"""All SQL of a turn: read what it needs, claim it, store its outcome. Few round trips.

A turn reads its conversation, prompt history, running reply and the owner's month spent
(`view`), decides in Python (model, budget, limits), then claims the turn (`claim`): its
messages are inserted only if the conversation's `message_count` is still what `view` read.
Every turn adds to that count, so an unchanged count proves the history read is still the
whole history (optimistic concurrency, no row held locked across the two). At the end the
reply's outcome, the conversation's totals and the month's usage are stored together
(`complete`).

On Postgres each of the three is one statement (the read a SELECT, the claim and the outcome
writable CTEs), atomic on its own, so a turn sent without an `Idempotency-Key` needs no
BEGIN/COMMIT: three round trips in all. A conversation that starts with its turn
(`/v1/chat/completions`) is created with its messages by one statement too (`start`). On
SQLite (no writable CTEs) the read and the claim share one transaction, the outcome another.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Select,
    Table,
    Text,
    Uuid,
    bindparam,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.db.driver import Statements
from app.db.models import Conversation, Message, MessageRole, MessageStatus, UserMonthlyUsage
from app.db.rows import column_values, with_defaults
from app.providers.base import ChatMessage, Usage
from app.repositories.branch_path import PATH_ARRAYS, PATH_ROWS, BranchPath
from app.repositories.conversations import (
    CHARGE_TOTALS,
    INSERT_CONVERSATION,
    ConversationRepo,
    TurnConversation,
    conversation_params,
)
from app.repositories.messages import (
    COLUMN_OF,
    FINISH_RUNNING,
    MUTABLE_COLUMNS,
    MessageRepo,
    changes_of,
    is_running_reply_violation,
)
from app.repositories.usage import SPENT, UserUsageRepo, charge_month_statement


class Claim(Enum):
    CLAIMED = "claimed"
    # The conversation changed since it was read (another turn, a delete): read it again.
    STALE = "stale"
    # A reply is already running in the conversation.
    RUNNING = "running"


@dataclass(frozen=True, slots=True)
class TurnView:
    """What a turn reads before it is claimed, as of one moment: `branch` is the prompt along
    the branch the read walked (empty when no history was wanted)."""

    conversation: TurnConversation
    message_count: int
    branch: BranchPath
    reply_running: bool
    month_spent: Decimal

    @property
    def leaf(self) -> UUID | None:
        """Where the walk started: by default the active leaf (else the newest message)."""
        return None if self.branch.end is None else self.branch.end.id

    @property
    def history(self) -> list[ChatMessage]:
        """What the model sees of the branch, down to its end."""
        return [message for _, message in self.branch.nodes]

    def history_before(self, message_id: UUID) -> list[ChatMessage]:
        """`history` without `message_id` (a reply being regenerated)."""
        return [message for node, message in self.branch.nodes if node != message_id]


class TurnRepo:
    """A turn's statements, on a driver connection (Postgres, each statement atomic alone)
    or in a session's transaction (SQLite, or work that must commit with them)."""

    def __init__(self, statements: Statements) -> None:
        self.statements = statements
        session = statements.session
        self._session = session
        self.postgres = session is None or session.get_bind().dialect.name == "postgresql"

    @property
    def session(self) -> AsyncSession:
        """The session (SQLite's steps, a recorder's write); never on the driver path."""
        if self._session is None:
            raise RuntimeError("this turn's statements run on the driver, without a session")
        return self._session

    async def view(
        self,
        conversation_id: UUID,
        owner: str | None,
        month: str,
        *,
        history: bool = True,
        from_message: UUID | None = None,
    ) -> TurnView | None:
        """The conversation (only `owner`'s, unless `None`), its prompt history (unless not
        wanted: then empty), whether a reply runs in it and its owner's spending in `month`;
        `None` if not found.

        The history is the branch ending at `from_message`, else at the active leaf.
        """
        params = {
            "conversation_id": conversation_id,
            "owner": owner,
            "month": month,
            "from_message": from_message,
        }
        statement = _VIEW[self.postgres, owner is not None, history]
        found = await self.statements.rows(statement, params)
        if not found:
            return None
        row = tuple(found[0])
        conversation = TurnConversation(*row[:_CONVERSATION_FIELDS])
        message_count, spent, running = row[_CONVERSATION_FIELDS : _CONVERSATION_FIELDS + 3]
        if not history:
            branch = BranchPath(None, [])
        elif self.postgres:
            branch = BranchPath.of_arrays(row[_CONVERSATION_FIELDS + 3 :])
        else:
            branch = BranchPath.of_rows(await self.statements.rows(PATH_ROWS, params))
        return TurnView(conversation, message_count, branch, bool(running), Decimal(spent))

    async def claim(
        self, conversation_id: UUID, seen_count: int, messages: Sequence[Message]
    ) -> Claim:
        """Insert a turn's messages (its in-progress reply last) and count them, if the
        conversation still holds `seen_count` messages and no reply is running in it.

        On `RUNNING` a transaction around the claim has failed: the caller must end it.
        """
        for message in messages:
            message.conversation_id = conversation_id
            with_defaults(message)
        params: dict[str, Any] = {
            "conversation_id": conversation_id,
            "seen_count": seen_count,
            "added": len(messages),
            "now": utcnow(),
            "new_leaf": messages[-1].id,
        }
        if not self.postgres:
            counted = await self.session.execute(_COUNT_IF_UNCHANGED, params)
            if not getattr(counted, "rowcount", 0):
                return Claim.STALE
            claimed = await MessageRepo(self.session).claim_generation(*messages)
            return Claim.CLAIMED if claimed else Claim.RUNNING
        params.update(_message_params(messages))
        try:
            inserted = await self.statements.rows(_CLAIM, params)
        except IntegrityError as error:
            if not is_running_reply_violation(error):
                raise
            return Claim.RUNNING
        # Nothing inserted: the count had moved on (or the conversation is gone).
        return Claim.CLAIMED if inserted else Claim.STALE

    async def month_spent(self, owner: str, month: str) -> Decimal:
        found = await self.statements.rows(SPENT, {"user_id": owner, "month": month})
        return Decimal(found[0][0]) if found else Decimal(0)

    async def start(self, conversation: Conversation, messages: Sequence[Message]) -> None:
        """Insert a new conversation (counting `messages`) with its first messages, the
        in-progress reply last: one statement on Postgres, all or nothing."""
        with_defaults(conversation)
        conversation.message_count = len(messages)
        for message in messages:
            message.conversation_id = conversation.id
            with_defaults(message)
        if not self.postgres:
            await ConversationRepo(self.session).add(conversation)
            if not await MessageRepo(self.session).claim_generation(*messages):
                raise RuntimeError("a new conversation cannot have a running reply")
            return
        params = conversation_params(conversation)
        params.update(_message_params(messages))
        await self.statements.rows(_START, params)

    async def complete(
        self, reply: Message, owner: str, month: str, usage: Usage, cost: Decimal
    ) -> bool:
        """Store a reply's outcome (every column but its identity), add its tokens and cost to
        its conversation's totals and its usage to the owner's month, if the reply is still
        `in_progress`; whether it was (False: it had already ended, nothing was written).

        Conditional, so running it again (a retry after a dropped connection that may have
        applied it) can never charge twice. Conversation, then message, then month: the
        order every writer of a turn locks them in (a turn's claim locks the conversation
        first too), so two never deadlock.
        """
        if not self.postgres:
            # BEGIN IMMEDIATE holds SQLite's write lock: nothing changes between the two.
            if not await self.finish(reply):
                return False
            await ConversationRepo(self.session).charge(
                reply.conversation_id, tokens=usage.total_tokens, cost_usd=cost
            )
            await UserUsageRepo(self.session).charge(owner, month, usage, cost)
            return True
        params = changes_of(reply)
        # No parameter is named like a column of a table written: SQLAlchemy would add a
        # `SET column = :name` for it.
        params.update(
            charged_conversation=reply.conversation_id,
            tokens=usage.total_tokens,
            cost=cost,
            now=reply.updated_at,
            owner=owner,
            month=month,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
        )
        found = await self.statements.rows(_COMPLETE, params)
        return bool(found and found[0][0])

    async def finish(self, reply: Message) -> bool:
        """Write a running reply's end (every column but its identity) in one UPDATE, if it
        is still `in_progress`; whether it was."""
        return bool(await self.statements.rows(FINISH_RUNNING, changes_of(reply)))

    async def save_partials(self, texts: Mapping[UUID, str]) -> None:
        """Running replies' text so far (and a sign of life), each unless it has ended.

        On Postgres one statement for any number of replies (an array per column).
        """
        now = utcnow()
        if self.postgres:
            params = {"reply_ids": list(texts), "texts": list(texts.values()), "now": now}
            await self.statements.rows(_SAVE_PARTIALS, params)
            return
        for reply_id, text in texts.items():
            params = {"reply_id": reply_id, "partial_text": text, "now": now}
            await self.statements.rows(_SAVE_PARTIAL, params)


_CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]
_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_USAGE: Table = UserMonthlyUsage.__table__  # type: ignore[assignment]
_c, _m, _u = _CONVERSATIONS.c, _MESSAGES.c, _USAGE.c


def _message_params(messages: Sequence[Message]) -> dict[str, Any]:
    """`_inserted_messages`' parameters: `m_<column>`, the column's values in order."""
    rows = [column_values(message) for message in messages]
    return {f"m_{column}": [row[column] for row in rows] for column in COLUMN_OF.values()}


def _view_statement(*, postgres: bool, owned: bool, history: bool) -> Select[Any]:
    spent = (
        select(_u.cost_usd + _u.title_cost_usd)  # replies and generated titles
        .where(_u.user_id == _c.user_id, _u.month == bindparam("month"))
        .scalar_subquery()
    )
    # Answered by the partial unique index on running replies: its predicate is written out
    # as SQL, not bound, or a prepared statement's generic plan cannot use that index and
    # scans the conversation's messages instead.
    running = exists().where(
        _m.conversation_id == _c.id,
        _m.status == literal_column(f"'{MessageStatus.IN_PROGRESS.value}'"),
        _m.role == literal_column(f"'{MessageRole.ASSISTANT.value}'"),
    )
    statement = select(
        *(_c[name] for name in _TURN_CONVERSATION_COLUMNS),
        _c.message_count,
        func.coalesce(spent, literal(Decimal(0), _u.cost_usd.type)),
        running,
    ).where(_c.id == bindparam("conversation_id"))
    if owned:
        statement = statement.where(_c.user_id == bindparam("owner"))
    if postgres and history:
        # The branch's prompt as an array per column in the same row: one statement.
        path = PATH_ARRAYS.lateral("branch")
        statement = statement.add_columns(*path.c).select_from(_CONVERSATIONS.join(path, true()))
    return statement


# What a turn reads of its conversation (`TurnConversation`'s fields, in order).
_TURN_CONVERSATION_COLUMNS = tuple(field.name for field in dataclasses.fields(TurnConversation))
_CONVERSATION_FIELDS = len(_TURN_CONVERSATION_COLUMNS)

# Keyed (is Postgres, filtered by owner, with history); built once: each caches its SQL.
_VIEW = {
    (postgres, owned, history): _view_statement(postgres=postgres, owned=owned, history=history)
    for postgres in (False, True)
    for owned in (False, True)
    for history in (False, True)
}

_SAVE_PARTIAL = (
    update(_MESSAGES)
    .where(_m.id == bindparam("reply_id"), _m.status == MessageStatus.IN_PROGRESS)
    .values(content=bindparam("partial_text"), updated_at=bindparam("now"))
)

_SAVED = (
    func.unnest(
        bindparam("reply_ids", type_=ARRAY(Uuid())), bindparam("texts", type_=ARRAY(Text()))
    )
    .table_valued("id", "text")
    .render_derived(name="saved")
)
_SAVE_PARTIALS = (
    update(_MESSAGES)
    .where(_m.id == _SAVED.c.id, _m.status == MessageStatus.IN_PROGRESS)
    .values(content=_SAVED.c.text, updated_at=bindparam("now"))
)

_COUNT_IF_UNCHANGED = (
    update(_CONVERSATIONS)
    .where(_c.id == bindparam("conversation_id"), _c.message_count == bindparam("seen_count"))
    .values(
        message_count=_c.message_count + bindparam("added"),
        updated_at=bindparam("now"),
        # The turn's reply is the end of the branch the conversation continues from.
        active_leaf_id=bindparam("new_leaf", type_=_c.active_leaf_id.type),
    )
)


def _inserted_messages(source: Any) -> Any:
    """`INSERT INTO messages` of any number of messages, one row per row the data-modifying
    CTE `source` returns (none when it wrote nothing).

    Each column travels as one array (`m_<column>`) and `unnest` turns them back into rows,
    so one statement serves every number of messages: a statement with a row of parameters
    per message took 2.4 s to compile for the 1,001 rows a client may send at once.
    """
    names = list(COLUMN_OF.values())
    arrays = [bindparam(f"m_{name}", type_=ARRAY(_m[name].type, dimensions=1)) for name in names]
    rows = func.unnest(*arrays).table_valued(*names).render_derived(name="new_messages")
    return (
        insert(_MESSAGES)
        .from_select(
            names,
            # A row per message for the one row `source` returned (ON true: a cross join).
            select(*(rows.c[name] for name in names)).select_from(source.join(rows, true())),
        )
        .add_cte(source, nest_here=True)
        .returning(_m.id)
    )


# Postgres: count the messages in if the count is unchanged, and insert them only then.
# `WITH counted AS (UPDATE conversations ... RETURNING id) INSERT INTO messages SELECT ...
# FROM counted, unnest(...)`: the conversation is locked before its messages are written, and
# no row is inserted when the count had moved on.
_CLAIM = _inserted_messages(_COUNT_IF_UNCHANGED.returning(_c.id).cte("counted"))

# Postgres: a new conversation and its first messages, `WITH started AS (INSERT INTO
# conversations ... RETURNING id) INSERT INTO messages SELECT ... FROM started, unnest(...)`.
_START = _inserted_messages(INSERT_CONVERSATION.returning(_c.id).cte("started"))


def _complete_statement() -> Select[Any]:
    """Postgres: the reply's end, its conversation's totals and its month, in one statement,
    all only if the reply was still running.

    `WITH locked AS (SELECT ... FOR UPDATE), saved AS (UPDATE messages ... WHERE status =
    'in_progress' AND EXISTS (locked)), charged AS (UPDATE conversations ... WHERE EXISTS
    (saved)), used AS (INSERT ... SELECT ... WHERE EXISTS (saved) ON CONFLICT ...)`. The
    conversation is locked first (the uncorrelated EXISTS runs before the message is
    touched), so the lock order stays conversation, message, month. A second attempt that
    waited on the lock finds the reply ended (the UPDATE rechecks `status` on the newest row)
    and charges nothing.
    """
    locked = (
        select(_c.id)
        .where(_c.id == bindparam("charged_conversation"))
        .with_for_update()
        .cte("locked")
    )
    saved = (
        update(_MESSAGES)
        .where(
            _m.id == bindparam("message_id"),
            _m.status == MessageStatus.IN_PROGRESS,
            exists(select(locked.c.id)),
        )
        .values({column: bindparam(f"new_{column}") for column in MUTABLE_COLUMNS.values()})
        .returning(_m.id)
        .cte("saved")
    )
    charged = CHARGE_TOTALS.where(exists(select(saved.c.id))).returning(_c.id).cte("charged")
    month = charge_month_statement(
        postgres_insert,
        {
            # Typed: in `INSERT ... SELECT` the column cannot tell Postgres a parameter's type.
            "user_id": bindparam("owner", type_=_u.user_id.type),
            "month": bindparam("month", type_=_u.month.type),
            "requests": literal_column("1"),  # not a bound 1: that loses its value in a CTE
            "prompt_tokens": bindparam("prompt_tokens", type_=BigInteger),
            "completion_tokens": bindparam("completion_tokens", type_=BigInteger),
            "cached_tokens": bindparam("cached_tokens", type_=BigInteger),
            "cost_usd": bindparam("cost", type_=_u.cost_usd.type),
            "updated_at": bindparam("now", type_=_u.updated_at.type),
        },
        only_if=exists(select(saved.c.id)),
    )
    used = month.returning(_u.user_id).cte("used")
    return select(
        select(func.count()).select_from(saved).scalar_subquery(),
        select(func.count()).select_from(charged).scalar_subquery(),
        select(func.count()).select_from(used).scalar_subquery(),
    )


_COMPLETE = _complete_statement()
