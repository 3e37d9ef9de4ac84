"""Device and DTx-app data: bulk, idempotent ingestion checked against the protocol's streams,
and adherence to each stream's rule (computed by the pure `analysis.adherence`)."""

from __future__ import annotations

import datetime
import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import CursorResult, Table, func, select
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
from dtx_trials.services.protocols import active_protocol, protocol_of
from ecrf.expressions import ExpressionError, evaluate
from ecrf.fields import EARLIEST_DATE, LATEST_DATE
from protocols.model import DeviceStream, Protocol

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
    now = now or utcnow()
    errors: list[RecordError] = []
    rows: list[dict[str, Any]] = []
    n_rejected = 0
    batch_id = uuid.uuid4().hex
    with transaction(session):
        subjects = {
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
        allowed_sites: dict[int, bool] = {}
        protocols = _Protocols(session, trial)
        streams_of: dict[int | None, dict[str, DeviceStream]] = {}
        sources: set[str] = set()
        for index, record in enumerate(records):
            problems: list[tuple[str, str]] = []
            subject_code: str | None = None
            if not isinstance(record, dict):
                errors.append(RecordError(index, None, "record", "must be a JSON object"))
                n_rejected += 1
                continue
            subject_code = record["subject"] if isinstance(record.get("subject"), str) else None
            for name in sorted(set(record) - set(RECORD_FIELDS), key=str):
                problems.append((str(name)[:60], "unknown field"))
            for name in RECORD_FIELDS:
                if record.get(name) is None:
                    problems.append((name, "required"))
            subject: _Subject | None = None
            if subject_code is not None:
                subject = subjects.get(subject_code)
                if subject is not None and subject.site_id not in allowed_sites:
                    allowed_sites[subject.site_id] = can(
                        actor, "device.ingest", trial.id, subject.site_id
                    )
                if subject is None or not allowed_sites[subject.site_id]:
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
            elif observed_at is not None and observed_at > now + FUTURE_TOLERANCE:
                problems.append(("time", "lies in the future"))
            if subject is not None and stream_id is not None:
                version_id = subject.protocol_version_id
                if version_id not in streams_of:
                    streams_of[version_id] = {
                        s.id: s for s in protocols.of(version_id).device_streams
                    }
                stream = streams_of[version_id].get(stream_id)
                if stream is None:
                    problems.append(("stream", f"unknown stream {stream_id!r}"))
                else:
                    problems.extend(_stream_problems(stream, unit, value))
            if problems:
                n_rejected += 1
                errors.extend(RecordError(index, subject_code, f, m) for f, m in problems)
                continue
            assert subject is not None and source is not None and observed_at is not None
            sources.add(source)
            rows.append(
                {
                    "trial_id": trial.id,
                    "participant_id": subject.id,
                    "stream": stream_id,
                    "observed_at": observed_at,
                    "value": value,
                    "unit": unit,
                    "source": source,
                    "received_at": now,
                    "batch_id": batch_id,
                }
            )
            rows[-1]["seal"] = device_batches.column_tags(rows[-1])
        n_inserted, stored = _insert_ignoring_duplicates(session, rows)
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
                "n_duplicates": len(rows) - n_inserted,
                "n_rejected": n_rejected,
                "sources": sorted(sources)[:20],
                **device_batches.batch_details(session, batch_id, stored),
            },
        )
    return IngestResult(n_inserted, len(rows) - n_inserted, n_rejected, tuple(errors))


def _insert_ignoring_duplicates(
    session: Session, rows: list[dict[str, Any]]
) -> tuple[int, list[dict[str, Any]] | None]:
    """Insert the rows, skipping those already stored (same participant, stream, time and
    source; the first of duplicates within the rows wins); return how many rows were new and,
    where the database returned them, the stored rows with their ids.

    PostgreSQL: COPY into a per-connection temporary table, then one ``INSERT ... SELECT ...
    ON CONFLICT DO NOTHING`` (no per-row statement parsing: COPY speed, the same checks).
    SQLite: ``INSERT ... ON CONFLICT DO NOTHING`` as executemany in chunks (one compiled
    statement; sqlite3 reports the summed row count).
    """
    if not rows:
        return 0, []
    if session.get_bind().dialect.name == "postgresql":
        stored = _copy_ignoring_duplicates(session, rows)
        return len(stored), stored
    table = cast(Table, DeviceObservation.__table__)
    stmt = sqlite_insert(table).on_conflict_do_nothing(
        index_elements=["participant_id", "stream", "observed_at", "source"]
    )
    connection = session.connection()
    n_inserted = 0
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        n_inserted += cast("CursorResult[Any]", connection.execute(stmt, chunk)).rowcount
    return n_inserted, None


_COPY_COLUMNS = (
    "trial_id",
    "participant_id",
    "stream",
    "observed_at",
    "value",
    "unit",
    "source",
    "received_at",
    "batch_id",
    "seal",
)
_STAGING = "device_observation_in"


def _copy_ignoring_duplicates(
    session: Session, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    columns = ", ".join(_COPY_COLUMNS)
    # the DBAPI connection of the session's transaction: the staging rows, the insert and the
    # audit event commit or roll back together
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING} ("
            "n integer NOT NULL, trial_id integer NOT NULL, participant_id integer NOT NULL, "
            "stream varchar(60) NOT NULL, observed_at timestamp NOT NULL, "
            "value double precision NOT NULL, unit varchar(30) NOT NULL, "
            "source varchar(60) NOT NULL, received_at timestamp NOT NULL, "
            "batch_id varchar(32), seal varchar(80)) ON COMMIT DELETE ROWS"
        )
        with cursor.copy(f"COPY {_STAGING} (n, {columns}) FROM STDIN") as copy:
            for n, row in enumerate(rows):
                copy.write_row(
                    (
                        n,
                        row["trial_id"],
                        row["participant_id"],
                        row["stream"],
                        _naive_utc(row["observed_at"]),
                        row["value"],
                        row["unit"],
                        row["source"],
                        _naive_utc(row["received_at"]),
                        row["batch_id"],
                        row["seal"],
                    )
                )
        cursor.execute(
            f"INSERT INTO device_observation ({columns}) "
            f"SELECT {columns} FROM {_STAGING} ORDER BY n "
            "ON CONFLICT (participant_id, stream, observed_at, source) DO NOTHING "
            "RETURNING id, participant_id, stream, observed_at, source"
        )
        returned = cursor.fetchall()
        cursor.execute(f"TRUNCATE {_STAGING}")
    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = (row["participant_id"], row["stream"], _naive_utc(row["observed_at"]), row["source"])
        first.setdefault(key, row)
    # the stored rows as the database holds them (a double precision value reads as a float)
    return [
        {**first[(pid, stream, at, source)], "id": row_id,
         "value": float(first[(pid, stream, at, source)]["value"])}
        for row_id, pid, stream, at, source in returned
    ]  # fmt: skip


def _naive_utc(value: datetime.datetime) -> datetime.datetime:
    """The stored form of a UTC datetime (as `UTCDateTime` binds it)."""
    return value.astimezone(datetime.UTC).replace(tzinfo=None)


# ---------------------------------------------------------------- adherence


def _zone(name: str) -> datetime.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return datetime.UTC


def _visit_day(visits: dict[str, Visit], code: str | None) -> datetime.date | None:
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
    window start are left out.
    """
    now = now or utcnow()
    rules = [(s.id, s.adherence) for s in protocol.device_streams if s.adherence is not None]
    if not rules:
        return {}
    stmt = select(Participant).where(Participant.trial_id == trial.id)
    if site_ids is not None:
        stmt = stmt.where(Participant.site_id.in_(site_ids))
    participants = list(session.scalars(stmt.order_by(Participant.subject_code)))
    zones = {
        site.id: _zone(site.timezone)
        for site in session.scalars(select(Site).where(Site.trial_id == trial.id))
    }
    by_participant: dict[int, dict[str, list[tuple[datetime.date, float]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    ids = [p.id for p in participants]
    site_of = {p.id: p.site_id for p in participants}
    stream_ids = [stream_id for stream_id, _ in rules]
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
            by_participant[participant_id][stream].append((day, value))
    needs_forms = any(rule.condition for _, rule in rules)
    results: dict[str, AdherenceResult] = {}
    for participant in participants:
        visits = {
            v.visit_code: v
            for v in session.scalars(
                select(Visit).where(
                    Visit.participant_id == participant.id, Visit.is_unscheduled.is_(False)
                )
            )
        }
        values: dict[str, object] = {}
        if needs_forms:
            for record in session.scalars(
                select(FormRecord)
                .where(FormRecord.participant_id == participant.id, FormRecord.status != "draft")
                .order_by(FormRecord.id)
            ):
                values.update(record.data or {})
        zone = zones.get(participant.site_id, datetime.UTC)
        local_today = today or now.astimezone(zone).date()
        randomized_on = (
            participant.randomized_at.astimezone(zone).date() if participant.randomized_at else None
        )
        stream_results: list[StreamAdherenceResult] = []
        for stream_id, rule in rules:
            assert rule is not None
            start_on = _visit_day(visits, rule.window_start_visit) or randomized_on
            if start_on is None:
                continue
            end_on = min(_visit_day(visits, rule.window_end_visit) or local_today, local_today)
            stream_results.append(
                evaluate_stream_adherence(
                    stream_id,
                    rule,
                    daily_totals(by_participant[participant.id][stream_id]),
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


def trial_adherence(
    session: Session, actor: Actor, trial: Trial, *, today: datetime.date | None = None
) -> dict[str, AdherenceResult]:
    """Adherence of the participants the actor may read, under the trial's active protocol."""
    sites = visible_sites(actor, "participant.read", trial.id)
    _, protocol = active_protocol(session, trial)
    result = adherence(session, trial, protocol, today=today, site_ids=sites)
    session.rollback()  # end the read transaction
    return result


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
