"""eCRF submission throughput through the real API beside a bare JSON insert endpoint.

The MCI example trial on a fresh PostgreSQL database, served by gunicorn (sync workers,
127.0.0.1). Closed-loop clients submit the 13-item ADAS-Cog form
(``PUT /api/v1/trials/{code}/participants/{subject}/visits/{visit}/forms/adas_cog`` with
``submit: true``; the total is derived, edit checks run, the visit is opened, everything is
audited), each request for a different participant x visit so that no two wait on the same
participant lock. Beside it, in the same run and with the same gunicorn settings,
``bench.bare_app`` inserts the same values as one JSON row.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from bench.bare_app import create_bare_tables, read_counter
from bench.harness import (
    GunicornServer,
    HttpRequest,
    LoadResult,
    RatioRow,
    app_environment,
    median_row,
    print_table,
    run_load,
    throwaway_database,
)
from bench.trial_setup import add_participants, issue_token, prepare_mci_trial
from dtx_trials.models import FormRecord

NAME = "ecrf"
VISITS = ("baseline", "week_4", "week_12", "week_24")
ADAS_MAXIMA = (10, 5, 5, 10, 5, 5, 8, 12, 5, 5, 5, 5, 5)


@dataclass(frozen=True)
class Sizes:
    n_clients: int
    workers: int  # gunicorn sync workers, the same for both apps
    duration_s: float  # each measured run, after the warm-up
    warmup_s: float
    n_participants: int  # enrolled before the warm-up; more are added if the rate needs them


# 2 cores: 4 sync workers, as the randomization benchmark and the reliability suites; with
# 2, 3 and 4 back to back (5 s runs, other jobs on the cores) the bare insert made 90, 90 and
# 72 req/s and the submit 19, 20 and 24 req/s: no setting is clearly best for both, and a
# submit waits on PostgreSQL for 7 statements, during which another worker can run
FULL = Sizes(16, 4, 10.0, 3.0, 1_000)
QUICK = Sizes(4, 2, 1.0, 0.5, 40)
REPEATS = 3
HEADROOM = 1.5  # requests prepared per request the calibrated rate predicts


def adas_values(rng: random.Random) -> dict[str, int]:
    """Return one plausible set of ADAS-Cog-13 item scores (the total is derived)."""
    return {f"adas_q{i + 1:02d}": rng.randint(0, top) for i, top in enumerate(ADAS_MAXIMA)}


def run(quick: bool = False) -> list[RatioRow]:
    """Measure submits/s and latency against the bare insert (pairs back to back, repeated in
    full mode for the spread); print the tables.

    The load is wrk's (``harness.run_load``): each endpoint is warmed up with the measured
    number of connections, the warm-up's rate sizes the requests of the measured runs (more
    participants are enrolled if they would run out before the run's duration), then each
    pair runs for ``duration_s``.
    """
    sizes = QUICK if quick else FULL
    reps = 1 if quick else REPEATS
    rng = random.Random(20261123)
    with throwaway_database("ecrf") as url, tempfile.TemporaryDirectory() as instance:
        env = app_environment(url, instance)
        with (
            GunicornServer("dtx_trials:create_app()", env, sizes.workers) as ours,
            GunicornServer("bench.bare_app:create_bare_app()", env, sizes.workers) as bare,
        ):
            # the workers boot while the database is prepared: neither needs the other yet
            prepared = prepare_mci_trial(url, instance, sizes.n_participants)
            create_bare_tables(url)
            token = issue_token(ours.port, prepared.username, prepared.password)
            headers = {"Authorization": f"Bearer {token}"}
            path = "/api/v1/trials/{}/participants/{}/visits/{}/forms/adas_cog"

            def submits(subjects: tuple[str, ...]) -> list[HttpRequest]:
                # visit-major order: neighbouring requests belong to different participants
                return [
                    HttpRequest(
                        "PUT",
                        path.format(prepared.code, subject, visit),
                        {"values": adas_values(rng), "submit": True},
                        headers,
                        f"{subject}/{visit}",
                    )
                    for visit in VISITS
                    for subject in subjects
                ]

            def inserts(n: int) -> list[HttpRequest]:
                return [
                    HttpRequest("POST", "/rows", adas_values(rng), headers) for _ in range(n)
                ]

            pending = submits(prepared.subjects)
            warm_ours = run_load(ours.port, pending, sizes.n_clients, sizes.warmup_s)
            warm_bare = run_load(bare.port, inserts(len(pending)), sizes.n_clients,
                                 sizes.warmup_s)  # fmt: skip
            sent = {o.tag for o in warm_ours.outcomes}
            pending = [r for r in pending if r.tag not in sent]
            # enough requests for every measured run at the warm-up's rate, with headroom
            n_needed = int(HEADROOM * reps * sizes.duration_s * warm_ours.throughput(200)) + 1
            n_needed = max(n_needed, len(VISITS) * sizes.n_participants // 2)
            if n_needed > len(pending):
                n_more = -(-(n_needed - len(pending)) // len(VISITS))
                before = len(prepared.subjects)
                prepared = add_participants(url, instance, prepared, n_more)
                pending += submits(prepared.subjects[before:])
            n_ours = len(pending) // reps
            # bare rows cost nothing to prepare: enough for a rate far above this machine's
            n_bare = int(HEADROOM * sizes.duration_s * max(warm_bare.throughput(201), 2_000))
            pairs: list[tuple[LoadResult, LoadResult]] = []
            for k in range(reps):
                bare_run = run_load(bare.port, inserts(n_bare), sizes.n_clients, sizes.duration_s)
                ours_run = run_load(
                    ours.port, pending[k * n_ours : (k + 1) * n_ours], sizes.n_clients,
                    sizes.duration_s,
                )  # fmt: skip
                pairs.append((ours_run, bare_run))
        n_records = _count_submitted(url)
        _, n_rows = read_counter(url)
    expected_records = len(warm_ours.ok(200)) + sum(len(o.ok(200)) for o, _ in pairs)
    expected_rows = len(warm_bare.ok(201)) + sum(len(b.ok(201)) for _, b in pairs)
    figures = [
        _report(o, b, (n_records, expected_records), (n_rows, expected_rows), sizes)
        for o, b in pairs
    ]
    return [median_row([f[i] for f in figures]) for i in range(len(figures[0]))]


def _count_submitted(url: str) -> int:
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(FormRecord)
                    .where(FormRecord.form_code == "adas_cog", FormRecord.status == "submitted")
                )
                or 0
            )
    finally:
        engine.dispose()


def _little_floor_ms(result: LoadResult, status: int) -> float:
    """The mean latency a closed loop of n clients implies at its throughput (Little's law)."""
    throughput = result.throughput(status)
    return 1000 * result.n_clients / throughput if throughput else 0.0


def _report(
    ours: LoadResult,
    bare: LoadResult,
    records: tuple[int, int],
    rows: tuple[int, int],
    sizes: Sizes,
) -> list[RatioRow]:
    table: list[list[Any]] = []
    for label, result, status in (("bare JSON insert", bare, 201), ("eCRF submit API", ours, 200)):
        errors = {s: n for s, n in result.statuses().items() if s != status}
        table.append(
            [
                label,
                result.n_clients,
                len(result.ok(status)),
                ", ".join(f"{s}: {n}" for s, n in sorted(errors.items())) or "none",
                result.throughput(status),
                result.latency_ms(50),
                result.latency_ms(99),
                _little_floor_ms(result, status),
                result.elapsed_s,
                "yes" if result.is_time_capped else "no",
            ]
        )
    throughput_ratio = ours.throughput(200) / bare.throughput(201) if bare.throughput(201) else 0.0
    table.append(
        ["**ours / bare**", ours.n_clients, "", "", throughput_ratio,
         ours.latency_ms(50) / max(bare.latency_ms(50), 1e-9),
         ours.latency_ms(99) / max(bare.latency_ms(99), 1e-9), "", "", ""]
    )  # fmt: skip
    print_table(
        "eCRF submit (ADAS-Cog-13) through the API vs a bare JSON insert "
        f"(gunicorn, {sizes.workers} sync workers each; wrk, {ours.n_clients} closed-loop "
        "connections; PostgreSQL)",
        ["endpoint", "clients", "ok", "other statuses", "req/s", "p50 ms", "p99 ms",
         "mean floor ms (clients / req/s)", "run s", "stopped at time limit"],
        table,
    )  # fmt: skip
    print(
        "\nA closed loop keeps every client waiting: by Little's law the mean latency is "
        "clients / throughput, so p99 cannot fall below that floor at this throughput."
    )
    is_consistent = records[0] == records[1] and rows[0] == rows[1]
    print_table(
        "Rows after the run",
        ["submitted adas_cog records", "answered 200", "bare rows", "answered 201", "verdict"],
        [[records[0], records[1], rows[0], rows[1], "OK" if is_consistent else "FAILED"]],
    )
    if not is_consistent:
        raise RuntimeError(f"eCRF rows do not match the answers: {records} {rows}")
    return [
        RatioRow(NAME, f"submits/s, {ours.n_clients} clients", "req/s",
                 ours.throughput(200), bare.throughput(201), "JSON insert", True),
        RatioRow(NAME, f"p99 latency, {ours.n_clients} clients", "ms",
                 ours.latency_ms(99), bare.latency_ms(99), "JSON insert", False),
    ]  # fmt: skip
