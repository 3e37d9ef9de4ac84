"""Declarative base, column types, and the two transaction helpers every service uses.

SQLite (the development default) runs with WAL, foreign keys on, a busy timeout, and every
transaction opened with ``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes
fails with SQLITE_BUSY instead of waiting, so taking the write lock up front is what makes the
"lock, check, write" services correct there. PostgreSQL uses real row locks (``FOR UPDATE``).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from select import POLLIN, poll
from typing import Annotated, Any, TypeVar, cast

import psycopg
from psycopg import pq
from sqlalchemy import (
    DateTime,
    Integer,
    MetaData,
    Table,
    bindparam,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import (
    DeclarativeBase,
    Session,
    make_transient_to_detached,
    mapped_column,
    scoped_session,
)
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.pool import Pool
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes stored as naive UTC on every backend."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


intpk = Annotated[int, mapped_column(Integer, primary_key=True)]


class SimulatedClock:
    """A clock set to past times by a simulation (``dtx demo``), so that what the services
    stamp (screening, enrolment, submissions, audit events) falls on the simulated calendar.

    It never runs backwards and never ahead of the real time: ``advance_to`` moves it to a
    later time only (capped at now), and between moves it ticks with the real clock."""

    def __init__(self) -> None:
        self.offset: timedelta | None = None

    def now(self) -> datetime:
        real = datetime.now(UTC)
        return real if self.offset is None else real + self.offset

    def advance_to(self, at: datetime) -> None:
        real = datetime.now(UTC)
        target = at if self.offset is None else max(at, real + self.offset)
        self.offset = min(target, real) - real


_CLOCK: ContextVar[SimulatedClock | None] = ContextVar("dtx_simulated_clock", default=None)


@contextmanager
def simulated_clock() -> Iterator[SimulatedClock]:
    """Within the block, ``utcnow()`` reads a ``SimulatedClock`` (this context only)."""
    clock = SimulatedClock()
    token = _CLOCK.set(clock)
    try:
        yield clock
    finally:
        _CLOCK.reset(token)


def utcnow() -> datetime:
    """Return the current time in UTC, to the microsecond (a simulation's clock inside
    ``simulated_clock()``)."""
    clock = _CLOCK.get()
    return datetime.now(UTC) if clock is None else clock.now()


@event.listens_for(Engine, "connect")
def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    dbapi_connection.isolation_level = None  # let SQLAlchemy's "begin" hook emit BEGIN
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@event.listens_for(Pool, "checkout")
def _discard_if_ended_by_server(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """PostgreSQL: a pooled connection whose session the server ended is replaced before use,
    without a round trip for the live ones (the pool's ``pre_ping`` sent an empty query, ``;``,
    before every request's ``BEGIN``).

    An idle connection receives nothing unless its session ended: a restart, a crash or
    ``pg_terminate_backend`` sends the last message and closes the socket, which then polls
    readable (or hung up). Such a connection (or one libpq already knows is bad) is pinged as
    the pre-ping did; if the ping fails the pool discards it and opens a fresh one (the pool's
    reconnection on `DisconnectionError`). Anything else that arrived unasked (a parameter
    status after a configuration reload) passes the ping. A server that vanished without
    closing its sockets is found by the request's first statement instead (a 503, and the
    pool's reconnection as after any lost connection)."""
    pgconn = getattr(dbapi_connection, "pgconn", None)
    if pgconn is None:  # SQLite
        return
    try:
        if pgconn.status == pq.ConnStatus.OK and not _readable(pgconn.socket):
            return
        dbapi_connection.execute("SELECT 1")
        dbapi_connection.rollback()
    except psycopg.Error as exc:
        raise DisconnectionError(f"the server ended the session: {type(exc).__name__}") from exc


def _readable(fd: int) -> bool:
    """Whether the socket has input, an end of file or an error pending (no wait)."""
    poller = poll()
    poller.register(fd, POLLIN)
    return bool(poller.poll(0))


@event.listens_for(Engine, "begin")
def _sqlite_begin_immediate(conn: Any) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# Set while an idempotent request is served (``api/idempotency.py``): that request's session is
# then its unit of work, so ``transaction()`` on it only flushes and the request commits the
# change, its audit events, its idempotency record and the response it built, together, as its
# last step. Other sessions (a delivery after commit, a job) keep committing as usual.
_commit_deferred: ContextVar[Session | None] = ContextVar("dtx_commit_deferred", default=None)


def _real(session: Session) -> Session:
    """The Session behind a ``scoped_session`` proxy (the object itself otherwise)."""
    return session() if isinstance(session, scoped_session) else session  # type: ignore[no-any-return]


@contextmanager
def deferred_commit(session: Session) -> Iterator[None]:
    """Make every ``transaction()`` on ``session`` in the block flush instead of commit; the
    caller commits after the block."""
    token = _commit_deferred.set(_real(session))
    try:
        yield
    finally:
        _commit_deferred.reset(token)


@contextmanager
def transaction(session: Session, *, commit_now: bool = False) -> Iterator[Session]:
    """Run the block as one transaction: commit on success, roll back and re-raise on error.

    Inside ``deferred_commit(session)`` the block's work is flushed and committed later by the
    request, unless ``commit_now`` says it must stand whatever happens next (a failed password
    check counts towards the lockout even though the request then fails).
    """
    try:
        yield session
        if not commit_now and _commit_deferred.get() is _real(session):
            session.flush()
        else:
            session.commit()
    except BaseException:
        session.rollback()
        raise


M = TypeVar("M", bound=Base)


def loaded(
    session: Session, model: type[M], values: Mapping[Any, Any], *, refresh: bool = False
) -> M:
    """The persistent object of a row read by a Core statement on the session's connection
    (`values`: the row's mapping, keyed by column), as the ORM's query gives it, without its
    loading machinery (a hot path's read: it costs more than the statement's round trip): the
    object the session already holds for that row (its expired columns given the row's values,
    the others kept), else a new one holding the row's columns as committed values, put in the
    session as persistent and clean. With `refresh` a held object takes all the row's values,
    as with ``populate_existing`` (a row read under its lock).
    A column the statement did not select is left as a deferred column is: a new object loads
    it when it is first read (e.g. a participant's identifiers, which a data entry never reads
    and so never decrypts), a held one keeps what it has (with `refresh`: reads it again when
    it is next read).
    The caller flushes the session before the statement, as a query's autoflush does."""
    mapper = model.__mapper__
    held = session.identity_map.get(mapper.identity_key_from_row(values))  # type: ignore[arg-type]
    obj = held if held is not None else mapper.class_manager.new_instance()
    # a held object keeps its loaded values (unless `refresh`); its expired ones are the row's
    unloaded = None if held is None or refresh else inspect(held).unloaded
    absent = []
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if column not in values:
            absent.append(prop.key)
        elif unloaded is None or prop.key in unloaded:
            set_committed_value(obj, prop.key, values[column])
    if held is not None and refresh and absent:
        session.expire(held, absent)  # as populate_existing: read again when next read
    if held is None:
        make_transient_to_detached(obj)  # (what the row lacks is marked expired)
        session.add(obj)
    return cast(M, obj)


def insert_row(session: Session, obj: M) -> M:
    """Insert a new object's row with one Core ``INSERT`` (its key returned) and put it in the
    session as persistent and clean: the row and the object a flush would give, without the
    unit of work's per-flush bookkeeping (a hot path's new row; see save_form). Runs before any
    pending change of the session is flushed: the caller has set what the row needs.

    Every column attribute but the primary key must be set on the object: no column default
    is applied here (a ``ValueError`` names a missing one), so the row holds exactly the values
    the object shows. (New rows no object is needed for: `insert_many`.)"""
    mapper = inspect(type(obj))
    [key] = mapper.primary_key
    given = obj.__dict__
    row: dict[str, Any] = {}
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        if column is key:
            continue
        if prop.key not in given:
            raise ValueError(f"insert_row: {type(obj).__name__}.{prop.key} is not set")
        row[column.key] = given[prop.key]
    table = cast(Table, mapper.local_table)
    inserted = session.connection().execute(insert(table), row).inserted_primary_key
    assert inserted is not None
    setattr(obj, mapper.get_property_by_column(key).key, inserted[0])
    make_transient_to_detached(obj)
    session.add(obj)
    return obj


def insert_many(
    connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> list[Any]:
    """Insert rows (each every column but the key, by column key) with one statement; return
    their keys in the rows' order.

    PostgreSQL: one array per column (`_unnest_insert`), so the statement's text and parameters
    are the same whatever the number of rows (the driver parses it once per process, where a
    multi-row VALUES is written out and parsed again at each call). SQLite: the dialect's own
    insert of many rows (a statement per row, in process)."""
    [key] = table.primary_key.columns
    if connection.dialect.name == "postgresql":
        arrays = {c.key: [row[c.key] for row in rows] for c in table.columns if c is not key}
        # the keys drawn in the rows' order (`_unnest_insert`), so in ascending order
        return sorted(connection.execute(_unnest_insert(table), arrays).scalars())
    statement = insert(table).returning(key, sort_by_parameter_order=True)
    return list(connection.execute(statement, list(rows)).scalars())


@functools.lru_cache(maxsize=16)
def _unnest_insert(table: Table) -> Any:
    """PostgreSQL: ``INSERT INTO table (columns) SELECT ... FROM unnest(:c1, :c2, ...) WITH
    ORDINALITY ORDER BY ordinality RETURNING key``, one array parameter per column but the
    key (each of its column's type: the type's own conversion of every element), built once
    per table. The key's default (its sequence) is drawn row by row in the order the rows
    reach the insert, the arrays' order, so the returned keys sorted are the rows' keys in
    order (what SQLAlchemy's own ordered multi-row insert relies on)."""
    [key] = table.primary_key.columns
    columns = [c for c in table.columns if c is not key]
    rows = (
        func.unnest(*(bindparam(c.key, type_=postgresql.ARRAY(c.type)) for c in columns))
        .table_valued(*(c.key for c in columns), with_ordinality="ordinality")
        .render_derived("r")
    )
    source = select(*(rows.c[c.key] for c in columns)).order_by(rows.c.ordinality)
    return insert(table).from_select([c.key for c in columns], source).returning(key)


def set_held(session: Session, model: type[Base], key: Any, values: Mapping[str, Any]) -> None:
    """Give the session's object of the row with primary key `key`, if the session holds one,
    `values` (by attribute) as committed values: after a Core statement wrote the row, the
    object shows what the row holds, as after a flush (a hot path that wrote a row without an
    ORM object; see randomize_participant). Nothing when the session holds no such object."""
    held = session.identity_map.get(model.__mapper__.identity_key_from_primary_key([key]))
    if held is not None:
        for name, value in values.items():
            set_committed_value(held, name, value)


@functools.lru_cache(maxsize=64)
def update_by_key(table: Table, columns: tuple[str, ...]) -> Any:
    """``UPDATE table SET columns WHERE key = :_key``, built once per table and columns."""
    [key] = table.primary_key.columns
    return update(table).where(key == bindparam("_key")).values({c: bindparam(c) for c in columns})


def lock_row(session: Session, model: type[M], row_id: int) -> M | None:
    """Load one row and hold its lock (``SELECT ... FOR UPDATE``) until the transaction ends."""
    stmt = (
        select(model)
        .where(model.id == row_id)  # type: ignore[attr-defined]
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one_or_none()
