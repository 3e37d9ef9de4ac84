"""Append-only, hash-chained audit trail, written in the same transaction as each change.

Chains. Every trial has its own chain (``trial:<id>``); account-level events use ``global``.
An event's hash is SHA-256 over the canonical JSON of all its fields, ``prev_hash`` included, so
editing, deleting, inserting or reordering a row breaks the chain at that row.

Concurrent writers. Events are buffered in the unit of work (``session.info``) as they are
appended (their canonical JSON and HMAC input prepared then, before any lock) and written when
the transaction commits (``before_commit``; earlier if something in the transaction reads the
audit tables): per chain one ``SELECT ... FOR UPDATE`` of the chain's head row
(``audit_chain_head``; on SQLite the whole database is already write-locked by ``BEGIN
IMMEDIATE``), then one head update and one multi-row insert of the events with seq+1.. and each
prev_hash the hash before it, all inside the caller's transaction. On PostgreSQL, when this
process committed the chain's last head, the events are hashed on that head before the lock and
one statement locks the head, checks it is still that head and only then moves it and inserts
them (`_GUESSED_WRITE`); otherwise (another process wrote since) the same statement has locked
the head and returned it, and the events are hashed on it and written as above. A randomization
locks its trial's counters and the chain's head in one statement and notes the head
(`hold_head`): its events are then written by one statement whichever process wrote last. The
head lock is therefore taken after every other lock and held only for those statements and the
commit (a randomization's, from its counters' lock), so two
transactions of the same trial cannot both read the same head: the second waits, then sees the
first one's committed head (READ COMMITTED re-reads the locked row). A rolled-back transaction
leaves neither an event nor a moved head (its buffer is dropped), so seq numbers stay gap-free
and the chain order is the commit order. Different trials never wait on each other; a
transaction writing to several chains locks them in name order (no lock cycles).

Keyed hashes and authorship. An event's hash is an HMAC under the chain key of the field key
named in ``key_id`` (``crypto.py``), so someone who can write the database but does not hold the
key cannot recompute a hash after editing, inserting or reordering rows. The hash covers
``auth_ref``, the API token or browser/ePRO session the actor used; `verify` checks it names a
session of that actor that existed at the event's time, so an event appended by a direct INSERT
(no app session) is reported. Events from before key ids (``key_id`` NULL) keep their plain
SHA-256 and are accepted only before the first keyed event of their chain.

Coverage. Models list the columns the trail covers in ``__audited__``; columns in ``__sealed__``
(direct identifiers, arm codes, arm-correlated state) are written as keyed fingerprints
(``s1:<key id>:<hmac>``), never as values, so the trail can be read by blinded roles and still
proves the data; columns in ``__digested__`` (large immutable content: protocol documents,
analysis results, report PDFs) are written as ``sha256:<hex>`` of their canonical JSON. Columns
deliberately left out are named with a reason in ``__unaudited__``. `verify` replays the trail
into the expected state of every covered row and compares it with the database. Device
observations are covered per ingested batch instead (``services/integrity.py``).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Connection,
    LargeBinary,
    String,
    bindparam,
    case,
    func,
    insert,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.sql.util import find_tables

from dtx_trials.crypto import CiphertextError, EncryptedText, UnknownKeyError, cipher
from dtx_trials.db import Base, utcnow
from dtx_trials.models.audit import AuditChainHead, AuditEvent
from dtx_trials.services.access import Actor

GENESIS = "0" * 64
GLOBAL_CHAIN = "global"


def chain_for(trial_id: int | None) -> str:
    return GLOBAL_CHAIN if trial_id is None else f"trial:{trial_id}"


def n_events(session: Session, chain: str) -> int:
    """The number of events in a chain, from its last seq: one index seek, not a COUNT over the
    chain (seq numbers are gap-free from 1; a missing row is what ``verify`` reports)."""
    return session.scalar(select(func.max(AuditEvent.seq)).where(AuditEvent.chain == chain)) or 0


def filter_choices(session: Session, chain: str) -> tuple[list[str], list[str]]:
    """The entity types and actions present in a chain, for the trail's filters.

    A skip scan over the (chain, entity_type, action) index: a recursive query takes the next
    (entity type, action) pair after the last one found, one index seek per pair, so the cost
    grows with the number of distinct pairs (tens), not with the length of the trail."""
    found = session.execute(_filter_choices_statement(), {"chain": chain}).all()
    return sorted({e for e, _ in found}), sorted({a for _, a in found if a is not None})


@functools.cache
def _filter_choices_statement() -> Any:
    """The skip scan of ``filter_choices`` (built once; the chain is a parameter). Each step is
    ``ORDER BY ... LIMIT 1`` rather than ``min()``: PostgreSQL without statistics scans every
    row of an entity type for a ``min()`` whose bound comes from another subquery."""
    table = AuditEvent.__table__
    chain = bindparam("chain")

    def first_type(after: Any = None) -> Any:
        a = table.alias()
        stmt = (
            select(a.c.entity_type)
            .where(a.c.chain == chain)
            .order_by(a.c.entity_type)
            .limit(1)
            .correlate_except(a)
        )
        return (stmt if after is None else stmt.where(a.c.entity_type > after)).scalar_subquery()

    def first_action(entity_type: Any, after: Any = None) -> Any:
        a = table.alias()
        stmt = (
            select(a.c.action)
            .where(a.c.chain == chain, a.c.entity_type == entity_type)
            .order_by(a.c.action)
            .limit(1)
            .correlate_except(a)
        )
        return (stmt if after is None else stmt.where(a.c.action > after)).scalar_subquery()

    start = first_type()
    pairs = select(start.label("entity_type"), first_action(start).label("action")).cte(
        "pairs", recursive=True
    )
    next_action = first_action(pairs.c.entity_type, pairs.c.action)
    next_type = first_type(pairs.c.entity_type)
    pairs = pairs.union_all(
        select(
            case((next_action.is_not(None), pairs.c.entity_type), else_=next_type),
            func.coalesce(next_action, first_action(next_type)),
        ).where(pairs.c.entity_type.is_not(None))
    )
    return select(pairs.c.entity_type, pairs.c.action).where(pairs.c.entity_type.is_not(None))


# exact types whose canonical JSON form is the value itself (subclasses such as enums and
# sealed values take the general path below)
_PLAIN_TYPES = frozenset({type(None), bool, int, str, float})


def to_jsonable(value: Any) -> Any:
    """Return the canonical JSON form of a column value (UTC datetimes end in Z)."""
    kind = type(value)
    if kind in _PLAIN_TYPES:  # the common cases first, without the isinstance chain
        return value
    if kind is dict:
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if kind is list:
        return [to_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:  # an instant given in another zone is its UTC instant
            value = value.astimezone(UTC)
        if value.year >= 1000:  # isoformat pads the year to 4 digits, strftime does not
            return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot audit value of type {type(value).__name__}")


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _as_text(value: Any) -> str:
    """The canonical JSON text of a value (a string is its own text)."""
    if isinstance(value, str):
        return value
    if type(value) in (dict, list):
        # a JSON column's value (a design state, an uploaded list: tens of KB) is dumped as it
        # is, without the Python walk of `to_jsonable`: the same text for every value a JSON
        # column holds (tests/dtx_trials/test_audit.py); one holding what JSON cannot (a
        # date, bytes) is walked first
        try:
            return canonical_json(value)
        except TypeError:
            pass
    return canonical_json(to_jsonable(value))


def digest(value: Any) -> str:
    """``sha256:<hex>`` of a value's canonical JSON (bytes are hashed as they are)."""
    data = bytes(value) if isinstance(value, bytes | memoryview) else _as_text(value).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


class SealedValue(str):
    """A sealed value (salted, so a new string at every seal) that remembers, in memory only,
    what it seals: `record_update` compares the values, not the salted seals."""

    plain: str

    def __new__(cls, sealed: str, plain: str) -> SealedValue:
        value = super().__new__(cls, sealed)
        value.plain = plain
        return value


def _unchanged(before: Any, after: Any) -> bool:
    if isinstance(before, SealedValue) and isinstance(after, SealedValue):
        return before.plain == after.plain
    return bool(before == after)


def snapshot(obj: Base, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """Return the audited columns of a row as canonical JSON values (sealed where required).

    ``fields`` limits the snapshot to those audited columns (a caller that changes only them:
    `record_update` then records the same changes without sealing the untouched columns)."""
    return _snapshot(type(obj), functools.partial(getattr, obj), fields)


def snapshot_row(
    model: type[Base], values: Mapping[str, Any], fields: Iterable[str] | None = None
) -> dict[str, Any]:
    """`snapshot` of a row given as a mapping of its attributes (a row written without an ORM
    object: every audited attribute, or those of ``fields``, must be in it)."""
    return _snapshot(model, values.__getitem__, fields)


def _snapshot(
    model: type[Base], value_of: Callable[[str], Any], fields: Iterable[str] | None
) -> dict[str, Any]:
    sealed = set(getattr(model, "__sealed__", ()))
    digested = set(getattr(model, "__digested__", ()))
    table = model.__tablename__
    out: dict[str, Any] = {}
    audited: tuple[str, ...] = model.__audited__  # type: ignore[attr-defined]
    names = audited if fields is None else [n for n in audited if n in set(fields)]
    for name in names:
        value = value_of(name)
        if value is None:
            out[name] = None
        elif name in sealed:
            plain = _as_text(value)
            out[name] = SealedValue(cipher().seal(plain, f"{table}.{name}"), plain)
        elif name in digested:
            out[name] = digest(value)
        else:
            out[name] = to_jsonable(value)
    return out


def _matches(obj: Base, name: str, recorded: Any) -> bool:
    """Whether the row's current value of `name` is what the trail recorded."""
    value = getattr(obj, name)
    if value is None or recorded is None:
        return value is None and recorded is None
    if name in getattr(obj, "__sealed__", ()):
        return cipher().seal_matches(recorded, _as_text(value), f"{obj.__tablename__}.{name}")
    if name in getattr(obj, "__digested__", ()):
        return bool(digest(value) == recorded)
    return bool(to_jsonable(value) == recorded)


def _trial_of(obj: Base, trial_id: int | None) -> int | None:
    if trial_id is not None:
        return trial_id
    if obj.__tablename__ == "trial":
        return obj.id  # type: ignore[attr-defined, no-any-return]
    return getattr(obj, "trial_id", None)


def _lock_head(connection: Connection, chain: str) -> tuple[int, str]:
    """Lock the chain's head row and return its (seq, hash): one ``SELECT ... FOR UPDATE`` (the
    first event of a chain creates the row first)."""
    row = connection.execute(_LOCK_HEAD, {"chain": chain}).first()
    if row is None:
        stmt_insert = (
            pg_insert(AuditChainHead)
            if connection.dialect.name == "postgresql"
            else sqlite_insert(AuditChainHead)
        )
        connection.execute(
            stmt_insert.values(chain=chain, seq=0, hash=GENESIS).on_conflict_do_nothing(
                index_elements=["chain"]
            )
        )
        row = connection.execute(_LOCK_HEAD, {"chain": chain}).one()
    return int(row.seq), str(row.hash)


_LOCK_HEAD = (
    select(AuditChainHead.__table__.c.seq, AuditChainHead.__table__.c.hash)
    .where(AuditChainHead.__table__.c.chain == bindparam("chain"))
    .with_for_update()
)


# Events appended in the current transaction and not written yet, in append order. They are
# written by `write_pending` when the transaction commits (or before anything in it reads the
# audit tables), and dropped with it on rollback.
_PENDING = "dtx_audit_pending"
_AUDIT_TABLES = frozenset({"audit_event", "audit_chain_head"})


@dataclass(frozen=True)
class Rider:
    """Data-modifying CTEs that ride on the events' write (PostgreSQL): ``sql`` is their
    definitions, ``name AS (UPDATE ...), name AS (INSERT ...)``, with named parameters (none
    of them named like a parameter of the audit statements: prefix them), and ``params`` their
    values. They run exactly once, whether or not the guessed head holds."""

    sql: str
    params: Mapping[str, Any]


def write_pending(session: Session, rider: Rider | None = None) -> None:
    """Write the transaction's buffered events: per chain one locked head read and one head
    update, and one multi-row insert of the events (on PostgreSQL the head update rides in the
    insert's statement, and with a good guess of the head the locked read too). The head is
    the last lock the transaction takes, held only from here to commit; chains are locked in
    name order, so two transactions never wait on each other in a cycle. Under the lock only
    what depends on the head is computed: each event's canonical JSON and its row were
    prepared when it was appended (`_Prepared`), so an event costs one HMAC copy and update.

    A `rider` (PostgreSQL only) is the caller's last writes, sent in the statement that takes
    the head with a guess (one round trip for both), or just before the events otherwise.

    The statements run on the session's connection as Core statements (none is an ORM
    statement): the session's execution layer would add its Python to a hold of the head and,
    for a randomization, of the trial's lock."""
    pending: list[_Prepared] | None = session.info.pop(_PENDING, None)
    if not pending:
        if rider is not None:
            session.connection().execute(_rider_alone(rider.sql), dict(rider.params))
        return
    connection = session.connection()
    by_chain: dict[str, list[_Prepared]] = defaultdict(list)
    for prepared in pending:
        by_chain[prepared.event.chain].append(prepared)
    is_postgres = connection.dialect.name == "postgresql"
    appended: dict[str, list[int]] = session.info.setdefault(APPENDED, {})
    written: dict[str, tuple[int, str]] = session.info.setdefault(_WRITTEN_HEADS, {})
    held: dict[str, tuple[int, str]] = session.info.get(_HELD_HEADS, {})
    if is_postgres and len(by_chain) == 1:
        [(chain, events)] = by_chain.items()
        guess = held.get(chain) or _last_heads.get((connection.engine.url, chain))
        if guess is not None:
            rows, head = _chain_rows(events, *guess)
            found = connection.execute(
                _GUESSED_WRITE if rider is None else _guessed_write_with(rider.sql),
                {"chain": chain, "guess_seq": guess[0], "guess_hash": guess[1],
                 "head_seq": head[0], "head_hash": head[1],
                 "rows": "[" + ",".join(
                     p.row_json(r["seq"], r["prev_hash"], r["hash"])
                     for p, r in zip(events, rows, strict=True)
                 ) + "]", **(rider.params if rider is not None else {})},
            ).first()  # fmt: skip
            rider = None  # written, whatever the head was
            if found is not None and found.written:
                _written(events, rows, chain, guess[0], head, appended, written, held)
                return
            if found is not None:  # the head moved since: this statement locked it
                rows, head = _chain_rows(events, int(found.seq), str(found.hash))
                connection.execute(
                    _INSERT_WITH_HEAD_UPDATE,
                    [{**row, "head_chain": chain, "head_seq": head[0], "head_hash": head[1]}
                     for row in rows],
                )  # fmt: skip
                _written(events, rows, chain, int(found.seq), head, appended, written, held)
                return
    if rider is not None:
        connection.execute(_rider_alone(rider.sql), dict(rider.params))
    all_rows: list[dict[str, Any]] = []
    heads: list[dict[str, Any]] = []
    for chain in sorted(by_chain):
        seq, prev_hash = _lock_head(connection, chain)
        rows, head = _chain_rows(by_chain[chain], seq, prev_hash)
        _written(by_chain[chain], rows, chain, seq, head, appended, written, held)
        all_rows.extend(rows)
        heads.append({"head_chain": chain, "head_seq": head[0], "head_hash": head[1]})
    if is_postgres and len(heads) == 1:
        # PostgreSQL runs a data-modifying WITH exactly once whether or not it is referenced;
        # SQLAlchemy sends the rows as one multi-row INSERT ("insertmanyvalues")
        connection.execute(_INSERT_WITH_HEAD_UPDATE, [{**row, **heads[0]} for row in all_rows])
    else:
        for params in heads:
            connection.execute(_HEAD_UPDATE, params)
        connection.execute(_INSERT, all_rows)


def _chain_rows(
    events: list[_Prepared], seq: int, prev_hash: str
) -> tuple[list[dict[str, Any]], tuple[int, str]]:
    """The rows of a chain's events after the head (seq, prev_hash), and the new head."""
    rows = []
    for prepared in events:
        seq += 1
        event_hash_ = prepared.hash(seq, prev_hash)
        rows.append({**prepared.row, "seq": seq, "prev_hash": prev_hash, "hash": event_hash_})
        prev_hash = event_hash_
    return rows, (seq, prev_hash)


def _written(
    events: list[_Prepared],
    rows: list[dict[str, Any]],
    chain: str,
    seq: int,
    head: tuple[int, str],
    appended: dict[str, list[int]],
    written: dict[str, tuple[int, str]],
    held: dict[str, tuple[int, str]],
) -> None:
    """Note what was written: on the events (plain attribute sets, for callers holding them),
    for the checkpoint scheduler, the head for the next transaction's guess, and a head the
    transaction holds (`hold_head`) where it now is."""
    for prepared, row in zip(events, rows, strict=True):
        # plain value holders (`append`): no instrumented attribute set
        prepared.event.__dict__.update(
            seq=row["seq"], prev_hash=row["prev_hash"], hash=row["hash"]
        )
    appended.setdefault(chain, [seq + 1, head[0]])[1] = head[0]
    written[chain] = head
    if chain in held:
        held[chain] = head  # still locked, now here


# Heads the transaction holds locked, read by the caller (`hold_head`): certain guesses.
_HELD_HEADS = "dtx_audit_held_heads"


def hold_head(session: Session, chain: str, seq: int, hash_: str) -> None:
    """Note that the transaction holds the chain's head locked at (seq, hash) (the caller read
    it ``FOR UPDATE``, with another lock it takes in the same statement: the randomization's
    counters): the events are then hashed on it before the write, which writes them in one
    statement on PostgreSQL, the guess being certain."""
    session.info.setdefault(_HELD_HEADS, {})[chain] = (seq, hash_)


# The head each chain had after the last commit of this process that wrote to it, by database:
# a guess for the next write (`_GUESSED_WRITE`), checked under the lock, never trusted.
_last_heads: dict[tuple[Any, str], tuple[int, str]] = {}
_WRITTEN_HEADS = "dtx_audit_written_heads"


@sa_event.listens_for(Session, "after_commit")
def _remember_heads(session: Session) -> None:
    written: dict[str, tuple[int, str]] | None = session.info.pop(_WRITTEN_HEADS, None)
    if written:
        if len(_last_heads) > 10_000:
            _last_heads.clear()
        url = session.get_bind().engine.url
        for chain, head in written.items():
            _last_heads[(url, chain)] = head


# Markers standing in for prev_hash and seq in an event's canonical JSON (`_Prepared`): random
# per process, so no stored value holds them unless it was made from this process's memory
_PREV_MARK = f"\x00prev_hash:{uuid.uuid4().hex}"
_SEQ_MARK = f"\x00seq:{uuid.uuid4().hex}"
_PREV_MARK_JSON = json.dumps(_PREV_MARK, ensure_ascii=False)
_SEQ_MARK_JSON = json.dumps(_SEQ_MARK, ensure_ascii=False)


def _cut_by_keys(fields: Mapping[str, Any]) -> tuple[str, str, str]:
    """The canonical JSON of ``fields`` before prev_hash's value, between it and seq's value,
    and after seq's value, built key by key (see `_Prepared`)."""
    names = sorted(fields)
    before, between, after = (
        names[: names.index("prev_hash")],
        names[names.index("prev_hash") + 1 : names.index("seq")],
        names[names.index("seq") + 1 :],
    )

    def pieces(keys: list[str]) -> str:
        return ",".join(
            json.dumps(k, ensure_ascii=False) + ":" + canonical_json(fields[k]) for k in keys
        )

    return (
        "{" + pieces(before) + ("," if before else "") + '"prev_hash":',
        ("," + pieces(between) if between else "") + ',"seq":',
        ("," + pieces(after) if after else "") + "}",
    )


class _Prepared:
    """An appended event and what its hash and row need that does not depend on the chain
    head, computed when it is appended (before any lock): its row without seq, prev_hash and
    hash, and its canonical JSON (`hashed_fields` → `canonical_json`) cut around the values
    of ``prev_hash`` and ``seq``, the part before them already fed to the chain key's HMAC.

    The canonical JSON of an object with sorted keys is "{" + the "key":value pieces in key
    order joined by "," + "}", each value dumped with the same options, so the pieces joined
    with the head's values in their places are byte for byte what `event_hash` hashes (the
    test suite checks `hash` against `event_hash` and every `verify`)."""

    __slots__ = ("_head", "_mac", "_middle", "_tail", "event", "row")

    def __init__(self, event: AuditEvent) -> None:
        self.event = event
        # a new event's columns, as `append` set them (read past the ORM's instrumentation)
        values = event.__dict__
        self.row = {name: values.get(name) for name in _PREPARED_COLUMNS}
        fields = hashed_fields(event, values)
        # one canonical dump with markers in the places of prev_hash and seq, cut at them
        whole = canonical_json({**fields, "prev_hash": _PREV_MARK, "seq": _SEQ_MARK})
        if whole.count(_PREV_MARK_JSON) == 1 and whole.count(_SEQ_MARK_JSON) == 1:
            self._head, _, rest = whole.partition(_PREV_MARK_JSON)
            self._middle, _, self._tail = rest.partition(_SEQ_MARK_JSON)
        else:  # a value holds a marker's text (it cannot by chance): cut key by key
            self._head, self._middle, self._tail = _cut_by_keys(fields)
        self._mac: Any = None
        if event.key_id is not None:
            self._mac = cipher().chain_hmac(str(event.key_id))
            self._mac.update(self._head.encode())

    def _rest(self, seq: int, prev_hash: str) -> str:
        return json.dumps(prev_hash) + self._middle + str(seq) + self._tail

    def hash(self, seq: int, prev_hash: str) -> str:
        rest = self._rest(seq, prev_hash).encode()
        if self._mac is None:
            return hashlib.sha256(self._head.encode() + rest).hexdigest()
        mac = self._mac.copy()
        mac.update(rest)
        return str(mac.hexdigest())

    def row_json(self, seq: int, prev_hash: str, hash_: str) -> str:
        """The event's row as a JSON object: the hashed canonical JSON (every column but id
        and hash, in their JSON forms) with the hash added."""
        return self._head + self._rest(seq, prev_hash)[:-1] + ',"hash":' + json.dumps(hash_) + "}"


# Statements with named parameters only, compiled once per process (literal values in a
# multi-row VALUES would be compiled again at every commit, under the head lock).
_HEAD = AuditChainHead.__table__
_HEAD_UPDATE = (
    update(_HEAD)
    .where(_HEAD.c.chain == bindparam("head_chain"))
    .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"))
)
_INSERT = insert(AuditEvent.__table__)
_INSERT_WITH_HEAD_UPDATE = _INSERT.add_cte(
    text(
        "UPDATE audit_chain_head SET seq = :head_seq, hash = :head_hash "
        "WHERE chain = :head_chain RETURNING chain"
    )
    .columns(chain=String)
    .cte("h")
)
_EVENT_COLUMNS = tuple(c.name for c in AuditEvent.__table__.columns if c.name != "id")
# PostgreSQL, one chain, its head guessed (the head this process last committed): one statement
# locks the head, and only if it is still the guess moves it and inserts the events hashed on
# it; it returns the locked head either way. The lock is then taken by the write itself, held
# for that one statement and the commit; when the guess is stale (another process wrote), the
# head is locked all the same and the events are hashed on the returned head and written by the
# usual statement: the same two statements as without a guess. Under READ COMMITTED the locking
# read returns the latest committed head once the lock is granted, and the UPDATE re-checks its
# condition on that version, so the events are written on the head they were hashed on or not
# at all. The rows travel as one JSON array (``json``, not ``jsonb``: texts kept as sent).
_GUESSED_WRITE = text(
    "WITH cur AS (SELECT seq, hash FROM audit_chain_head WHERE chain = :chain FOR UPDATE), "
    "h AS (UPDATE audit_chain_head SET seq = :head_seq, hash = :head_hash FROM cur "
    "WHERE audit_chain_head.chain = :chain AND cur.seq = :guess_seq "
    "AND cur.hash = :guess_hash RETURNING audit_chain_head.chain), "
    "ins AS (INSERT INTO audit_event ({columns}) SELECT {columns} "
    "FROM json_populate_recordset(NULL::audit_event, CAST(:rows AS json)) "
    "WHERE EXISTS (SELECT 1 FROM h)) "
    "SELECT cur.seq, cur.hash, EXISTS (SELECT 1 FROM h) AS written FROM cur".replace(
        "{columns}", ", ".join(_EVENT_COLUMNS)
    )
)
_PREPARED_COLUMNS = tuple(c for c in _EVENT_COLUMNS if c not in ("seq", "prev_hash", "hash"))


@functools.lru_cache(maxsize=16)
def _guessed_write_with(rider_sql: str) -> Any:
    """`_GUESSED_WRITE` with a rider's CTEs before its own (built once per rider text)."""
    own = _GUESSED_WRITE.text
    assert own.startswith("WITH ")
    return text("WITH " + rider_sql + ", " + own[len("WITH ") :])


@functools.lru_cache(maxsize=16)
def _rider_alone(rider_sql: str) -> Any:
    return text("WITH " + rider_sql + " SELECT 1")


def _touches_audit(statement: Any) -> bool:
    try:
        tables = find_tables(statement, include_crud=True, include_joins=True)
    except Exception:  # pragma: no cover - an exotic statement: write first, to be safe
        return True
    return any(getattr(t, "name", None) in _AUDIT_TABLES for t in tables)


@sa_event.listens_for(Session, "do_orm_execute")
def _write_before_audit_read(state: ORMExecuteState) -> None:
    """A transaction that reads the trail sees its own events (written first)."""
    if state.session.info.get(_PENDING) and _touches_audit(state.statement):
        write_pending(state.session)


@sa_event.listens_for(Session, "before_commit")
def _write_at_commit(session: Session) -> None:
    if session.info.get(_PENDING):
        session.flush()  # the changes first: the chain head stays the last lock taken
        write_pending(session)


@sa_event.listens_for(Session, "after_transaction_end")
def _forget_pending(session: Session, transaction: SessionTransaction) -> None:
    """Events not written by commit end with the outermost transaction (rolled back)."""
    if transaction.parent is None:
        session.info.pop(_PENDING, None)
        session.info.pop(_WRITTEN_HEADS, None)
        session.info.pop(_HELD_HEADS, None)


def event_hash(fields: Mapping[str, Any]) -> str:
    """The hash of an event's fields: HMAC under the named key's chain key (plain SHA-256 for
    events from before key ids, whose fields carry no ``key_id``)."""
    data = canonical_json(fields).encode()
    key_id = fields.get("key_id")
    if key_id is None:
        return hashlib.sha256(data).hexdigest()
    return cipher().chain_mac(str(key_id), data)


LEGACY_HASHED_FIELDS = (
    "chain",
    "seq",
    "op",
    "at",
    "trial_id",
    "site_id",
    "actor_id",
    "actor_name",
    "actor_role",
    "action",
    "entity_type",
    "entity_id",
    "changes",
    "reason",
    "request_id",
    "prev_hash",
)
HASHED_FIELDS = (*LEGACY_HASHED_FIELDS, "auth_ref", "key_id")


def hashed_fields(event: AuditEvent, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The event's hashed columns in their canonical JSON forms; ``values``: its column values
    when at hand (a new event's, `_Prepared`), else read from the event."""
    if values is None:
        values = {name: getattr(event, name) for name in HASHED_FIELDS}
    names = LEGACY_HASHED_FIELDS if values.get("key_id") is None else HASHED_FIELDS
    return {name: to_jsonable(values.get(name)) for name in names}


def auth_ref_of(actor: Actor) -> str | None:
    """What the event records of how the actor authenticated."""
    if actor.auth_ref:
        return actor.auth_ref
    return actor.via if actor.via in ("cli", "system") else None


def append(
    session: Session,
    actor: Actor,
    *,
    op: str,
    action: str,
    entity_type: str,
    entity_id: int | None,
    changes: list[dict[str, Any]],
    trial_id: int | None,
    site_id: int | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """Append one event to the trial's chain inside the caller's transaction (buffered: its
    seq, prev_hash and hash are set when the transaction writes its events, see
    `write_pending`)."""
    # a plain value holder (never added to a session: `write_pending` writes its row), so built
    # without the ORM's per-attribute instrumentation (one twentieth of `AuditEvent(...)`)
    event = _new_event()
    event.__dict__.update(
        chain=chain_for(trial_id),
        op=op,
        at=utcnow(),
        trial_id=trial_id,
        site_id=site_id,
        actor_id=actor.user_id,
        actor_name=actor.printed_name,
        actor_role=actor.primary_role(trial_id),
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        changes=changes,
        reason=reason,
        request_id=actor.request_id,
        auth_ref=auth_ref_of(actor),
        key_id=cipher().current.kid,
    )
    session.info.setdefault(_PENDING, []).append(_Prepared(event))
    if action in CHECKPOINT_ACTIONS:
        session.info.setdefault(CHECKPOINT_PENDING, set()).add(CHECKPOINT_ACTIONS[action])
    return event


_new_event = AuditEvent._sa_class_manager.new_instance  # type: ignore[attr-defined]


# What the current transaction asks of the checkpoint scheduler (services/checkpoints.py), read
# after commit and dropped on rollback: the chains appended to, {chain: [first seq, last seq]},
# and the reasons for a checkpoint.
APPENDED = "dtx_audit_appended"
CHECKPOINT_PENDING = "dtx_checkpoint_pending"
# Actions whose commit is followed by a checkpoint, and the reason the anchor gives.
CHECKPOINT_ACTIONS = {
    "form.locked": "lock",
    "participant.unblinded": "unblinding",
    "randomization.emergency_unblinding": "unblinding",
    "analysis.completed": "analysis",
    "export.created": "export",
    "audit.exported": "export",
    "keys.rotated": "key_rotation",
}


def record_create(
    session: Session,
    actor: Actor,
    action: str,
    obj: Base,
    *,
    trial_id: int | None = None,
    site_id: int | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """Audit a new row: every covered column from None to its value."""
    session.flush()
    return _append_create(
        session, actor, action, obj.__tablename__, obj.id, snapshot(obj),  # type: ignore[attr-defined]
        trial_id=_trial_of(obj, trial_id),
        site_id=site_id if site_id is not None else getattr(obj, "site_id", None),
        reason=reason,
    )  # fmt: skip


def record_create_row(
    session: Session,
    actor: Actor,
    action: str,
    model: type[Base],
    row_id: int,
    values: Mapping[str, Any],
    *,
    trial_id: int | None,
    site_id: int | None,
) -> AuditEvent:
    """`record_create` of a row written without an ORM object (`db.insert_many`): its key and
    its attributes' values (every audited one)."""
    return _append_create(
        session, actor, action, model.__tablename__, row_id, snapshot_row(model, values),
        trial_id=trial_id, site_id=site_id, reason=None,
    )  # fmt: skip


def _append_create(
    session: Session,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: int,
    audited: Mapping[str, Any],
    *,
    trial_id: int | None,
    site_id: int | None,
    reason: str | None,
) -> AuditEvent:
    return append(
        session,
        actor,
        op="create",
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        changes=[{"field": k, "old": None, "new": v} for k, v in audited.items()],
        trial_id=trial_id,
        site_id=site_id,
        reason=reason,
    )


def record_update(
    session: Session,
    actor: Actor,
    action: str,
    obj: Base,
    before: Mapping[str, Any],
    *,
    trial_id: int | None = None,
    site_id: int | None = None,
    reason: str | None = None,
    fields: Iterable[str] | None = None,
) -> AuditEvent | None:
    """Audit the covered columns that changed since `before` (a `snapshot`, limited to
    ``fields`` when the caller changed only those); None if none did."""
    session.flush()
    return _append_update(
        session, actor, action, obj.__tablename__, obj.id,  # type: ignore[attr-defined]
        before, snapshot(obj, fields),
        trial_id=_trial_of(obj, trial_id),
        site_id=site_id if site_id is not None else getattr(obj, "site_id", None),
        reason=reason,
    )  # fmt: skip


def record_update_row(
    session: Session,
    actor: Actor,
    action: str,
    model: type[Base],
    row_id: int,
    before: Mapping[str, Any],
    values: Mapping[str, Any],
    *,
    trial_id: int | None,
    site_id: int | None,
) -> AuditEvent | None:
    """`record_update` of a row written without the unit of work: `before` its `snapshot` (or
    `snapshot_row`) of the columns written, `values` their new values."""
    return _append_update(
        session, actor, action, model.__tablename__, row_id, before,
        snapshot_row(model, values, values), trial_id=trial_id, site_id=site_id, reason=None,
    )  # fmt: skip


def _append_update(
    session: Session,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: int,
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    trial_id: int | None,
    site_id: int | None,
    reason: str | None,
) -> AuditEvent | None:
    changes = [
        {"field": k, "old": before.get(k), "new": v}
        for k, v in after.items()
        if not _unchanged(before.get(k), v)
    ]
    if not changes:
        return None
    return append(
        session,
        actor,
        op="update",
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        changes=changes,
        trial_id=trial_id,
        site_id=site_id,
        reason=reason,
    )


def record_event(
    session: Session,
    actor: Actor,
    action: str,
    *,
    entity_type: str,
    entity_id: int | None,
    trial_id: int | None,
    site_id: int | None = None,
    details: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """Audit something that happened without changing a covered row (login, export, unblinding)."""
    changes = [{"field": k, "new": to_jsonable(v)} for k, v in sorted((details or {}).items())]
    return append(
        session,
        actor,
        op="event",
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        changes=changes,
        trial_id=trial_id,
        site_id=site_id,
        reason=reason,
    )


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Problem:
    # trail: edited|deleted|inserted|authorship|key; rows: data_changed|data_inserted|data_deleted;
    # integrity.py adds allocation|protocol|device; checkpoints.py adds anchor
    kind: str
    where: str
    message: str


@dataclass(frozen=True)
class VerifyReport:
    chains: int
    events: int
    rows_checked: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def audited_models() -> list[type[Base]]:
    return sorted(
        (m.class_ for m in Base.registry.mappers if hasattr(m.class_, "__audited__")),
        key=lambda cls: cls.__tablename__,
    )


def _where(event: AuditEvent) -> str:
    return f"audit_event id={event.id} ({event.chain} seq {event.seq})"


def _verify_chain(
    chain: str, events: list[AuditEvent], head: AuditChainHead | None
) -> list[Problem]:
    problems: list[Problem] = []
    prev_hash = GENESIS
    expected_seq = 1
    keyed_seen = False
    unknown_keys: dict[str, int] = defaultdict(int)
    for event in events:
        where = _where(event)
        if event.seq != expected_seq:
            missing = (
                f"seq {expected_seq}"
                if event.seq == expected_seq + 1
                else f"seq {expected_seq}..{event.seq - 1}"
            )
            problems.append(
                Problem(
                    "deleted",
                    f"{chain} {missing}",
                    f"{chain}: {missing} missing before {where} (row deleted)",
                )
            )
        if event.key_id is None and keyed_seen:
            problems.append(
                Problem(
                    "edited",
                    where,
                    f"{where}: carries no key id after keyed events (rewritten with a plain hash)",
                )
            )
        keyed_seen = keyed_seen or event.key_id is not None
        try:
            recomputed: str | None = event_hash(hashed_fields(event))
        except UnknownKeyError:
            unknown_keys[str(event.key_id)] += 1
            recomputed = None
        if recomputed is not None and recomputed != event.hash:
            problems.append(
                Problem(
                    "edited",
                    where,
                    f"{where}: content does not match its keyed hash "
                    "(row edited, or written without the key)",
                )
            )
        elif event.prev_hash != prev_hash:
            problems.append(
                Problem(
                    "inserted",
                    where,
                    f"{where}: prev_hash does not match the preceding event "
                    "(row inserted or reordered)",
                )
            )
        prev_hash = event.hash
        expected_seq = event.seq + 1
    for kid, count in sorted(unknown_keys.items()):
        problems.append(
            Problem(
                "key",
                f"{chain} key {kid}",
                f"{chain}: {count} event(s) hashed under key id {kid}, which is not in the key "
                "ring (add the retired key to DTX_FIELD_KEYS_RETIRED to verify them)",
            )
        )
    last_seq = expected_seq - 1
    if head is None:
        if events:
            problems.append(
                Problem(
                    "deleted",
                    f"{chain} head",
                    f"{chain}: the chain head row is missing (deleted); the last event is seq "
                    f"{last_seq}",
                )
            )
    elif last_seq > head.seq:
        for event in events:
            if event.seq > head.seq:
                where = _where(event)
                problems.append(
                    Problem(
                        "inserted",
                        where,
                        f"{where}: lies beyond the chain head at seq {head.seq} (row inserted)",
                    )
                )
    elif last_seq < head.seq or head.hash != prev_hash:
        problems.append(
            Problem(
                "deleted",
                f"{chain} head",
                f"{chain}: chain head is at seq {head.seq} but the last event is seq "
                f"{last_seq} (trailing rows deleted or head altered)",
            )
        )
    return problems


def _verify_authorship(session: Session, events: list[AuditEvent]) -> list[Problem]:
    """Every keyed event by a user names a token or session of that user, live at the event's
    time; every ePRO event names an ePRO session or the participant's own link."""
    from dtx_trials.models import ApiToken, ConsentInvitation, EproLink, Participant, WebSession

    wanted: dict[str, set[int]] = {
        "token": set(), "session": set(), "link": set(), "invitation": set(), "app_token": set()
    }
    for event in events:
        kind, _, ident = (event.auth_ref or "").partition(":")
        if kind in wanted and ident.isdigit():
            wanted[kind].add(int(ident))
    # (user id, ePRO link id or participant code, created, expires) per referenced row
    refs: dict[str, dict[int, tuple[Any, Any, Any, Any]]] = {
        "token": {
            t.id: (t.user_id, None, t.created_at, t.expires_at)
            for t in session.scalars(select(ApiToken).where(ApiToken.id.in_(wanted["token"])))
        },
        "session": {
            w.id: (w.user_id, w.epro_link_id, w.created_at, w.expires_at)
            for w in session.scalars(select(WebSession).where(WebSession.id.in_(wanted["session"])))
        },
        "link": {
            link_id: (None, code, None, None)
            for link_id, code in session.execute(
                select(EproLink.id, Participant.subject_code)
                .join(Participant, Participant.id == EproLink.participant_id)
                .where(EproLink.id.in_(wanted["link"]))
            )
        },
        # a remote eConsent signer presents the invitation's token (no account, no session)
        "invitation": {
            invitation_id: (None, None, created_at, expires_at)
            for invitation_id, created_at, expires_at in session.execute(
                select(
                    ConsentInvitation.id,
                    ConsentInvitation.created_at,
                    ConsentInvitation.expires_at,
                ).where(ConsentInvitation.id.in_(wanted["invitation"]))
            )
        },
        # the DTx app (a participant's token) or an app vendor's backend (a service token)
        "app_token": _app_token_refs(session, wanted["app_token"]),
    }
    problems: list[Problem] = []
    for event in events:
        if event.key_id is None:
            continue
        ref = event.auth_ref or ""
        kind, _, ident = ref.partition(":")
        is_user = event.actor_id is not None
        is_epro = event.actor_name.startswith("Participant ") and event.actor_role == "participant"
        if kind in ("cli", "system") and not is_epro:
            continue  # host operator or the system itself: no app session to name
        found = refs.get(kind, {}).get(int(ident)) if ident.isdigit() else None
        why = None
        if kind == "invitation":
            if is_user or found is None:
                why = f"names {ref}, which is not a consent invitation of a remote signer"
            elif not (found[2] - _CLOCK_SLACK <= event.at <= found[3] + _CLOCK_SLACK):
                why = f"names {ref}, which was not live at {to_jsonable(event.at)}"
        elif kind == "app_token":
            if is_user or found is None:
                why = f"names {ref}, which is not an app token"
            elif event.actor_name != found[1]:
                why = f"names {ref}, the app token of another participant or service"
            elif not (found[2] - _CLOCK_SLACK <= event.at <= found[3] + _CLOCK_SLACK):
                why = f"names {ref}, which was not live at {to_jsonable(event.at)}"
        elif not (is_user or is_epro):
            why = f"names {ref!r} but no user"
        elif found is None:
            why = (
                "was appended without an app session (no token or session named)"
                if not ref
                else f"names {ref}, which does not exist"
            )
        elif kind == "link":
            # the link token itself was presented (opening the link, completing it)
            if not (is_epro and event.actor_name == f"Participant {found[1]}"):
                why = f"names {ref}, a link of another participant"
        else:
            user_id, epro_link_id, created_at, expires_at = found
            if is_user and user_id != event.actor_id:
                why = f"names {ref}, which belongs to another user"
            elif is_epro and epro_link_id is None:
                why = f"names {ref}, which is not an ePRO session"
            elif not (created_at - _CLOCK_SLACK <= event.at <= expires_at + _CLOCK_SLACK):
                why = f"names {ref}, which was not live at {to_jsonable(event.at)}"
        if why:
            where = _where(event)
            problems.append(
                Problem("authorship", where, f"{where}: event by {event.actor_name} {why}")
            )
    return problems


_CLOCK_SLACK = timedelta(seconds=5)


def _app_token_refs(session: Session, ids: set[int]) -> dict[int, tuple[Any, Any, Any, Any]]:
    """(None, the actor name its events carry, created, expires) per app token."""
    from dtx_trials.models import AppToken, Participant, ServiceCredential

    out: dict[int, tuple[Any, Any, Any, Any]] = {}
    if not ids:
        return out
    for token, subject, service in session.execute(
        select(AppToken, Participant.subject_code, ServiceCredential.name)
        .outerjoin(Participant, Participant.id == AppToken.participant_id)
        .outerjoin(ServiceCredential, ServiceCredential.id == AppToken.credential_id)
        .where(AppToken.id.in_(ids))
    ):
        name = f"Participant {subject}" if subject is not None else f"Service {service}"
        out[token.id] = (None, name, token.created_at, token.expires_at)
    return out


def _expected_state(events: Iterable[AuditEvent]) -> dict[tuple[str, int], dict[str, Any] | None]:
    state: dict[tuple[str, int], dict[str, Any] | None] = {}
    for event in events:
        if event.op not in ("create", "update", "delete") or event.entity_id is None:
            continue
        key = (event.entity_type, event.entity_id)
        if event.op == "delete":
            state[key] = None
            continue
        current = dict(state.get(key) or {})
        for change in event.changes if isinstance(event.changes, list) else ():
            if isinstance(change, dict) and "field" in change:  # else: edited, reported
                current[str(change["field"])] = change.get("new")
        state[key] = current
    return state


def _scope(model: type[Base], stmt: Any, trial_id: int) -> Any:
    from dtx_trials.models import FormRecord, Participant, SafetyEvent

    if model.__tablename__ == "trial":
        return stmt.where(model.id == trial_id)  # type: ignore[attr-defined]
    if hasattr(model, "trial_id"):
        return stmt.where(model.trial_id == trial_id)  # type: ignore[attr-defined]
    if hasattr(model, "participant_id"):
        return stmt.join(Participant, Participant.id == model.participant_id).where(  # type: ignore[attr-defined]
            Participant.trial_id == trial_id
        )
    if hasattr(model, "form_record_id"):
        return (
            stmt.join(FormRecord, FormRecord.id == model.form_record_id)  # type: ignore[attr-defined]
            .join(Participant, Participant.id == FormRecord.participant_id)
            .where(Participant.trial_id == trial_id)
        )
    if hasattr(model, "safety_event_id"):
        return stmt.join(SafetyEvent, SafetyEvent.id == model.safety_event_id).where(  # type: ignore[attr-defined]
            SafetyEvent.trial_id == trial_id
        )
    return None


def _rows_in_scope(
    session: Session, model: type[Base], trial_id: int | None
) -> tuple[list[Base], list[Problem]]:
    """The covered rows of one table, and a problem for each ciphertext that does not open."""
    stmt: Any = select(model)
    if trial_id is not None:
        stmt = _scope(model, stmt, trial_id)
        if stmt is None:
            return [], []
    try:
        return list(session.scalars(stmt)), []
    except CiphertextError:
        session.rollback()
    # some row holds a ciphertext that does not open: load row by row and name the column
    table = model.__table__  # type: ignore[attr-defined]
    encrypted = [c for c in table.columns if isinstance(c.type, EncryptedText)]
    ids = list(session.scalars(stmt.with_only_columns(model.id)))  # type: ignore[attr-defined]
    rows: list[Base] = []
    problems: list[Problem] = []
    for row_id in ids:
        raw = session.execute(
            select(*(type_coerce(c, LargeBinary) for c in encrypted)).where(table.c.id == row_id)
        ).one()
        bad = []
        for column, blob in zip(encrypted, raw, strict=True):
            if blob is None:
                continue
            try:
                cipher().decrypt(bytes(blob), column.type.column)
            except CiphertextError as exc:
                bad.append(f"{column.name} ({exc})")
            except UnknownKeyError as exc:
                bad.append(f"{column.name} ({exc})")
        if bad:
            where = f"{table.name} id={row_id}"
            problems.extend(
                Problem("data_changed", f"{where}.{b.split(' ')[0]}", f"{where}: {b}") for b in bad
            )
            continue
        row = session.get(model, row_id)
        if row is not None:
            rows.append(row)
    return rows, problems


def verify(session: Session, trial_id: int | None = None) -> VerifyReport:
    """Recompute the chain(s) and compare every covered row with the trail's last values.

    With a trial, checks that trial's chain and rows; without, every chain and every row.
    """
    head_stmt = select(AuditChainHead)
    event_stmt = select(AuditEvent).order_by(AuditEvent.chain, AuditEvent.seq)
    if trial_id is not None:
        chain = chain_for(trial_id)
        head_stmt = head_stmt.where(AuditChainHead.chain == chain)
        event_stmt = event_stmt.where(AuditEvent.chain == chain)
    heads = {h.chain: h for h in session.scalars(head_stmt)}
    by_chain: dict[str, list[AuditEvent]] = defaultdict(list)
    for event in session.scalars(event_stmt):
        by_chain[event.chain].append(event)

    problems: list[Problem] = []
    for chain in sorted(set(heads) | set(by_chain)):
        problems.extend(_verify_chain(chain, by_chain.get(chain, []), heads.get(chain)))
    all_events = [e for events in by_chain.values() for e in events]
    problems.extend(_verify_authorship(session, all_events))

    expected = _expected_state(all_events)
    rows_checked = 0
    seen: set[tuple[str, int]] = set()
    for model in audited_models():
        if trial_id is not None and model.__tablename__ == "user":
            continue
        rows, unreadable = _rows_in_scope(session, model, trial_id)
        problems.extend(unreadable)
        seen.update(
            (model.__tablename__, int(p.where.split(".")[0].split("id=")[1])) for p in unreadable
        )
        for row in rows:
            rows_checked += 1
            key = (model.__tablename__, row.id)  # type: ignore[attr-defined]
            seen.add(key)
            where = f"{key[0]} id={key[1]}"
            want = expected.get(key)
            if want is None:
                problems.append(
                    Problem(
                        "data_inserted",
                        where,
                        f"{where}: row has no audit trail (inserted behind the app)",
                    )
                )
                continue
            for name in model.__audited__:  # type: ignore[attr-defined]
                try:
                    same = _matches(row, name, want.get(name))
                except UnknownKeyError as exc:
                    problems.append(Problem("key", f"{where}.{name}", f"{where}: {name}: {exc}"))
                    continue
                if not same:
                    problems.append(
                        Problem(
                            "data_changed",
                            f"{where}.{name}",
                            f"{where}: {name} is {_show(_shown(row, name))} "
                            f"but the trail says {_show(want.get(name))}",
                        )
                    )
    for key, want in expected.items():
        if want is not None and key not in seen and not (trial_id is not None and key[0] == "user"):
            where = f"{key[0]} id={key[1]}"
            problems.append(
                Problem(
                    "data_deleted",
                    where,
                    f"{where}: row is in the trail but missing from the database",
                )
            )
    n_events = len(all_events)
    return VerifyReport(len(set(heads) | set(by_chain)), n_events, rows_checked, tuple(problems))


def _shown(row: Base, name: str) -> Any:
    """A current value as the report may show it: sealed values never in clear."""
    if name in getattr(row, "__sealed__", ()):
        return "(sealed value)"
    value = getattr(row, name)
    return digest(value) if name in getattr(row, "__digested__", ()) else to_jsonable(value)


def _show(value: Any) -> str:
    text = canonical_json(value)
    return text if len(text) <= 80 else text[:77] + "..."
