"""Stream tickets: what a browser trades its bearer credential for before opening a stream."""

from __future__ import annotations

from app.schemas.common import Schema


class StreamTicketRead(Schema):
    """A single-use ticket for `GET .../stream?ticket=`, valid for `expires_in` seconds."""

    ticket: str
    expires_in: int
