"""/api/v1/auth/stream-ticket: a single-use credential for `EventSource`, which sends no headers."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CurrentUser, StreamTicketsDep
from app.api.v1.openapi import problems
from app.schemas.auth import StreamTicketRead

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/stream-ticket", response_model=StreamTicketRead, responses=problems(401))
async def create_stream_ticket(
    principal: CurrentUser, tickets: StreamTicketsDep
) -> StreamTicketRead:
    """Valid once, for 60 seconds, for this caller: `GET .../stream?ticket=` accepts it."""
    issued = await tickets.issue(principal)
    return StreamTicketRead(ticket=issued.ticket, expires_in=issued.expires_in)
