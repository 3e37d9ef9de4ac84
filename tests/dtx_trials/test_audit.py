"""Audit trail: written with each change, hash-chained, append-only, and `dtx audit verify`
names every row edited, deleted or inserted behind the app's back (AUD-01..05)."""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, date, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from dtx_trials.cli import cli
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, Site, Trial
from dtx_trials.services import audit
from dtx_trials.services.errors import Conflict
from tests.helpers import counted, login, make_site, make_trial, make_user


def _raw(sql: str, **params: object) -> None:
    """Run SQL as an attacker with database rights would: bypassing the app and its trigger."""
    db.session.remove()
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(sql), params)


def _verify_cli(app: Flask, *args: str) -> tuple[int, str]:
    runner = CliRunner()
    from dtx_trials import cli as cli_module

    original = cli_module.with_app

    # `dtx audit verify` builds its own app from the environment; point it at the test database.
    def with_test_app(func):  # type: ignore[no-untyped-def]
        def wrapper(*a, **k):  # type: ignore[no-untyped-def]
            with app.app_context():
                return func(app, *a, **k)

        return wrapper

    command = cli.commands["audit"].commands["verify"]  # type: ignore[attr-defined]
    callback = command.callback
    command.callback = with_test_app(callback.__wrapped__)  # type: ignore[union-attr]
    try:
        result = runner.invoke(cli, ["audit", "verify", *args])
    finally:
        command.callback = callback
        cli_module.with_app = original
    return result.exit_code, result.output


def _trial_with_sites() -> Trial:
    trial = make_trial("T1")
    make_site(trial, "S1", "First")
    make_site(trial, "S2", "Second")
    return trial


def test_aud_01_event_fields_and_chain(app: Flask) -> None:
    trial = _trial_with_sites()
    events = list(
        db.session.scalars(
            select(AuditEvent)
            .where(AuditEvent.chain == f"trial:{trial.id}")
            .order_by(AuditEvent.seq)
        )
    )
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == audit.GENESIS
    for prev, event in itertools.pairwise(events):
        assert event.prev_hash == prev.hash
    site_event = next(e for e in events if e.action == "site.create")
    assert site_event.op == "create"
    assert site_event.at.tzinfo is not None
    assert {c["field"] for c in site_event.changes} >= {"code", "name", "trial_id"}
    assert site_event.actor_name == "Command line"


@pytest.mark.parametrize("reason", [None, "ordinary", "marker"])
def test_prepared_hash_is_the_event_hash(app: Flask, reason: str | None) -> None:
    """The hash prepared at append (one canonical dump cut at markers standing for prev_hash
    and seq, or key by key when a value holds a marker's text) is the hash of the event's
    fields with its seq and prev_hash."""
    from dtx_trials.services.access import command_line

    trial = _trial_with_sites()
    text_ = f"x{audit._PREV_MARK}y{audit._SEQ_MARK}" if reason == "marker" else reason
    event = audit.record_event(
        db.session, command_line(), "test.event", entity_type="trial", entity_id=trial.id,
        trial_id=trial.id, details={"note": text_, "n": 1.5}, reason=text_,
    )  # fmt: skip
    [prepared] = [p for p in db.session.info[audit._PENDING] if p.event is event]
    fields = audit.hashed_fields(event)
    assert (prepared._head, prepared._middle, prepared._tail) == audit._cut_by_keys(fields)
    event.seq, event.prev_hash = 7, "ab" * 32
    assert prepared.hash(7, "ab" * 32) == audit.event_hash(audit.hashed_fields(event))
    db.session.rollback()  # a NUL character is no PostgreSQL text: nothing is written


def test_verify_passes_on_untouched_data(app: Flask) -> None:
    _trial_with_sites()
    report = audit.verify(db.session)
    assert report.ok, report.problems
    assert report.events >= 3
    assert report.rows_checked >= 3


def test_aud_05_edited_audit_row_is_named(app: Flask) -> None:
    trial = _trial_with_sites()
    target = db.session.scalars(
        select(AuditEvent).where(AuditEvent.chain == f"trial:{trial.id}", AuditEvent.seq == 2)
    ).one()
    _raw("UPDATE audit_event SET reason = 'forged' WHERE id = :id", id=target.id)
    code, output = _verify_cli(app, "T1")
    assert code == 1
    assert f"audit_event id={target.id}" in output
    assert "row edited" in output


def test_aud_05_deleted_audit_row_is_named(app: Flask) -> None:
    trial = _trial_with_sites()
    target = db.session.scalars(
        select(AuditEvent).where(AuditEvent.chain == f"trial:{trial.id}", AuditEvent.seq == 2)
    ).one()
    _raw("DELETE FROM audit_event WHERE id = :id", id=target.id)
    report = audit.verify(db.session, trial.id)
    kinds = {p.kind for p in report.problems}
    assert "deleted" in kinds
    assert any(p.where == f"trial:{trial.id} seq 2" for p in report.problems), report.problems


def test_aud_05_deleted_last_audit_row_is_named(app: Flask) -> None:
    trial = _trial_with_sites()
    last = db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.chain == f"trial:{trial.id}")
        .order_by(AuditEvent.seq.desc())
    ).first()
    assert last is not None
    _raw("DELETE FROM audit_event WHERE id = :id", id=last.id)
    report = audit.verify(db.session, trial.id)
    assert any("chain head" in p.message for p in report.problems)


def _forge_after(source: AuditEvent, seq: int, prev_hash: str) -> str:
    """Insert a self-consistent copy of `source` at `seq`, hashed with the field key (an
    attacker who holds it); return its hash."""
    forged = {
        **audit.hashed_fields(source),
        "seq": seq,
        "action": "site.forged",
        "prev_hash": prev_hash,
    }
    forged_hash = audit.event_hash(forged)
    _raw(
        "INSERT INTO audit_event (chain, seq, op, at, trial_id, site_id, actor_id, actor_name, "
        "actor_role, action, entity_type, entity_id, changes, reason, request_id, auth_ref, "
        "key_id, prev_hash, hash) SELECT chain, :seq, op, at, trial_id, site_id, actor_id, "
        "actor_name, actor_role, 'site.forged', entity_type, entity_id, changes, reason, "
        "request_id, auth_ref, key_id, :prev, :h "
        "FROM audit_event WHERE id = :id",
        seq=seq,
        prev=prev_hash,
        h=forged_hash,
        id=source.id,
    )
    return forged_hash


def test_aud_05_appended_audit_row_is_named(app: Flask) -> None:
    trial = _trial_with_sites()
    events = list(
        db.session.scalars(
            select(AuditEvent)
            .where(AuditEvent.chain == f"trial:{trial.id}")
            .order_by(AuditEvent.seq)
        )
    )
    last = events[-1]
    _forge_after(last, last.seq + 1, last.hash)
    forged_id = db.session.scalars(
        select(AuditEvent.id).where(AuditEvent.action == "site.forged")
    ).one()
    report = audit.verify(db.session, trial.id)
    assert [p.kind for p in report.problems] == ["inserted"]
    assert f"audit_event id={forged_id}" in report.problems[0].message


def test_aud_05_row_inserted_mid_chain_is_named(app: Flask) -> None:
    trial = _trial_with_sites()
    events = list(
        db.session.scalars(
            select(AuditEvent)
            .where(AuditEvent.chain == f"trial:{trial.id}")
            .order_by(AuditEvent.seq)
        )
    )
    chain = events[0].chain
    # renumber the later rows to make room, then slip a forged row in at seq 2
    _raw("UPDATE audit_event SET seq = seq + 100 WHERE chain = :c AND seq >= 2", c=chain)
    _raw("UPDATE audit_event SET seq = seq - 99 WHERE chain = :c AND seq >= 100", c=chain)
    _forge_after(events[1], 2, events[0].hash)
    report = audit.verify(db.session, trial.id)
    edited = {p.where for p in report.problems if p.kind == "edited"}
    # every renumbered original row is named, and so is the head mismatch
    assert {f"audit_event id={e.id} ({chain} seq {e.seq + 1})" for e in events[1:]} == edited
    assert any(p.kind == "inserted" for p in report.problems)


def test_aud_05_data_changed_behind_the_app(app: Flask) -> None:
    _trial_with_sites()
    site_id = db.session.scalars(select(Site.id).where(Site.code == "S2")).one()
    _raw("UPDATE site SET name = 'Renamed' WHERE id = :id", id=site_id)
    code, output = _verify_cli(app, "T1")
    assert code == 1
    assert f'site id={site_id}: name is "Renamed" but the trail says "Second"' in output


def test_aud_05_data_inserted_and_deleted_behind_the_app(app: Flask) -> None:
    trial_id = _trial_with_sites().id
    s1_id = db.session.scalars(select(Site.id).where(Site.code == "S1")).one()
    _raw("DELETE FROM site WHERE id = :id", id=s1_id)
    _raw(
        "INSERT INTO site (trial_id, code, name, timezone, is_active, created_at) "
        "VALUES (:t, 'S9', 'Ghost', 'UTC', true, CURRENT_TIMESTAMP)",
        t=trial_id,
    )
    report = audit.verify(db.session, trial_id)
    messages = " | ".join(p.message for p in report.problems)
    assert f"site id={s1_id}: row is in the trail but missing" in messages
    assert "row has no audit trail" in messages


def test_verify_cli_reports_ok(app: Flask) -> None:
    _trial_with_sites()
    code, output = _verify_cli(app)
    assert code == 0, output
    assert "OK" in output and "0 problem(s)" in output


def test_aud_02_rollback_leaves_no_event(app: Flask) -> None:
    trial = _trial_with_sites()
    before = db.session.scalar(select(text("count(*)")).select_from(AuditEvent))
    actor = make_user("sponsor", role="sponsor_admin", trial=trial)
    from dtx_trials.services import accounts, trials

    a = accounts.actor_for(db.session, actor.user, via="api")
    with pytest.raises(Conflict):
        trials.create_site(db.session, a, trial, {"code": "S1", "name": "Duplicate"})
    after = db.session.scalar(select(text("count(*)")).select_from(AuditEvent))
    # only the sponsor's account creation and grant were added, not the failed site
    assert after == before + 2
    assert audit.verify(db.session).ok


def test_aud_04_api_has_no_write_path_to_the_trail(client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    methods = {
        m for p, item in spec["paths"].items() if "/audit" in p for m in item if m != "parameters"
    }
    assert methods == {"get"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_aud_04_postgres_refuses_update_delete_truncate(app: Flask) -> None:
    _trial_with_sites()
    for statement in (
        "UPDATE audit_event SET reason = 'x'",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event",
    ):
        db.session.remove()
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(text(statement))


def test_audit_api_is_auditor_only_and_paginated(client: FlaskClient) -> None:
    trial = _trial_with_sites()
    auditor = login(client, make_user("aud", role="auditor", trial=trial))
    monitor = login(client, make_user("mon", role="monitor", trial=trial))
    page = client.get("/api/v1/trials/T1/audit?per_page=2&page=2", headers=auditor.headers)
    body = page.get_json()
    assert page.status_code == 200
    assert body["per_page"] == 2 and body["page"] == 2
    assert [e["seq"] for e in body["items"]] == [3, 4]
    assert body["total"] >= 4
    assert client.get("/api/v1/trials/T1/audit", headers=monitor.headers).status_code == 403
    verify = client.get("/api/v1/trials/T1/audit/verify", headers=auditor.headers).get_json()
    assert verify["ok"] is True


def test_a_write_on_a_stale_head_guess_relinks_on_the_locked_head(
    app: Flask, backend: str
) -> None:
    """On PostgreSQL a write first tries the head this process last committed; when another
    writer (another process: simulated by restoring this process's guess after a write) moved
    the head since, the guessed statement writes nothing and the events are hashed on the head
    it locked: the chain stays gap-free and verifies, and the next write's guess is good."""
    trial = make_trial("T1")
    chain = audit.chain_for(trial.id)
    make_site(trial, "S1", "Site one")
    stale = dict(audit._last_heads)
    make_site(trial, "S2", "Site two")  # "another process": its head is not what we guess
    audit._last_heads.clear()
    audit._last_heads.update(stale)
    with counted() as statements:
        make_site(trial, "S3", "Site three")
    writes = [s for s in statements if "audit_chain_head" in s or "audit_event" in s]
    if backend == "postgresql":
        assert len(writes) == 2 and "WHERE EXISTS (SELECT 1 FROM h)" in writes[0], writes
        assert audit._last_heads[(db.engine.url, chain)][0] == audit.n_events(db.session, chain)
    seqs = list(
        db.session.scalars(
            select(AuditEvent.seq).where(AuditEvent.chain == chain).order_by(AuditEvent.seq)
        )
    )
    assert seqs == list(range(1, len(seqs) + 1))
    assert audit.verify(db.session, trial.id).ok


def test_concurrent_writers_leave_a_valid_chain(app: Flask, backend: str) -> None:
    """Threads add sites to one trial at once; the chain stays gap-free and valid."""
    trial_id = make_trial("T1").id
    db.session.remove()  # on SQLite an open session would hold the write lock
    n_threads, per_thread = (8, 5) if backend == "postgresql" else (4, 3)
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        with app.app_context():
            try:
                t = db.session.get(Trial, trial_id)
                assert t is not None
                for i in range(per_thread):
                    make_site(t, f"W{k}-{i}", f"Worker {k} site {i}")
            except BaseException as exc:
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    db.session.remove()
    seqs = list(
        db.session.scalars(
            select(AuditEvent.seq)
            .where(AuditEvent.chain == f"trial:{trial_id}")
            .order_by(AuditEvent.seq)
        )
    )
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) >= n_threads * per_thread
    assert audit.verify(db.session, trial_id).ok


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(st.text(max_size=6), _JSON_VALUES) | st.lists(_JSON_VALUES))
def test_a_json_value_is_sealed_and_digested_as_its_walked_form(value: Any) -> None:
    """What a JSON column holds is dumped as it is (no `to_jsonable` walk) to the same text the
    walk gives, so a seal or digest does not depend on the path taken."""
    assert audit._as_text(value) == audit.canonical_json(audit.to_jsonable(value))


def test_a_value_json_cannot_hold_is_walked_first() -> None:
    value = {"on": date(2026, 12, 5), "at": [datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC)]}
    assert audit._as_text(value) == '{"at":["2026-12-05T01:02:03.000000Z"],"on":"2026-12-05"}'
