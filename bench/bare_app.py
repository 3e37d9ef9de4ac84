"""The baseline server: a bare Flask app on the same stack (Flask, SQLAlchemy, psycopg 3,
gunicorn) doing the least a transactional endpoint can do.

``POST /counter`` locks the single counter row (``SELECT ... FOR UPDATE``) and increments it
(``UPDATE ... RETURNING``) in one transaction: the floor for anything that hands out
gap-free numbers under a row lock. ``POST /rows`` inserts the request's JSON as one row: the
floor for a form submission. ``PUT /trials/{code}/participants/{subject}/visits/{visit}/floor``
sends the statements an eCRF submit sends, with the least Python around them (`submit_floor`):
the floor of the eCRF submit itself. All three authenticate as dtx-trials does: the bearer
token is resolved by the same function (``accounts.actor_for_token``: one joined query, then
the same short per-process cache), and a request without a live token is a 401. Serve it with
``gunicorn 'bench.bare_app:create_bare_app()'`` and ``BENCH_DATABASE_URL`` set.
"""

from __future__ import annotations

import hmac
import json
import os
from datetime import datetime
from typing import Any, cast

from flask import Flask, Response, g, jsonify, request
from sqlalchemy import Connection, Table, create_engine, insert, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dtx_trials.db import utcnow
from dtx_trials.models import AuditChainHead, FormRecord, Visit
from dtx_trials.services import audit, forms, participants, trials
from dtx_trials.services.access import Actor

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bench_counter (id integer PRIMARY KEY, n bigint NOT NULL)",
    "INSERT INTO bench_counter (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS bench_row (id bigserial PRIMARY KEY, data jsonb NOT NULL)",
)


def create_bare_tables(database_url: str) -> None:
    """Create the counter row and the JSON row table (idempotent)."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            for statement in SCHEMA:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def read_counter(database_url: str) -> tuple[int, int]:
    """Return (counter value, number of JSON rows)."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            n = conn.execute(text("SELECT n FROM bench_counter WHERE id = 1")).scalar_one()
            rows = conn.execute(text("SELECT count(*) FROM bench_row")).scalar_one()
            return int(n), int(rows)
    finally:
        engine.dispose()


def create_bare_app(database_url: str | None = None) -> Flask:
    """Build the baseline app on ``database_url`` (default: ``BENCH_DATABASE_URL``)."""
    engine = create_engine(database_url or os.environ["BENCH_DATABASE_URL"], pool_pre_ping=True)
    app = Flask(__name__)
    app.extensions["bare_engine"] = engine  # disposed by in-process callers

    @app.before_request
    def _authenticate() -> tuple[Response, int] | None:
        from dtx_trials.services.accounts import actor_for_token

        header = request.headers.get("Authorization", "")
        with Session(engine) as session:
            actor = (
                actor_for_token(session, header[7:].strip())
                if header.startswith("Bearer ")
                else None
            )
        if actor is None:
            return jsonify({"message": "authentication required"}), 401
        g.actor = actor
        return None

    @app.post("/counter")
    def increment_counter() -> tuple[Response, int]:
        with engine.begin() as conn:
            conn.execute(text("SELECT n FROM bench_counter WHERE id = 1 FOR UPDATE"))
            n = conn.execute(
                text("UPDATE bench_counter SET n = n + 1 WHERE id = 1 RETURNING n")
            ).scalar_one()
        return jsonify({"n": n}), 201

    @app.post("/rows")
    def insert_row() -> tuple[Response, int]:
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict):
            return jsonify({"message": "expected a JSON object"}), 422
        with engine.begin() as conn:
            row_id = conn.execute(
                text("INSERT INTO bench_row (data) VALUES (CAST(:data AS jsonb)) RETURNING id"),
                {"data": json.dumps(payload)},
            ).scalar_one()
        return jsonify({"id": row_id}), 201

    heads: dict[str, tuple[int, str]] = {}  # this process's last committed floor-chain head

    @app.put("/trials/<code>/participants/<subject>/visits/<visit_code>/floor")
    def submit_floor(code: str, subject: str, visit_code: str) -> tuple[Response, int]:
        payload = request.get_json(silent=True)
        values = payload.get("values") if isinstance(payload, dict) else None
        if not isinstance(values, dict):
            return jsonify({"message": "expected values, a JSON object"}), 422
        with engine.begin() as conn:
            record = floor_submit(conn, g.actor, heads, code, subject, visit_code, values)
        if record is None:
            return jsonify({"message": "trial or participant not found"}), 404
        return jsonify({"record": record}), 200

    return app


# The eCRF submit's floor (`floor_submit`): the statements `forms.save_form` sends for a new
# record at a new visit, with the least Python around them. Its records have their own form
# code and its events their own chain, so they are counted apart from the real submits'.
FLOOR_FORM = "bench_floor"
FLOOR_CHAIN = "bench_floor"
# the floor's events are HMAC-chained as the trail's (one keyed SHA-256 per event, on the
# same canonical JSON) under a key of its own: the bench's rows are not the trial's
_FLOOR_KEY_ID = "bench"
_FLOOR_KEY = hmac.new(b"dtx-trials bench floor chain", digestmod="sha256")


def _new_row(table: Table, **values: Any) -> dict[str, Any]:
    """Every column of a new row but its key (unset ones None), as `db.insert_row` sends."""
    return {c.key: values.get(c.key) for c in table.columns if not c.primary_key}


def floor_submit(
    conn: Connection,
    actor: Actor,
    heads: dict[str, tuple[int, str]],
    trial_code: str,
    subject_code: str,
    visit_code: str,
    values: dict[str, Any],
) -> dict[str, Any] | None:
    """Store a submitted form with the statements of an eCRF submit and nothing else: the
    trial read, the participant's locked read with its consents, the visits-with-records read
    (the app's own statement objects: the same SQL), the visit insert (when the visit is new)
    and the record insert (every column, as `db.insert_row`), then the two events (visit
    opened, form submitted), HMAC-chained and written as the trail writes them: one statement
    that locks the head and writes if it is still this process's last head (``heads``), else
    the locked head's events by the trail's head-update insert. The caller commits.

    None if the trial or the participant is unknown. No permission, status, consent or edit
    check, no derived value, no ORM object: what is left is the work any handler of the same
    statements must do (the values are stored as sent)."""
    trial = conn.execute(trials._TRIAL_BY_CODE, {"code": trial_code}).first()
    if trial is None:
        return None
    participant = conn.execute(
        participants._LOCK_FOR_ENTRY, {"trial_id": trial.id, "subject_code": subject_code}
    ).first()
    if participant is None:
        return None
    rows = conn.execute(forms._VISITS_WITH_RECORDS, {"participant_id": participant.id}).all()
    now = utcnow()
    created: list[tuple[str, Table, int, dict[str, Any]]] = []  # (action, table, id, row)
    visit_id = next((r.id for r in rows if r.visit_code == visit_code), None)
    if visit_id is None:
        visit = _new_row(
            _VISIT, participant_id=participant.id, visit_code=visit_code, occurrence=1,
            is_unscheduled=False, status="open",
        )  # fmt: skip
        visit_id = _insert(conn, _VISIT, visit)
        created.append(("visit.open", _VISIT, visit_id, visit))
    record = _new_row(
        _RECORD, participant_id=participant.id, visit_id=visit_id, form_code=FLOOR_FORM,
        repeat_index=1, protocol_version_id=participant.protocol_version_id,
        status="submitted", data=values, version=1, created_at=now, updated_at=now,
        submitted_at=now,
    )  # fmt: skip
    record_id = _insert(conn, _RECORD, record)
    created.append(("form.submit", _RECORD, record_id, record))
    # as audit.record_create: every covered column from None to its value
    events = [
        {
            "chain": FLOOR_CHAIN, "op": "create", "at": audit.to_jsonable(now),
            "trial_id": trial.id, "site_id": participant.site_id, "actor_id": actor.user_id,
            "actor_name": actor.printed_name, "actor_role": actor.primary_role(trial.id),
            "action": action, "entity_type": table.name, "entity_id": entity_id,
            "changes": [
                {"field": k, "old": None, "new": audit.to_jsonable(row[k])}
                for k in _AUDITED[table.name]
            ],
            "reason": None, "request_id": actor.request_id, "auth_ref": audit.auth_ref_of(actor),
            "key_id": _FLOOR_KEY_ID,
        }
        for action, table, entity_id, row in created
    ]  # fmt: skip
    # the next request's guess, checked under the lock (a rolled-back write only sends the
    # next one down the stale-head path)
    heads[FLOOR_CHAIN] = _write_floor_events(conn, events, now, heads.get(FLOOR_CHAIN))
    return {"id": record_id, "visit_id": visit_id, "form_code": FLOOR_FORM, "status": "submitted",
            "version": 1, "data": values, "submitted_at": audit.to_jsonable(now)}  # fmt: skip


_VISIT = cast(Table, Visit.__table__)
_RECORD = cast(Table, FormRecord.__table__)
_AUDITED = {"visit": Visit.__audited__, "form_record": FormRecord.__audited__}


def _insert(conn: Connection, table: Table, row: dict[str, Any]) -> int:
    """Insert one row (one ``INSERT ... RETURNING id``, as `db.insert_row`); return its id."""
    key = conn.execute(insert(table), row).inserted_primary_key
    assert key is not None
    return int(key[0])


def _chained(
    fields: list[dict[str, Any]], seq: int, prev_hash: str
) -> tuple[list[dict[str, Any]], tuple[int, str]]:
    """The events after the head (seq, prev_hash), each with its seq, prev_hash and HMAC,
    and the new head."""
    rows = []
    for event in fields:
        seq += 1
        row = {**event, "seq": seq, "prev_hash": prev_hash}
        mac = _FLOOR_KEY.copy()
        mac.update(audit.canonical_json(row).encode())
        prev_hash = row["hash"] = mac.hexdigest()
        rows.append(row)
    return rows, (seq, prev_hash)


def _write_floor_events(
    conn: Connection, fields: list[dict[str, Any]], at: datetime, guess: tuple[int, str] | None
) -> tuple[int, str]:
    """Write the events on the floor chain by the trail's statements (`audit.write_pending`
    on PostgreSQL, one chain) and return the new head: with a guess, one statement locks the
    head and writes only if the head is still the guess; else (no guess, or another worker
    moved the head) the events are chained on the locked head and inserted with the head
    update. The chain's head row is created on its first write."""
    if guess is not None:
        rows, head = _chained(fields, *guess)
        found = conn.execute(
            audit._GUESSED_WRITE,
            {"chain": FLOOR_CHAIN, "guess_seq": guess[0], "guess_hash": guess[1],
             "head_seq": head[0], "head_hash": head[1],
             "rows": "[" + ",".join(audit.canonical_json(r) for r in rows) + "]"},
        ).first()  # fmt: skip
        if found is not None and found.written:
            return head
    else:
        found = conn.execute(audit._LOCK_HEAD, {"chain": FLOOR_CHAIN}).first()
    if found is None:  # the chain's first event
        conn.execute(
            pg_insert(AuditChainHead)
            .values(chain=FLOOR_CHAIN, seq=0, hash=audit.GENESIS)
            .on_conflict_do_nothing(index_elements=["chain"])
        )
        found = conn.execute(audit._LOCK_HEAD, {"chain": FLOOR_CHAIN}).one()
    rows, head = _chained(fields, int(found.seq), str(found.hash))
    conn.execute(
        audit._INSERT_WITH_HEAD_UPDATE,
        [{**row, "at": at, "head_chain": FLOOR_CHAIN, "head_seq": head[0],
          "head_hash": head[1]} for row in rows],
    )  # fmt: skip
    return head
