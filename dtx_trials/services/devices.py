"""Device and DTx-app data: bulk, idempotent ingestion checked against the protocol's streams,
and adherence to each stream's rule (computed by the pure `analysis.adherence`)."""

from __future__ import annotations

import datetime
import math
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import CursorResult, Table, func, or_, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from analysis.adherence import (
    AdherenceResult,
    StreamAdherenceResult,
    daily_totals,
    evaluate_stream_adherence,
    summarise_adherence,
)
from dtx_trials.db import transaction, utcnow
from dtx_trials.models import (
    DeviceObservation,
    FormRecord,
    Participant,
    ProtocolVersion,
    Site,
    Trial,
    Visit,
)
from dtx_trials.services import audit, device_batches
from dtx_trials.services.access import Actor, can, require, visible_sites
from dtx_trials.services.errors import DomainError
from dtx_trials.services.listing import Page
from dtx_trials.services.participants import (
    RECORD_VALUE_COLUMNS,
    RecordValues,
    log_forms,
    submitted_values,
)
from dtx_trials.services.protocols import active_protocol, protocol_of
from ecrf.expressions import ExpressionError, evaluate
from ecrf.fields import EARLIEST_DATE, LATEST_DATE
from protocols.model import AdherenceRule, DeviceStream, Protocol

MAX_RECORDS = 50_000
FUTURE_TOLERANCE = datetime.timedelta(minutes=5)
RECORD_FIELDS = ("subject", "stream", "time", "value", "unit", "source")
CHUNK = 1000
# Participants who left the trial get no new data (CN-04); stored data are kept.
CLOSED_STATUSES = frozenset({"withdrawn", "screen_failed"})


class BatchTooLargeError(DomainError):
    status = 413
    code = "too_large"


@dataclass(frozen=True)
class RecordError:
    """Why one record of a batch was rejected (index is its 0-based position in the batch)."""

    index: int
    subject: str | None
    field: str
    message: str


@dataclass(frozen=True)
class IngestResult:
    n_accepted: int
    n_duplicates: int
    n_rejected: int
    errors: tuple[RecordError, ...]


@dataclass(frozen=True)
class _Subject:
    id: int
    site_id: int
    status: str
    protocol_version_id: int | None


def _text(record: dict[str, Any], name: str, max_length: int) -> str | None:
    value = record.get(name)
    if isinstance(value, str) and 0 < len(value.strip()) <= max_length:
        return value.strip()
    return None


def _finite(number: float) -> float | None:
    try:
        value = float(number)  # JSON integers can exceed a float's range
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _parse_time(value: object) -> datetime.datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None
    if not EARLIEST_DATE <= moment.date() <= LATEST_DATE:
        return None  # year 1 at +14:00 would overflow when moved to UTC
    return moment.astimezone(datetime.UTC)


def _stream_problems(
    stream: DeviceStream, unit: str | None, value: float | None
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if unit is not None and unit != stream.unit:
        problems.append(("unit", f"stream {stream.id} is measured in {stream.unit!r}"))
    if value is not None:
        if stream.min is not None and value < stream.min:
            problems.append(("value", f"below the stream's minimum {stream.min:g}"))
        if stream.max is not None and value > stream.max:
            problems.append(("value", f"above the stream's maximum {stream.max:g}"))
    return problems


class _Protocols:
    """Each participant's protocol version, parsed once per batch."""

    def __init__(self, session: Session, trial: Trial) -> None:
        self._session = session
        self._trial = trial
        self._by_version: dict[int | None, Protocol] = {}

    def of(self, version_id: int | None) -> Protocol:
        if version_id not in self._by_version:
            version = (
                self._session.get(ProtocolVersion, version_id) if version_id is not None else None
            )
            self._by_version[version_id] = (
                protocol_of(version)
                if version is not None
                else active_protocol(self._session, self._trial)[1]
            )
        return self._by_version[version_id]


@dataclass(eq=False)
class _Series:
    """What the records of one participant, stream, unit and source share, checked once."""

    participant_id: int
    stream: DeviceStream
    unit: str
    source: str
    seal: device_batches.SeriesSeal
    copy_head: str  # a row's COPY text from trial_id to the tab before observed_at
    copy_tail: str  # from the tab before unit to the tab before seal
    low: float  # the stream's minimum (-inf: none)
    high: float  # the stream's maximum (inf: none)
    times: set[str] = field(default_factory=set)  # `_utc_text` of the rows written


# a good record: its series, its time (aware, UTC) and its value
_Accepted = tuple[_Series, datetime.datetime, float]


_FIELD_SET = frozenset(RECORD_FIELDS)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """A text column in COPY's text format."""
    return value.translate(_COPY_ESCAPES)


class _BatchChecker:
    """Checks the records of one batch: `check` returns a good record's series, time and value,
    or notes why the record was rejected (``errors``, ``n_rejected``).

    Every rule is in `_problems`. A record with exactly the six fields whose subject, stream,
    unit and source repeat those of a record already accepted has nothing left to check but its
    time and value (the same functions, the same bounds); any record that fails them, or any
    other record, goes through `_problems`, so what is accepted and every error are as if each
    record had gone through it. Whatever the check needs from the database is read before the
    first record (the rows are streamed to PostgreSQL while records are checked)."""

    def __init__(
        self,
        session: Session,
        actor: Actor,
        trial: Trial,
        now: datetime.datetime,
        sealer: device_batches.BatchSealer,
        received_at: str,
        batch_id: str,
    ) -> None:
        self._actor = actor
        self._trial_id = trial.id
        self._latest = now + FUTURE_TOLERANCE
        self.latest_text = _utc_text(self._latest.astimezone(datetime.UTC))
        self._sealer = sealer
        self._received_at = received_at
        self.batch_id = batch_id
        self._subjects = {
            code: _Subject(pid, site_id, status, version_id)
            for pid, code, site_id, status, version_id in session.execute(
                select(
                    Participant.id,
                    Participant.subject_code,
                    Participant.site_id,
                    Participant.status,
                    Participant.protocol_version_id,
                ).where(Participant.trial_id == trial.id)
            )
        }
        self._allowed_sites: dict[int, bool] = {}
        protocols = _Protocols(session, trial)
        self._streams_of: dict[int | None, dict[str, DeviceStream] | DomainError] = {}
        for version_id in sorted(
            {s.protocol_version_id for s in self._subjects.values()}, key=lambda v: v or 0
        ):
            try:
                self._streams_of[version_id] = {
                    s.id: s for s in protocols.of(version_id).device_streams
                }
            except DomainError as exc:  # raised when a record names such a participant
                self._streams_of[version_id] = exc
        # (subject, stream, unit, source) as sent -> the series of an accepted record
        self._known: dict[tuple[str, str, str, str], _Series] = {}
        self._series: dict[tuple[int, str, str, str], _Series] = {}
        self.errors: list[RecordError] = []
        self.n_rejected = 0

    @property
    def known(self) -> dict[tuple[str, str, str, str], _Series]:
        """(subject, stream, unit, source) as sent -> the series of a record accepted with
        them (what `check` needs to check no more than a record's time and value)."""
        return self._known

    @property
    def sources(self) -> set[str]:
        return {series.source for series in self._series.values()}

    def check(self, index: int, record: object) -> _Accepted | None:
        if type(record) is dict and record.keys() == _FIELD_SET:
            subject, stream, unit, source = (
                record["subject"], record["stream"], record["unit"], record["source"]
            )  # fmt: skip
            series = (
                self._known.get((subject, stream, unit, source))
                if type(subject) is str
                and type(stream) is str
                and type(unit) is str
                and type(source) is str
                else None
            )
            if series is not None:
                raw_value = record["value"]
                kind = type(raw_value)
                value = _finite(raw_value) if kind is float or kind is int else None
                observed_at = _parse_time(record["time"])
                if (
                    value is not None
                    and observed_at is not None
                    and observed_at <= self._latest
                    and not _stream_problems(series.stream, None, value)
                ):
                    return series, observed_at, value
        return self._problems(index, record)

    def _problems(self, index: int, record: object) -> _Accepted | None:
        """Check a record against every rule (the reference path)."""
        problems: list[tuple[str, str]] = []
        subject_code: str | None = None
        if not isinstance(record, dict):
            self.errors.append(RecordError(index, None, "record", "must be a JSON object"))
            self.n_rejected += 1
            return None
        subject_code = record["subject"] if isinstance(record.get("subject"), str) else None
        for name in sorted(set(record) - _FIELD_SET, key=str):
            problems.append((str(name)[:60], "unknown field"))
        for name in RECORD_FIELDS:
            if record.get(name) is None:
                problems.append((name, "required"))
        subject: _Subject | None = None
        if subject_code is not None:
            subject = self._subjects.get(subject_code)
            if subject is not None and subject.site_id not in self._allowed_sites:
                self._allowed_sites[subject.site_id] = can(
                    self._actor, "device.ingest", self._trial_id, subject.site_id
                )
            if subject is None or not self._allowed_sites[subject.site_id]:
                problems.append(("subject", "no such participant in this trial"))
                subject = None
            elif subject.status in CLOSED_STATUSES:
                problems.append(
                    ("subject", f"participant is {subject.status}; no new data accepted")
                )
        elif "subject" in record and record["subject"] is not None:
            problems.append(("subject", "must be a subject code"))
        stream_id = _text(record, "stream", 60)
        if stream_id is None and record.get("stream") is not None:
            problems.append(("stream", "must be a stream id"))
        unit = _text(record, "unit", 30)
        if unit is None and record.get("unit") is not None:
            problems.append(("unit", "must be a unit"))
        source = _text(record, "source", 60)
        if source is None and record.get("source") is not None:
            problems.append(("source", "must be a text of 1-60 characters"))
        raw_value = record.get("value")
        value: float | None = None
        if isinstance(raw_value, int | float) and not isinstance(raw_value, bool):
            value = _finite(raw_value)
            if value is None:
                problems.append(("value", "must be a finite number"))
        elif raw_value is not None:
            problems.append(("value", "must be a number"))
        observed_at = _parse_time(record.get("time"))
        if observed_at is None and record.get("time") is not None:
            problems.append(("time", "must be an ISO 8601 date-time with a UTC offset"))
        elif observed_at is not None and observed_at > self._latest:
            problems.append(("time", "lies in the future"))
        stream: DeviceStream | None = None
        if subject is not None and stream_id is not None:
            streams = self._streams_of[subject.protocol_version_id]
            if isinstance(streams, DomainError):
                raise streams
            stream = streams.get(stream_id)
            if stream is None:
                problems.append(("stream", f"unknown stream {stream_id!r}"))
            else:
                problems.extend(_stream_problems(stream, unit, value))
        if problems:
            self.n_rejected += 1
            self.errors.extend(RecordError(index, subject_code, f, m) for f, m in problems)
            return None
        assert subject is not None and stream is not None and stream_id is not None
        assert unit is not None and source is not None
        assert observed_at is not None and value is not None
        series = self._series_of(subject.id, stream, stream_id, unit, source)
        self._known[(record["subject"], record["stream"], record["unit"], record["source"])] = (
            series
        )
        return series, observed_at, value

    def _series_of(
        self, participant_id: int, stream: DeviceStream, stream_id: str, unit: str, source: str
    ) -> _Series:
        key = (participant_id, stream_id, unit, source)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(
                participant_id,
                stream,
                unit,
                source,
                self._sealer.series(participant_id, stream_id, unit, source),
                f"\t{self._trial_id}\t{participant_id}\t{_copy_text(stream_id)}\t",
                f"\t{_copy_text(unit)}\t{_copy_text(source)}\t{self._received_at}"
                f"\t{self.batch_id}\t",
                -math.inf if stream.min is None else stream.min,
                math.inf if stream.max is None else stream.max,
            )
        return series


def ingest_observations(
    session: Session,
    actor: Actor,
    trial: Trial,
    records: Sequence[object],
    *,
    now: datetime.datetime | None = None,
) -> IngestResult:
    """Store a batch of device observations; reject bad records one by one.

    Each record is ``{subject, stream, time, value, unit, source}``; it is checked against the
    participant's protocol (known stream, the stream's unit, within min/max), its time must carry
    an offset and lie no more than 5 minutes in the future, and the subject must be a participant
    of this trial, at a site the actor may ingest for, who has not withdrawn. Good records are
    stored in one transaction with one audit event for the batch; a record already stored
    (same participant, stream, time and source) counts as a duplicate, so a batch can be resent.
    """
    require(actor, "device.ingest", trial.id)
    if len(records) > MAX_RECORDS:
        raise BatchTooLargeError(
            f"a batch holds at most {MAX_RECORDS} records; split it",
            {"records": [f"{len(records)} records sent"]},
        )
    now = (now or utcnow()).astimezone(datetime.UTC)
    batch_id = uuid.uuid4().hex
    received_at = _naive_utc(now)
    with transaction(session):
        sealer = device_batches.BatchSealer(trial.id, now, batch_id)
        checker = _BatchChecker(
            session, actor, trial, now, sealer, received_at.isoformat(sep=" "), batch_id
        )
        if session.get_bind().dialect.name == "postgresql":
            n_accepted, n_inserted, stored = _copy_batch(session, records, checker, sealer)
        else:
            n_accepted, n_inserted = _insert_batch(
                session, records, checker, sealer, trial.id, now, batch_id
            )
            stored = device_batches.batch_details(session, batch_id)
        audit.record_event(
            session,
            actor,
            "device.ingest",
            entity_type="device_observation",
            entity_id=None,
            trial_id=trial.id,
            details={
                "n_records": len(records),
                "n_accepted": n_inserted,
                "n_duplicates": n_accepted - n_inserted,
                "n_rejected": checker.n_rejected,
                "sources": sorted(checker.sources)[:20],
                **stored,
            },
        )
    return IngestResult(
        n_inserted, n_accepted - n_inserted, checker.n_rejected, tuple(checker.errors)
    )


def _insert_batch(
    session: Session,
    records: Sequence[object],
    checker: _BatchChecker,
    sealer: device_batches.BatchSealer,
    trial_id: int,
    received_at: datetime.datetime,
    batch_id: str,
) -> tuple[int, int]:
    """SQLite: ``INSERT ... ON CONFLICT DO NOTHING`` as executemany in chunks (one compiled
    statement; sqlite3 reports the summed row count); return (accepted, inserted)."""
    rows: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        accepted = checker.check(index, record)
        if accepted is None:
            continue
        series, observed_at, value = accepted
        seal, _ = sealer.seal_and_leaf(0, series.seal, _utc_text(observed_at), repr(value))
        rows.append({
            "trial_id": trial_id, "participant_id": series.participant_id,
            "stream": series.stream.id,
            "observed_at": observed_at,
            "value": value, "unit": series.unit, "source": series.source,
            "received_at": received_at, "batch_id": batch_id, "seal": seal,
        })  # fmt: skip
    table = cast(Table, DeviceObservation.__table__)
    stmt = sqlite_insert(table).on_conflict_do_nothing(
        index_elements=["participant_id", "stream", "observed_at", "source"]
    )
    connection = session.connection()
    n_inserted = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        n_inserted += cast("CursorResult[Any]", connection.execute(stmt, chunk)).rowcount
    return len(rows), n_inserted


_COLUMNS = (
    "id, trial_id, participant_id, stream, observed_at, value, unit, source, received_at, "
    "batch_id, seal"
)
_STAGING = "device_observation_incoming"
_ROWS_PER_WRITE = 500


def _copy_batch(
    session: Session,
    records: Sequence[object],
    checker: _BatchChecker,
    sealer: device_batches.BatchSealer,
) -> tuple[int, int, dict[str, Any]]:
    """PostgreSQL: store the good records by COPY; return (accepted, inserted, the batch's
    details for its audit event).

    Rows are written to the COPY stream as records pass their check, so PostgreSQL parses and
    indexes them on one core while Python checks the next ones on another. Ids are taken from
    the table's sequence before (one per record, so each row's Merkle leaf is computed as it is
    written); a reading repeated within the batch is written once (the first wins).

    The COPY goes straight into ``device_observation`` (the cost of a plain bulk load): a batch
    of new readings is stored as it is. Readings already stored make that COPY fail on the
    table's unique key (ON CONFLICT is not available to COPY); it then runs again, from the
    text already made, into a temporary table followed by one ``INSERT ... SELECT ... ON
    CONFLICT DO NOTHING``, which stores exactly the new rows, also when another batch stored
    some of the same readings meanwhile (its COPY waits for that batch's transaction, then
    fails on the key). Either way the rows, ids and audit details are those of the one
    ``INSERT ... ON CONFLICT``, which is the specification.
    """
    from psycopg.errors import UniqueViolation  # PostgreSQL only (the "postgres" extra)

    # the DBAPI connection of the session's transaction: the rows and the audit event commit or
    # roll back together
    raw = session.connection().connection.driver_connection
    assert raw is not None
    chunks: list[bytes] = []
    # the id and the Merkle leaf of every row written, in id order (two flat lists: no
    # container per row for the garbage collector to walk)
    written_ids: list[int] = []
    leaves: list[bytes] = []
    with raw.cursor() as cursor:
        ids = _draw_ids(cursor, len(records))
        cursor.execute("SAVEPOINT device_copy")
        try:
            with cursor.copy(f"COPY device_observation ({_COLUMNS}) FROM STDIN") as copy:
                n_accepted = _write_rows(copy.write, records, checker, sealer, ids, chunks,
                                         written_ids, leaves)  # fmt: skip
                # the details if every row is stored, computed while PostgreSQL loads the
                # last rows (leaving the block waits for it)
                details = device_batches.details(checker.batch_id, written_ids, leaves)
        except UniqueViolation:
            # a reading already stored (any other key, e.g. an id the sequence gave twice,
            # fails the INSERT below the same way)
            cursor.execute("ROLLBACK TO SAVEPOINT device_copy")
            stored = _insert_new_rows(cursor, chunks)
            kept = [n for n, row_id in enumerate(written_ids) if row_id in stored]
            written_ids = [written_ids[n] for n in kept]
            details = device_batches.details(
                checker.batch_id, written_ids, [leaves[n] for n in kept]
            )
        else:
            cursor.execute("RELEASE SAVEPOINT device_copy")
    return n_accepted, len(written_ids), details


# length of a time sent in UTC in the extended form -> (its suffix, what `_utc_text` adds
# to its first 19 characters: "" when it has microseconds, then its first 26 are the text)
_UTC_FORMS = {
    20: ("Z", ".000000"),  # 2026-01-01T00:01:00Z
    25: ("+00:00", ".000000"),  # 2026-01-01T00:01:00+00:00
    27: ("Z", ""),  # 2026-01-01T00:01:00.000000Z
    32: ("+00:00", ""),  # 2026-01-01T00:01:00.000000+00:00
}


def _draw_ids(cursor: Any, n: int) -> Sequence[int]:
    """``n`` values of the table's own sequence (its column default), in increasing order.
    When no other session drew between them (the usual case) they are one run, and only its
    ends come back instead of ``n`` rows."""
    if n == 0:
        return []
    cursor.execute(
        "SELECT min(id), max(id), CASE WHEN max(id) - min(id) + 1 = count(*) THEN NULL "
        "ELSE array_agg(id ORDER BY id) END "
        "FROM (SELECT nextval('device_observation_id_seq') AS id "
        "FROM generate_series(1, %s)) AS drawn",
        (n,),
    )
    low, high, interleaved = cursor.fetchone()
    return range(low, high + 1) if interleaved is None else interleaved


def _write_rows(
    write: Callable[[bytes], None],
    records: Sequence[object],
    checker: _BatchChecker,
    sealer: device_batches.BatchSealer,
    ids: Sequence[int],
    chunks: list[bytes],
    written_ids: list[int],
    leaves: list[bytes],
) -> int:
    """Check every record and write the good ones (COPY text format) in chunks; return how
    many records were good (repeats within the batch included).

    The loop is `_BatchChecker.check`'s shortcut written out (a record with the six fields
    whose subject, stream, unit and source are those of a record accepted before: its time
    and value checked by the same rules, in the same order), then `seal_and_leaf` and the
    row's text, without a call per step: at 10,000 records a batch, the calls were a third of
    the Python time. Any record the loop does not accept goes to ``checker.check``, which
    accepts it or records why not, so the result is `check`'s for every record."""
    known = checker.known
    latest = checker.latest_text
    parse_time = datetime.datetime.fromisoformat
    isfinite = math.isfinite
    seal_and_leaf = sealer.seal_and_leaf
    lines: list[str] = []
    n_accepted = 0
    n_written = len(written_ids)
    for index, record in enumerate(records):
        series: _Series | None = None
        if type(record) is dict and len(record) == 6:
            try:
                series = known.get(
                    (record["subject"], record["stream"], record["unit"], record["source"])
                )
                number = record["value"]
                moment = record["time"]
            except (KeyError, TypeError):  # another field, or a value that is no key
                series = None
        at = ""
        if series is not None:
            kind = type(number)
            if (kind is int or kind is float) and type(moment) is str and len(moment) <= 40:
                # _finite and _parse_time, then the future and the stream's bounds
                sent = moment
                try:
                    number = float(number)
                    moment = parse_time(sent)
                except (OverflowError, ValueError):
                    series = None
                else:
                    offset = moment.utcoffset()
                    if (
                        offset is None
                        or not 1900 <= moment.year <= 2199  # EARLIEST_DATE, LATEST_DATE
                        or not isfinite(number)
                        or not series.low <= number <= series.high
                    ):
                        series = None
                    else:
                        # _utc_text of the time in UTC: read off a time sent in UTC in the
                        # extended form (isoformat's own), else formatted; naive UTC texts
                        # compare as the times do
                        form = _UTC_FORMS.get(len(sent))
                        if (
                            form is not None
                            and sent.endswith(form[0])
                            and sent[10] == "T"
                            and sent[4] == "-" == sent[7]
                            and sent[13] == ":" == sent[16]
                            and (form[1] or sent[19] == ".")
                        ):
                            at = sent[:19] + form[1] if form[1] else sent[:26]
                        else:
                            at = (moment - offset if offset else moment).isoformat(
                                timespec="microseconds"
                            )[:26]
                        if at > latest:
                            series = None
            else:
                series = None
        if series is None:
            accepted = checker.check(index, record)
            if accepted is None:
                continue
            series, observed_at, number = accepted
            at = _utc_text(observed_at)
        n_accepted += 1
        if at in series.times:
            continue  # the series' reading at this time is written already
        series.times.add(at)
        row_id = ids[n_written]
        n_written += 1
        value = repr(number)  # the float's JSON and COPY text
        seal, leaf = seal_and_leaf(row_id, series.seal, at, value)
        written_ids.append(row_id)
        leaves.append(leaf)
        lines.append(f"{row_id}{series.copy_head}{at}\t{value}{series.copy_tail}{seal}\n")
        if len(lines) == _ROWS_PER_WRITE:
            chunks.append("".join(lines).encode())
            write(chunks[-1])
            lines.clear()
    if lines:
        chunks.append("".join(lines).encode())
        write(chunks[-1])
    return n_accepted


def _insert_new_rows(cursor: Any, chunks: list[bytes]) -> set[int]:
    """COPY the rows into a temporary table, insert those whose reading is not stored yet;
    return their ids."""
    cursor.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} ("
        "id integer NOT NULL, trial_id integer NOT NULL, participant_id integer NOT NULL, "
        "stream varchar(60) NOT NULL, observed_at timestamp NOT NULL, "
        "value double precision NOT NULL, unit varchar(30) NOT NULL, "
        "source varchar(60) NOT NULL, received_at timestamp NOT NULL, "
        "batch_id varchar(32), seal varchar(80)) ON COMMIT DELETE ROWS"
    )
    with cursor.copy(f"COPY {_STAGING} ({_COLUMNS}) FROM STDIN") as copy:
        for chunk in chunks:
            copy.write(chunk)
    cursor.execute(
        f"INSERT INTO device_observation ({_COLUMNS}) "
        f"SELECT {_COLUMNS} FROM {_STAGING} ORDER BY id "
        "ON CONFLICT (participant_id, stream, observed_at, source) DO NOTHING "
        "RETURNING id"
    )
    stored = {row_id for (row_id,) in cursor.fetchall()}
    cursor.execute(f"TRUNCATE {_STAGING}")
    return stored


def _utc_text(moment: datetime.datetime) -> str:
    """The naive ISO form, microseconds included, of a UTC time of years 1900-2199 (what the
    seal, the leaf and COPY take): its aware form less the "+00:00"."""
    return moment.isoformat(timespec="microseconds")[:26]


def _naive_utc(value: datetime.datetime) -> datetime.datetime:
    """The stored form of a UTC datetime (as `UTCDateTime` binds it)."""
    return value.astimezone(datetime.UTC).replace(tzinfo=None)


# ---------------------------------------------------------------- adherence


def _zone(name: str) -> datetime.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return datetime.UTC


class _VisitDays(NamedTuple):
    """What adherence reads of a scheduled visit."""

    actual_on: datetime.date | None
    planned_on: datetime.date | None


def _visit_day(visits: dict[str, _VisitDays], code: str | None) -> datetime.date | None:
    visit = visits.get(code) if code else None
    if visit is None:
        return None
    return visit.actual_on or visit.planned_on


def _condition_met(condition: str | None, values: dict[str, object]) -> bool | None:
    if not condition:
        return None
    try:
        result = evaluate(condition, values)
    except ExpressionError:
        return None
    return None if result is None else bool(result)


def device_daily_totals(
    session: Session, trial: Trial, streams: Sequence[str]
) -> dict[int, dict[str, dict[datetime.date, float]]]:
    """Return, per participant id, each stream's daily totals on the site's local calendar
    (the days device-inactivity intercurrent events are judged on)."""
    if not streams:
        return {}
    zones = {
        site.id: _zone(site.timezone)
        for site in session.scalars(select(Site).where(Site.trial_id == trial.id))
    }
    site_of = dict(
        session.execute(
            select(Participant.id, Participant.site_id).where(Participant.trial_id == trial.id)
        ).all()
    )
    raw: dict[int, dict[str, list[tuple[datetime.date, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for participant_id, stream, observed_at, value in session.execute(
        select(
            DeviceObservation.participant_id,
            DeviceObservation.stream,
            DeviceObservation.observed_at,
            DeviceObservation.value,
        ).where(DeviceObservation.trial_id == trial.id, DeviceObservation.stream.in_(streams))
    ):
        zone = zones.get(site_of.get(participant_id, -1), datetime.UTC)
        if observed_at.tzinfo is None:
            observed_at = observed_at.replace(tzinfo=datetime.UTC)
        raw[participant_id][stream].append((observed_at.astimezone(zone).date(), value))
    return {
        pid: {stream: daily_totals(obs) for stream, obs in by_stream.items()}
        for pid, by_stream in raw.items()
    }


def _adherence_rules(protocol: Protocol) -> list[tuple[str, AdherenceRule]]:
    return [(s.id, s.adherence) for s in protocol.device_streams if s.adherence is not None]


def _with_window(
    trial: Trial, rules: Sequence[tuple[str, AdherenceRule]], site_ids: frozenset[int] | None
) -> Any:
    """The participants adherence is computed for, by subject code: those of the sites (all
    without ``site_ids``) with a window start for some rule (randomized, or the rule's start
    visit dated), as `_adherence_of` decides it."""
    starts = {rule.window_start_visit for _, rule in rules if rule.window_start_visit}
    dated_start = (
        select(Visit.id)
        .where(
            Visit.participant_id == Participant.id,
            Visit.is_unscheduled.is_(False),
            Visit.visit_code.in_(sorted(starts)),
            func.coalesce(Visit.actual_on, Visit.planned_on).is_not(None),
        )
        .exists()
    )
    stmt = select(Participant).where(
        Participant.trial_id == trial.id,
        or_(Participant.randomized_at.is_not(None), dated_start) if starts
        else Participant.randomized_at.is_not(None),
    )  # fmt: skip
    if site_ids is not None:
        stmt = stmt.where(Participant.site_id.in_(site_ids))
    return stmt


def adherence(
    session: Session,
    trial: Trial,
    protocol: Protocol,
    *,
    today: datetime.date | None = None,
    now: datetime.datetime | None = None,
    site_ids: frozenset[int] | None = None,
) -> dict[str, AdherenceResult]:
    """Return each participant's adherence to every stream rule of the protocol, by subject.

    The window runs from the rule's start visit to its end visit (actual date if known, else
    planned), defaulting to randomization → today, and never past today. Days are the site's
    local calendar days, and so is "today": the site's local date at ``now`` (default: the
    current time), unless ``today`` fixes one date for every site. Participants with no known
    window start are left out. The statements do not grow with the participants but by one
    per `CHUNK` of them for each of their visits, values and observations."""
    rules = _adherence_rules(protocol)
    if not rules:
        return {}
    participants = list(
        session.scalars(_with_window(trial, rules, site_ids).order_by(Participant.subject_code))
    )
    return _adherence_of(session, trial, protocol, rules, participants, today=today, now=now)


def adherence_page(
    session: Session,
    actor: Actor,
    trial: Trial,
    *,
    page: int,
    per_page: int,
    today: datetime.date | None = None,
) -> Page[AdherenceResult]:
    """One page of `adherence` under the trial's active protocol, by subject code: the
    participants of the sites the actor may read with a window start (the count, then the
    page's participants, the sites, their visits, values and observations: a fixed number of
    statements whatever the trial's size)."""
    sites = visible_sites(actor, "participant.read", trial.id)
    _, protocol = active_protocol(session, trial)
    rules = _adherence_rules(protocol)
    try:
        if not rules:
            return Page([], page, per_page, 0)
        listed = _with_window(trial, rules, sites)
        total = session.scalar(select(func.count()).select_from(listed.subquery())) or 0
        participants = list(session.scalars(
            listed.order_by(Participant.subject_code).offset((page - 1) * per_page).limit(per_page)
        ))  # fmt: skip
        results = _adherence_of(session, trial, protocol, rules, participants, today=today)
        return Page(list(results.values()), page, per_page, total)
    finally:
        session.rollback()  # end the read transaction


def _adherence_of(
    session: Session,
    trial: Trial,
    protocol: Protocol,
    rules: Sequence[tuple[str, AdherenceRule]],
    participants: Sequence[Participant],
    *,
    today: datetime.date | None = None,
    now: datetime.datetime | None = None,
) -> dict[str, AdherenceResult]:
    """`adherence` of these participants (in their order) to the protocol's ``rules``; their
    visits, values (when a rule has a condition: `participants.submitted_values`) and
    observations read a `CHUNK` of participants at a time."""
    now = now or utcnow()
    zones = {
        site.id: _zone(site.timezone)
        for site in session.scalars(select(Site).where(Site.trial_id == trial.id))
    }
    site_of = {p.id: p.site_id for p in participants}
    stream_ids = [stream_id for stream_id, _ in rules]
    needs_forms = any(rule.condition for _, rule in rules)
    logs = log_forms(protocol)
    observed: dict[int, dict[str, list[tuple[datetime.date, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    visits: dict[int, dict[str, _VisitDays]] = defaultdict(dict)
    records: dict[int, list[RecordValues]] = defaultdict(list)
    ids = [p.id for p in participants]
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        for participant_id, stream, observed_at, value in session.execute(
            select(
                DeviceObservation.participant_id,
                DeviceObservation.stream,
                DeviceObservation.observed_at,
                DeviceObservation.value,
            ).where(
                DeviceObservation.participant_id.in_(chunk),
                DeviceObservation.stream.in_(stream_ids),
            )
        ):
            zone = zones.get(site_of[participant_id], datetime.UTC)
            day = observed_at.astimezone(zone).date()
            observed[participant_id][stream].append((day, value))
        for participant_id, visit_code, actual_on, planned_on in session.execute(
            select(Visit.participant_id, Visit.visit_code, Visit.actual_on, Visit.planned_on)
            .where(Visit.participant_id.in_(chunk), Visit.is_unscheduled.is_(False))
            .order_by(Visit.id)
        ):
            visits[participant_id][visit_code] = _VisitDays(actual_on, planned_on)
        if needs_forms:
            for participant_id, *values in session.execute(
                select(FormRecord.participant_id, *RECORD_VALUE_COLUMNS)
                .outerjoin(Visit, Visit.id == FormRecord.visit_id)
                .where(FormRecord.participant_id.in_(chunk))
                .order_by(FormRecord.id)
            ):
                records[participant_id].append(cast(RecordValues, tuple(values)))
    results: dict[str, AdherenceResult] = {}
    for participant in participants:
        values = submitted_values(records[participant.id], logs).merged if needs_forms else {}
        zone = zones.get(participant.site_id, datetime.UTC)
        local_today = today or now.astimezone(zone).date()
        randomized_on = (
            participant.randomized_at.astimezone(zone).date() if participant.randomized_at else None
        )
        own_visits = visits[participant.id]
        stream_results: list[StreamAdherenceResult] = []
        for stream_id, rule in rules:
            start_on = _visit_day(own_visits, rule.window_start_visit) or randomized_on
            if start_on is None:
                continue
            end_on = min(_visit_day(own_visits, rule.window_end_visit) or local_today, local_today)
            stream_results.append(
                evaluate_stream_adherence(
                    stream_id,
                    rule,
                    daily_totals(observed[participant.id][stream_id]),
                    start_on,
                    end_on,
                    condition_met=_condition_met(rule.condition, values),
                )
            )
        if stream_results:
            results[participant.subject_code] = summarise_adherence(
                participant.subject_code, stream_results
            )
    return results


def observations_page(
    session: Session,
    participant: Participant,
    *,
    page: int,
    per_page: int,
    stream: str | None = None,
) -> Page[DeviceObservation]:
    """One page of a participant's observations, oldest first (the caller checked access)."""
    stmt = select(DeviceObservation).where(DeviceObservation.participant_id == participant.id)
    if stream is not None:
        stmt = stmt.where(DeviceObservation.stream == stream)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = list(session.scalars(
        stmt.order_by(DeviceObservation.observed_at, DeviceObservation.id)
        .offset((page - 1) * per_page).limit(per_page)
    ))
    session.rollback()
    return Page(rows, page, per_page, total)
