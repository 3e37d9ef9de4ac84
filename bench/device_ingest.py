"""Device-data ingest: records/s through `POST /api/v1/trials/{code}/device-data` (validated
against the protocol's streams, idempotent insert, one audit event per batch) vs a raw
PostgreSQL `COPY` of the same rows into a bare table, in the same run and database.

The API is called in-process (Flask test client, no HTTP), so the ratio is the cost of
validation, idempotency and audit over the fastest bulk load PostgreSQL offers: COPY of the
same rows into ``device_observation`` itself (same unique key, indexes and foreign keys), and
into a table without keys. Three repetitions (one in quick mode), each from an empty table.
Each side's input is made before its clock starts: the NDJSON request bodies for ours, the
row tuples for the COPYs."""

from __future__ import annotations

import datetime
import json
import random
import tempfile
import time
from typing import Any, NamedTuple

from sqlalchemy import text

from bench.harness import FIELD_KEY, RatioRow, median_row, print_table, throwaway_database
from bench.trial_setup import prepare_mci_trial
from dtx_trials import create_app
from dtx_trials.extensions import db
from dtx_trials.services.device_partitions import ensure_partitions, is_partitioned

# a throwaway account in a throwaway database, dropped after the run
DM_PASSWORD = "bench dm passphrase"  # noqa: S105


class Sizes(NamedTuple):
    participants: int
    records: int
    batch: int


FULL = Sizes(100, 50_000, 10_000)
QUICK = Sizes(20, 2_000, 1_000)


def _records(subjects: tuple[str, ...], n: int) -> list[dict[str, object]]:
    rng = random.Random(5)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return [{"subject": subjects[i % len(subjects)], "stream": "training_minutes",
             "time": (start + datetime.timedelta(minutes=i)).isoformat(),
             "value": rng.randint(0, 60), "unit": "min", "source": "bench"} for i in range(n)]


def run(quick: bool = False) -> list[RatioRow]:
    sizes = QUICK if quick else FULL
    reps = 1 if quick else 3
    with throwaway_database("device") as url, tempfile.TemporaryDirectory() as instance:
        prepared = prepare_mci_trial(url, instance, sizes.participants)
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "FIELD_KEY": FIELD_KEY,
                          "SECRET_KEY": "bench", "ARGON2_TIME_COST": 1,
                          "ARGON2_MEMORY_KIB": 1024})
        with app.app_context():
            from sqlalchemy import select

            from dtx_trials.models import Participant, Trial
            from dtx_trials.services import accounts
            from dtx_trials.services.access import command_line

            cli = command_line()
            trial = db.session.scalars(select(Trial).where(Trial.code == prepared.code)).one()
            user = accounts.create_user(db.session, cli, username="bench_dm",
                                        printed_name="Bench DM", password=DM_PASSWORD)
            accounts.grant_role(db.session, cli, trial_id=trial.id, user_id=user.id,
                                role="data_manager")
            ids = dict(db.session.execute(select(Participant.subject_code, Participant.id)
                                          .where(Participant.trial_id == trial.id)).all())
            trial_id = trial.id
            engine = db.engine
            db.session.remove()
        # no app context held around the requests: each request pushes its own, so each gets
        # its own ORM session, as a served request does
        client = app.test_client()
        token = client.post("/api/v1/auth/tokens", json={
            "username": "bench_dm", "password": DM_PASSWORD}).get_json()["token"]
        records = _records(prepared.subjects, sizes.records)
        with engine.begin() as conn:
            if is_partitioned(conn):  # PostgreSQL: the records' months exist, as in use
                ensure_partitions(conn, today=datetime.date(2026, 1, 1), ahead=1)
            conn.execute(text("CREATE TABLE bench_copy (participant_id int, stream text, "
                              "observed_at timestamp, value float8, unit text, "
                              "source text)"))
        runs: list[tuple[float, float, float]] = []
        for _ in range(reps):
            # each repetition starts from an empty table: ours, then COPY of the same rows
            # into the same indexed table (unique key, indexes, foreign keys), then COPY
            # into a table without keys
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE device_observation, bench_copy"))
            # the client's NDJSON bodies are made before the clock starts, as the COPY
            # baselines' rows are (encoding them is the sender's work, 0.1 s CPU of 50k)
            bodies = ["\n".join(json.dumps(r) for r in records[i:i + sizes.batch])
                      for i in range(0, len(records), sizes.batch)]
            started = time.perf_counter()
            accepted = 0
            for body in bodies:
                answer = client.post(f"/api/v1/trials/{prepared.code}/device-data",
                                     data=body,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/x-ndjson"})
                accepted += answer.get_json()["accepted"]
            ours_s = time.perf_counter() - started
            if accepted != sizes.records:
                raise RuntimeError(
                    f"device ingest accepted {accepted} of {sizes.records} records")
            with engine.begin() as conn:
                conn.execute(text("TRUNCATE device_observation"))
            now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
            same_s = _copy(
                engine,
                "COPY device_observation (trial_id, participant_id, stream, observed_at, "
                "value, unit, source, received_at) FROM STDIN",
                [(trial_id, ids[str(r["subject"])], r["stream"], r["time"], r["value"],
                  r["unit"], r["source"], now) for r in records])
            bare_s = _copy(
                engine,
                "COPY bench_copy FROM STDIN",
                [(ids[str(r["subject"])], r["stream"], r["time"], r["value"], r["unit"],
                  r["source"]) for r in records])
            runs.append((ours_s, same_s, bare_s))
        engine.dispose()
    n = sizes.records
    table = [[f"run {k + 1}", n / o, n / s_, n / b, s_ / o, b / o]
             for k, (o, s_, b) in enumerate(runs)]
    print_table("Device-data ingest vs COPY (PostgreSQL), records/s",
                ["run", "API (validate, idempotent insert, audit)",
                 "COPY into device_observation (same keys and indexes)",
                 "COPY into a bare table", "ours / same-table COPY", "ours / bare COPY"],
                table)
    same = [RatioRow("device_ingest", f"records/s vs COPY into the same indexed table, {n:,}",
                     "records/s", n / o, n / s_, "COPY, same table", True)
            for o, s_, _ in runs]
    bare = [RatioRow("device_ingest", f"records/s vs COPY into a bare table, {n:,}",
                     "records/s", n / o, n / b, "COPY, bare table", True)
            for o, _, b in runs]
    return [median_row(same), median_row(bare)]


def _copy(engine: Any, sql: str, rows: list[tuple[object, ...]]) -> float:
    """Seconds to COPY the rows and commit."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        started = time.perf_counter()
        with cursor.copy(sql) as copy:  # type: ignore[attr-defined]
            for row in rows:
                copy.write_row(row)
        raw.commit()
        return time.perf_counter() - started
    finally:
        raw.close()
