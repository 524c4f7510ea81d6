"""Core statements run on the pool's own asyncpg connection: SQLAlchemy compiles, asyncpg runs.

Through a session, one statement costs the worker about 950 µs of CPU (session, checkout in a
greenlet, autobegin, execution context, result objects) where the same statement on the
driver's connection costs about 150 µs, pool checkout included (bench: 2,000 reads of a turn's
conversation on Postgres, in one process). The few statements every turn runs (the API-key
lookup, the turn's read, claim and outcome) take this path on Postgres when each is atomic
alone. The SQL, its casts and its bind conversions are still SQLAlchemy's, compiled once per
statement; errors are raised as the same `sqlalchemy.exc` classes a session would raise, so
the API maps them as before (503 for a lost database, 409 for a claimed conversation).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy.exc
from sqlalchemy import ARRAY, CursorResult, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import Executable
from sqlalchemy.types import TypeEngine
from sqlalchemy.util.concurrency import greenlet_spawn

from app.db.session import unit_of_work


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """A statement as the driver takes it: SQL with `$n` placeholders and how to fill them."""

    sql: str
    names: tuple[str, ...]  # the parameter behind each `$n`, in order
    constants: Mapping[str, Any]  # values the statement itself holds (its literals)
    converters: Mapping[str, Callable[[Any], Any]]  # the type's bind conversion, where any

    def arguments(self, params: Mapping[str, Any]) -> list[Any]:
        arguments = []
        for name in self.names:
            value = params[name] if name in params else self.constants[name]
            convert = self.converters.get(name)
            arguments.append(value if convert is None else convert(value))
        return arguments


@functools.lru_cache(maxsize=256)
def compiled_for(statement: Executable, dialect: Dialect) -> DriverStatement:
    """Compile once per statement object (each is built once, at import; the bound only
    keeps a statement built per call, should one appear, from piling up)."""
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    names = tuple(compiled.positiontup or ())
    binds = {name: compiled.binds[name] for name in names}
    converters = {}
    for name, bind in binds.items():
        convert = _bind_conversion(bind.type, dialect)
        if convert is not None:
            converters[name] = convert
    constants = {name: bind.value for name, bind in binds.items() if not bind.required}
    return DriverStatement(str(compiled), names, constants, converters)


def _bind_conversion(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """The type's bind conversion, or None where a value goes to the driver as it is.

    An ARRAY's conversion copies the list through its item type's, even when there is none
    (text, numbers, uuids): a list per column of a turn's messages, for nothing.
    """
    implemented = type_.dialect_impl(dialect)
    if isinstance(implemented, ARRAY) and implemented.dimensions in (None, 1):
        if implemented.item_type.dialect_impl(dialect).bind_processor(dialect) is None:
            return None
    return implemented.bind_processor(dialect)


class Statements(Protocol):
    """Where a repository's statements run: a driver connection, or a session (`.session`)."""

    @property
    def session(self) -> AsyncSession | None: ...

    async def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any]: ...


class SessionStatements:
    """Statements in a session's transaction (SQLite, or work that must commit together)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    @property
    def session(self) -> AsyncSession:
        return self._session

    async def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any]:
        result = await self._session.execute(statement, params)
        if isinstance(result, CursorResult) and not result.returns_rows:
            return []  # an UPDATE without RETURNING
        return result.all()


# Wraps each statement the driver path runs, given its SQL (placeholders, never values): how
# tracing gives those statements spans, as SQLAlchemy's instrumentation does for the rest.
StatementObserver = Callable[[str], AbstractContextManager[object]]
_OBSERVERS: weakref.WeakKeyDictionary[Engine, list[StatementObserver]] = weakref.WeakKeyDictionary()


def observe_statements(engine: AsyncEngine, observer: StatementObserver) -> Callable[[], None]:
    """Have `observer` wrap every driver-path statement on `engine`; returns its removal."""
    observers = _OBSERVERS.setdefault(engine.sync_engine, [])
    observers.append(observer)
    return lambda: observers.remove(observer)


class DriverConnection:
    """One checked-out asyncpg connection, in autocommit: each statement is its own unit."""

    session = None

    def __init__(self, pooled: PoolProxiedConnection, engine: AsyncEngine) -> None:
        self._pooled = pooled
        self._driver: Any = pooled.driver_connection
        self._dialect = engine.dialect
        self._observers = _OBSERVERS.get(engine.sync_engine, ())

    async def rows(self, statement: Executable, params: Mapping[str, Any]) -> Sequence[Any]:
        """Every row the statement returns (asyncpg records: index them like tuples)."""
        compiled = compiled_for(statement, self._dialect)
        with ExitStack() as observed:
            for observer in self._observers:
                observed.enter_context(observer(compiled.sql))
            try:
                rows: Sequence[Any] = await self._driver.fetch(
                    compiled.sql, *compiled.arguments(params)
                )
            except Exception as error:
                raise self._translated(error, compiled.sql) from error
        return rows

    def _translated(self, error: Exception, sql: str) -> Exception:
        """The `sqlalchemy.exc` error a session would have raised for this driver error."""
        adapter: Any = self._pooled.dbapi_connection
        try:
            # SQLAlchemy's own asyncpg adapter maps driver errors to its DBAPI classes.
            adapter._handle_exception(error)
        except self._dialect.loaded_dbapi.Error as adapted:
            lost = self._dialect.is_disconnect(adapted, adapter, None)
            if lost:
                self._pooled.invalidate(adapted)
            return sqlalchemy.exc.DBAPIError.instance(
                sql,
                None,
                adapted,
                self._dialect.loaded_dbapi.Error,
                hide_parameters=True,  # bound values can be message text
                connection_invalidated=lost,
                dialect=self._dialect,
            )
        except Exception as other:  # not a driver error at all: raise it as it is
            return other
        return error


def engine_of(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    engine: AsyncEngine = sessionmaker.kw["bind"]
    return engine


def runs_on_driver(sessionmaker: async_sessionmaker[AsyncSession]) -> bool:
    """Whether this database takes the driver path (Postgres; SQLite keeps its sessions)."""
    return engine_of(sessionmaker).dialect.name == "postgresql"


async def checkout(engine: AsyncEngine) -> PoolProxiedConnection:
    """A pooled connection; if the database refuses a new one, the error a session raises.

    `raw_connection()` lets the driver's own error through when the database turns a new
    connection away (too many clients, starting up): a bare DBAPI error the API would answer
    with a 500, and that a reply's outcome would not wait out. A session's checkout wraps it
    as a `sqlalchemy.exc.DBAPIError`; so does this, the same way.
    """
    try:
        return await engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as error:
        dialect = engine.dialect
        raise sqlalchemy.exc.DBAPIError.instance(
            None,
            None,
            error,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=dialect.is_disconnect(error, None, None),
            dialect=dialect,
        ) from error


@asynccontextmanager
async def driver_connection(
    engine: AsyncEngine, pooled: PoolProxiedConnection | None = None
) -> AsyncIterator[DriverConnection]:
    """A pooled connection's driver (checked out here unless given), returned to the pool
    when the block ends.

    A block cancelled mid-statement leaves the connection in an unknown state: it is
    discarded rather than reused.
    """
    if pooled is None:
        pooled = await checkout(engine)
    try:
        yield DriverConnection(pooled, engine)
    except BaseException as error:
        if not isinstance(error, Exception):
            pooled.invalidate()
        raise
    finally:
        # Returning a connection can close it (an overflow connection the pool has no room
        # for): IO that SQLAlchemy's asyncio adapters only do inside a greenlet, as its own
        # AsyncConnection.close does. Called bare, that close failed (MissingGreenlet, logged
        # as "Exception closing connection") and left the connection open: 40 times in one
        # bench run at 256 clients.
        await greenlet_spawn(pooled.close)


@asynccontextmanager
async def statements(
    sessionmaker: async_sessionmaker[AsyncSession], *, single_statements: bool = False
) -> AsyncIterator[Statements]:
    """Somewhere to run statements, committed when the block ends (rolled back if it raises).

    `single_statements=True` promises that each statement the block runs is atomic alone:
    on Postgres they then run on the driver, in autocommit (no BEGIN/COMMIT round trips).
    Otherwise, and always on SQLite, they share one transaction.
    """
    if single_statements and runs_on_driver(sessionmaker):
        async with driver_connection(engine_of(sessionmaker)) as connection:
            yield connection
    else:
        async with unit_of_work(sessionmaker) as session:
            yield SessionStatements(session)
