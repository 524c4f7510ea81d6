"""/api/v1/usage: what was spent, grouped by model, provider, day or user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import CurrentUser, SessionDep
from app.api.v1.openapi import problems
from app.schemas.common import UserId
from app.schemas.usage import ReportBound, UsageGroupBy, UsageReport
from app.services.pricing import usage as service

router = APIRouter(prefix="/usage", tags=["usage"])


@router.get("", response_model=UsageReport, responses=problems(422))
async def get_usage(
    session: SessionDep,
    principal: CurrentUser,
    start: Annotated[ReportBound | None, Query(alias="from")] = None,
    end: Annotated[ReportBound | None, Query(alias="to")] = None,
    group_by: UsageGroupBy = UsageGroupBy.MODEL,
    user_id: Annotated[UserId | None, Query()] = None,
) -> UsageReport:
    """Replies in `[from, to)` (RFC 3339; a time without an offset is UTC), costliest first."""
    return await service.usage_report(
        session,
        principal,
        user_id=user_id,
        start=start,
        end=end,
        group_by=group_by,
    )
