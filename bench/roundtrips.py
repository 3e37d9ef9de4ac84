"""Database round trips and lock hold times of the hot paths, in-process on PostgreSQL.

Statement counts do not depend on machine load: they are the most reproducible figures of
this suite. Counted with SQLAlchemy's ``before_cursor_execute`` (transaction control left out:
psycopg sends BEGIN with the first statement); lock hold times run from the statement that
takes the lock to the COMMIT's answer (the dialect's ``do_commit``), median over the requests:
for the trial lock the ``SELECT randomization_state ... FOR UPDATE``, for the audit head the
first statement that locks ``audit_chain_head`` (a ``SELECT ... FOR UPDATE``, or on PostgreSQL
the one statement that locks, checks and moves a guessed head; see ``services/audit.py``). Each
hold is split into the locking statement (sent to answered), the statements sent after it, the
COMMIT, and the rest: Python run with the lock held. The randomization's is measured also for
the minimal handler of the same statements (``bare_app.floor_randomize``), the least any
handler of them holds the lock for, and for the same handler behind the API's own stack
(``bare_app.create_api_floor_app``: its hooks, ``@idempotent`` and schemas, the ORM session's
transaction), the least the API's stack holds it for.

- eCRF submit: ``PUT .../forms/adas_cog`` with ``submit: true`` for randomized participants
  (a token already seen by this process, and one not seen: the first request of a token).
- randomization: ``POST .../randomization`` for enrolled participants.
- list page: ``GET .../participants`` with pages of 10 and of 50 participants (the ratio is
  1 when the statements do not grow with the participants listed).

CPU per request: randomizations and then submits of other participants, without the probes,
against the bare app's locked counter and JSON insert (``bench/bare_app.py``) called the same
way, and randomizations of yet other participants by the bare app's minimal handler of the
same statements (``bare_app.floor_randomize``) against the same counter, and submits by its
minimal handler of a submit's statements (``bare_app.floor_submit``) against the same insert:
this process's CPU
plus that of the database's PostgreSQL backends (read from ``/proc/<pid>/stat``: the server
must run on this host, else the rows are not printed).
On a machine whose cores are all busy (load generator, servers and database share them) the
throughput ratio through HTTP cannot pass (bare + c) / (ours + c) for long, where c is the CPU
the HTTP server and the load generator spend per request, the same for both: c = cores / the
bare endpoint's HTTP rate (the randomization and ecrf benchmarks) - bare here.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import event, text

from bench.bare_app import (
    API_FLOOR_RANDOMIZE_PATH,
    FLOOR_RANDOMIZE_PATH,
    create_api_floor_app,
    create_bare_app,
    create_bare_tables,
)
from bench.harness import FIELD_KEY, RatioRow, print_table, throwaway_database
from bench.trial_setup import MCI_CODE, prepare_mci_trial
from dtx_trials.extensions import db

NAME = "roundtrips"
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")
ADAS = {f"adas_q{i + 1:02d}": i % 5 for i in range(13)}


class Sizes(NamedTuple):
    participants: int
    requests: int  # probed requests of each kind
    cpu_requests: int  # requests of each kind timed for CPU (other participants)


# participants: the probed randomizations and submits first, then the CPU figures' (the API's,
# then the minimal handler's with its warm-up), the minimal handler's probed ones behind the
# API's stack, and the minimal handler's probed ones last (each with its warm-up)
FULL = Sizes(520, 30, 200)  # 8 sites of 65 participants
# quick: enough requests that the backends' CPU, counted in 10 ms ticks, orders ours and bare
QUICK = Sizes(136, 4, 40)
_SITES = 8  # participants in turn: the probed randomizations meet the same strata
_FLOOR_WARMUP = 10  # the minimal handler's randomizations before its CPU is timed


class Probe:
    """Statements of the current request and the hold time of the first lock it names, split
    into the lock's own statement, the statements sent after it, the COMMIT, and the rest: the
    Python run while the lock is held (on the app's ORM session or the bare app's engine)."""

    def __init__(self, engine: Any, lock_table: str) -> None:
        self.engine = engine
        self.lock_table = lock_table
        self.statements: list[str] = []
        self.locked_at: float | None = None
        self.lock_statement_ms = 0.0  # the locking statement, from sent to answered
        self.statements_ms = 0.0  # the statements sent after it, until the COMMIT
        self._sent_at: float | None = None
        self.commit_at: float | None = None
        self.committed_at: float | None = None

    def _statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        now = time.perf_counter()
        text = statement.lstrip()
        if text.upper().startswith(_CONTROL):
            return
        self.statements.append(text)
        if self.locked_at is None and self._locks(text):
            self.locked_at = now
        self._sent_at = now if self.locked_at is not None else None

    def _answered(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self._sent_at is None or self.commit_at is not None:
            return
        took = (time.perf_counter() - self._sent_at) * 1000
        if self._sent_at == self.locked_at:
            self.lock_statement_ms = took
        else:
            self.statements_ms += took
        self._sent_at = None

    def _locks(self, text: str) -> bool:
        """Whether the statement locks the table's row: a ``SELECT <table>... FOR UPDATE``, or
        one that updates it (a row lock whatever else the statement does)."""
        if text.startswith(f"SELECT {self.lock_table}") and "FOR UPDATE" in text:
            return True
        return f"UPDATE {self.lock_table} " in text

    def _do_commit(self, dbapi_connection: Any) -> None:
        """The dialect's COMMIT, timed: from sent to answered (the lock is released there)."""
        started = time.perf_counter()
        self._commit(dbapi_connection)
        if self.locked_at is not None and self.commit_at is None:
            self.commit_at, self.committed_at = started, time.perf_counter()

    @contextmanager
    def request(self) -> Iterator[Probe]:
        self.statements, self.locked_at, self.committed_at = [], None, None
        self.commit_at, self._sent_at = None, None
        self.lock_statement_ms = self.statements_ms = 0.0
        dialect = self.engine.dialect
        self._commit = dialect.do_commit
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "after_cursor_execute", self._answered)
        dialect.do_commit = self._do_commit  # this engine's dialect only, for this request
        try:
            yield self
        finally:
            event.remove(self.engine, "before_cursor_execute", self._statement)
            event.remove(self.engine, "after_cursor_execute", self._answered)
            del dialect.do_commit

    @property
    def lock_ms(self) -> float:
        if self.locked_at is None or self.committed_at is None:
            return 0.0
        return (self.committed_at - self.locked_at) * 1000

    @property
    def commit_ms(self) -> float:
        """The COMMIT itself (PostgreSQL's WAL flush): the floor of any lock held to commit."""
        if self.commit_at is None or self.committed_at is None:
            return 0.0
        return (self.committed_at - self.commit_at) * 1000

    @property
    def python_ms(self) -> float:
        """What the lock's hold is not spent on in statements or the COMMIT."""
        if not self.lock_ms:
            return 0.0
        return self.lock_ms - self.lock_statement_ms - self.statements_ms - self.commit_ms


class Hold(NamedTuple):
    """A request's lock hold (ms) and what it was spent on; `median` takes each column's."""

    held: float
    lock_statement: float
    statements_after: float
    python: float
    commit: float
    statements: int = 0  # the request's statements (not a part of the hold)

    @classmethod
    def of(cls, probe: Probe) -> Hold:
        return cls(probe.lock_ms, probe.lock_statement_ms, probe.statements_ms,
                   probe.python_ms, probe.commit_ms, len(probe.statements))  # fmt: skip

    @classmethod
    def median(cls, holds: list[Hold]) -> Hold:
        return cls(*(float(statistics.median(h[i] for h in holds)) for i in range(5)))

    def columns(self) -> tuple[float, ...]:
        """The table's columns: held, then its parts."""
        return tuple(self[:5])


def run(quick: bool = False) -> list[RatioRow]:
    sizes = QUICK if quick else FULL
    with throwaway_database("trips") as url, tempfile.TemporaryDirectory() as instance:
        prepared = prepare_mci_trial(url, instance, sizes.participants,
                                     -(-sizes.participants // _SITES))  # fmt: skip
        # the app, with the route of the minimal handler behind its stack
        app = create_api_floor_app({"SQLALCHEMY_DATABASE_URI": url, "FIELD_KEY": FIELD_KEY,
                                    "SECRET_KEY": "bench", "ARGON2_TIME_COST": 1,
                                    "ARGON2_MEMORY_KIB": 1024})  # fmt: skip
        with app.app_context():
            engine = db.engine
        # no app context held around the requests: each request pushes its own, so each gets
        # its own ORM session, as a served request does (one held context would serve them all
        # with one session and its identity map)
        try:
            with _bare_client(url) as bare:
                rows, table = _measure(app, engine, bare, prepared, sizes)
                cpu = _cpu(app, engine, bare, prepared, sizes)
        finally:
            engine.dispose()
    print_table(
        "Database round trips per request and lock hold times (in-process, PostgreSQL)",
        [
            "request",
            "statements (median)",
            "statements (max)",
            "lock",
            "lock held ms (median)",
            "its statement ms",
            "statements after it ms",
            "Python ms",
            "COMMIT ms",
        ],
        table,
    )
    if cpu:
        print_table(
            f"CPU per request, in process: this process + the PostgreSQL backends "
            f"({sizes.cpu_requests} requests of each kind)",
            [
                "request",
                "app CPU ms",
                "PostgreSQL CPU ms",
                "total ms",
                "bare",
                "bare total ms",
                "bare / ours",
            ],
            cpu,
        )
        rows += [
            RatioRow(NAME, f"CPU per {what}, app + PostgreSQL", "ms", ours, bare,
                     f"{baseline}, same way", False)
            for what, _, _, ours, baseline, bare, _ in cpu
        ]  # fmt: skip
    return rows


def _measure(
    app: Any, engine: Any, bare: Any, prepared: Any, sizes: Sizes
) -> tuple[list[RatioRow], list[list[Any]]]:
    from dtx_trials.services import accounts

    client = app.test_client()
    token = client.post(
        "/api/v1/auth/tokens", json={"username": prepared.username, "password": prepared.password}
    ).get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    base = f"/api/v1/trials/{MCI_CODE}"
    subjects = list(prepared.subjects[: sizes.requests])

    randomize = Probe(engine, "randomization_state")
    rand_holds: list[Hold] = []
    for subject in subjects:
        with randomize.request():
            answer = client.post(f"{base}/participants/{subject}/randomization", json={},
                                 headers=headers)  # fmt: skip
        if answer.status_code != 201:
            raise RuntimeError(f"randomization answered {answer.status_code}: {answer.json}")
        rand_holds.append(Hold.of(randomize))
    # the same statements by the minimal handler (its own participants, the last ones), bare
    # and behind the API's stack: how long any handler of them holds the trial's lock
    def holds_of(probe: Probe, post: Callable[[str], Any], subjects: list[str]) -> list[Hold]:
        holds: list[Hold] = []
        for index, subject in enumerate(subjects):
            with probe.request():
                answer = post(subject)
            if answer.status_code != 201:
                raise RuntimeError(f"the minimal handler answered {answer.status_code}")
            if index >= _FLOOR_WARMUP:
                holds.append(Hold.of(probe))
        return holds

    n = sizes.requests + _FLOOR_WARMUP
    bare_floor_holds = holds_of(
        Probe(bare.application.extensions["bare_engine"], "randomization_state"),
        lambda s: bare.post(FLOOR_RANDOMIZE_PATH.format(code=MCI_CODE, subject=s), json={},
                            headers=headers),
        list(prepared.subjects[-n:]),
    )
    api_floor_holds = holds_of(
        Probe(engine, "randomization_state"),
        lambda s: client.post(API_FLOOR_RANDOMIZE_PATH.format(code=MCI_CODE, subject=s),
                              json={}, headers=headers),
        list(prepared.subjects[-2 * n : -n]),
    )  # fmt: skip

    submit = Probe(engine, "audit_chain_head")
    warm_counts: list[float] = []
    cold_counts: list[float] = []
    head_holds: list[Hold] = []
    for index, subject in enumerate(subjects):
        if index % 2:
            accounts.token_cache().clear()  # as the first request of a token in this process
        with submit.request():
            answer = client.put(
                f"{base}/participants/{subject}/visits/baseline/forms/adas_cog",
                json={"values": ADAS, "submit": True},
                headers=headers,
            )
        if answer.status_code != 200:
            raise RuntimeError(f"submit answered {answer.status_code}: {answer.json}")
        (cold_counts if index % 2 else warm_counts).append(len(submit.statements))
        head_holds.append(Hold.of(submit))

    listing = Probe(engine, "-")

    def list_statements(per_page: int) -> int:
        with listing.request():
            answer = client.get(f"{base}/participants?per_page={per_page}", headers=headers)
        if answer.status_code != 200 or len(answer.json) != per_page:
            raise RuntimeError(f"list answered {answer.status_code}")
        return len(listing.statements)

    few, many = list_statements(10), list_statements(50)

    def med(values: list[float]) -> float:
        return float(statistics.median(values))

    rand_counts = [float(h.statements) for h in rand_holds]
    head, rand, rand_floor, rand_api_floor = (
        Hold.median(head_holds),
        Hold.median(rand_holds),
        Hold.median(bare_floor_holds),
        Hold.median(api_floor_holds),
    )
    table = [
        ["eCRF submit, token cached", med(warm_counts), max(warm_counts), "audit head",
         *head.columns()],
        ["eCRF submit, first request of a token", med(cold_counts), max(cold_counts), "", "",
         "", "", "", ""],
        ["randomization", med(rand_counts), max(rand_counts), "randomization state row",
         *rand.columns()],
        ["randomization, same statements by the minimal handler",
         med([float(h.statements) for h in bare_floor_holds]),
         max(float(h.statements) for h in bare_floor_holds), "randomization state row",
         *rand_floor.columns()],
        ["randomization, the same behind the API's stack",
         med([float(h.statements) for h in api_floor_holds]),
         max(float(h.statements) for h in api_floor_holds), "randomization state row",
         *rand_api_floor.columns()],
        [f"participants list, page of 10 of {sizes.participants}", few, few, "", "", "", "",
         "", ""],
        [f"participants list, page of 50 of {sizes.participants}", many, many, "", "", "", "",
         "", ""],
    ]  # fmt: skip
    rows = [
        RatioRow(NAME, "eCRF submit round trips (first request of a token)", "statements",
                 float(max(cold_counts)), None, "-", False),
        RatioRow(NAME, "eCRF submit round trips (token cached)", "statements",
                 float(max(warm_counts)), None, "-", False),
        RatioRow(NAME, "audit head lock held (submit)", "ms", head.held, head.commit,
                 "the COMMIT alone", False),
        RatioRow(NAME, "randomization round trips", "statements", max(rand_counts),
                 None, "-", False),
        RatioRow(NAME, "randomization: trial lock held", "ms", rand.held, rand.commit,
                 "the COMMIT alone", False),
        RatioRow(NAME, "minimal handler of the randomization's statements: trial lock held", "ms",
                 rand_floor.held, rand_floor.commit, "the COMMIT alone", False),
        RatioRow(NAME, "the same behind the API's stack: trial lock held", "ms",
                 rand_api_floor.held, rand_api_floor.commit, "the COMMIT alone", False),
        RatioRow(NAME, "list page statements, page of 50 vs page of 10", "statements",
                 float(many), float(few), "page of 10", False),
    ]  # fmt: skip
    return rows, table


def _backend_cpu_s(engine: Any) -> float | None:
    """CPU seconds used so far by the database's PostgreSQL backends (None when they do not
    run on this host)."""
    with engine.connect() as conn:
        pids = (
            conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
            .scalars()
            .all()
        )
    ticks, seen = 0, 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
        seen += 1
    return ticks / os.sysconf("SC_CLK_TCK") if seen else None


def _cpu_ms(engine: Any, calls: list[Callable[[], None]]) -> tuple[float, float] | None:
    """(app CPU ms, PostgreSQL backend CPU ms) per call."""
    before, started = _backend_cpu_s(engine), time.process_time()
    for call in calls:
        call()
    app_s, after = time.process_time() - started, _backend_cpu_s(engine)
    if before is None or after is None:
        return None
    return 1000 * app_s / len(calls), 1000 * (after - before) / len(calls)


def _cpu(app: Any, engine: Any, bare: Any, prepared: Any, sizes: Sizes) -> list[list[Any]]:
    """CPU per randomization and per submit against the bare app's counter and insert."""
    client = app.test_client()
    token = client.post(
        "/api/v1/auth/tokens", json={"username": prepared.username, "password": prepared.password}
    ).get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    base = f"/api/v1/trials/{MCI_CODE}"
    start = sizes.requests
    n = sizes.cpu_requests
    subjects = list(prepared.subjects[start : start + n])
    # the minimal handler's own participants (warm-up first)
    floor_subjects = list(prepared.subjects[start + n : start + 2 * n + _FLOOR_WARMUP])
    if len(floor_subjects) < n + _FLOOR_WARMUP:
        raise RuntimeError("not enough enrolled participants for the CPU figures")

    def expect(status: int, answer: Any) -> None:
        if answer.status_code != status:
            raise RuntimeError(f"answered {answer.status_code}: {answer.get_data(as_text=True)}")

    def randomize(subject: str) -> Callable[[], None]:
        return lambda: expect(
            201,
            client.post(f"{base}/participants/{subject}/randomization", json={}, headers=headers),
        )

    def submit(subject: str) -> Callable[[], None]:
        return lambda: expect(
            200,
            client.put(
                f"{base}/participants/{subject}/visits/baseline/forms/adas_cog",
                json={"values": ADAS, "submit": True},
                headers=headers,
            ),
        )

    def bare_call(path: str, body: dict[str, Any] | None) -> Callable[[], None]:
        return lambda: expect(201, bare.post(path, json=body, headers=headers))

    def floor(subject: str) -> Callable[[], None]:
        return bare_call(FLOOR_RANDOMIZE_PATH.format(code=MCI_CODE, subject=subject), {})

    for call in (bare_call("/counter", None), bare_call("/rows", ADAS)):
        for _ in range(10):  # warm-up: connections, token cache
            call()

    def floor_submit(subject: str) -> Callable[[], None]:
        return lambda: expect(
            200,
            bare.put(
                f"/trials/{MCI_CODE}/participants/{subject}/visits/baseline/floor",
                json={"values": ADAS},
                headers=headers,
            ),
        )

    for subject in floor_subjects[:_FLOOR_WARMUP]:
        floor(subject)()
        floor_submit(subject)()
    counter, insert = [bare_call("/counter", None)] * n, [bare_call("/rows", ADAS)] * n
    floors = floor_subjects[_FLOOR_WARMUP:]  # randomized by the minimal handler, as ours
    same = "same statements by the minimal handler"
    figures = [
        ("randomization", [randomize(s) for s in subjects], "bare locked counter", counter),
        (f"randomization, {same}", [floor(s) for s in floors], "bare locked counter", counter),
        ("eCRF submit", [submit(s) for s in subjects], "bare JSON insert", insert),
        (f"eCRF submit, {same}", [floor_submit(s) for s in floors], "bare JSON insert", insert),
    ]
    table = []
    for what, calls, baseline, bare_calls in figures:
        ours, theirs = _cpu_ms(engine, calls), _cpu_ms(engine, bare_calls)
        if ours is None or theirs is None:
            print("\n(CPU per request not measured: PostgreSQL does not run on this host)")
            return []
        total, bare_total = sum(ours), sum(theirs)
        table.append([what, ours[0], ours[1], total, baseline, bare_total, bare_total / total])
    return table


@contextmanager
def _bare_client(url: str) -> Iterator[Any]:
    """A test client of the bare app on this database (its engine disposed afterwards)."""
    create_bare_tables(url)
    app = create_bare_app(url)
    try:
        yield app.test_client()
    finally:
        app.extensions["bare_engine"].dispose()
