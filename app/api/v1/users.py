"""The caller's own account data (`/api/v1/users/me/...`)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CurrentUser, SessionDep
from app.api.v1.openapi import problems
from app.services.conversations import erasure as service
from app.services.conversations.erasure import ErasedData

router = APIRouter(prefix="/users/me", tags=["users"])


@router.delete("/data", response_model=ErasedData, responses=problems(401))
async def erase_my_data(session: SessionDep, principal: CurrentUser) -> ErasedData:
    """Erase every conversation, message, feedback and `Idempotency-Key` record of the caller.

    Past months' usage totals are kept for billing under the anonymous user `erased`; the
    current month's stay the caller's, since the monthly budget counts them. API keys are
    kept (the account stays). A reply still running is erased too. Calling again erases
    nothing and answers zero counts. With auth off the caller is `anonymous`.
    """
    return await service.erase_user_data(session, principal)
