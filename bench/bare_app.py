"""The baseline server: a bare Flask app on the same stack (Flask, SQLAlchemy, psycopg 3,
gunicorn) doing the least a transactional endpoint can do.

``POST /counter`` locks the single counter row (``SELECT ... FOR UPDATE``) and increments it
(``UPDATE ... RETURNING``) in one transaction: the floor for anything that hands out
gap-free numbers under a row lock. ``POST /rows`` inserts the request's JSON as one row: the
floor for a form submission. ``PUT /trials/{code}/participants/{subject}/visits/{visit}/floor``
sends the statements an eCRF submit sends, with the least Python around them (`submit_floor`):
the floor of the eCRF submit itself.
``POST /trials/{code}/participants/{subject}/randomization/floor`` sends the statements a
randomization sends on PostgreSQL (`floor_randomize`): the floor of the randomization. All
four authenticate as dtx-trials does: the bearer token is resolved by the same function
(``accounts.actor_for_token``: one joined query, then the same short per-process cache), and a
request without a live token is a 401. Serve it with
``gunicorn 'bench.bare_app:create_bare_app()'`` and ``BENCH_DATABASE_URL`` set (and
``DTX_FIELD_KEY``: the randomization floor decrypts the trial's secret and seals its events as
the trail does). ``create_api_floor_app`` serves the randomization floor behind dtx-trials' own
API stack instead: the least a randomization costs through it.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Mapping
from datetime import datetime
from types import SimpleNamespace
from typing import Any, NamedTuple, cast

from flask import Flask, Response, g, jsonify, request
from sqlalchemy import (
    Connection,
    Table,
    bindparam,
    create_engine,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from dtx_trials import crypto
from dtx_trials.db import insert_many, utcnow
from dtx_trials.models import (
    Allocation,
    AuditChainHead,
    AuditEvent,
    FormRecord,
    Participant,
    ProtocolVersion,
    RandomizationState,
    RandomizationStratum,
    Site,
    Trial,
    Visit,
)
from dtx_trials.services import audit, forms, participants, protocols, randomization, trials
from dtx_trials.services.access import Actor
from dtx_trials.services.deviations import zone_named
from dtx_trials.services.errors import Conflict, NotFound, ValidationError
from ecrf.schedule import plan_visits
from protocols.model import Protocol
from randomization.designs import allocate
from randomization.errors import RandomizationError

# the minimal handler's randomization routes, as clients format them (code=, subject=): on the
# bare app, and behind the API's stack (`create_api_floor_app`)
FLOOR_RANDOMIZE_PATH = "/trials/{code}/participants/{subject}/randomization/floor"
API_FLOOR_RANDOMIZE_PATH = "/api/v1" + FLOOR_RANDOMIZE_PATH


def _rule(path: str) -> str:
    """A client's path template as a Flask rule."""
    return path.replace("{", "<").replace("}", ">")


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
    # its pool checks connections as the app's does (`db._discard_if_ended_by_server`, a
    # listener of every pool of this process)
    engine = create_engine(database_url or os.environ["BENCH_DATABASE_URL"])
    app = Flask(__name__)
    app.extensions["bare_engine"] = engine  # disposed by in-process callers
    _configure_field_key()

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

    @app.post(_rule(FLOOR_RANDOMIZE_PATH))
    def randomize_floor(code: str, subject: str) -> tuple[Response, int]:
        payload = request.get_json(silent=True)
        request_id = payload.get("request_id") if isinstance(payload, dict) else None
        try:
            with engine.begin() as conn:  # a refusal rolls back what was written before it
                status, answer = floor_randomize(conn, g.actor, code, subject, request_id)
        except FloorRefused as exc:
            return jsonify({"message": exc.message}), exc.status
        answer["allocated_at"] = audit.to_jsonable(answer["allocated_at"])
        return jsonify(answer), status

    return app


def create_api_floor_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """dtx-trials' app with one more route: ``POST /api/v1/trials/{code}/participants/
    {subject}/randomization/floor``, the minimal handler of the randomization's statements
    (`floor_randomize`) behind the API's own stack in place of the service: the app's request
    hooks (request id, bearer token, input checks, security headers), ``@idempotent`` (the
    request is the unit of work, committed last), the argument and response schemas
    (flask-smorest) and the ORM session's transaction. The least a randomization can cost
    through the API's stack (it skips the API's trial read, its permission check and its
    role-shaped response, which the real endpoint adds). Serve it with
    ``gunicorn 'bench.bare_app:create_api_floor_app()'``, configured as the app."""
    from flask.views import MethodView

    from dtx_trials import create_app
    from dtx_trials.api.blinding import AllocationReceiptSchema
    from dtx_trials.api.context import current_actor
    from dtx_trials.api.idempotency import idempotent
    from dtx_trials.api.participants import RandomizeSchema
    from dtx_trials.api.schemas import Blueprint
    from dtx_trials.extensions import api, db

    app = create_app(overrides)
    blp = Blueprint("bench_floor", __name__)
    refusals = {404: NotFound, 409: Conflict, 422: ValidationError}

    @blp.route(_rule(API_FLOOR_RANDOMIZE_PATH))
    class FloorRandomization(MethodView):
        @idempotent
        @blp.arguments(RandomizeSchema)
        @blp.response(201, AllocationReceiptSchema)
        def post(self, body: dict[str, Any], code: str, subject: str) -> Any:
            try:
                status, receipt = floor_randomize(
                    db.session.connection(), current_actor(), code, subject, body["request_id"]
                )
            except FloorRefused as exc:
                raise refusals[exc.status](exc.message) from exc
            return receipt, status

    api.register_blueprint(blp)
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


def _configure_field_key() -> None:
    """Install the field key ring from ``DTX_FIELD_KEY`` unless one is installed already (in
    process, by the app factory): the randomization floor decrypts the trial's secret and
    seals and HMAC-chains its events as the trail does."""
    try:
        crypto.cipher()
    except crypto.FieldKeyError:
        key = os.environ.get("DTX_FIELD_KEY")
        if key:
            crypto.configure(key)


# ---------------------------------------------------------------- the randomization's floor
#
# `floor_randomize`: the statements `randomization.randomize_participant` sends on PostgreSQL
# for an enrolled participant (7: the trial; the participant locked with its site, protocol
# hash, the trial's randomization state row and a new allocation id; after the lock, its
# allocation, scheduled visits and submitted values; the participant's UPDATE; the planned
# visits' one multi-row INSERT; the state row's lock; the allocation's INSERT and the state's
# UPDATE riding on the audit write), the app's own statement objects, with the least Python
# around them.
# Unlike the eCRF floor, its rows are the trial's own: the allocations take their seq_no from
# the same locked counter as the real endpoint's (one gap-free sequence), and the events go to
# the trial's chain under the field key, with the trail's content (sealed arm and evidence),
# so that `audit.verify` holds over both endpoints' rows.


class FloorRefused(Exception):
    """A request the floor answers with an error (nothing it wrote is kept)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_PARTICIPANT = cast(Table, Participant.__table__)
_STATE = cast(Table, RandomizationState.__table__)
_SITE = cast(Table, Site.__table__)
_VERSION = cast(Table, ProtocolVersion.__table__)
# the participant's locking read and the read after it are the service's own statements
# (`randomization._LOCK_FOR_ALLOCATION`, `randomization._AFTER_LOCK`)
_ALLOCATION_BY_ID = select(Allocation.__table__).where(Allocation.id == bindparam("id"))


def floor_randomize(
    conn: Connection,
    actor: Actor,
    trial_code: str,
    subject_code: str,
    request_id: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Randomize an enrolled participant with the statements of a randomization and nothing
    else; return (201, receipt), or (200, receipt) for a retry of ``request_id``. The caller
    commits; `FloorRefused` (404, 409, 422) when the real endpoint refuses too.

    The same Python the allocation itself needs, as the service calls it: the protocol (the
    process's memo by its hash), the stratum (`randomization.derive_stratum`), the planned
    visits (`plan_visits`), the caps check and the draw (`randomization.allocate` with the
    design `randomization.design_for` builds, on the state read under the lock), the seals of
    the arm, evidence and design states, and the eight events (participant randomized, the
    planned visits, the allocation, the state's and the stratum's advance) HMAC-chained on the
    trial's chain as `audit.write_pending` does (on the head locked with the counters, the
    stratum's row and the site's counter, `randomization._lock_for_draw`). No ORM object, no
    permission check, no response schema. The trial's first allocation is left to the real
    endpoint (it reads the whole state row under the lock)."""
    trial = conn.execute(trials._TRIAL_BY_CODE, {"code": trial_code}).first()
    if trial is None:
        raise FloorRefused(404, "trial not found")
    locked = conn.execute(
        randomization._LOCK_FOR_ALLOCATION, {"trial_id": trial.id, "subject_code": subject_code}
    ).first()
    if locked is None:
        raise FloorRefused(404, "participant not found")
    row = locked._mapping
    participant_id = row[_PARTICIPANT.c.id]
    site_id = row[_PARTICIPANT.c.site_id]
    guarded = conn.execute(
        randomization._AFTER_LOCK,
        {"participant_id": participant_id, "request_id": request_id or None},
    ).all()
    existing_id, request_allocation_id, codes = guarded[0][randomization._RECORD_PART :]
    if request_allocation_id is not None:
        if request_allocation_id != existing_id:
            raise FloorRefused(409, "this request id was used for another participant")
        previous = conn.execute(_ALLOCATION_BY_ID, {"id": existing_id}).one()  # a retry
        return 200, _receipt(subject_code, previous._mapping)
    if existing_id is not None:
        raise FloorRefused(409, "participant is already randomized")
    if row[_PARTICIPANT.c.status] != "enrolled":
        raise FloorRefused(409, f"participant is {row[_PARTICIPANT.c.status]}")
    state_id = row[_STATE.c.id]
    if state_id is None or row[_STATE.c.next_seq] <= 1:
        raise FloorRefused(409, "the floor leaves a trial's first allocation to the real endpoint")
    version_id = row[_PARTICIPANT.c.protocol_version_id] or trial.active_protocol_version_id
    protocol = _protocol(conn, version_id, row[_VERSION.c.sha256] or trial.sha256)
    site_code = row[_SITE.c.code]
    values = participants.submitted_values(
        [row[: randomization._RECORD_PART] for row in guarded], participants.log_forms(protocol)
    )
    try:
        key, factors = randomization.derive_stratum(
            protocol, values.unattached, site_code, values.by_visit
        )
    except ValidationError as exc:
        raise FloorRefused(422, str(exc)) from exc
    now = utcnow()
    trial_id = trial.id
    randomized = {"_key": participant_id, "status": "randomized", "randomized_at": now}
    conn.execute(randomization._RANDOMIZED, randomized)
    kid = crypto.cipher().current.kid
    common = {
        "chain": audit.chain_for(trial_id), "at": now, "trial_id": trial_id,
        "actor_id": actor.user_id, "actor_name": actor.printed_name,
        "actor_role": actor.primary_role(trial_id), "reason": None,
        "request_id": actor.request_id, "auth_ref": audit.auth_ref_of(actor), "key_id": kid,
    }  # fmt: skip
    events = [
        _event(common, "update", "participant.randomized", "participant", participant_id,
               site_id, [{"field": "status", "old": "enrolled", "new": "randomized"},
                         {"field": "randomized_at",
                          "old": audit.to_jsonable(row[_PARTICIPANT.c.randomized_at]),
                          "new": audit.to_jsonable(now)}]),
    ]  # fmt: skip
    existing = set(codes.split(randomization._CODES_SEPARATOR)) if codes else set()
    participant = _Anchors(
        row[_PARTICIPANT.c.screened_at], row[_PARTICIPANT.c.enrolled_at], now
    )
    anchors = participants.anchors_of(
        cast(Participant, participant), zone_named(row[_SITE.c.timezone])
    )
    visits = [
        _new_row(
            _VISIT, participant_id=participant_id, visit_code=planned.visit_id, occurrence=1,
            is_unscheduled=False, planned_on=planned.planned_on,
            window_start_on=planned.window_start_on, window_end_on=planned.window_end_on,
            status="planned",
        )
        for planned in plan_visits(protocol.schedule, anchors)
        if planned.visit_id not in existing
    ]  # fmt: skip
    if visits:
        visit_ids = insert_many(conn, _VISIT, visits)  # `db.insert_rows`' statement
        events += [
            _event(common, "create", "visit.plan", "visit", visit_id, site_id,
                   [{"field": k, "old": None, "new": audit.to_jsonable(visit[k])}
                    for k in Visit.__audited__])
            for visit_id, visit in zip(visit_ids, visits, strict=True)
        ]  # fmt: skip
    # as the service: the design and the secret from the row read with the participant (the
    # list never changes once an allocation exists), the old values of the advance event
    # sealed now and reused if the lock finds the same row
    design = randomization.design_for(protocol, row[_STATE.c.list_table])
    secret = bytes.fromhex(row[_STATE.c.secret])
    read = {name: row[_STATE.c[name]] for name in randomization._ADVANCED}
    read_sealed = audit.snapshot_row(RandomizationState, read, read)
    allocation = {
        "id": locked[-1], "trial_id": trial_id,
        "participant_id": participant_id,
        "protocol_version_id": version_id, "stratum_key": key, "factors": dict(factors),
        "activation_code": randomization._activation_code(
            protocol.blinding.activation_code_prefix),
        "request_id": request_id, "allocated_at": now, "allocated_by_id": actor.user_id,
        "status": "allocated", "void_reason": None,
    }  # fmt: skip
    undrawn = audit.snapshot_row(Allocation, allocation, allocation)

    # the trial's lock, held from here to commit, with the trial chain's head (the events'
    # head, certain: `audit.hold_head`), the stratum's row and the site's counter
    locked_state, read, site_active = randomization._lock_for_draw(
        conn, state_id, trial_id, key, site_id
    )
    if getattr(locked_state, "seq", None) is None:
        raise FloorRefused(409, "the floor leaves a chain's first event to the real endpoint")
    drawn_on, kept = randomization._with_stratum(
        randomization._design_state(cast(RandomizationState, locked_state)), key, read
    )
    try:
        randomization._check_caps(
            cast(Trial, trial), protocol, site_code, key, locked_state.active_allocations,
            site_active, drawn_on,
        )  # fmt: skip
        result, next_state = allocate(
            design,
            drawn_on,
            secret=secret, model=trial.code, seq_no=locked_state.next_seq, stratum_key=key,
            factors=factors, algorithm=row[_STATE.c.rng_algorithm],
        )  # fmt: skip
    except (Conflict, RandomizationError) as exc:
        raise FloorRefused(409, f"cannot randomize: {exc}") from exc
    numbers = _Numbers(row[_STATE.c.list_numbers])
    allocation.update(
        seq_no=result.seq_no, method=result.method, arm_code=result.arm,
        randomization_number=randomization.randomization_number(
            cast(RandomizationState, numbers), result),
        evidence=randomization._jsonable(result.evidence),
    )  # fmt: skip
    drawn = audit.snapshot_row(Allocation, allocation, randomization._DRAWN)
    events.append(
        _event(common, "create", "randomization.allocate", "allocation", allocation["id"],
               site_id, [{"field": k, "old": None, "new": {**undrawn, **drawn}[k]}
                         for k in Allocation.__audited__])
    )  # fmt: skip
    before = {name: getattr(locked_state, name) for name in randomization._ADVANCED}
    before_sealed = (
        read_sealed if before == read
        else audit.snapshot_row(RandomizationState, before, before)
    )  # fmt: skip
    advanced = {
        "next_seq": result.seq_no + 1,
        "state": randomization._trial_part(next_state, kept).to_json(),
        "active_allocations": locked_state.active_allocations + 1, "updated_at": now,
    }  # fmt: skip
    after = audit.snapshot_row(RandomizationState, advanced, advanced)
    events.append(
        _event(common, "update", "randomization.advance", "randomization_state", state_id, None,
               [{"field": k, "old": before_sealed[k], "new": after[k]} for k in after
                if before[k] != advanced[k]])
    )  # fmt: skip
    stratum = {
        "id": read.id, "trial_id": trial_id, "stratum_key": key,
        "state": next_state.strata[key].to_json(), "updated_at": now,
    }  # fmt: skip
    if read.state is None:  # the stratum's first allocation: its row is created
        stratum_after = audit.snapshot_row(RandomizationStratum, stratum)
        stratum_changes = [{"field": k, "old": None, "new": stratum_after[k]}
                           for k in RandomizationStratum.__audited__]  # fmt: skip
        stratum_op = "create"
    else:
        stratum_before = audit.snapshot_row(
            RandomizationStratum, {"state": read.state, "updated_at": read.updated_at},
            randomization._STRATUM_WRITTEN,
        )  # fmt: skip
        stratum_after = audit.snapshot_row(
            RandomizationStratum, stratum, randomization._STRATUM_WRITTEN
        )
        stratum_changes = [{"field": k, "old": stratum_before[k], "new": stratum_after[k]}
                           for k in randomization._STRATUM_WRITTEN]  # fmt: skip
        stratum_op = "update"
    events.append(
        _event(common, stratum_op, "randomization.advance", "randomization_stratum",
               cast(int, read.id), None, stratum_changes)
    )  # fmt: skip
    rider = audit.Rider(
        randomization._ALLOCATE_RIDER,
        {"alloc_state_id": state_id, "alloc_advance": randomization._row_json(advanced),
         "alloc_stratum": randomization._row_json(stratum),
         "alloc_row": randomization._row_json(
             {name: allocation[name] for name in randomization._ALLOCATION_COLUMNS}),
         "alloc_trial_id": trial_id, "alloc_site_id": site_id,
         "alloc_site_active": site_active + 1},
    )  # fmt: skip
    chain = str(common["chain"])
    _write_with_rider(conn, chain, events, (int(locked_state.seq), str(locked_state.hash)), rider)
    return 201, _receipt(subject_code, allocation)


class _Anchors(NamedTuple):
    """What `participants.anchors_of` reads of a participant."""

    screened_at: datetime
    enrolled_at: datetime | None
    randomized_at: datetime | None


class _Numbers(NamedTuple):
    """What `randomization.randomization_number` reads of the state row."""

    list_numbers: dict[str, Any] | None


def _receipt(subject_code: str, allocation: Mapping[str, Any]) -> dict[str, Any]:
    """The blinded receipt (no arm), its time a datetime (each app writes it its way)."""
    return {"subject_code": subject_code, "seq_no": allocation["seq_no"],
            "randomization_number": allocation["randomization_number"],
            "activation_code": allocation["activation_code"], "status": allocation["status"],
            "allocated_at": allocation["allocated_at"]}  # fmt: skip


def _protocol(conn: Connection, version_id: int, sha256: str | None) -> Protocol:
    """The parsed protocol from the process's memo by its hash (`protocols.protocol_of`),
    read from its version row the first time."""
    protocol = protocols._PROTOCOLS.get(sha256) if sha256 else None
    if protocol is None:
        with Session(bind=conn) as session:
            version = session.get(ProtocolVersion, version_id)
            assert version is not None  # foreign key
            protocol = protocols.protocol_of(version)
    return protocol


def _event(common: Mapping[str, Any], op: str, action: str, entity_type: str, entity_id: int,
           site_id: int | None, changes: list[dict[str, Any]]) -> Any:
    """One event prepared as `audit.append` prepares it (`audit._Prepared`: its canonical
    JSON cut around the head's values and fed to the chain key's HMAC, before any lock)."""
    return audit._Prepared(cast(AuditEvent, SimpleNamespace(
        **common, op=op, action=action, entity_type=entity_type, entity_id=entity_id,
        site_id=site_id, changes=changes, seq=None, prev_hash=None)))  # fmt: skip


def _write_with_rider(
    conn: Connection, chain: str, events: list[Any], held: tuple[int, str], rider: audit.Rider
) -> None:
    """Write the events on the chain's head, locked by the statement before (``held``), with
    the rider, as `audit.write_pending` then does on PostgreSQL: one statement."""
    rows, head = audit._chain_rows(events, *held)
    found = conn.execute(
        audit._guessed_write_with(rider.sql),
        {"chain": chain, "guess_seq": held[0], "guess_hash": held[1],
         "head_seq": head[0], "head_hash": head[1],
         "rows": "[" + ",".join(p.row_json(r["seq"], r["prev_hash"], r["hash"])
                                for p, r in zip(events, rows, strict=True)) + "]",
         **rider.params},
    ).first()  # fmt: skip
    assert found is not None and found.written, "the head moved while held"
