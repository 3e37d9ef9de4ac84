"""`db.insert_many`: new rows written by one statement on PostgreSQL (a statement per row on
SQLite, in process), each row's key returned in the rows' order, every value as given (the
column types' own conversions applied), on both databases; `db.insert_row`: one object's row,
every column set; `db.loaded`: a row read by Core as the session's object, as a query gives it;
`db.set_held`: what a Core statement wrote, given to the object the session holds."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import inspect, select
from sqlalchemy.exc import DBAPIError

from dtx_trials.db import insert_many, insert_row, loaded, set_held
from dtx_trials.extensions import db
from dtx_trials.models import Allocation, AuditEvent, Participant, Trial, Visit
from dtx_trials.models.participants import IDENTIFIER_COLUMNS
from dtx_trials.services import audit, randomization
from tests.dtx_trials.trial_flow import investigator_actor, mci_with_enrolled
from tests.helpers import counted

BEIJING = datetime.timezone(datetime.timedelta(hours=8))


def _participant_id() -> int:
    _, [subject] = mci_with_enrolled(1)
    return db.session.scalars(
        select(Participant.id).where(Participant.subject_code == subject)
    ).one()


_VISIT = Visit.__table__


def _row(participant_id: int, code: str, day: int, **values: object) -> dict[str, Any]:
    start = datetime.date(2026, 3, 1) + datetime.timedelta(days=day)
    fields: dict[str, object] = dict(
        participant_id=participant_id, visit_code=code, occurrence=1, is_unscheduled=False,
        planned_on=start, window_start_on=start - datetime.timedelta(days=3),
        window_end_on=start + datetime.timedelta(days=3), actual_on=None, actual_at=None,
        status="planned", missed_reason=None,
    )  # fmt: skip
    fields.update(values)
    return fields


def test_insert_many_returns_each_rows_key_in_order(app: Flask, backend: str) -> None:
    participant_id = _participant_id()
    visits = [
        _row(participant_id, f"v{n:02d}", n * 7, status="planned" if n % 2 else "done")
        for n in range(12)
    ]
    # a time given in Beijing (stored as UTC), a note with quotes, a comma and a brace (what an
    # array literal would have to escape), a null among values
    visits[3]["actual_at"] = datetime.datetime(2026, 3, 22, 9, 30, tzinfo=BEIJING)
    visits[3]["actual_on"] = datetime.date(2026, 3, 22)
    visits[5]["missed_reason"] = 'said "no", {away}, back in May'
    visits[7]["is_unscheduled"] = True
    with counted() as statements:
        ids = insert_many(db.session.connection(), _VISIT, visits)
    db.session.commit()
    assert len(statements) == (1 if backend == "postgresql" else 12), statements
    assert len(set(ids)) == 12 and ids == sorted(ids)
    stored = {v.id: v for v in db.session.scalars(select(Visit).where(Visit.id.in_(ids)))}
    for n, (id_, sent) in enumerate(zip(ids, visits, strict=True)):
        row = stored[id_]
        assert row.visit_code == f"v{n:02d}"
        assert row.planned_on == datetime.date(2026, 3, 1) + datetime.timedelta(days=n * 7)
        assert row.status == ("planned" if n % 2 else "done")
        assert row.is_unscheduled is (n == 7)
        assert row.missed_reason == (sent["missed_reason"] if n == 5 else None)
        assert row.actual_on == (datetime.date(2026, 3, 22) if n == 3 else None)
    assert stored[ids[3]].actual_at == datetime.datetime(2026, 3, 22, 1, 30, tzinfo=datetime.UTC)


def test_insert_row_refuses_an_object_with_a_column_unset(app: Flask) -> None:
    participant_id = _participant_id()
    incomplete = Visit(**_row(participant_id, "v1", 0))
    del incomplete.__dict__["missed_reason"]
    with pytest.raises(ValueError, match=r"Visit\.missed_reason is not set"):
        insert_row(db.session, incomplete)
    assert db.session.scalars(select(Visit.id).where(Visit.visit_code == "v1")).first() is None
    complete_id = insert_row(db.session, Visit(**_row(participant_id, "v2", 0))).id
    db.session.commit()
    db.session.expunge_all()
    stored = db.session.get(Visit, complete_id)
    assert stored is not None and stored.visit_code == "v2" and stored.missed_reason is None


def test_loaded_is_the_object_a_query_gives(app: Flask, backend: str) -> None:
    participant_id = _participant_id()
    db.session.commit()
    db.session.expunge_all()
    by_id = select(Participant).where(Participant.id == participant_id)

    def core_row() -> Any:
        return db.session.connection().execute(by_id).one()._mapping

    # a row the session does not hold: a new persistent, clean object of the row's values
    new = loaded(db.session, Participant, core_row())
    state = inspect(new)
    assert state.persistent and not db.session.is_modified(new) and new in db.session
    assert db.session.get(Participant, participant_id) is new  # the identity map's
    with counted() as statements:
        assert (new.status, new.subject_code, new.site_id) == db.session.connection().execute(
            select(Participant.status, Participant.subject_code, Participant.site_id).where(
                Participant.id == participant_id)
        ).one()  # fmt: skip
        # held with a change not flushed: kept as it is, as a query without populate_existing
        new.status = "withdrawn"
        assert loaded(db.session, Participant, core_row()) is new and new.status == "withdrawn"
        # with refresh (a row read under its lock): the row's values, as populate_existing
        assert loaded(db.session, Participant, core_row(), refresh=True).status == "enrolled"
        assert not db.session.is_modified(new)  # no change left to flush
        # held and expired (after a commit): its columns are the row's, read by no other
        # statement than the row's own
        db.session.commit()
        statements.clear()
        assert loaded(db.session, Participant, core_row()) is new
        assert new.status == "enrolled" and new.id == participant_id
        assert [s for s in statements if not s.startswith("BEGIN")] == statements[-1:]
    # the object writes through the unit of work as one the ORM loaded
    new.status = "withdrawn"
    db.session.commit()
    db.session.expunge_all()
    assert db.session.get(Participant, participant_id).status == "withdrawn"  # type: ignore[union-attr]


def test_loaded_leaves_the_columns_a_row_lacks_to_load_when_read(
    app: Flask, backend: str
) -> None:
    """A row without some columns (a data entry's lock reads no identifier): a new object
    reads them, decrypted, by a statement of its own when one is first read; a held object
    refreshed by such a row reads them again (another transaction may have changed them), as
    populate_existing would."""
    participant_id = _participant_id()
    db.session.get(Participant, participant_id).full_name = "Wang Fang"  # type: ignore[union-attr]
    db.session.commit()
    db.session.expunge_all()
    table = Participant.__table__
    without_identifiers = select(
        *(c for c in table.columns if c.name not in IDENTIFIER_COLUMNS)
    ).where(table.c.id == participant_id)

    def partial_row() -> Any:
        return db.session.connection().execute(without_identifiers).one()._mapping

    new = loaded(db.session, Participant, partial_row())
    assert set(IDENTIFIER_COLUMNS) <= inspect(new).unloaded
    assert not db.session.is_modified(new)
    with counted() as statements:
        assert new.status == "enrolled" and statements == []  # what the row held: no statement
        assert new.full_name == "Wang Fang"  # read (and decrypted) when read
        assert len(statements) == 1 and "participant.full_name" in statements[0], statements
        # the name changes (as another transaction may change it before a lock is granted): a
        # held object refreshed by a row without it reads it again, one without refresh keeps
        # what it has
        db.session.connection().execute(
            table.update().where(table.c.id == participant_id), {"full_name": "Zhang Wei"}
        )
        assert loaded(db.session, Participant, partial_row()).full_name == "Wang Fang"
        assert loaded(db.session, Participant, partial_row(), refresh=True) is new
        assert new.full_name == "Zhang Wei"
    db.session.rollback()


def test_a_failed_multi_row_insert_writes_no_row(app: Flask, backend: str) -> None:
    """One statement: a row the database refuses (a NUL byte on PostgreSQL, a visit code
    longer than its column there; SQLite stores both) leaves none of the others."""
    participant_id = _participant_id()
    bad = "bad\x00code" if backend == "postgresql" else None
    rows = [_row(participant_id, "v0", 0), _row(participant_id, "v1", 7)]
    if bad is None:  # SQLite: a foreign key that does not exist
        rows.append(_row(participant_id + 10_000, "v2", 14))
    else:
        rows.append(_row(participant_id, bad, 14))
    with pytest.raises(DBAPIError):
        insert_many(db.session.connection(), _VISIT, rows)
        db.session.commit()
    db.session.rollback()
    assert db.session.scalars(
        select(Visit.id).where(Visit.visit_code.in_(["v0", "v1"]))
    ).all() == []


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Snapshot values with sealed ones as what they seal (a seal is salted: never equal)."""
    return {k: getattr(v, "plain", v) for k, v in values.items()}


def test_snapshot_row_is_the_snapshot_of_the_same_values(app: Flask, backend: str) -> None:
    """`audit.snapshot_row` (a row written without an ORM object) gives what `audit.snapshot`
    gives for an object holding the same values: sealed columns sealed (the same plain text),
    dates and times in their canonical forms, None as None, limited to ``fields`` alike."""
    at = datetime.datetime(2026, 3, 22, 9, 30, tzinfo=BEIJING)
    values: dict[str, Any] = dict(
        trial_id=1, participant_id=2, protocol_version_id=3, seq_no=4, stratum_key="site=S1",
        factors={"site": "S1"}, method="block", arm_code="ACTIVE", randomization_number="R00004",
        activation_code=None, evidence={"slot": 2, "block": [1, 0]}, request_id=None,
        status="allocated", void_reason=None, allocated_at=at, allocated_by_id=None,
    )  # fmt: skip
    from_row = audit.snapshot_row(Allocation, values)
    from_object = audit.snapshot(Allocation(**values))
    assert list(from_row) == list(Allocation.__audited__) == list(from_object)
    assert _plain(from_row) == _plain(from_object)
    assert isinstance(from_row["arm_code"], audit.SealedValue)
    assert from_row["arm_code"] != "ACTIVE" and from_row["arm_code"].plain == "ACTIVE"
    assert from_row["allocated_at"] == "2026-03-22T01:30:00.000000Z"
    drawn = ("seq_no", "arm_code", "evidence")
    assert _plain(audit.snapshot_row(Allocation, values, drawn)) == _plain(
        audit.snapshot(Allocation(**values), drawn)
    )
    with pytest.raises(KeyError):  # an audited value missing is an error, never a default
        audit.snapshot_row(Allocation, {k: v for k, v in values.items() if k != "method"})


def test_planned_visits_are_audited_as_their_rows(app: Flask, backend: str) -> None:
    """Randomizing plans the visits anchored on randomization by one insert without ORM
    objects: each planned visit's create event holds exactly its row's audited values (read
    back), and audit verify holds."""
    trial_id, [subject] = mci_with_enrolled(1)
    participant_id = db.session.scalars(
        select(Participant.id).where(Participant.subject_code == subject)
    ).one()
    before = set(db.session.scalars(select(Visit.id).where(Visit.participant_id == participant_id)))
    trial = db.session.get(Trial, trial_id)
    assert trial is not None
    randomization.randomize_participant(db.session, investigator_actor(trial_id), trial, subject)
    db.session.expunge_all()
    visits = {
        v.id: v
        for v in db.session.scalars(select(Visit).where(Visit.participant_id == participant_id))
        if v.id not in before
    }
    assert visits, "randomization planned no visit"
    events = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "visit.plan",
                                 AuditEvent.entity_id.in_(visits))
    ).all()  # fmt: skip
    assert sorted(e.entity_id for e in events) == sorted(visits)
    for event_ in events:
        visit = visits[event_.entity_id]
        assert event_.op == "create" and event_.entity_type == "visit"
        assert event_.trial_id == trial_id and event_.site_id is not None
        assert {c["field"]: c["new"] for c in event_.changes} == audit.snapshot(visit)
        assert all(c["old"] is None for c in event_.changes)
        assert [c["field"] for c in event_.changes] == list(Visit.__audited__)
    report = audit.verify(db.session, trial_id)
    assert report.problems == () and report.rows_checked > len(visits)


def test_set_held_gives_a_held_object_the_written_values_and_adds_none(
    app: Flask, backend: str
) -> None:
    """`db.set_held` after a Core statement wrote a row: the session's object of that row, if
    it holds one, shows the written values as committed (nothing to flush); a row the session
    does not hold gets no object."""
    participant_id = _participant_id()
    db.session.commit()
    db.session.expunge_all()
    set_held(db.session, Participant, participant_id, {"status": "withdrawn"})
    assert len(db.session.identity_map) == 0
    held = db.session.get(Participant, participant_id)
    assert held is not None and held.status == "enrolled"
    set_held(db.session, Participant, participant_id, {"status": "withdrawn"})
    assert held.status == "withdrawn" and not db.session.is_modified(held)
    db.session.commit()  # writes nothing: the row still holds its own value
    db.session.expunge_all()
    assert db.session.get(Participant, participant_id).status == "enrolled"  # type: ignore[union-attr]
