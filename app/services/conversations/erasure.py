"""Erasing a user's data: everything they stored goes; only anonymous spending totals stay."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.security import Principal
from app.repositories.conversations import ConversationRepo
from app.repositories.idempotency import IdempotencyRepo
from app.repositories.usage import UserUsageRepo
from app.schemas.common import Schema

log = structlog.get_logger(__name__)


class ErasedData(Schema):
    """How many of each were erased; all zero when there was nothing left to erase."""

    conversations: int
    messages: int
    feedback: int
    idempotency_keys: int


async def erase_user_data(session: AsyncSession, principal: Principal) -> ErasedData:
    """Erase the caller's data in the session's one transaction.

    Gone: every conversation of theirs with its messages and feedback, and every
    `Idempotency-Key` record (stored responses hold conversation data). Their usage of past
    months moves into the anonymous `erased` bucket, each month added in SQL, so billing sums
    stay whole. Kept: their API keys (the account lives on; only its data goes), and the
    current month's totals, which the budget counts: erasing must not reset a budget.

    A reply still running is erased with the rest: its outcome then finds no row to write
    and charges nothing. With auth off the caller is `anonymous`.
    """
    owner = principal.user_id  # the caller, never a user an admin names: this is /users/me
    # Conversations first, then months, then keys: the order a turn's writers lock them in.
    conversations = await ConversationRepo(session).erase_owned_by(owner)
    months = await UserUsageRepo(session).move_to_erased(owner)
    keys = await IdempotencyRepo(session).erase_owned_by(owner)
    erased = ErasedData(
        conversations=conversations.conversations,
        messages=conversations.messages,
        feedback=conversations.feedback,
        idempotency_keys=keys,
    )
    # Counts only: no user id in the log of an erasure.
    log.info("user data erased", usage_months_anonymized=months, **erased.model_dump())
    return erased
