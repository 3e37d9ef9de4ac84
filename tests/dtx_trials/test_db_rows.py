"""`db.insert_rows` / `db.insert_many`: new rows written by one statement on PostgreSQL (a
statement per row on SQLite, in process), each object given its own row's key, every value as
set (the column types' own conversions applied), on both databases."""

from __future__ import annotations

import datetime

import pytest
from flask import Flask
from sqlalchemy import event, select
from sqlalchemy.exc import DBAPIError

from dtx_trials.db import insert_rows
from dtx_trials.extensions import db
from dtx_trials.models import Participant, Visit
from tests.dtx_trials.trial_flow import mci_with_enrolled

BEIJING = datetime.timezone(datetime.timedelta(hours=8))


def _participant_id() -> int:
    _, [subject] = mci_with_enrolled(1)
    return db.session.scalars(
        select(Participant.id).where(Participant.subject_code == subject)
    ).one()


def _visit(participant_id: int, code: str, day: int, **values: object) -> Visit:
    start = datetime.date(2026, 3, 1) + datetime.timedelta(days=day)
    fields: dict[str, object] = dict(
        participant_id=participant_id, visit_code=code, occurrence=1, is_unscheduled=False,
        planned_on=start, window_start_on=start - datetime.timedelta(days=3),
        window_end_on=start + datetime.timedelta(days=3), actual_on=None, actual_at=None,
        status="planned", missed_reason=None,
    )  # fmt: skip
    fields.update(values)
    return Visit(**fields)


def test_insert_rows_gives_each_object_its_own_row(app: Flask, backend: str) -> None:
    participant_id = _participant_id()
    visits = [
        _visit(participant_id, f"v{n:02d}", n * 7, status="planned" if n % 2 else "done")
        for n in range(12)
    ]
    # a time given in Beijing (stored as UTC), a note with quotes, a comma and a brace (what an
    # array literal would have to escape), a null among values
    visits[3].actual_at = datetime.datetime(2026, 3, 22, 9, 30, tzinfo=BEIJING)
    visits[3].actual_on = datetime.date(2026, 3, 22)
    visits[5].missed_reason = 'said "no", {away}, back in May'
    visits[7].is_unscheduled = True
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        insert_rows(db.session, visits)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    db.session.commit()
    assert len(statements) == (1 if backend == "postgresql" else 12), statements
    ids = [visit.id for visit in visits]
    assert len(set(ids)) == 12 and ids == sorted(ids)
    db.session.expunge_all()  # read the rows back, not the objects
    stored = {v.id: v for v in db.session.scalars(select(Visit).where(Visit.id.in_(ids)))}
    for n, (id_, sent) in enumerate(zip(ids, visits, strict=True)):
        row = stored[id_]
        assert row.visit_code == f"v{n:02d}"
        assert row.planned_on == datetime.date(2026, 3, 1) + datetime.timedelta(days=n * 7)
        assert row.status == ("planned" if n % 2 else "done")
        assert row.is_unscheduled is (n == 7)
        assert row.missed_reason == (sent.missed_reason if n == 5 else None)
        assert row.actual_on == (datetime.date(2026, 3, 22) if n == 3 else None)
    assert stored[ids[3]].actual_at == datetime.datetime(2026, 3, 22, 1, 30, tzinfo=datetime.UTC)


def test_insert_rows_refuses_an_object_with_a_column_unset(app: Flask) -> None:
    participant_id = _participant_id()
    incomplete = _visit(participant_id, "v1", 0)
    del incomplete.__dict__["missed_reason"]
    with pytest.raises(ValueError, match=r"Visit\.missed_reason is not set"):
        insert_rows(db.session, [_visit(participant_id, "v0", 0), incomplete])
    assert db.session.scalars(select(Visit.id).where(Visit.visit_code == "v0")).first() is None


def test_a_failed_multi_row_insert_writes_no_row(app: Flask, backend: str) -> None:
    """One statement: a row the database refuses (a NUL byte on PostgreSQL, a visit code
    longer than its column there; SQLite stores both) leaves none of the others."""
    participant_id = _participant_id()
    bad = "bad\x00code" if backend == "postgresql" else None
    rows = [_visit(participant_id, "v0", 0), _visit(participant_id, "v1", 7)]
    if bad is None:  # SQLite: a foreign key that does not exist
        rows.append(_visit(participant_id + 10_000, "v2", 14))
    else:
        rows.append(_visit(participant_id, bad, 14))
    with pytest.raises(DBAPIError):
        insert_rows(db.session, rows)
        db.session.commit()
    db.session.rollback()
    assert db.session.scalars(
        select(Visit.id).where(Visit.visit_code.in_(["v0", "v1"]))
    ).all() == []
