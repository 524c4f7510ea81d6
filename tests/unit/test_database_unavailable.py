"""Which database errors mean "the database cannot serve right now" (a 503, worth waiting
out) rather than "this request is wrong" (a 4xx or a 500): decided by SQLSTATE."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy.exc

from app.db.unavailable import is_unavailable, sqlstate_of


@pytest.mark.parametrize(
    "driver_error",
    [
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.ConnectionFailureError("connection failure"),
        asyncpg.exceptions.DiskFullError("could not extend file"),
    ],
)
def test_a_refusal_by_the_database_is_unavailable(driver_error: Exception) -> None:
    wrapped = sqlalchemy.exc.DBAPIError("SELECT 1", None, driver_error)
    assert is_unavailable(driver_error)
    assert is_unavailable(wrapped)


@pytest.mark.parametrize(
    "driver_error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.SerializationError("could not serialize access"),
        asyncpg.exceptions.UndefinedTableError("relation does not exist"),
        ValueError("not a driver error"),
    ],
)
def test_an_error_of_the_request_or_the_code_is_not(driver_error: Exception) -> None:
    assert not is_unavailable(sqlalchemy.exc.DBAPIError("SELECT 1", None, driver_error))


def test_the_sqlstate_is_found_through_the_cause_chain() -> None:
    adapter_error = RuntimeError("adapter")
    adapter_error.__cause__ = asyncpg.exceptions.TooManyConnectionsError("too many")
    assert sqlstate_of(adapter_error) == "53300"
