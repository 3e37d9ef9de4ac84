"""Randomization throughput through the real API beside a bare locked-counter endpoint, and
the cost of one minimization allocation early and late in a trial.

Part 1: the MCI example trial (permuted blocks stratified by site and MoCA band) on a fresh
PostgreSQL database, served by gunicorn (sync workers, 127.0.0.1); closed-loop clients (wrk) POST
``/api/v1/trials/{code}/participants/{subject}/randomization`` with a bearer token, each for a
different enrolled participant. Beside it, in the same run and with the same gunicorn
settings, ``bench.bare_app`` increments one locked counter row, and randomizes other
participants of the same trial with the statements of a randomization sent by a minimal
handler (``bare_app.floor_randomize``): the floor of the randomization, which shows how much
of the distance to the bare counter is the statements themselves. The three run back to back
(the counter, the minimal handler, the API: a trio) three times at each client level, 10 s
each; the summary gives the median trio's ratio and every trio's (the spread: on a shared
2-core host one 10 s run can be a third off the next). Afterwards the allocations
of both (one sequence: both take the trial's lock) must carry sequence numbers exactly 1..N
with no participant twice, and the bare counter must equal the number of its successful
requests.

Part 2: the pure ``randomization.allocate`` with a Pocock-Simon minimization design, the state
carried forward from participant 1; the median time of allocation k (and of k with the JSON
round trip of the state the service does on every request) at k = 100 and k = 10,000. The
state holds counts only, so the ratio should stay near 1.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bench.bare_app import (
    API_FLOOR_RANDOMIZE_PATH,
    FLOOR_RANDOMIZE_PATH,
    create_bare_tables,
    read_counter,
)
from bench.harness import (
    BenchmarkUnavailable,
    GunicornServer,
    HttpRequest,
    LoadResult,
    RatioRow,
    Trio,
    app_environment,
    median_row,
    median_seconds,
    print_table,
    rows_account_for_answers,
    run_load,
    throwaway_database,
)
from bench.trial_setup import PARTICIPANTS_PER_SITE, issue_token, prepare_mci_trial
from dtx_trials.models import Allocation, Participant, Trial
from randomization.designs import Design, allocate, build_design
from randomization.state import RandomizationState

NAME = "randomization"


@dataclass(frozen=True)
class Sizes:
    client_levels: tuple[int, ...]
    # participants ready per concurrency level: more than the API randomizes in `run_s`, so
    # that its run, like the counter's, lasts `run_s` (the issue's fairness rule: >= 10 s
    # after the warm-up; a run that drains its participants earlier shows "no" as time-capped)
    n_requests: int
    # the same for the minimal handler, which randomizes more per second than the API
    n_floor_requests: int
    workers: int
    run_s: float  # each measured run, both endpoints (the counter's requests never run out)
    minimization_points: tuple[int, int]
    n_timing_repeats: int
    # trios (the counter, the minimal handler, the API back to back) at each client level: the
    # summary takes the median trio's ratio and prints every trio's (the spread)
    repeats: int


FULL = Sizes((16, 64), 2500, 3000, 4, 10.0, (100, 10_000), 200, 3)
QUICK = Sizes((2, 4), 8, 8, 2, 1.0, (10, 200), 20, 1)
_COUNTER_REQUESTS = 1_000_000  # the counter's queue: never drained within a run
_API_PATH = "/api/v1/trials/{code}/participants/{subject}/randomization"
_API_STACK = "the API's stack"


def run(quick: bool = False) -> list[RatioRow]:
    """Run both parts, print their tables, return the summary rows."""
    sizes = QUICK if quick else FULL
    rows = run_minimization(sizes)
    try:
        return run_http(sizes) + rows
    except BenchmarkUnavailable as exc:
        raise BenchmarkUnavailable(f"HTTP part not run: {exc}", rows) from exc


# ---------------------------------------------------------------- part 1: HTTP


def _warmup_count(sizes: Sizes) -> int:
    return 3 * sizes.workers


def run_http(sizes: Sizes) -> list[RatioRow]:
    """Measure randomizations/s and latency against the bare counter, and the minimal
    handler's between them, bare and behind the API's stack (the four back to back at each
    client level, the bare counter, the minimal handler, the same behind the API's stack, the
    API, `sizes.repeats` times); verify the sequence.

    The API's warm-up makes the trial's first allocation (the minimal handler leaves it to
    the real endpoint); the minimal handler randomizes participants of its own."""
    n_levels = len(sizes.client_levels)
    n_participants = (
        3 * _warmup_count(sizes)
        + (sizes.n_requests + 2 * sizes.n_floor_requests) * n_levels * sizes.repeats
    )
    # PARTICIPANTS_PER_SITE at each site (strata: site x MoCA band), under the protocol's cap
    # of 80 per site whichever endpoint randomizes faster (an allocation reads and writes its
    # own stratum's row: the number of strata does not weigh on it)
    per_site = PARTICIPANTS_PER_SITE
    with throwaway_database("rand") as url, tempfile.TemporaryDirectory() as instance:
        env = app_environment(url, instance)
        with (
            GunicornServer("dtx_trials:create_app()", env, sizes.workers) as ours,
            GunicornServer("bench.bare_app:create_bare_app()", env, sizes.workers) as bare,
            GunicornServer(
                "bench.bare_app:create_api_floor_app()", env, sizes.workers
            ) as api_floor,
        ):
            # the workers boot while the database is prepared: neither needs the other yet
            prepared = prepare_mci_trial(url, instance, n_participants, per_site)
            print(
                f"\nThe trial: {n_participants:,} participants enrolled, {per_site} a site "
                f"({-(-n_participants // per_site):,} sites; strata: site x MoCA band)"
            )
            create_bare_tables(url)
            token = issue_token(ours.port, prepared.username, prepared.password)
            headers = {"Authorization": f"Bearer {token}"}
            pending = list(prepared.subjects)

            def randomizations(n: int, path: str = _API_PATH) -> list[HttpRequest]:
                """Each with a request id of its own, as a client that may retry sends it."""
                taken, pending[:] = pending[:n], pending[n:]
                return [
                    HttpRequest("POST", path.format(code=prepared.code, subject=s),
                                {"request_id": f"bench.{s}"}, headers, s)
                    for s in taken
                ]  # fmt: skip

            def counters(n: int) -> list[HttpRequest]:
                return [HttpRequest("POST", "/counter", {}, headers)] * n

            warmup = _warmup_count(sizes)
            ours_results = [run_load(ours.port, randomizations(warmup), sizes.workers, 60)]
            bare_results = [run_load(bare.port, counters(warmup), sizes.workers, 60)]
            floor_results = [
                run_load(bare.port, randomizations(warmup, FLOOR_RANDOMIZE_PATH),
                         sizes.workers, 60),
                run_load(api_floor.port, randomizations(warmup, API_FLOOR_RANDOMIZE_PATH),
                         sizes.workers, 60),
            ]  # fmt: skip
            measured: list[Trio] = []
            for n_clients in sizes.client_levels:
                for _ in range(sizes.repeats):
                    bare_run = run_load(
                        bare.port, counters(_COUNTER_REQUESTS), n_clients, sizes.run_s
                    )
                    floor_run = run_load(
                        bare.port, randomizations(sizes.n_floor_requests, FLOOR_RANDOMIZE_PATH),
                        n_clients, sizes.run_s,
                    )  # fmt: skip
                    api_floor_run = run_load(
                        api_floor.port,
                        randomizations(sizes.n_floor_requests, API_FLOOR_RANDOMIZE_PATH),
                        n_clients, sizes.run_s,
                    )  # fmt: skip
                    ours_run = run_load(
                        ours.port, randomizations(sizes.n_requests), n_clients, sizes.run_s
                    )
                    bare_results.append(bare_run)
                    floor_results += [floor_run, api_floor_run]
                    ours_results.append(ours_run)
                    measured.append(Trio(ours_run, floor_run, bare_run, api_floor_run))
        verification = verify_allocations(
            url, prepared.code, ours_results, bare_results, floor_results
        )
    return _report_http(measured, verification)


@dataclass(frozen=True)
class Verification:
    n_allocations: int
    is_gap_free: bool
    n_duplicate_participants: int
    are_subjects_matched: bool
    bare_counter: int
    bare_successes: int
    bare_lost: int  # bare requests whose connection failed before the answer
    n_lost: int  # randomizations whose connection failed before the answer
    n_answered: int  # the API's 201 answers
    n_floor_answered: int  # the minimal handler's 201 answers (bare and behind the API's stack)

    @property
    def ok(self) -> bool:
        return (
            self.is_gap_free
            and self.n_duplicate_participants == 0
            and self.are_subjects_matched
            and rows_account_for_answers(self.bare_counter, self.bare_successes, self.bare_lost)
        )


def verify_allocations(
    url: str,
    trial_code: str,
    ours: list[LoadResult],
    bare: list[LoadResult],
    floor: Sequence[LoadResult] = (),
) -> Verification:
    """Check seq_no = 1..N over the N allocations of the trial (the API's and the minimal
    handler's: one sequence), that every participant answered 201 by either is randomized and
    every randomized one was answered 201 or lost its connection before the answer (never
    refused), and the bare counter likewise."""
    randomized = {o.tag for result in (*ours, *floor) for o in result.ok(201)}
    lost = {o.tag for result in (*ours, *floor) for o in result.lost()}
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            trial = session.scalars(select(Trial).where(Trial.code == trial_code)).one()
            rows = session.execute(
                select(Allocation.seq_no, Allocation.participant_id)
                .where(Allocation.trial_id == trial.id)
                .order_by(Allocation.seq_no)
            ).all()
            subjects = set(
                session.scalars(
                    select(Participant.subject_code).where(
                        Participant.trial_id == trial.id, Participant.status == "randomized"
                    )
                )
            )
    finally:
        engine.dispose()
    seq_nos = [r.seq_no for r in rows]
    participants = [r.participant_id for r in rows]
    counter, _ = read_counter(url)
    return Verification(
        n_allocations=len(rows),
        is_gap_free=seq_nos == list(range(1, len(rows) + 1)),
        n_duplicate_participants=len(participants) - len(set(participants)),
        are_subjects_matched=randomized <= subjects <= randomized | lost,
        bare_counter=counter,
        bare_successes=sum(len(r.ok(201)) for r in bare),
        bare_lost=sum(len(r.lost()) for r in bare),
        n_lost=len(lost),
        n_answered=sum(len(r.ok(201)) for r in ours),
        n_floor_answered=sum(len(r.ok(201)) for r in floor),
    )


def _report_http(measured: list[Trio], verification: Verification) -> list[RatioRow]:
    """Print every trio's runs and ratios and the sequence's verification; return, for each
    figure at each client level, the median trio's (every trio's ratio in its spread)."""
    table: list[list[Any]] = []
    rows: list[RatioRow] = []
    for index, trio in enumerate(measured):
        ours, floor, bare, api_floor = trio.ours, trio.floor, trio.bare, trio.api_floor
        # the trio's number at its client level
        k = 1 + sum(t.ours.n_clients == ours.n_clients for t in measured[:index])
        runs = [("bare locked counter", bare), ("same statements, minimal handler", floor)]
        ratios = [("**ours / bare**", ours, bare), ("**minimal handler / bare**", floor, bare),
                  ("**ours / minimal handler**", ours, floor)]  # fmt: skip
        if api_floor is not None:
            runs.append((f"the same behind {_API_STACK}", api_floor))
            ratios += [
                (f"**minimal handler behind {_API_STACK} / bare**", api_floor, bare),
                (f"**ours / minimal handler behind {_API_STACK}**", ours, api_floor),
            ]
        for label, result in [*runs, ("randomization API", ours)]:
            errors = {s: n for s, n in result.statuses().items() if s != 201}
            table.append(
                [
                    label,
                    result.n_clients,
                    k,
                    len(result.ok(201)),
                    ", ".join(f"{s}: {n}" for s, n in sorted(errors.items())) or "none",
                    result.throughput(201),
                    result.latency_ms(50),
                    result.latency_ms(99),
                    result.elapsed_s,
                    "yes" if result.is_time_capped else "no",
                ]
            )
        for label, top, under in ratios:
            ratio = _ratio(top.throughput(201), under.throughput(201))
            table.append(
                [label, top.n_clients, k, "", "", ratio if ratio is not None else "-",
                 top.latency_ms(50) / max(under.latency_ms(50), 1e-9),
                 top.latency_ms(99) / max(under.latency_ms(99), 1e-9), "", ""]
            )  # fmt: skip
        n = ours.n_clients
        rows += [
            RatioRow(NAME, f"randomizations/s, {n} clients", "req/s",
                     ours.throughput(201), bare.throughput(201), "locked counter", True),
            RatioRow(NAME, f"p99 latency, {n} clients", "ms",
                     ours.latency_ms(99), bare.latency_ms(99), "locked counter", False),
            RatioRow(NAME, f"same statements, minimal handler vs locked counter, {n} clients",
                     "req/s", floor.throughput(201), bare.throughput(201), "locked counter",
                     True),
            RatioRow(NAME, f"ours vs the minimal handler (same statements), {n} clients",
                     "req/s", ours.throughput(201), floor.throughput(201), "minimal handler",
                     True),
        ]  # fmt: skip
        if api_floor is not None:
            rows += [
                RatioRow(NAME, f"minimal handler behind {_API_STACK} vs locked counter, "
                         f"{n} clients", "req/s", api_floor.throughput(201),
                         bare.throughput(201), "locked counter", True),
                RatioRow(NAME, f"ours vs the minimal handler behind {_API_STACK}, {n} clients",
                         "req/s", ours.throughput(201), api_floor.throughput(201),
                         "minimal handler behind the API's stack", True),
            ]  # fmt: skip
    print_table(
        "Randomization through the API vs a bare locked counter, and the randomization's "
        "statements sent by a minimal handler, bare and behind the API's stack (gunicorn sync "
        "workers, PostgreSQL)",
        ["endpoint", "clients", "trio", "ok (201)", "other statuses", "req/s", "p50 ms", "p99 ms",
         "run s", "time-capped"],
        table,
    )  # fmt: skip
    print(
        "\nThe minimal handler (bench/bare_app.py, floor_randomize) sends the statements of a "
        "randomization (trial; participant locked with its site, protocol hash, state row and "
        "a new allocation id; existing allocation; values for the strata; participant UPDATE; "
        "planned visits read and inserted; the state row locked with the chain head and the "
        "stratum's row; the allocation INSERT, state UPDATE and stratum row riding on the audit "
        "write) with the same stratum, visit plan, caps check, design and draw "
        "(randomization.allocate) and the same eight sealed, HMAC-chained "
        "events, but no ORM, no permission check and no response schema: what is left is the "
        "work any handler of these statements must do. Behind the API's stack "
        "(bare_app.create_api_floor_app) the same handler serves a route of the app itself: "
        "its request hooks (request id, bearer token, input checks, security headers), "
        "@idempotent, the argument and response schemas and the ORM session's transaction, "
        "still without the API's trial read, permission check and role-shaped response: the "
        "least a randomization costs through the API's stack."
    )
    print_table(
        "Allocation sequence after the run",
        ["allocations (API 201s, minimal handler's 201s)", "seq_no exactly 1..N",
         "duplicate participants", "randomized = answered 201 (+ answers lost)",
         "bare counter (201s, answers lost)", "verdict"],
        [[f"{verification.n_allocations} ({verification.n_answered}, "
          f"{verification.n_floor_answered})", verification.is_gap_free,
          verification.n_duplicate_participants,
          f"{verification.are_subjects_matched} (+{verification.n_lost})",
          f"{verification.bare_counter} ({verification.bare_successes}, "
          f"{verification.bare_lost})",
          "OK" if verification.ok else "FAILED"]],
    )  # fmt: skip
    if not verification.ok:
        raise RuntimeError(f"randomization invariants violated: {verification}")
    by_figure: dict[str, list[RatioRow]] = {}
    for row in rows:
        by_figure.setdefault(row.figure, []).append(row)
    return [median_row(repeated) for repeated in by_figure.values()]


def _ratio(top: float, under: float) -> float | None:
    return top / under if under else None


# ---------------------------------------------------------------- part 2: minimization


def minimization_design() -> Design:
    """A Pocock-Simon design over sex, age band and 20 sites (range imbalance, p = 0.8)."""
    return build_design(
        "minimization",
        ["active", "control"],
        [1, 1],
        {
            "factors": [
                {"name": "sex", "weight": 1, "levels": ["F", "M"]},
                {"name": "age_band", "weight": 1, "levels": ["60-69", "70-79", "80+"]},
                {"name": "site", "weight": 2},
            ],
            "p": "4/5",
        },
    )


def _factors(rng: random.Random) -> dict[str, str]:
    return {
        "sex": rng.choice(["F", "M"]),
        "age_band": rng.choice(["60-69", "70-79", "80+"]),
        "site": f"S{rng.randrange(20):02d}",
    }


def _time_allocation(
    design: Design, state: RandomizationState, seq_no: int, factors: dict[str, str], repeats: int
) -> tuple[float, float]:
    """Median seconds of allocation seq_no alone, and with the state's JSON round trip."""
    secret = b"bench-secret-0123456789abcdef"
    bare: list[float] = []
    with_json: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        allocate(design, state, secret=secret, model="BENCH", seq_no=seq_no,
                 stratum_key="all", factors=factors)  # fmt: skip
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        loaded = RandomizationState.from_json(state.to_json())
        _, after = allocate(design, loaded, secret=secret, model="BENCH", seq_no=seq_no,
                            stratum_key="all", factors=factors)  # fmt: skip
        after.to_json()
        with_json.append(time.perf_counter() - started)
    return median_seconds(bare), median_seconds(with_json)


def run_minimization(sizes: Sizes) -> list[RatioRow]:
    """Time allocation k at the two points of `sizes.minimization_points`, state carried."""
    design = minimization_design()
    rng = random.Random(20261123)
    state = RandomizationState()
    secret = b"bench-secret-0123456789abcdef"
    timings: dict[int, tuple[float, float]] = {}
    last = max(sizes.minimization_points)
    for seq_no in range(1, last + 1):
        factors = _factors(rng)
        if seq_no in sizes.minimization_points:
            timings[seq_no] = _time_allocation(
                design, state, seq_no, factors, sizes.n_timing_repeats
            )
        _, state = allocate(design, state, secret=secret, model="BENCH", seq_no=seq_no,
                            stratum_key="all", factors=factors)  # fmt: skip
    early, late = sizes.minimization_points
    table = [
        ["allocate", 1e6 * timings[early][0], 1e6 * timings[late][0],
         timings[late][0] / timings[early][0]],
        ["allocate + state JSON round trip", 1e6 * timings[early][1], 1e6 * timings[late][1],
         timings[late][1] / timings[early][1]],
    ]  # fmt: skip
    print_table(
        f"Minimization: time of one allocation, participant {early:,} vs {late:,} "
        f"(median of {sizes.n_timing_repeats})",
        ["step", f"µs at #{early:,}", f"µs at #{late:,}", "ratio late/early"],
        table,
    )
    return [
        RatioRow(NAME, f"minimization allocate #{late:,} vs #{early:,}", "µs",
                 1e6 * timings[late][0], 1e6 * timings[early][0], f"participant #{early:,}", False),
        RatioRow(NAME, f"minimization + state JSON #{late:,} vs #{early:,}", "µs",
                 1e6 * timings[late][1], 1e6 * timings[early][1], f"participant #{early:,}", False),
    ]  # fmt: skip
