"""Device-data ingest: records/s through `POST /api/v1/trials/{code}/device-data` (validated
against the protocol's streams, idempotent insert, one audit event per batch) vs a raw
PostgreSQL `COPY` of the same rows into a bare table, in the same run and database.

The API is called in-process (Flask test client, no HTTP), so the ratio is the cost of
validation, idempotency and audit over the fastest bulk load PostgreSQL offers."""

from __future__ import annotations

import datetime
import json
import random
import tempfile
import time
from typing import NamedTuple

from sqlalchemy import text

from bench.harness import FIELD_KEY, RatioRow, print_table, throwaway_database
from bench.trial_setup import prepare_mci_trial
from dtx_trials import create_app
from dtx_trials.extensions import db

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
    with throwaway_database("device") as url, tempfile.TemporaryDirectory() as instance:
        prepared = prepare_mci_trial(url, instance, sizes.participants)
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "FIELD_KEY": FIELD_KEY,
                          "SECRET_KEY": "bench", "ARGON2_TIME_COST": 1,
                          "ARGON2_MEMORY_KIB": 1024})
        with app.app_context():
            from sqlalchemy import select

            from dtx_trials.models import Trial
            from dtx_trials.services import accounts
            from dtx_trials.services.access import Actor

            cli = Actor(user_id=None, username="cli", printed_name="cli", via="cli",
                        is_superuser=True)
            trial = db.session.scalars(select(Trial).where(Trial.code == prepared.code)).one()
            user = accounts.create_user(db.session, cli, username="bench_dm",
                                        printed_name="Bench DM", password=DM_PASSWORD)
            accounts.grant_role(db.session, cli, trial_id=trial.id, user_id=user.id,
                                role="data_manager")
            client = app.test_client()
            token = client.post("/api/v1/auth/tokens", json={
                "username": "bench_dm", "password": DM_PASSWORD}).get_json()["token"]
            records = _records(prepared.subjects, sizes.records)
            started = time.perf_counter()
            accepted = 0
            for i in range(0, len(records), sizes.batch):
                body = "\n".join(json.dumps(r) for r in records[i:i + sizes.batch])
                answer = client.post(f"/api/v1/trials/{prepared.code}/device-data", data=body,
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/x-ndjson"})
                accepted += answer.get_json()["accepted"]
            ours_s = time.perf_counter() - started
            with db.engine.begin() as conn:
                conn.execute(text("CREATE TABLE bench_copy (participant_id int, stream text, "
                                  "observed_at timestamp, value float8, unit text, "
                                  "source text)"))
            raw = db.engine.raw_connection()
            try:
                cursor = raw.cursor()
                started = time.perf_counter()
                with cursor.copy("COPY bench_copy FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for i, r in enumerate(records):
                        copy.write_row((i % sizes.participants, r["stream"], r["time"],
                                        r["value"], r["unit"], r["source"]))
                raw.commit()
                copy_s = time.perf_counter() - started
            finally:
                raw.close()
            db.session.remove()
            db.engine.dispose()
    if accepted != sizes.records:
        raise RuntimeError(f"device ingest accepted {accepted} of {sizes.records} records")
    ours_rate, copy_rate = sizes.records / ours_s, sizes.records / copy_s
    print_table("Device-data ingest vs COPY (PostgreSQL)",
                ["path", "records", "seconds", "records/s"],
                [["API (validate, idempotent insert, audit)", f"{sizes.records:,}", ours_s,
                  ours_rate],
                 ["raw COPY into a bare table", f"{sizes.records:,}", copy_s, copy_rate]])
    return [RatioRow("device_ingest", f"records/s, {sizes.records:,} records", "records/s",
                     ours_rate, copy_rate, "raw COPY", higher_is_better=True)]
