"""A database that cannot serve right now (down, full, starting or shutting down), by SQLSTATE.

Such a failure is the database's, not the request's: the API answers it with a quick 503
`not_ready` and `Retry-After` (app/api/problems.py), and a finished reply's outcome waits it
out (app/db/durable.py). Postgres names it: class 08 (connection exception), class 53
(insufficient resources: 53300 too many connections, out of memory, disk full) and 57P01-03
(administrator or crash shutdown, cannot connect now: starting up or shutting down).
"""

from __future__ import annotations

UNAVAILABLE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03")


def sqlstate_of(error: BaseException) -> str | None:
    """The SQLSTATE of a driver error, of the driver error SQLAlchemy wraps, or of its cause."""
    seen: BaseException | None = error
    for _ in range(4):  # wrapper, DBAPI adapter, driver: a short chain
        if seen is None:
            return None
        state = getattr(seen, "sqlstate", None)
        if isinstance(state, str):
            return state
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def is_unavailable(error: BaseException) -> bool:
    """Whether the database refused or dropped the work for a reason of its own."""
    state = sqlstate_of(error)
    return state is not None and state.startswith(UNAVAILABLE_SQLSTATES)
