"""The baseline server: a bare Flask app on the same stack (Flask, SQLAlchemy, psycopg 3,
gunicorn) doing the least a transactional endpoint can do.

``POST /counter`` locks the single counter row (``SELECT ... FOR UPDATE``) and increments it
(``UPDATE ... RETURNING``) in one transaction: the floor for anything that hands out
gap-free numbers under a row lock. ``POST /rows`` inserts the request's JSON as one row: the
floor for a form submission. Both authenticate as dtx-trials does: the bearer token is
resolved by the same function (``accounts.actor_for_token``: one joined query, then the same
short per-process cache), and a request without a live token is a 401. Serve it with
``gunicorn 'bench.bare_app:create_bare_app()'`` and ``BENCH_DATABASE_URL`` set.
"""

from __future__ import annotations

import json
import os

from flask import Flask, Response, jsonify, request
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

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

    return app
