"""The branch a turn continues, walked up its parent links in SQL.

A turn needs the prompt along one branch: the messages from the first one down to where the
turn continues (the active leaf, an edit's parent, a regenerated reply). Reading every message
of the conversation and walking the links in Python cost a turn on a 1,000-message
conversation 80 % more CPU than reading only the prompt had (`bench/history.py`), and the
more its replies were regenerated, the more it read that the model never sees. A recursive CTE
walks from the end up the primary key instead, so a turn reads only its path, whatever the
tree holds: one index probe per message on the path, in the same statement as the rest of
the turn's read on Postgres (`TurnRepo.view`), in the read's transaction on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import (
    CTE,
    Select,
    Table,
    Uuid,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by

from app.db.models import Conversation, Message
from app.providers.base import ChatMessage
from app.repositories.messages import PROMPT_COLUMNS, in_prompt, prompt_message

# A walk longer than this is a cycle in the links (never written by the service): it stops.
_MOST_STEPS = 1_000_000

_MESSAGES: Table = Message.__table__  # type: ignore[assignment]
_CONVERSATIONS: Table = Conversation.__table__  # type: ignore[assignment]
_m, _c = _MESSAGES.c, _CONVERSATIONS.c


@dataclass(frozen=True, slots=True)
class BranchEnd:
    """The message a walk started from, whether or not the model sees it (a failed reply)."""

    id: UUID
    parent_id: UUID | None
    role: str


@dataclass(frozen=True, slots=True)
class BranchPath:
    """The prompt along a branch: every message from the first down to `end` that the model
    should see, with its id. `end` is None when there was nothing to walk from (an empty
    conversation, or a message that is not one of the conversation's)."""

    end: BranchEnd | None
    nodes: list[tuple[UUID, ChatMessage]]

    @classmethod
    def of_arrays(cls, arrays: Sequence[Any]) -> BranchPath:
        """From `PATH_ARRAYS`' values (Postgres)."""
        end_id, end_parent, end_role, ids, *prompt = [values or [] for values in arrays]
        end = BranchEnd(end_id[0], end_parent[0], str(end_role[0])) if end_id else None
        messages = [prompt_message(*values) for values in zip(*prompt, strict=True)]
        return cls(end, list(zip(ids, messages, strict=True)))

    @classmethod
    def of_rows(cls, rows: Sequence[Any]) -> BranchPath:
        """From `PATH_ROWS`' rows (SQLite): first to end, the end always included."""
        end = None
        if rows:
            end_id, end_parent, _, end_role, *_ = rows[-1]
            end = BranchEnd(end_id, end_parent, str(end_role))
        nodes = [(row[0], prompt_message(*row[3:])) for row in rows if row[2]]
        return cls(end, nodes)


def _walk_start() -> Any:
    """Where a walk starts: the message named (`from_message`), else the conversation's active
    leaf, else its newest message. Each fallback is a subquery Postgres runs only if needed."""
    leaf = select(_c.active_leaf_id).where(_c.id == bindparam("conversation_id")).scalar_subquery()
    newest = (
        select(_m.id)
        .where(_m.conversation_id == bindparam("conversation_id"))
        .order_by(_m.created_at.desc(), _m.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return func.coalesce(bindparam("from_message", type_=Uuid()), leaf, newest)


def _branch_path() -> CTE:
    """`WITH RECURSIVE branch_path`: the start message (depth 0), its parent (1), and so on up
    to the first message, with what a prompt needs of each. Parameters: `conversation_id`,
    `from_message` (None: the active leaf)."""
    columns = (
        _m.id,
        _m.parent_id,
        (_m.conversation_id == bindparam("conversation_id")).label("in_conversation"),
        in_prompt().label("in_prompt"),
        *PROMPT_COLUMNS,
    )
    start = select(*columns, literal_column("0").label("depth")).where(
        _m.conversation_id == bindparam("conversation_id"), _m.id == _walk_start()
    )
    path = start.cte("branch_path", recursive=True)
    # Each step is a primary-key probe, and only that: given `conversation_id = :id` too, the
    # planner may scan the whole conversation at every step (it did, estimating conversations
    # short from the statistics: 1,000 messages took 38 ms instead of 2). A parent is always
    # in its child's conversation; `in_conversation` still keeps any other out of the prompt.
    # The probe is an explicit JOIN ... ON: written as a WHERE, SQLAlchemy's linter loses it
    # once the CTE is hoisted out of the LATERAL in `TurnRepo.view` and warns of a cartesian
    # product (the SQL is the same plan either way).
    step = (
        select(*columns, path.c.depth + 1)
        .select_from(_MESSAGES.join(path, _m.id == path.c.parent_id))
        .where(path.c.depth < _MOST_STEPS)
    )
    return path.union_all(step)


_PATH = _branch_path()
_AT_END = _PATH.c.depth == 0
_SEEN = and_(_PATH.c.in_prompt, _PATH.c.in_conversation)
_FIRST_TO_END = _PATH.c.depth.desc()
_PROMPT_NAMES = tuple(column.name for column in PROMPT_COLUMNS)

# Postgres, one row of arrays (`BranchPath.of_arrays`): the end's id, parent and role (an
# array of one, or null), then the id and `PROMPT_COLUMNS` of each message the model sees.
PATH_ARRAYS = select(
    func.array_agg(_PATH.c.id).filter(_AT_END).label("end_id"),
    func.array_agg(_PATH.c.parent_id).filter(_AT_END).label("end_parent_id"),
    func.array_agg(_PATH.c.role).filter(_AT_END).label("end_role"),
    *(
        func.array_agg(aggregate_order_by(_PATH.c[name], _FIRST_TO_END))
        .filter(_SEEN)
        .label(f"path_{name}")
        for name in ("id", *_PROMPT_NAMES)
    ),
)

# SQLite, a row per message (`BranchPath.of_rows`): id, parent, whether the model sees it,
# `PROMPT_COLUMNS`; those the model sees and the end, first to end.
PATH_ROWS: Select[Any] = (
    select(_PATH.c.id, _PATH.c.parent_id, _SEEN, *(_PATH.c[name] for name in _PROMPT_NAMES))
    .where(or_(_SEEN, _AT_END))
    .order_by(_FIRST_TO_END)
)
