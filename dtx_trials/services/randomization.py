"""Randomization service: concurrency-safe allocation, blinding, voiding, emergency unblinding.

`randomize_participant` is one transaction: lock the participant (the same statement reads the
trial's randomization state row, unlocked: its design inputs, the list and the secret, are fixed
once an allocation exists); read, by a statement of its own after the lock, what other holders
of that lock write (its allocation, scheduled visits and submitted values); check status and
idempotency; derive the stratum from screening data; move the participant to `randomized` and
plan its visits (one multi-row insert); then lock the trial's randomization state row
(``SELECT ... FOR UPDATE`` of the counter, the trial-level design state and the trial's active
allocations only, with the trial chain's audit head, the participant's stratum's row and its
site's counter row on PostgreSQL; the whole database on SQLite) and, holding it only for that,
check the caps against the trial's, the site's and the stratum's active allocations, allocate
with the pure design (`randomization.allocate`, a function of the locked state, the trial secret
and the sequence number), insert the allocation with ``seq_no = next_seq``, advance the counter
and the stratum, and write the audit events. Each stratum's design state is a row of its own
(`RandomizationStratum`), written only under the trial's lock, so an allocation reads, seals and
writes its own stratum, never the trial's every stratum; likewise a site's active allocations
are a row of their own (`RandomizationSiteCount`), not one counter per site in the trial's row.
The caps' counters (the trial's and the sites') are derived data, not in the trail (the
allocations are): the advance event carries the counter and the trial-level state, and
`replay_problems` recounts them. On PostgreSQL the allocation's INSERT, the counter's UPDATE,
the stratum's and the site's rows and the audit events are one statement (the rows ride on the
events' write, `audit.Rider`), so the lock is held for the locking read, the allocation's
Python, that statement and COMMIT; what does not depend on the draw (the allocation's other
columns and their audit values, its id from the table's sequence) is prepared before the lock.
The counter lives in the locked row (no database sequence), so numbers are gap-free: a rollback
returns nothing to anyone.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, literal, select, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from dtx_trials.crypto import cipher
from dtx_trials.db import set_held, transaction, update_by_key, utcnow
from dtx_trials.models import (
    Allocation,
    AuditChainHead,
    AuditEvent,
    FormRecord,
    Participant,
    ProtocolVersion,
    RandomizationSiteCount,
    RandomizationState,
    RandomizationStratum,
    Site,
    Trial,
    Visit,
)
from dtx_trials.services import accounts, audit, notifications
from dtx_trials.services.access import Actor, require, visible_sites
from dtx_trials.services.deviations import zone_named
from dtx_trials.services.errors import Conflict, NotFound, ValidationError
from dtx_trials.services.participants import (
    RECORD_VALUE_COLUMNS,
    RecordValues,
    get_participant,
    log_forms,
    plan_participant_visits,
    protocol_for,
    submitted_values,
)
from dtx_trials.services.protocols import active_protocol, note_version_sha, protocol_of
from ecrf.expressions import ExpressionError, evaluate, truthy
from protocols.model import Protocol
from randomization.designs import Design, allocate, build_design, future_slots, replay, void
from randomization.errors import RandomizationError
from randomization.lists import parse_allocation_list_rows
from randomization.state import AllocationResult, ReplayInput, StratumState
from randomization.state import RandomizationState as DesignState
from randomization.strata import SITE_FACTOR, UNSTRATIFIED, stratum_key

_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
# a randomization's request id (the API's schema checks the same pattern)
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._-]{1,80}$"


def _checked_request_id(request_id: str | None) -> str | None:
    """The request id as stored: None when none was given (an empty one is none), else one
    that fits its column and the API's rule, or a 422 (the staff page's form sends it as typed;
    on PostgreSQL a longer one failed the allocation's insert)."""
    if not request_id:
        return None
    if re.fullmatch(REQUEST_ID_PATTERN, request_id) is None:
        raise ValidationError(
            "invalid request id",
            {"request_id": ["1 to 80 letters, digits, '.', '_' or '-'"]},
        )
    return request_id


_ScheduledVisit = aliased(Visit)


def design_parameters(
    protocol: Protocol, list_table: Mapping[str, Any] | None = None
) -> dict[str, object]:
    """Return the `build_design` parameters of the protocol's randomization section.

    Every key of the section that the method uses is passed on (the key-effect test in
    tests/dtx_trials/test_protocol_key_effects.py changes each one and checks the allocations
    change); the validator refuses keys a method does not use.
    """
    spec = protocol.randomization
    method = spec.method
    if method == "permuted_block":
        return {"block_sizes": list(spec.block_sizes)}
    if method == "minimization":
        factors: list[dict[str, object]] = [
            {"name": f.id, "weight": f.weight, "levels": list(f.level_codes)} for f in spec.factors
        ]
        if spec.stratify_by_site:
            factors.append({"name": SITE_FACTOR, "weight": spec.site_weight})
        params: dict[str, object] = {
            "factors": factors,
            "imbalance": spec.imbalance,
            "burn_in": spec.burn_in,
            "overall_weight": spec.overall_weight,
        }
        if spec.p is not None:
            params["p"] = spec.p
        return params
    if method == "efron":
        return {} if spec.efron_p is None else {"p": spec.efron_p}
    if method == "big_stick":
        return {"b": spec.bsd_b}
    if method == "block_urn":
        return {"lambda": spec.bud_lambda}
    if method == "maximal":
        return {"b": spec.mp_b, "block_length": spec.mp_block_length}
    if method == "list":
        if not list_table:
            raise Conflict("no allocation list has been uploaded for this trial")
        return {"table": dict(list_table)}
    return {}


def design_for(protocol: Protocol, list_table: Mapping[str, Any] | None = None) -> Design:
    """Build the pure design the protocol's randomization section describes."""
    return build_design(
        protocol.randomization.method,
        [a.code for a in protocol.arms],
        [a.ratio for a in protocol.arms],
        design_parameters(protocol, list_table),
    )


def derive_stratum(
    protocol: Protocol,
    values: Mapping[str, object],
    site_code: str,
    by_visit: Mapping[str, Mapping[str, object]] | None = None,
) -> tuple[str, dict[str, str]]:
    """Return (stratum key, factor levels as used); 422 when a value is missing.

    Each factor reads its field at its own visit (``visit:``, default the first visit at or
    before randomization collecting the field) from ``by_visit``; ``values`` are the values
    not tied to any visit, used only when the participant has no record at that visit (a bulk
    import). Without ``by_visit`` every factor reads ``values``.
    """
    spec = protocol.randomization
    levels: list[tuple[str, str]] = []
    for factor in spec.factors:
        visit = protocol.factor_visit(factor)
        own = values
        if by_visit is not None and visit in by_visit:
            own = by_visit[visit]
        value = own.get(factor.field)
        if value is None or value == "" or isinstance(value, dict):
            where = f" at visit {visit}" if by_visit is not None and visit else ""
            raise ValidationError(
                f"cannot randomize: stratification factor {factor.id} missing",
                {"factors": {factor.id: [f"field {factor.field} has no submitted value{where}"]}},
            )
        level = None
        for candidate in factor.levels:
            try:
                matched = candidate.is_otherwise or truthy(evaluate(candidate.when or "", own))
            except ExpressionError as exc:
                raise ValidationError(f"cannot derive {factor.id}: {exc}") from exc
            if matched:
                level = candidate.code
                break
        if level is None:
            raise ValidationError(
                f"cannot randomize: no level of {factor.id} matches",
                {"factors": {factor.id: [f"value {value!r} fits no level"]}},
            )
        levels.append((factor.id, level))
    factors = dict(levels)
    if spec.stratify_by_site:
        factors[SITE_FACTOR] = site_code
    if spec.method == "minimization":
        return UNSTRATIFIED, factors
    return stratum_key(site_code if spec.stratify_by_site else None, levels), factors


def _design_state(row: RandomizationState | _StateRead) -> DesignState:
    """The trial-level design state stored in the locked row (empty before the first
    allocation); a trial from before the stratum rows still holds some strata here."""
    return DesignState.from_json(row.state) if row.state else DesignState()


@dataclass(frozen=True)
class _StratumRead:
    """A stratum's row as read under the trial's lock."""

    id: int | None  # its id; for a row not written yet, drawn from its sequence (PostgreSQL)
    state: Mapping[str, Any] | None  # None: no row yet
    updated_at: datetime | None


_NO_STRATUM_ROW = _StratumRead(None, None, None)


def _with_stratum(
    trial_state: DesignState, key: str, read: _StratumRead
) -> tuple[DesignState, DesignState]:
    """The design state an allocation or void in stratum `key` works on (the trial-level part
    and that one stratum, from its row, or from the trial row of a trial from before the
    stratum rows, or empty), and the trial-level part to store back (without that stratum,
    which goes to its row)."""
    rest = {k: v for k, v in trial_state.strata.items() if k != key}
    stratum = (
        StratumState.from_json(read.state)
        if read.state is not None
        else trial_state.strata.get(key)
    )
    kept = dataclasses.replace(trial_state, strata=rest)
    if stratum is None:
        return dataclasses.replace(trial_state, strata={}), kept
    return dataclasses.replace(trial_state, strata={key: stratum}), kept


def _trial_part(state: DesignState, kept: DesignState) -> DesignState:
    """`state` (after an allocation or void) with the strata of `kept` in place of its own."""
    return dataclasses.replace(state, strata=kept.strata)


def _read_under_lock(
    connection: Connection, trial_id: int, key: str, site_id: int | None, *, new_id: bool
) -> tuple[_StratumRead, int]:
    """Stratum `key`'s row and the site's active allocations (0 before its first: no row),
    read by a statement of their own (the trial's lock held: what the last holder wrote is
    seen); with `new_id` (PostgreSQL) draw the id of a stratum row not written yet."""
    row = connection.execute(
        _READ_UNDER_LOCK, {"trial_id": trial_id, "stratum_key": key, "site_id": site_id}
    ).one()
    site_active = row.active_allocations if row.active_allocations is not None else 0
    if row.id is not None:
        return _StratumRead(row.id, row.state, row.updated_at), site_active
    if new_id:
        return _StratumRead(connection.scalar(_NEW_STRATUM_ID), None, None), site_active
    return _NO_STRATUM_ROW, site_active


_STRATUM_TABLE: Table = RandomizationStratum.__table__  # type: ignore[assignment]
_SITE_COUNT: Table = RandomizationSiteCount.__table__  # type: ignore[assignment]
# one row whatever exists: the stratum's row and the site's counter, each or nulls
_ONE_ROW = select(literal(1).label("one")).subquery("one")
_READ_UNDER_LOCK = select(
    _STRATUM_TABLE.c.id,
    _STRATUM_TABLE.c.state,
    _STRATUM_TABLE.c.updated_at,
    _SITE_COUNT.c.active_allocations,
).select_from(
    _ONE_ROW.outerjoin(
        _STRATUM_TABLE,
        (_STRATUM_TABLE.c.trial_id == bindparam("trial_id"))
        & (_STRATUM_TABLE.c.stratum_key == bindparam("stratum_key")),
    ).outerjoin(_SITE_COUNT, _SITE_COUNT.c.site_id == bindparam("site_id"))
)
_NEW_STRATUM_ID = select(func.nextval(func.pg_get_serial_sequence("randomization_stratum", "id")))
# The columns an allocation or void writes in a stratum row.
_STRATUM_WRITTEN = ("state", "updated_at")
_STRATUM_COLUMNS = tuple(c.name for c in _STRATUM_TABLE.columns)


@dataclass(frozen=True)
class _StratumChange:
    """Stratum `key`'s row as read under the trial's lock, and its state after the change."""

    key: str
    read: _StratumRead
    after: StratumState
    at: datetime


def _advance_stratum(
    session: Session,
    actor: Actor,
    action: str,
    trial_id: int,
    change: _StratumChange,
    *,
    orm: bool,
) -> dict[str, Any]:
    """Audit the stratum's row going from what was read to the state after the change (created
    when it had no row), and write it through the session (`orm`), or leave the write to the
    caller (PostgreSQL: the rider of the allocation's audit write); return the row's values."""
    read = change.read
    values = {"id": read.id, "trial_id": trial_id, "stratum_key": change.key,
              "state": read.state, "updated_at": read.updated_at}  # fmt: skip
    written = {"state": change.after.to_json(), "updated_at": change.at}
    if not orm:  # audited from the values, no ORM object
        assert read.id is not None  # PostgreSQL: a new row's id drawn before the lock
        if read.state is None:
            after = {**values, **written}
            audit.record_create_row(
                session, actor, action, RandomizationStratum, read.id, after,
                trial_id=trial_id, site_id=None,
            )  # fmt: skip
            return after
        before = audit.snapshot_row(RandomizationStratum, values, _STRATUM_WRITTEN)
        audit.record_update_row(
            session, actor, action, RandomizationStratum, read.id, before, written,
            trial_id=trial_id, site_id=None,
        )  # fmt: skip
        return {**values, **written}
    # the row as read (not read again), added to the session as persistent (its values those
    # read under the lock), so that the ORM writes only what changes
    row = RandomizationStratum(**values)
    if read.state is None:
        for name, value in written.items():
            setattr(row, name, value)
        session.add(row)
        audit.record_create(session, actor, action, row)
    else:
        make_transient_to_detached(row)
        session.add(row)
        before = audit.snapshot(row, _STRATUM_WRITTEN)
        for name, value in written.items():
            setattr(row, name, value)
        audit.record_update(session, actor, action, row, before, fields=_STRATUM_WRITTEN)
    return {name: getattr(row, name) for name in _STRATUM_COLUMNS}


def _lock_state(session: Session, trial: Trial) -> RandomizationState:
    state = session.scalars(
        select(RandomizationState)
        .where(RandomizationState.trial_id == trial.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if state is None:
        raise Conflict(f"trial {trial.code} has no active randomization model")
    return state


def _activation_code(prefix: str | None) -> str:
    body = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(8))
    return f"{prefix + '-' if prefix else ''}{body[:4]}-{body[4:]}"


@dataclass(frozen=True)
class _AfterLock:
    """What the participant's lock guards, read once it is held (one statement)."""

    allocation_id: int | None  # the participant's allocation, if it has one
    request_allocation_id: int | None  # the trial's allocation made with the request's id
    visit_codes: frozenset[str]  # its scheduled visits' codes
    records: list[RecordValues]  # its submitted records, in record order (`submitted_values`)


def _read_after_lock(
    session: Session, participant_id: int, request_id: str | None
) -> _AfterLock:
    """The participant's allocation, scheduled visits and submitted values, and the trial's
    allocation made with `request_id` (a retry's, or another participant's), read by a
    statement of its own after the lock is granted: under READ COMMITTED a statement sees what
    was committed when it began, so these, written by other holders of the same lock (a form
    save opening a visit, a concurrent randomization), are never read by the locking
    statement, which may have waited for them."""
    # Core rows on the session's connection (the ORM's execution adds nothing here)
    rows = (
        session.connection()
        .execute(_AFTER_LOCK, {"participant_id": participant_id, "request_id": request_id})
        .all()
    )
    # the participant is locked: one row at least (its record part nulls without a record)
    allocation_id, request_allocation_id, codes = rows[0][_RECORD_PART:]
    return _AfterLock(
        allocation_id,
        request_allocation_id,
        frozenset(codes.split(_CODES_SEPARATOR)) if codes else frozenset(),
        [cast(RecordValues, row[:_RECORD_PART]) for row in rows],
    )


# Visit codes are protocol identifiers (letters, digits, "_", "-"): never a newline.
_CODES_SEPARATOR = "\n"
_RECORD_PART = len(RECORD_VALUE_COLUMNS)  # a row of `_AFTER_LOCK`: `RecordValues`, the rest
# one row per submitted record in record order (`RecordValues`, or nulls without a record),
# each with the participant's allocation id, the id of the trial's allocation made with the
# request id (null without one: `request_id = NULL` matches no row) and the participant's
# scheduled visit codes; built once per process
_AFTER_LOCK = (
    select(
        *RECORD_VALUE_COLUMNS,
        select(Allocation.id)
        .where(
            Allocation.trial_id == Participant.trial_id,
            Allocation.participant_id == Participant.id,
        )
        .scalar_subquery(),
        select(Allocation.id)
        .where(
            Allocation.trial_id == Participant.trial_id,
            Allocation.request_id == bindparam("request_id"),
        )
        .scalar_subquery(),
        select(func.aggregate_strings(_ScheduledVisit.visit_code, _CODES_SEPARATOR))
        .where(
            _ScheduledVisit.participant_id == Participant.id,
            _ScheduledVisit.is_unscheduled.is_(False),
        )
        .scalar_subquery(),
    )
    .select_from(Participant)
    .outerjoin(
        FormRecord,
        (FormRecord.participant_id == Participant.id) & (FormRecord.status != "draft"),
    )
    .outerjoin(Visit, Visit.id == FormRecord.visit_id)
    .where(Participant.id == bindparam("participant_id"))
    .order_by(FormRecord.id)
)


def _count_active(session: Session, trial_id: int) -> dict[str, int]:
    """The trial's active allocations, in all and by site, counted from the allocations."""
    counts: dict[str, int] = {"trial": 0}
    for site_id, n in session.execute(
        select(Participant.site_id, func.count())
        .select_from(Allocation)
        .join(Participant, Participant.id == Allocation.participant_id)
        .where(Allocation.trial_id == trial_id, Allocation.status == "allocated")
        .group_by(Participant.site_id)
    ):
        counts["trial"] += n
        counts[f"site:{site_id}"] = n
    return counts


def randomize_participant(
    session: Session, actor: Actor, trial: Trial, subject_code: str, request_id: str | None = None
) -> tuple[Allocation, bool]:
    """Allocate an enrolled participant; return (allocation, created).

    A retry with the same request id returns the original allocation (created=False); any
    other attempt on a randomized participant is a 409 naming the existing allocation.

    Everything that does not need the trial's lock happens before it is taken: the
    participant is locked (every form write takes that lock too, so the stratum read now is
    the stratum at allocation), its checks, stratum, status and planned visits are done and
    flushed; only then is the randomization state row locked (after the participant: the one
    lock order of every path that takes both) for the allocation itself, the counters and the
    audit write (one statement on PostgreSQL). The visits do not depend on the arm and are part
    of the same transaction, so a failure anywhere still leaves nothing.
    """
    request_id = _checked_request_id(request_id)
    with transaction(session):
        is_postgres = session.get_bind().dialect.name == "postgresql"
        locked = _lock_participant(
            session, actor, trial, subject_code, new_allocation_id=is_postgres
        )
        participant, state_row = locked.participant, locked.state_row
        guarded = _read_after_lock(session, participant.id, request_id)
        existing = (
            session.get(Allocation, guarded.allocation_id) if guarded.allocation_id else None
        )
        if existing is not None and guarded.request_allocation_id == existing.id:
            return existing, False  # a retry
        if guarded.request_allocation_id is not None:
            raise Conflict("this request id was used for another participant")
        if existing is not None:
            raise Conflict(
                "participant is already randomized",
                randomization_number=existing.randomization_number,
            )
        if participant.status != "enrolled":
            raise Conflict(
                f"participant is {participant.status}; only enrolled participants are randomized",
                status=participant.status,
            )
        protocol = protocol_for(session, participant)
        values = submitted_values(guarded.records, log_forms(protocol))
        key, factors = derive_stratum(
            protocol, values.unattached, locked.site_code, values.by_visit
        )
        protocol_version_id = participant.protocol_version_id or trial.active_protocol_version_id
        if protocol_version_id is None:
            raise Conflict(f"trial {trial.code} has no active protocol version")
        now = utcnow()
        randomized = {"status": "randomized", "randomized_at": now}
        # only these columns change: nothing else is snapshot (nor sealed again)
        before = audit.snapshot_row(Participant, vars(participant), randomized)
        # one UPDATE of the locked row, no unit-of-work flush; an object of the row the session
        # held already shows what the row now holds (a rollback expires it)
        session.connection().execute(_RANDOMIZED, {**randomized, "_key": participant.id})
        participant = dataclasses.replace(participant, **randomized)
        set_held(session, Participant, participant.id, vars(participant))
        audit.record_update_row(
            session, actor, "participant.randomized", Participant, participant.id, before,
            randomized, trial_id=participant.trial_id, site_id=participant.site_id,
        )  # fmt: skip
        # one insert; anchored on the site's calendar day
        plan_participant_visits(
            session, actor, participant, protocol, zone=locked.zone, existing=guarded.visit_codes
        )
        if state_row is None:
            raise Conflict(f"trial {trial.code} has no active randomization model")
        # The design and the secret come from the row read (unlocked) with the participant:
        # an uploaded list (`list_table`, `list_numbers`) changes only under this lock while
        # no allocation exists (`upload_allocation_list`), and `secret` and `rng_algorithm`
        # never change, so a row read with next_seq > 1 already had its final list. Only the
        # first allocation reads the whole row again under the lock.
        frozen = state_row.next_seq > 1
        design = _design(protocol, state_row) if frozen else None
        secret = bytes.fromhex(state_row.secret)
        # the advance event's old values as read now; reused if the lock finds the same row
        # (no allocation since), else sealed again under the lock
        read = {name: getattr(state_row, name) for name in _ADVANCED}
        read_snapshot = audit.snapshot_row(RandomizationState, read, _ADVANCED)
        # the allocation as far as it does not depend on the draw, and the audited values of
        # those columns (the draw's five are set and sealed under the lock)
        allocation = Allocation(
            id=locked.allocation_id,
            trial_id=trial.id,
            participant_id=participant.id,
            protocol_version_id=protocol_version_id,
            stratum_key=key,
            factors=dict(factors),
            activation_code=_activation_code(protocol.blinding.activation_code_prefix),
            request_id=request_id,
            allocated_at=now,
            allocated_by_id=actor.user_id,
            status="allocated",
            void_reason=None,
        )
        undrawn = None
        if is_postgres:
            undrawn = audit.snapshot(allocation, _UNDRAWN)
            # the session's persistent object now, its id drawn: under the lock the draw's
            # columns are set as committed values (the row is written by `_write_allocation`'s
            # statement, not by a flush); a refusal under the lock rolls back and leaves
            # nothing written (the object, expired, is dropped with the request's session)
            make_transient_to_detached(allocation)
            session.add(allocation)

        # the trial's lock, held from here to commit: the counter, the trial-level design state,
        # the trial's active allocations, the stratum's row and the site's counter read under
        # it, then the O(1) allocation and one write (the allocation, the counters, the stratum
        # and the audit events) before COMMIT
        site_id = participant.site_id
        if frozen:
            state_row, read_stratum, site_active = _lock_counters(session, state_row, key, site_id)
        else:
            state_row = _lock_state_read(session, trial)
            design = _design(protocol, state_row)
            read_stratum, site_active = _read_under_lock(
                session.connection(), trial.id, key, site_id, new_id=is_postgres
            )
        drawn_on, kept = _with_stratum(_design_state(state_row), key, read_stratum)
        _check_caps(
            trial, protocol, locked.site_code, key, state_row.active_allocations, site_active,
            drawn_on,
        )  # fmt: skip
        try:
            result, next_state = allocate(
                design,
                drawn_on,
                secret=secret,
                model=trial.code,
                seq_no=state_row.next_seq,
                stratum_key=key,
                factors=factors,
                algorithm=state_row.rng_algorithm,
            )
        except RandomizationError as exc:
            raise Conflict(f"cannot randomize: {exc}") from exc
        set_drawn = set_committed_value if is_postgres else setattr
        set_drawn(allocation, "seq_no", result.seq_no)
        set_drawn(allocation, "method", result.method)
        set_drawn(allocation, "arm_code", result.arm)
        set_drawn(allocation, "randomization_number", randomization_number(state_row, result))
        set_drawn(allocation, "evidence", _jsonable(result.evidence))
        locked_read = {name: getattr(state_row, name) for name in _ADVANCED}
        unchanged = locked_read == read
        state_before = (
            read_snapshot
            if unchanged
            else audit.snapshot_row(RandomizationState, locked_read, _ADVANCED)
        )
        advanced = {
            "next_seq": result.seq_no + 1,
            "state": _trial_part(next_state, kept).to_json(),
            "active_allocations": state_row.active_allocations + 1,
            "updated_at": now,
        }
        stratum = _StratumChange(key, read_stratum, next_state.strata[key], now)
        site = _SiteCount(site_id, site_active + 1)
        if undrawn is None:
            _write_allocation_orm(
                session, actor, allocation, state_row, state_before, advanced, stratum, site
            )
        else:
            _write_allocation(
                session,
                actor,
                allocation,
                undrawn,
                state_row,
                state_before,
                advanced,
                stratum,
                site,
            )
        # likewise the state row (under the lock: one lookup of the identity map)
        set_held(session, RandomizationState, state_row.id, {**vars(state_row), **advanced})
    return allocation, True


# The columns an allocation changes in the state row (the others only change without
# allocations: the list upload, or never: the secret).
_ADVANCED = ("next_seq", "state", "active_allocations", "updated_at")
# The allocation's columns set by the draw, under the lock; the other audited ones are known
# (and their audit values prepared) before it.
_DRAWN = ("seq_no", "method", "arm_code", "randomization_number", "evidence")
_UNDRAWN = tuple(name for name in Allocation.__audited__ if name not in _DRAWN)
_ALLOCATION_COLUMNS = tuple(c.name for c in Allocation.__table__.columns)
# PostgreSQL: the allocation's INSERT, the state row's UPDATE, the stratum row's and the site
# counter's INSERT or UPDATE as data-modifying CTEs riding on the audit events' write
# (`audit.Rider`); each row travels as one JSON object (the counter as three numbers).
_ALLOCATE_RIDER = (
    "advance AS (UPDATE randomization_state SET {set} FROM json_populate_record("
    "NULL::randomization_state, CAST(:alloc_advance AS json)) AS r "
    "WHERE randomization_state.id = :alloc_state_id), "
    "stratum AS (INSERT INTO randomization_stratum ({stratum_columns}) SELECT "
    "{stratum_columns} FROM json_populate_record(NULL::randomization_stratum, "
    "CAST(:alloc_stratum AS json)) ON CONFLICT (id) DO UPDATE SET {stratum_set}), "
    "site_count AS (INSERT INTO randomization_site_count (trial_id, site_id, active_allocations) "
    "VALUES (:alloc_trial_id, :alloc_site_id, :alloc_site_active) ON CONFLICT (site_id) "
    "DO UPDATE SET active_allocations = excluded.active_allocations), "
    "allocate AS (INSERT INTO allocation ({columns}) SELECT {columns} FROM "
    "json_populate_record(NULL::allocation, CAST(:alloc_row AS json)))"
).format(
    set=", ".join(f"{name} = r.{name}" for name in _ADVANCED),
    stratum_columns=", ".join(_STRATUM_COLUMNS),
    stratum_set=", ".join(f"{name} = excluded.{name}" for name in _STRATUM_WRITTEN),
    columns=", ".join(_ALLOCATION_COLUMNS),
)


def _row_json(values: Mapping[str, Any]) -> str:
    """A row as the JSON object `json_populate_record` reads (UTC datetimes stored naive)."""

    def plain(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(UTC).replace(tzinfo=None).isoformat()
        raise TypeError(f"cannot write {type(value).__name__} as JSON")

    return json.dumps(values, default=plain)


def _write_allocation(
    session: Session,
    actor: Actor,
    allocation: Allocation,
    undrawn: Mapping[str, Any],
    state_row: _StateRead,
    state_before: Mapping[str, Any],
    advanced: Mapping[str, Any],
    stratum: _StratumChange,
    site: _SiteCount,
) -> None:
    """PostgreSQL: audit the allocation and the state row's advance, and write the four rows
    (with the stratum's, audited by `_advance_stratum`, and the site's counter) and the
    transaction's audit events in one statement (the rows ride on the events' write,
    `audit.Rider`; the allocation's id was drawn from its sequence before the lock).

    The events are the ones `audit.record_create` and `record_update` make (the allocation's
    audited columns, those set before the lock prepared then, and the advanced columns), and
    the allocation is then known to the session as written (persistent since before the lock,
    with the draw's columns committed)."""
    values = {**undrawn, **audit.snapshot(allocation, _DRAWN)}
    audit.append(
        session,
        actor,
        op="create",
        action="randomization.allocate",
        entity_type=Allocation.__tablename__,
        entity_id=allocation.id,
        changes=[{"field": k, "old": None, "new": values[k]} for k in Allocation.__audited__],
        trial_id=allocation.trial_id,
        site_id=site.site_id,
    )
    audit.record_update_row(
        session, actor, "randomization.advance", RandomizationState, state_row.id,
        state_before, advanced, trial_id=state_row.trial_id, site_id=None,
    )  # fmt: skip
    stratum_row = _advance_stratum(
        session, actor, "randomization.advance", allocation.trial_id, stratum, orm=False
    )
    row = _row_json({name: getattr(allocation, name) for name in _ALLOCATION_COLUMNS})
    session.flush()  # (nothing left to flush: the chain head stays the last lock taken)
    audit.write_pending(
        session,
        audit.Rider(
            _ALLOCATE_RIDER,
            {"alloc_state_id": state_row.id, "alloc_advance": _row_json(advanced),
             "alloc_stratum": _row_json(stratum_row), "alloc_row": row,
             "alloc_trial_id": allocation.trial_id, "alloc_site_id": site.site_id,
             "alloc_site_active": site.active},
        ),
    )  # fmt: skip


def _write_allocation_orm(
    session: Session,
    actor: Actor,
    allocation: Allocation,
    state_row: _StateRead,
    state_before: Mapping[str, Any],
    advanced: Mapping[str, Any],
    stratum: _StratumChange,
    site: _SiteCount,
) -> None:
    """SQLite (the database already write-locked): the ORM writes the allocation and the
    stratum's row, one statement each the state row's advance and the site's counter, and the
    audit events are written at commit."""
    session.add(allocation)
    session.flush()
    session.connection().execute(_ADVANCE, {**advanced, "_key": state_row.id})
    _write_site_count(session, allocation.trial_id, site)
    audit.record_create(
        session, actor, "randomization.allocate", allocation, site_id=site.site_id
    )
    audit.record_update_row(
        session, actor, "randomization.advance", RandomizationState, state_row.id,
        state_before, advanced, trial_id=state_row.trial_id, site_id=None,
    )  # fmt: skip
    _advance_stratum(
        session, actor, "randomization.advance", allocation.trial_id, stratum, orm=True
    )


@dataclass(frozen=True)
class _SiteCount:
    """A site's active allocations after an allocation or void there."""

    site_id: int
    active: int


def _write_site_count(session: Session, trial_id: int, site: _SiteCount) -> None:
    """Write the site's counter (its row created at its first allocation), under the trial's
    lock: the value is the one read under it, moved by one."""
    insert_ = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(
        insert_(_SITE_COUNT)
        .values(trial_id=trial_id, site_id=site.site_id, active_allocations=site.active)
        .on_conflict_do_update(
            index_elements=["site_id"], set_={"active_allocations": site.active}
        )
    )


def _design(protocol: Protocol, state_row: RandomizationState | _StateRead) -> Design:
    try:
        return design_for(protocol, state_row.list_table)
    except RandomizationError as exc:
        raise Conflict(f"cannot randomize: {exc}") from exc


def _lock_counters(
    session: Session, state_row: _StateRead, key: str, site_id: int
) -> tuple[_StateRead, _StratumRead, int]:
    """Lock the state row and read the columns allocations change (one ``SELECT ... FOR
    UPDATE``; READ COMMITTED returns the latest committed values once the lock is granted);
    return the row read before with those columns as the lock holder sees them, stratum
    `key`'s row and the site's active allocations. Core statements built once, on the
    session's connection: nothing of the ORM's execution runs under the lock (it reads no audit
    table and the session has nothing left to flush).

    On PostgreSQL one statement locks the counters, the trial chain's head, the stratum's row
    and the site's counter (`_LOCK_FOR_DRAW`: every row it returns is locked, so each is the
    latest committed version once the lock is granted, also one the previous holder wrote
    while this statement waited); for a stratum or a site without a row yet (it returns
    nothing: the join found no row when the statement began) the counters and the head are
    locked by `_LOCK_COUNTERS_AND_HEAD` and the stratum and the site read by a statement of
    their own after the lock (`_read_under_lock`)."""
    locked, read, site_active = _lock_for_draw(
        session.connection(), state_row.id, state_row.trial_id, key, site_id
    )
    if getattr(locked, "seq", None) is not None:
        audit.hold_head(session, audit.chain_for(state_row.trial_id), locked.seq, locked.hash)
    advanced = {name: getattr(locked, name) for name in _ADVANCED}
    return dataclasses.replace(state_row, **advanced), read, site_active


def _lock_for_draw(
    connection: Connection, state_id: int, trial_id: int, key: str, site_id: int
) -> tuple[Any, _StratumRead, int]:
    """The trial's lock for an allocation in stratum `key` at the site (`_lock_counters`):
    return the locked counters (with the chain head's ``seq`` and ``hash`` when it was locked
    too), the stratum's row and the site's active allocations."""
    is_postgres = connection.dialect.name == "postgresql"
    locked = None
    if is_postgres:
        params = {"state_id": state_id, "chain": audit.chain_for(trial_id)}
        locked = connection.execute(
            _LOCK_FOR_DRAW, {**params, "stratum_key": key, "site_id": site_id}
        ).first()
        if locked is not None:
            read = _StratumRead(locked.stratum_id, locked.stratum_state, locked.stratum_updated_at)
            return locked, read, locked.site_active
        locked = connection.execute(_LOCK_COUNTERS_AND_HEAD, params).first()
    if locked is None:  # SQLite (the database is locked), or a chain without a head yet
        locked = connection.execute(_LOCK_COUNTERS, {"state_id": state_id}).one()
    read, site_active = _read_under_lock(connection, trial_id, key, site_id, new_id=is_postgres)
    return locked, read, site_active


_LOCK_COUNTERS = (
    select(*(RandomizationState.__table__.c[name] for name in _ADVANCED))
    .where(RandomizationState.__table__.c.id == bindparam("state_id"))
    .with_for_update()
)
# PostgreSQL: the counters and the trial chain's head, both locked by one statement (both rows
# read as the lock holder sees them): the allocation's events are then written on the head by
# one statement, the guess certain, whichever worker wrote the chain last. The head is the
# last lock taken, with the counters; under the counters' lock no other randomization writes
# the chain, so the head is held only a little longer than the counters are.
_LOCK_COUNTERS_AND_HEAD = (
    select(
        *(RandomizationState.__table__.c[name] for name in _ADVANCED),
        AuditChainHead.__table__.c.seq,
        AuditChainHead.__table__.c.hash,
    )
    .select_from(RandomizationState.__table__.join(AuditChainHead.__table__, true()))
    .where(
        RandomizationState.__table__.c.id == bindparam("state_id"),
        AuditChainHead.__table__.c.chain == bindparam("chain"),
    )
    .with_for_update()
)
# PostgreSQL: the same with stratum `stratum_key`'s row and site `site_id`'s counter, locked
# too (the rows of the FROM list are locked in its order: the counters first, as every path
# that takes them)
_LOCK_FOR_DRAW = (
    _LOCK_COUNTERS_AND_HEAD.add_columns(
        _STRATUM_TABLE.c.id.label("stratum_id"),
        _STRATUM_TABLE.c.state.label("stratum_state"),
        _STRATUM_TABLE.c.updated_at.label("stratum_updated_at"),
        _SITE_COUNT.c.active_allocations.label("site_active"),
    )
    .join_from(
        AuditChainHead.__table__,
        _STRATUM_TABLE,
        (_STRATUM_TABLE.c.trial_id == RandomizationState.__table__.c.trial_id)
        & (_STRATUM_TABLE.c.stratum_key == bindparam("stratum_key")),
    )
    .join_from(_STRATUM_TABLE, _SITE_COUNT, _SITE_COUNT.c.site_id == bindparam("site_id"))
)


@dataclass(frozen=True)
class _ParticipantRead:
    """The participant's columns a randomization uses, as locked (a row, not an ORM object: its
    identifiers, encrypted, are neither read nor decrypted)."""

    id: int
    trial_id: int
    site_id: int
    status: str
    protocol_version_id: int | None
    screened_at: datetime
    enrolled_at: datetime | None
    randomized_at: datetime | None


@dataclass(frozen=True)
class _StateRead:
    """The trial's randomization state row's columns a randomization uses (a row, not an ORM
    object); the `_ADVANCED` ones as last read (`_lock_counters` reads them under the lock)."""

    id: int
    trial_id: int
    next_seq: int
    state: dict[str, Any]
    active_allocations: int
    updated_at: datetime
    secret: str
    rng_algorithm: str
    list_table: dict[str, Any] | None
    list_numbers: dict[str, Any] | None


_PARTICIPANT_TABLE: Table = Participant.__table__  # type: ignore[assignment]
_STATE_TABLE: Table = RandomizationState.__table__  # type: ignore[assignment]
# the columns read, in the order of the fields
_PARTICIPANT_READ = tuple(
    _PARTICIPANT_TABLE.c[field.name] for field in dataclasses.fields(_ParticipantRead)
)
_STATE_READ = tuple(_STATE_TABLE.c[field.name] for field in dataclasses.fields(_StateRead))
# the UPDATEs by key: the participant randomized, the state row advanced
_RANDOMIZED = update_by_key(_PARTICIPANT_TABLE, ("status", "randomized_at"))
_ADVANCE = update_by_key(_STATE_TABLE, _ADVANCED)
# the trial's first allocation: the whole state row read under its lock (the list uploaded
# before it is read as committed)
_LOCK_STATE_READ = (
    select(*_STATE_READ).where(_STATE_TABLE.c.trial_id == bindparam("trial_id")).with_for_update()
)


def _state_read(values: Mapping[Any, Any]) -> _StateRead:
    return _StateRead(*(values[column] for column in _STATE_READ))


def _lock_state_read(session: Session, trial: Trial) -> _StateRead:
    found = session.connection().execute(_LOCK_STATE_READ, {"trial_id": trial.id}).first()
    if found is None:
        raise Conflict(f"trial {trial.code} has no active randomization model")
    return _state_read(found._mapping)


@dataclass(frozen=True)
class _Locked:
    participant: _ParticipantRead
    site_code: str
    zone: tzinfo
    state_row: _StateRead | None  # read without its lock
    allocation_id: int | None  # drawn from the allocation's sequence (PostgreSQL)


def _lock_participant(
    session: Session, actor: Actor, trial: Trial, subject_code: str, *, new_allocation_id: bool
) -> _Locked:
    """Lock the participant to randomize (one statement): the columns of it that a
    randomization uses, its site's code and time zone, the trial's randomization state row
    (unlocked) and, with `new_allocation_id` (PostgreSQL), an id drawn from the allocation's
    sequence. Rows other holders of the participant's lock write are read after it
    (`_read_after_lock`).

    The statement runs on the session's connection and its rows stay rows (the ORM's loading of
    them cost more than the statement's round trip); objects of them the session holds already
    are given what the rows hold when the randomization has written them (`db.set_held`)."""
    session.flush()  # as a query's autoflush
    found = session.connection().execute(
        _LOCK_FOR_ALLOCATION if new_allocation_id else _LOCK_FOR_ALLOCATION_NO_ID,
        {"trial_id": trial.id, "subject_code": subject_code},
    ).first()
    if found is None:
        raise NotFound("participant not found")
    values = found._mapping
    participant = _ParticipantRead(*(values[column] for column in _PARTICIPANT_READ))
    state_row = _state_read(values) if values[_STATE_TABLE.c.id] is not None else None
    sha256, site_code, timezone = (values[column] for column in _LOCKED_WITH_PARTICIPANT)
    allocation_id = found[-1]  # the new id, the statement's last column
    require(actor, "randomize", trial.id, participant.site_id)
    note_version_sha(session, participant.protocol_version_id, sha256)
    return _Locked(participant, site_code, zone_named(timezone), state_row, allocation_id)


# the participant's protocol version's hash, its site's code and time zone in the lock's row
_LOCKED_WITH_PARTICIPANT = (
    ProtocolVersion.__table__.c.sha256,
    Site.__table__.c.code,
    Site.__table__.c.timezone,
)


def _lock_for_allocation(new_id: Any) -> Any:
    return (
        select(
            *_PARTICIPANT_READ,
            ProtocolVersion.sha256,
            Site.code,
            Site.timezone,
            *_STATE_READ,
            new_id,
        )
        .join(Site, Site.id == Participant.site_id)
        .outerjoin(ProtocolVersion, ProtocolVersion.id == Participant.protocol_version_id)
        .outerjoin(RandomizationState, RandomizationState.trial_id == Participant.trial_id)
        .where(
            Participant.trial_id == bindparam("trial_id"),
            Participant.subject_code == bindparam("subject_code"),
        )
        .with_for_update(of=Participant)
    )


# built once per process
_LOCK_FOR_ALLOCATION = _lock_for_allocation(
    func.nextval(func.pg_get_serial_sequence("allocation", "id"))
)
_LOCK_FOR_ALLOCATION_NO_ID = _lock_for_allocation(literal(None))


def randomization_number(
    state_row: RandomizationState | _StateRead, result: AllocationResult
) -> str:
    """Return the allocation's randomization number: the uploaded list's number for its slot
    when the list came with numbers, else R + the zero-padded sequence number."""
    numbers = (state_row.list_numbers or {}).get(result.stratum_key)
    slot = result.evidence.get("slot")
    if result.method == "list" and numbers and isinstance(slot, int):
        return str(numbers[slot - 1])
    return f"R{result.seq_no:05d}"


def _jsonable(evidence: Mapping[str, object]) -> dict[str, Any]:
    return dict(audit.to_jsonable(dict(evidence)))


def _check_caps(
    trial: Trial,
    protocol: Protocol,
    site_code: str,
    key: str,
    trial_active: int,
    site_active: int,
    state: DesignState,
) -> None:
    """409 when an allocation would pass a cap (the trial's and the site's active allocations
    read under the trial's lock, the stratum's in its design state)."""
    caps = protocol.randomization.caps
    stratum = state.strata.get(key)
    checks = [
        (caps.trial, trial_active, f"trial {trial.code}"),
        (caps.per_site, site_active, f"site {site_code}"),
        (caps.per_stratum, stratum.n_active if stratum else 0, "this stratum"),
    ]
    for cap, n, what in checks:
        if cap is not None and n >= cap:
            raise Conflict(f"randomization cap of {cap} reached for {what}")


def get_allocation(session: Session, actor: Actor, trial: Trial, subject_code: str) -> Allocation:
    participant = get_participant(session, actor, trial, subject_code, "participant.read")
    allocation = session.scalars(
        select(Allocation).where(
            Allocation.trial_id == trial.id, Allocation.participant_id == participant.id
        )
    ).first()
    if allocation is None:
        raise NotFound("participant is not randomized")
    return allocation


@dataclass(frozen=True)
class Unblinding:
    allocation: Allocation
    arm_code: str
    arm_name: str
    at: Any
    signed_by: str


def redact_arms(protocol: Protocol, text: str) -> str:
    """``text`` with every arm code and name (en, zh) blacked out, so that a reason naming the
    treatment does not carry it to blinded readers (the trail, the notice, the list)."""
    terms = sorted(
        {t for a in protocol.arms for t in (a.code, a.name.en, a.name.zh) if t},
        key=len,
        reverse=True,
    )

    def word(term: str) -> str:
        # a Latin-script term as a whole word (arm code "app" never inside "appendicitis"),
        # a Chinese one wherever it stands (no spaces between its words)
        escaped = re.escape(term)
        return rf"(?<![A-Za-z0-9_]){escaped}(?![A-Za-z0-9_])" if term.isascii() else escaped

    pattern = re.compile("|".join(word(t) for t in terms), re.IGNORECASE)
    return pattern.sub("[arm withheld]", text)


def list_unblindings(session: Session, actor: Actor, trial: Trial) -> list[dict[str, Any]]:
    """The trial's emergency unblindings (who, when, why, category, recipient), never the arm;
    an investigator sees their own sites' only. The reason is the trail's, redacted when
    recorded, and again here for events recorded before that was so (`redact_arms`)."""
    sites = visible_sites(actor, "unblinding.read", trial.id)
    stmt = select(AuditEvent).where(
        AuditEvent.chain == audit.chain_for(trial.id),
        AuditEvent.action == "randomization.emergency_unblinding",
    )
    if sites is not None:
        stmt = stmt.where(AuditEvent.site_id.in_(sites))
    out = []
    for event in session.scalars(stmt.order_by(AuditEvent.seq)):
        details = {c["field"]: c.get("new") for c in event.changes}
        participant = session.get(Participant, event.entity_id)
        reason = event.reason or ""
        out.append({
            "at": event.at,
            "actor_name": event.actor_name,
            "subject_code": participant.subject_code if participant else "",
            "reason": redact_arms(protocol_for(session, participant), reason)
            if participant else reason,
            "category": details.get("category"),
            "recipient": details.get("recipient"),
        })
    return out


def emergency_unblind(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    *,
    password: str,
    reason: str,
    category: str,
    recipient: str | None = None,
) -> Unblinding:
    """Break the blind for one participant: re-authenticated, reasoned, signed and audited.

    Sponsor and monitors see the event (who, when, why), never the arm.
    """
    if not reason.strip():
        raise ValidationError("a reason is required", {"reason": ["must not be blank"]})
    participant = get_participant(session, actor, trial, subject_code, "unblind.emergency")
    user = accounts.reauthenticate(session, actor, password, purpose="unblinding")
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "unblind.emergency", lock=True
        )
        allocation = session.scalars(
            select(Allocation).where(
                Allocation.trial_id == trial.id, Allocation.participant_id == participant.id
            )
        ).first()
        if allocation is None:
            raise Conflict("participant is not randomized; there is nothing to unblind")
        protocol = protocol_for(session, participant)
        # the trail is read by blinded users (monitors, auditors, the sponsor): a reason that
        # names an arm is kept with the arm blacked out, as the notice shows it
        signed_reason = reason.strip()
        reason = redact_arms(protocol, signed_reason)
        # the reason as signed is not lost: encrypted with the field key (as identifiers are),
        # opaque to every reader of the trail, for the sponsor's custodian to disclose
        kept = (
            {"reason_as_signed_encrypted": base64.b64encode(
                cipher().encrypt(signed_reason, "audit.unblinding_reason")).decode("ascii")}
            if reason != signed_reason else {}
        )
        now = utcnow()
        audit.record_event(
            session,
            actor,
            "randomization.emergency_unblinding",
            entity_type="participant",
            entity_id=participant.id,
            trial_id=trial.id,
            site_id=participant.site_id,
            reason=reason,
            details={
                "category": category,
                "recipient": recipient or user.printed_name,
                "signed_by": user.printed_name,
                "signature_meaning": "emergency unblinding",
                "randomization_number": allocation.randomization_number,
                **kept,
            },
        )
        before = audit.snapshot(participant)
        participant.is_emergency_unblinded = True
        audit.record_update(
            session, actor, "participant.unblinded", participant, before, reason=reason.strip()
        )
        site = session.get(Site, participant.site_id)
        subject, body = unblinding_message(
            protocol,
            trial_code=trial.code,
            subject_code=participant.subject_code,
            site_code=site.code if site is not None else "",
            randomization_number=allocation.randomization_number,
            by=f"{user.printed_name} ({actor.primary_role(trial.id) or 'staff'})",
            at=now,
            category=category,
            reason=reason.strip(),
            recipient=recipient or user.printed_name,
        )
        notifications.notify_roles(
            session,
            actor,
            trial=trial,
            roles=protocol.blinding.roles_notified_of_unblinding,
            site_id=participant.site_id,
            kind="emergency_unblinding",
            subject=subject,
            body=body,
            entity_type="participant",
            entity_id=participant.id,
        )
        arm = protocol.arm(allocation.arm_code)
    return Unblinding(allocation, arm.code, arm.name.en, now, user.printed_name)


def unblinding_message(
    protocol: Protocol,
    *,
    trial_code: str,
    subject_code: str,
    site_code: str,
    randomization_number: str,
    by: str,
    at: datetime,
    category: str,
    reason: str,
    recipient: str,
) -> tuple[str, str]:
    """Return (subject, body) of the unblinding notice: who, when, why, never the arm.

    The free-text reason is shown with every arm code and name blacked out (`redact_arms`).
    """
    redacted = redact_arms(protocol, reason)
    subject = f"[{trial_code}] Emergency unblinding of participant {subject_code}"
    body = "\n".join(
        [
            f"An emergency unblinding was performed in trial {trial_code}.",
            "",
            f"Participant: {subject_code} (site {site_code})",
            f"Randomization number: {randomization_number}",
            f"Unblinded by: {by}, signed with the meaning \"emergency unblinding\"",
            f"When (UTC): {at.strftime('%Y-%m-%d %H:%M:%S')}",
            f"Category: {category}",
            f"Reason: {redacted}",
            f"Treatment information given to: {recipient}",
            "",
            "This notice does not contain the treatment arm. The event is in the audit trail "
            f"and at GET /api/v1/trials/{trial_code}/unblindings.",
        ]
    )
    return subject, body


def void_allocation(
    session: Session, actor: Actor, trial: Trial, subject_code: str, *, password: str, reason: str
) -> Allocation:
    """Mark an allocation "randomized in error": its slot is retired, never reused."""
    if not reason.strip():
        raise ValidationError("a reason is required", {"reason": ["must not be blank"]})
    require(actor, "trial.manage", trial.id)
    accounts.reauthenticate(session, actor, password, purpose="void_allocation")
    with transaction(session):
        state_row = _lock_state(session, trial)
        participant = get_participant(session, actor, trial, subject_code, "participant.read")
        allocation = session.scalars(
            select(Allocation)
            .where(Allocation.trial_id == trial.id, Allocation.participant_id == participant.id)
            .with_for_update()
        ).first()
        if allocation is None or allocation.status != "allocated":
            raise Conflict("no active allocation to void")
        protocol = protocol_for(session, participant)
        design = design_for(protocol, state_row.list_table)
        result = AllocationResult(
            arm=allocation.arm_code,
            stratum_key=allocation.stratum_key,
            factors=allocation.factors,
            method=allocation.method,
            seq_no=allocation.seq_no,
            evidence=allocation.evidence,
        )
        state_before = audit.snapshot(state_row)
        key = allocation.stratum_key
        read, site_active = _read_under_lock(
            session.connection(), trial.id, key, participant.site_id, new_id=False
        )
        voided_on, kept = _with_stratum(_design_state(state_row), key, read)
        after = void(design, voided_on, result)
        state_row.state = _trial_part(after, kept).to_json()
        state_row.active_allocations = state_row.active_allocations - 1
        _write_site_count(session, trial.id, _SiteCount(participant.site_id, site_active - 1))
        audit.record_update(session, actor, "randomization.retire_slot", state_row, state_before)
        change = _StratumChange(key, read, after.strata[key], utcnow())
        _advance_stratum(session, actor, "randomization.retire_slot", trial.id, change, orm=True)
        before = audit.snapshot(allocation)
        allocation.status = "voided"
        allocation.void_reason = reason.strip()
        allocation.evidence = {**allocation.evidence, "voided_before_seq": state_row.next_seq}
        audit.record_update(
            session,
            actor,
            "randomization.void",
            allocation,
            before,
            site_id=participant.site_id,
            reason=reason.strip(),
        )
    return allocation


def list_allocations(session: Session, actor: Actor, trial: Trial) -> list[Allocation]:
    """The allocation list, with arms (unblinded roles only)."""
    require(actor, "allocation.read", trial.id)
    with transaction(session):
        audit.record_event(
            session,
            actor,
            "allocation_list.viewed",
            entity_type="trial",
            entity_id=trial.id,
            trial_id=trial.id,
        )
    return list(
        session.scalars(
            select(Allocation).where(Allocation.trial_id == trial.id).order_by(Allocation.seq_no)
        )
    )


def next_slots(session: Session, actor: Actor, trial: Trial, key: str, n: int) -> list[str]:
    """The next n arms of a stratum, without consuming them (unblinded roles only)."""
    require(actor, "allocation.read", trial.id)
    state_row = session.scalars(
        select(RandomizationState).where(RandomizationState.trial_id == trial.id)
    ).first()
    if state_row is None:
        raise Conflict("trial has no randomization model")
    _, protocol = active_protocol(session, trial)
    read, _ = _read_under_lock(session.connection(), trial.id, key, None, new_id=False)
    try:
        slots = future_slots(
            design_for(protocol, state_row.list_table),
            _with_stratum(_design_state(state_row), key, read)[0],
            bytes.fromhex(state_row.secret),
            trial.code,
            key,
            n,
        )
    except RandomizationError as exc:
        raise ValidationError(str(exc), {"stratum": [str(exc)]}) from exc
    with transaction(session):
        audit.record_event(
            session,
            actor,
            "allocation_list.future_viewed",
            entity_type="trial",
            entity_id=trial.id,
            trial_id=trial.id,
            details={"stratum": key, "n": n},
        )
    return slots


def upload_allocation_list(session: Session, actor: Actor, trial: Trial, csv_text: str) -> int:
    """Store an uploaded allocation table (method `list`) before the first allocation."""
    require(actor, "allocation.upload", trial.id)
    try:
        rows = parse_allocation_list_rows(csv_text)
    except RandomizationError as exc:
        raise ValidationError("allocation list rejected", {"list": [str(exc)]}) from exc
    table: dict[str, list[str]] = {}
    numbers: dict[str, list[str]] = {}
    for row in rows:
        table.setdefault(row.stratum, []).append(row.arm)
        if row.randomization_number is not None:
            numbers.setdefault(row.stratum, []).append(row.randomization_number)
    with transaction(session):
        state_row = _lock_state(session, trial)
        if state_row.next_seq != 1:
            raise Conflict("allocations exist; the list can no longer be replaced")
        _, protocol = active_protocol(session, trial)
        try:
            design_for(protocol, table)
        except RandomizationError as exc:
            raise ValidationError("allocation list rejected", {"list": [str(exc)]}) from exc
        state_before = audit.snapshot(state_row)
        state_row.list_table = {k: list(v) for k, v in table.items()}
        state_row.list_numbers = numbers or None
        audit.record_update(session, actor, "allocation_list.stored", state_row, state_before)
        audit.record_event(
            session,
            actor,
            "allocation_list.uploaded",
            entity_type="trial",
            entity_id=trial.id,
            trial_id=trial.id,
            details={
                "strata": len(table),
                "slots": sum(len(v) for v in table.values()),
                "with_randomization_numbers": bool(numbers),
            },
        )
    return sum(len(v) for v in table.values())


# Evidence the replay recomputes and compares with what was stored at allocation time.
_REPLAYED_EVIDENCE = (
    "slot", "block_index", "block_size", "position", "rule", "imbalance_scores", "preferred",
    "probabilities", "u", "draw_label", "d", "kappa", "block_position", "counts",
    "factor_counts",
)


def _stratum_problem(protocol: Protocol, allocation: Allocation) -> str | None:
    """Return why the stored stratum key and factors disagree with the protocol, if they do.

    The stored factors are authoritative (spec §1.0: "as used"); what must hold is that they
    are exactly the protocol's factors (and the site when it stratifies by site), with declared
    levels, and that the key is the one the protocol's stratification builds from them.
    """
    spec = protocol.randomization
    factors = allocation.factors or {}
    expected_names = {f.id for f in spec.factors} | (
        {SITE_FACTOR} if spec.stratify_by_site else set()
    )
    if set(factors) != expected_names:
        return (
            f"factors {sorted(factors)} are not the protocol's {sorted(expected_names)}"
        )
    for factor in spec.factors:
        if factors[factor.id] not in factor.level_codes:
            return f"{factors[factor.id]!r} is not a level of {factor.id}"
    if spec.method == "minimization":
        key = UNSTRATIFIED
    else:
        key = stratum_key(
            factors[SITE_FACTOR] if spec.stratify_by_site else None,
            [(f.id, factors[f.id]) for f in spec.factors],
        )
    if key != allocation.stratum_key:
        return f"stratum {allocation.stratum_key} should be {key}"
    return None


def replay_problems(session: Session, trial: Trial) -> list[str]:
    """Recompute every allocation from the secret and stored inputs; name any that differ.

    Each allocation is replayed with the design of the protocol version it was made under
    (every randomization key honoured) and the draw version the model recorded; the arm, the
    draw and its evidence (slot, block, scores, probabilities, u) must match, and so must the
    stratum key and the randomization number of an uploaded list. The caps' counters, the
    trial's in the state row and each site's row (not in the trail: derived), must equal the
    active allocations by trial and site.
    """
    state_row = session.scalars(
        select(RandomizationState).where(RandomizationState.trial_id == trial.id)
    ).first()
    allocations = list(
        session.scalars(
            select(Allocation).where(Allocation.trial_id == trial.id).order_by(Allocation.seq_no)
        )
    )
    if state_row is None:
        return []
    if not allocations:
        return _counter_problems(session, state_row)
    problems: list[str] = []
    protocols: dict[int, Protocol] = {}
    designs: dict[int, Design] = {}
    try:
        for version_id in sorted({a.protocol_version_id for a in allocations}):
            version = session.get(ProtocolVersion, version_id)
            assert version is not None  # foreign key
            protocols[version_id] = protocol_of(version)
            designs[version_id] = design_for(protocols[version_id], state_row.list_table)
        inputs = [
            ReplayInput(
                seq_no=a.seq_no,
                stratum_key=a.stratum_key,
                factors=a.factors,
                voided_before_seq=a.evidence.get("voided_before_seq"),
                design=designs[a.protocol_version_id],
            )
            for a in allocations
        ]
        results = replay(
            designs[allocations[0].protocol_version_id],
            bytes.fromhex(state_row.secret),
            trial.code,
            inputs,
            algorithm=state_row.rng_algorithm,
        )
    except (RandomizationError, Conflict) as exc:
        return [f"allocation replay failed: {exc}"]
    expected_seq = 1
    for allocation, result in zip(allocations, results, strict=True):
        where = f"allocation id={allocation.id} (seq {allocation.seq_no})"
        if allocation.seq_no != expected_seq:
            problems.append(
                f"allocation seq {expected_seq} missing (gap before {allocation.seq_no})"
            )
        expected_seq = allocation.seq_no + 1
        if result.arm != allocation.arm_code:
            problems.append(f"{where}: stored arm differs from the replayed allocation")
        replayed = _jsonable(result.evidence)
        differing = [
            name
            for name in _REPLAYED_EVIDENCE
            if name in allocation.evidence
            and name in replayed
            and allocation.evidence[name] != replayed[name]
        ]
        if differing:
            problems.append(
                f"{where}: stored {', '.join(differing)} differ from the replayed allocation"
            )
        stratum = _stratum_problem(protocols[allocation.protocol_version_id], allocation)
        if stratum:
            problems.append(f"{where}: {stratum}")
        if allocation.method != result.method:
            problems.append(
                f"{where}: made by method {allocation.method}, the protocol says {result.method}"
            )
        number = randomization_number(state_row, result)
        if allocation.randomization_number != number:
            problems.append(f"{where}: randomization number is not the one its slot carries")
    return problems + _counter_problems(session, state_row)


def _counter_problems(session: Session, state_row: RandomizationState) -> list[str]:
    """Where the caps' counters (the trial's, and each site's row) differ from the active
    allocations: a counter lowered behind the app would let a site or the trial pass its cap,
    one raised would refuse allocations the protocol allows."""
    stored: dict[str, object] = {"trial": state_row.active_allocations}
    for site_id, active in session.execute(
        select(_SITE_COUNT.c.site_id, _SITE_COUNT.c.active_allocations).where(
            _SITE_COUNT.c.trial_id == state_row.trial_id
        )
    ):
        stored[f"site:{site_id}"] = active
    counted = _count_active(session, state_row.trial_id)
    return [
        f"the caps' counter {name} says {stored.get(name, 0)!r} active allocations; "
        f"the allocations say {counted.get(name, 0)}"
        for name in sorted(set(stored) | set(counted))
        if stored.get(name, 0) != counted.get(name, 0)
    ]


Overrides = Mapping[str, Mapping[str, object]]


def _overridden(
    method: str, params: Mapping[str, object], overrides: Overrides
) -> tuple[dict[str, object], str]:
    """Return the parameters with the method's overrides applied, and a label suffix.

    An override is a `build_design` parameter of the method (`p`, `block_sizes`, `lambda`…),
    or `factors.<name>.weight` for a minimization factor's weight.
    """
    changed = dict(params)
    notes = []
    for key, value in (overrides.get(method) or {}).items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "factors" and parts[2] == "weight":
            factors = [dict(f) for f in changed.get("factors", [])]  # type: ignore[attr-defined]
            matching = [f for f in factors if f.get("name") == parts[1]]
            if not matching:
                raise ValidationError(
                    f"{method} has no factor {parts[1]!r}", {"set": [f"{method}.{key}"]}
                )
            matching[0]["weight"] = value
            changed["factors"] = factors
        else:
            changed[key] = value
        notes.append(f"{key}={_show(value)}")
    return changed, f" ({', '.join(notes)})" if notes else ""


def _show(value: object) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def candidate_designs(
    protocol: Protocol, overrides: Overrides | None = None
) -> list[tuple[str, Design, list[str]]]:
    """The protocol's own design and the usual alternatives on the same arms and factors.

    Returns (label, design, stratify_by) triples; minimization balances its factors itself,
    so it runs unstratified. `overrides` maps a method to parameters replacing its own in every
    candidate of that method (e.g. {"minimization": {"p": 0.9}}); a method that is not among
    the candidates is added with those parameters (e.g. {"maximal": {"b": 3,
    "block_length": 10}}), stratified like the protocol. Raises DesignError on a bad value.
    """
    overrides = overrides or {}
    spec = protocol.randomization
    arms = [a.code for a in protocol.arms]
    ratio = [a.ratio for a in protocol.arms]
    strata = [f.id for f in spec.factors] + ([SITE_FACTOR] if spec.stratify_by_site else [])
    total = sum(protocol.reduced_ratio)
    factors: list[dict[str, object]] = [
        {"name": f.id, "weight": f.weight, "levels": list(f.level_codes)} for f in spec.factors
    ]
    if spec.stratify_by_site:
        factors.append({"name": SITE_FACTOR, "weight": spec.site_weight})
    own_method = spec.method if spec.method != "list" else "simple"  # a list has a fixed length
    own_params = design_parameters(protocol) if spec.method != "list" else {}
    candidates: list[tuple[str, str, Mapping[str, object], list[str]]] = [
        (f"protocol: {spec.method}", own_method, own_params,
         [] if own_method == "minimization" else strata),
        ("simple", "simple", {}, []),
        (f"stratified blocks {2 * total}/{4 * total}", "permuted_block",
         {"block_sizes": [2 * total, 4 * total]}, strata),
    ]
    if factors:
        candidates.append(("minimization", "minimization", {"factors": factors, "p": 0.8}, []))
    designs: list[tuple[str, Design, list[str]]] = []
    for label, method, params, stratify in candidates:
        changed, suffix = _overridden(method, params, overrides)
        if label == "minimization" and "p" not in overrides.get(method, {}):
            suffix = f" (p=0.8, {suffix[2:]}" if suffix else " (p=0.8)"
        design = build_design(method, arms, ratio, changed)
        if any(d == design and s == stratify for _, d, s in designs):
            continue  # an alternative identical to the protocol's own design
        designs.append((label + suffix, design, stratify))
    for method, params in overrides.items():
        if any(d.method == method for _, d, _ in designs):
            continue
        label = method + " (" + ", ".join(f"{k}={_show(v)}" for k, v in params.items()) + ")"
        extra = dict(params)
        if method == "minimization":
            extra.setdefault("factors", factors)
        designs.append(
            (label, build_design(method, arms, ratio, extra),
             [] if method == "minimization" else strata)
        )
    return designs


@dataclass(frozen=True)
class DesignComparison:
    label: str
    result: Any  # randomization.simulate.SimulationResult


def compare_designs(
    session: Session, actor: Actor, trial: Trial, *, n: int, runs: int, seed: int = 20261123
) -> list[DesignComparison]:
    """Simulate the active protocol's design and its alternatives (sponsor admins)."""
    require(actor, "protocol.manage", trial.id)
    _, protocol = active_protocol(session, trial)
    return compare_protocol_designs(protocol, n=n, runs=runs, seed=seed)


def compare_protocol_designs(
    protocol: Protocol, *, n: int, runs: int, seed: int = 20261123
) -> list[DesignComparison]:
    """Simulate a protocol's design (active, or a builder draft) and its alternatives: balance
    and predictability per design, on the protocol's arms, factors and initial sites."""
    from randomization.simulate import simulate

    if not (2 <= n <= 2000 and 1 <= runs <= 500):
        raise ValidationError(
            "simulation too large or too small", {"n": ["2 to 2,000"], "runs": ["1 to 500"]}
        )
    factor_levels = {f.id: list(f.level_codes) for f in protocol.randomization.factors}
    sites = [s.code for s in protocol.sites.initial_sites] or ["S1", "S2", "S3", "S4"]
    return [
        DesignComparison(
            label,
            simulate(
                design,
                n,
                runs,
                factor_levels=factor_levels,
                site_levels=sites,
                stratify_by=stratify_by,
                seed=seed,
            ),
        )
        for label, design, stratify_by in candidate_designs(protocol)
    ]
