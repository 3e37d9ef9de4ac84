"""eCRF submission throughput through the real API beside a bare JSON insert endpoint.

The MCI example trial on a fresh PostgreSQL database, served by gunicorn (sync workers,
127.0.0.1). Closed-loop clients submit the 13-item ADAS-Cog form
(``PUT /api/v1/trials/{code}/participants/{subject}/visits/{visit}/forms/adas_cog`` with
``submit: true``; the total is derived, edit checks run, the visit is opened, everything is
audited), each request for a different participant x visit so that no two wait on the same
participant lock. Beside it, in the same run and with the same gunicorn settings,
``bench.bare_app`` inserts the same values as one JSON row, and sends the statements of a
submit from a minimal handler (``bare_app.floor_submit``): the floor of the submit, which shows
how much of the distance to the bare insert is the statements themselves.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from typing import Any

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from bench.bare_app import FLOOR_FORM, create_bare_tables, read_counter
from bench.harness import (
    GunicornServer,
    HttpRequest,
    LoadResult,
    RatioRow,
    Trio,
    app_environment,
    median_row,
    print_table,
    rows_account_for_answers,
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
    """Measure submits/s and latency against the bare insert, and the floor of the submit's
    statements between them (the three back to back, repeated in full mode for the spread);
    print the tables.

    The load is wrk's (``harness.run_load``): each endpoint is warmed up with the measured
    number of connections, the warm-up's rate sizes the requests of the measured runs (more
    participants are enrolled if they would run out before the run's duration), then each
    trio runs for ``duration_s`` each. The real submits and the floor's have participants of
    their own (the floor's would otherwise open the submits' visits).
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
            floor_path = "/trials/{}/participants/{}/visits/{}/floor"

            def submits(template: str, subjects: Sequence[str]) -> list[HttpRequest]:
                # visit-major order: neighbouring requests belong to different participants
                return [
                    HttpRequest(
                        "PUT",
                        template.format(prepared.code, subject, visit),
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

            # every other participant submits through the floor handler
            pending = submits(path, prepared.subjects[0::2])
            pending_floor = submits(floor_path, prepared.subjects[1::2])
            warm_bare = run_load(bare.port, inserts(len(pending_floor)), sizes.n_clients,
                                 sizes.warmup_s)  # fmt: skip
            warm_floor = run_load(bare.port, pending_floor, sizes.n_clients, sizes.warmup_s)
            warm_ours = run_load(ours.port, pending, sizes.n_clients, sizes.warmup_s)
            print(
                f"\nWarm-up, {sizes.warmup_s:g} s each (answers by status): bare insert "
                f"{dict(warm_bare.statuses())}, minimal handler {dict(warm_floor.statuses())}, "
                f"eCRF submit {dict(warm_ours.statuses())}"
            )
            pending = _unsent(pending, warm_ours)
            pending_floor = _unsent(pending_floor, warm_floor)
            # enough requests for every measured run at the warm-up's rate, with headroom
            least = len(VISITS) * sizes.n_participants // 4
            n_more = _participants_short(pending, warm_ours, reps, sizes.duration_s, least)
            n_more_floor = _participants_short(
                pending_floor, warm_floor, reps, sizes.duration_s, least
            )
            if n_more or n_more_floor:
                before = len(prepared.subjects)
                prepared = add_participants(url, instance, prepared, n_more + n_more_floor)
                added = prepared.subjects[before:]
                pending += submits(path, added[:n_more])
                pending_floor += submits(floor_path, added[n_more:])
            n_ours, n_floor = len(pending) // reps, len(pending_floor) // reps
            # bare rows cost nothing to prepare: enough for a rate far above this machine's
            n_bare = int(HEADROOM * sizes.duration_s * max(warm_bare.throughput(201), 2_000))
            trios: list[Trio] = []
            for k in range(reps):
                bare_run = run_load(bare.port, inserts(n_bare), sizes.n_clients, sizes.duration_s)
                floor_run = run_load(
                    bare.port, pending_floor[k * n_floor : (k + 1) * n_floor], sizes.n_clients,
                    sizes.duration_s,
                )  # fmt: skip
                ours_run = run_load(
                    ours.port, pending[k * n_ours : (k + 1) * n_ours], sizes.n_clients,
                    sizes.duration_s,
                )  # fmt: skip
                trios.append(Trio(ours_run, floor_run, bare_run))
        written = _Written(_count_submitted(url, "adas_cog"),
                           _count_submitted(url, FLOOR_FORM), read_counter(url)[1])  # fmt: skip
    runs = [warm_ours, warm_floor, warm_bare]
    runs += [r for t in trios for r in (t.ours, t.floor, t.bare)]
    statuses = (200, 200, 201)  # ours, the minimal handler, bare: every third run
    answered = _Written(*(sum(len(r.ok(s)) for r in runs[i::3]) for i, s in enumerate(statuses)))
    lost = _Written(*(sum(len(r.lost()) for r in runs[i::3]) for i in range(3)))
    figures = [_report(t, sizes) for t in trios]
    _check_rows(written, answered, lost, runs)
    return [median_row([f[i] for f in figures]) for i in range(len(figures[0]))]


@dataclass(frozen=True)
class _Written:
    """Rows of each endpoint (or the answers that say they were written)."""

    records: int  # submitted adas_cog records (the real submit)
    floor_records: int  # the floor handler's records
    bare_rows: int


def _check_rows(written: _Written, answered: _Written, lost: _Written, runs: list[LoadResult]
                ) -> None:
    """Print each endpoint's rows beside its successful answers and the answers lost with a
    failed connection; raise unless every acknowledged write is stored and every stored row was
    acknowledged or lost in transit (the message lists every run's answers by status)."""
    pairs = list(zip(astuple(written), astuple(answered), astuple(lost), strict=True))
    is_consistent = all(rows_account_for_answers(*pair) for pair in pairs)
    print_table(
        "Rows after the run (answers lost: the connection failed after the request was sent; "
        "the server may have committed it)",
        ["submitted adas_cog records", "answered 200", "answers lost",
         "minimal handler records", "answered 200", "answers lost",
         "bare rows", "answered 201", "answers lost", "verdict"],
        [[*(value for pair in pairs for value in pair), "OK" if is_consistent else "FAILED"]],
    )  # fmt: skip
    if not is_consistent:
        names = ("ours", "minimal handler", "bare")
        statuses = "; ".join(
            f"{'warm-up' if i < 3 else f'run {i // 3}'} {names[i % 3]}: {r.statuses()}"
            for i, r in enumerate(runs)
        )
        raise RuntimeError(f"eCRF rows do not match the answers: {written} {answered} ({statuses})")


def _unsent(requests: list[HttpRequest], sent: LoadResult) -> list[HttpRequest]:
    """The requests a run did not send (each participant x visit is submitted once)."""
    tags = {o.tag for o in sent.outcomes}
    return [r for r in requests if r.tag not in tags]


def _participants_short(
    pending: list[HttpRequest], warm: LoadResult, reps: int, duration_s: float, least: int
) -> int:
    """The participants to enrol so that ``pending`` lasts every measured run at the warm-up's
    rate with headroom (and holds at least ``least`` requests)."""
    n_needed = max(int(HEADROOM * reps * duration_s * warm.throughput(200)) + 1, least)
    return -(-max(n_needed - len(pending), 0) // len(VISITS))


def _count_submitted(url: str, form_code: str) -> int:
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(FormRecord)
                    .where(FormRecord.form_code == form_code, FormRecord.status == "submitted")
                )
                or 0
            )
    finally:
        engine.dispose()


def _little_floor_ms(result: LoadResult, status: int) -> float:
    """The mean latency a closed loop of n clients implies at its throughput (Little's law)."""
    throughput = result.throughput(status)
    return 1000 * result.n_clients / throughput if throughput else 0.0


def _report(trio: Trio, sizes: Sizes) -> list[RatioRow]:
    ours, floor, bare = trio.ours, trio.floor, trio.bare
    table: list[list[Any]] = []
    for label, result, status in (
        ("bare JSON insert", bare, 201),
        ("same statements, minimal handler", floor, 200),
        ("eCRF submit API", ours, 200),
    ):
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
    for label, top, top_status, under, under_status in (
        ("**ours / bare**", ours, 200, bare, 201),
        ("**minimal handler / bare**", floor, 200, bare, 201),
        ("**ours / minimal handler**", ours, 200, floor, 200),
    ):
        table.append(
            [label, top.n_clients, "", "", _ratio(top.throughput(top_status),
                                                  under.throughput(under_status)),
             _ratio(top.latency_ms(50), under.latency_ms(50)),
             _ratio(top.latency_ms(99), under.latency_ms(99)), "", "", ""]
        )  # fmt: skip
    print_table(
        "eCRF submit (ADAS-Cog-13) through the API vs a bare JSON insert, and the submit's "
        "statements sent by a minimal handler "
        f"(gunicorn, {sizes.workers} sync workers each; wrk, {ours.n_clients} closed-loop "
        "connections; PostgreSQL)",
        ["endpoint", "clients", "ok", "other statuses", "req/s", "p50 ms", "p99 ms",
         "mean floor ms (clients / req/s)", "run s", "stopped at time limit"],
        table,
    )  # fmt: skip
    print(
        "\nA closed loop keeps every client waiting: by Little's law the mean latency is "
        "clients / throughput, so p99 cannot fall below that floor at this throughput. The "
        "minimal handler (bench/bare_app.py, floor_submit) sends the statements of a submit "
        "(trial, locked participant, visits with records, visit and record inserts, the "
        "HMAC-chained events with the head update) with no ORM, no checks and no derivation: "
        "no handler of the same statements is faster."
    )
    n = ours.n_clients
    return [
        RatioRow(NAME, f"submits/s, {n} clients", "req/s",
                 ours.throughput(200), bare.throughput(201), "JSON insert", True),
        RatioRow(NAME, f"p99 latency, {n} clients", "ms",
                 ours.latency_ms(99), bare.latency_ms(99), "JSON insert", False),
        RatioRow(NAME, f"same statements, minimal handler vs bare insert, {n} clients", "req/s",
                 floor.throughput(200), bare.throughput(201), "JSON insert", True),
        RatioRow(NAME, f"ours vs the minimal handler (same statements), {n} clients", "req/s",
                 ours.throughput(200), floor.throughput(200), "minimal handler", True),
    ]  # fmt: skip


def _ratio(top: float, under: float) -> float:
    return top / under if under else 0.0
