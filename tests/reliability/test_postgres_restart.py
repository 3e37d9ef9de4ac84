"""PostgreSQL restarted during load: the app recovers without restart (pooled connections the
server ended are replaced at checkout: `db._discard_if_ended_by_server`), clients
get clean 503s meanwhile, never a half-written record.

A private PostgreSQL cluster (never the shared one) holds the MCI example trial; gunicorn (four
sync workers) serves it while closed-loop clients randomize participants (each with its own
``request_id``) and submit ADAS-Cog forms. Twice during the load the cluster goes down for a
couple of seconds, first with ``pg_ctl stop -m fast`` (a restart), then with ``-m immediate``
(a crash, with recovery on start), while the clients keep sending; a client answered 503 or
cut off retries the same request (same ``request_id``) until it is acknowledged. A third,
quiet restart happens while no request is in flight, so that every worker holds a dead pooled
connection afterwards: only the check at checkout keeps its first use from failing. The app
server is never restarted. Afterwards every acknowledged write must be in the database with
the acknowledged values, the allocations numbered 1..N, and ``dtx audit verify`` clean.
"""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bench.ecrf import adas_values
from bench.harness import (
    BenchmarkUnavailable,
    GunicornServer,
    HttpRequest,
    PrivatePostgres,
    app_environment,
    postgres_bindir,
    send_request,
)
from bench.trial_setup import issue_token, prepare_mci_trial
from dtx_trials.models import Allocation, FormRecord, Participant, Trial, Visit
from tests import absent

from .conftest import Figures, require_server_stack, scaled

N_CLIENTS = scaled(12, 64)
PHASE_WRITES = scaled(15, 400)  # acknowledged writes before the first outage and after each
OUTAGE_S = scaled(2.0, 3.0)  # how long the server stays down once stopped
N_PARTICIPANTS = scaled(60, 900)  # each: one randomization and two form submits
LOAD_LIMIT_S = scaled(90.0, 300.0)  # a bound for a hung run, not a target
# (pg_ctl stop mode, whether the clients keep sending while it is down). The quiet restart
# leaves every worker's pooled connection dead: only the check at checkout keeps its first use
# from failing; under traffic the failed requests themselves invalidate the pools.
OUTAGE_PLAN = (("fast", True), ("immediate", True), ("fast", False))
QUIET_OUTAGE_S = 0.5
FORM_VISITS = ("baseline", "week_4")
RETRY_STATUSES = frozenset({0, 503})


@dataclass(frozen=True)
class Attempt:
    """One HTTP exchange (status 0: the connection failed), on the perf_counter clock."""

    tag: str
    started: float
    ended: float
    status: int
    body: bytes


class RetryingClients:
    """Closed-loop clients that retry a request answered 503 (or cut off) until it succeeds.

    Every exchange is recorded with its timing. ``pause()`` holds new requests back until
    those in flight are answered, ``resume()`` lets them go; ``stop()`` ends the taking of new
    requests. A request already taken is retried to an answer (bounded by ``retry_until``), so
    that no write the server may have committed is left without its acknowledgement.
    """

    def __init__(self, port: int, requests: Sequence[HttpRequest], n_clients: int) -> None:
        self.port = port
        self.queue = collections.deque(requests)
        self.attempts: list[Attempt] = []
        self.final: dict[str, Attempt] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self.n_in_flight = 0
        self.retry_until = float("inf")
        self.threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(n_clients)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def pause(self, deadline: float) -> None:
        self.running.clear()
        _wait_for(lambda: self.n_in_flight == 0, deadline, "the requests in flight")

    def resume(self) -> None:
        self.running.set()

    def stop(self, retry_for_s: float) -> None:
        self.retry_until = time.perf_counter() + retry_for_s
        self.stopping.set()
        self.running.set()
        for thread in self.threads:
            thread.join(timeout=retry_for_s + 90)

    def successes_started_after(self, moment: float) -> int:
        with self.lock:
            return sum(1 for a in self.attempts if 200 <= a.status < 300 and a.started >= moment)

    def wait_for_successes(self, since: float, n: int, deadline: float, what: str) -> None:
        """Wait until n requests sent since ``since`` were acknowledged (fail at the deadline)."""
        _wait_for(lambda: self.successes_started_after(since) >= n, deadline, what)

    def snapshot(self) -> list[Attempt]:
        with self.lock:
            return list(self.attempts)

    def _client(self) -> None:
        while not self.stopping.is_set():
            if not self.running.wait(timeout=0.05):
                continue
            with self.lock:
                if not self.running.is_set():
                    continue
                try:
                    request = self.queue.popleft()
                except IndexError:
                    return
                self.n_in_flight += 1
            self._send_until_answered(request)
            with self.lock:
                self.n_in_flight -= 1

    def _send_until_answered(self, request: HttpRequest) -> None:
        n_attempt = 0
        while True:
            n_attempt += 1
            started = time.perf_counter()
            outcome = send_request(self.port, request)
            attempt = Attempt(
                request.tag, started, time.perf_counter(), outcome.status, outcome.body
            )
            with self.lock:
                self.attempts.append(attempt)
                self.final[request.tag] = attempt
            if outcome.status not in RETRY_STATUSES or time.perf_counter() > self.retry_until:
                break
            time.sleep(min(0.05 * 2**n_attempt, 0.5))


@dataclass(frozen=True)
class Outage:
    """When one stop/start of PostgreSQL happened (perf_counter clock) and /readyz meanwhile."""

    mode: str
    is_quiet: bool  # no request was sent while the server was down
    stopping: float  # pg_ctl stop issued
    starting: float  # pg_ctl start issued
    up: float  # pg_ctl start returned: accepting connections
    readyz_down: tuple[int, bytes] | None  # not asked during a quiet restart
    ready: float  # /readyz answered 200 again

    @property
    def label(self) -> str:
        if self.is_quiet:
            return f"{self.mode} stop, no requests while down"
        return f"{self.mode} stop under load"


def _run_outages(
    cluster: PrivatePostgres, port: int, clients: RetryingClients, began: float, deadline: float
) -> list[Outage]:
    """Stop and start PostgreSQL as OUTAGE_PLAN says, each after PHASE_WRITES acknowledged."""
    outages: list[Outage] = []
    clients.wait_for_successes(began, PHASE_WRITES, deadline, "writes before the first outage")
    for mode, under_load in OUTAGE_PLAN:
        if not under_load:
            clients.pause(deadline)
        stopping = time.perf_counter()
        cluster.stop(mode)
        readyz_down = _get(port, "/readyz") if under_load else None
        time.sleep(OUTAGE_S if under_load else QUIET_OUTAGE_S)
        starting = time.perf_counter()
        cluster.start()
        up = time.perf_counter()
        clients.resume()
        _wait_for(lambda: _get(port, "/readyz")[0] == 200, deadline, "/readyz 200")
        ready = time.perf_counter()
        outages.append(Outage(mode, not under_load, stopping, starting, up, readyz_down, ready))
        clients.wait_for_successes(up, PHASE_WRITES, deadline, f"writes after the {mode} restart")
    return outages


def _wait_for(condition: Callable[[], bool], deadline: float, what: str) -> None:
    while not condition():
        if time.perf_counter() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def _get(port: int, path: str) -> tuple[int, bytes]:
    outcome = send_request(port, HttpRequest("GET", path))
    return outcome.status, outcome.body


def _is_clean_503(body: bytes) -> bool:
    """The API's error shape: {code: 503, status: "Service Unavailable", message: ...}."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(payload, dict)
        and payload.get("code") == 503
        and payload.get("status") == "Service Unavailable"
        and isinstance(payload.get("message"), str)
    )


def _child_pids(parent: int) -> set[int]:
    """PIDs of the direct children of ``parent`` (gunicorn's workers), read from /proc."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            children.add(int(stat.parent.name))
    return children


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test's own, stopped and removed afterwards."""
    require_server_stack()
    if postgres_bindir() is None:
        absent("PostgreSQL server binaries (initdb, pg_ctl) not found")
    try:
        cluster = PrivatePostgres()
        cluster.__enter__()
    except BenchmarkUnavailable as exc:
        absent(str(exc))
    try:
        yield cluster
    finally:
        cluster.__exit__(None, None, None)


def _requests(code: str, subjects: Sequence[str], token: str) -> list[HttpRequest]:
    """One randomization (own request_id) and two ADAS-Cog submits per participant, shuffled."""
    rng = random.Random(20261124)
    headers = {"Authorization": f"Bearer {token}"}
    base = f"/api/v1/trials/{code}/participants"
    requests = [
        HttpRequest(
            "POST", f"{base}/{s}/randomization", {"request_id": f"pgrestart-{s}"}, headers,
            f"rand:{s}",
        )
        for s in subjects
    ] + [
        HttpRequest(
            "PUT", f"{base}/{s}/visits/{v}/forms/adas_cog",
            {"values": adas_values(rng), "submit": True}, headers, f"form:{s}/{v}",
        )
        for s in subjects
        for v in FORM_VISITS
    ]  # fmt: skip
    rng.shuffle(requests)
    return requests


def _verify_writes(
    url: str, code: str, requests: Sequence[HttpRequest], final: dict[str, Attempt]
) -> tuple[int, list[str]]:
    """Compare the database with every acknowledged write; return (writes verified, problems)."""
    sent = {r.tag: r for r in requests}
    acknowledged = {tag: json.loads(a.body) for tag, a in final.items() if 200 <= a.status < 300}
    problems: list[str] = []
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            trial = session.scalars(select(Trial).where(Trial.code == code)).one()
            allocations = session.execute(
                select(Participant.subject_code, Allocation.seq_no,
                       Allocation.randomization_number, Allocation.request_id)
                .join(Participant, Participant.id == Allocation.participant_id)
                .where(Allocation.trial_id == trial.id)
                .order_by(Allocation.seq_no)
            ).all()  # fmt: skip
            randomized = set(
                session.scalars(
                    select(Participant.subject_code).where(
                        Participant.trial_id == trial.id, Participant.status == "randomized"
                    )
                )
            )
            records = session.execute(
                select(Participant.subject_code, Visit.visit_code, FormRecord.status,
                       FormRecord.data)
                .join(Participant, Participant.id == FormRecord.participant_id)
                .join(Visit, Visit.id == FormRecord.visit_id)
                .where(Participant.trial_id == trial.id, FormRecord.form_code == "adas_cog")
            ).all()  # fmt: skip
    finally:
        engine.dispose()

    acked_rand = {t.removeprefix("rand:"): b for t, b in acknowledged.items() if t[:5] == "rand:"}
    acked_form = {t.removeprefix("form:"): b for t, b in acknowledged.items() if t[:5] == "form:"}
    n_verified = 0
    seq_nos = [row.seq_no for row in allocations]
    if seq_nos != list(range(1, len(allocations) + 1)):
        problems.append(f"allocation seq_no not exactly 1..{len(allocations)}")
    by_subject = {row.subject_code: row for row in allocations}
    if len(by_subject) != len(allocations):
        problems.append("a participant was allocated twice")
    if set(by_subject) != set(acked_rand):
        extra = len(set(by_subject) - set(acked_rand))
        missing = len(set(acked_rand) - set(by_subject))
        problems.append(f"allocations vs acknowledged: {extra} unacknowledged, {missing} missing")
    if randomized != set(by_subject):
        problems.append("participant status 'randomized' does not match the allocations")
    for subject, body in acked_rand.items():
        row = by_subject.get(subject)
        if row is None:
            continue
        if (row.seq_no, row.randomization_number) != (body["seq_no"], body["randomization_number"]):
            problems.append(f"allocation of {subject} differs from its acknowledgement")
        elif row.request_id != f"pgrestart-{subject}":
            problems.append(f"allocation of {subject} carries another request_id")
        else:
            n_verified += 1

    by_form = {f"{row.subject_code}/{row.visit_code}": row for row in records}
    if len(by_form) != len(records):
        problems.append("two ADAS-Cog records for one participant and visit")
    if set(by_form) != set(acked_form):
        extra = len(set(by_form) - set(acked_form))
        missing = len(set(acked_form) - set(by_form))
        problems.append(f"form records vs acknowledged: {extra} unacknowledged, {missing} missing")
    for key, body in acked_form.items():
        row = by_form.get(key)
        if row is None:
            continue
        values = sent[f"form:{key}"].body["values"]
        stored = {k: row.data.get(k) for k in values}
        if row.status != "submitted" or body["record"]["status"] != "submitted":
            problems.append(f"form {key} is {row.status}, acknowledged {body['record']['status']}")
        elif stored != values or row.data != body["record"]["data"]:
            problems.append(f"form {key} holds other values than were acknowledged")
        else:
            n_verified += 1
    return n_verified, problems


def _audit_verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the real `dtx audit verify` against the server's database and keys."""
    return subprocess.run(
        [sys.executable, "-m", "dtx_trials", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _record_outage(figures: Figures, outage: Outage, attempts: Sequence[Attempt]) -> int:
    """Record one outage's figures; return its 503s (answers while the server was down)."""
    is_2xx = [a for a in attempts if 200 <= a.status < 300]
    n_503 = sum(
        1
        for a in attempts
        if a.status == 503 and a.ended >= outage.stopping and a.started < outage.up
    )
    first_2xx = min((a.ended for a in is_2xx if a.ended >= outage.up), default=None)
    label = outage.label
    figures.add(f"{label}: s down (stop to accepting)", f"{outage.up - outage.stopping:.2f}")
    figures.add(f"{label}: 503s while down", n_503)
    if outage.readyz_down is not None:
        figures.add(f"{label}: /readyz while down", outage.readyz_down[0])
    recovery = "never" if first_2xx is None else f"{first_2xx - outage.up:.3f}"
    figures.add(f"{label}: s to first 2xx", recovery)
    figures.add(f"{label}: s to /readyz 200", f"{outage.ready - outage.up:.3f}")
    figures.add(f"{label}: 2xx after start", sum(1 for a in is_2xx if a.started >= outage.up))
    return n_503


def test_postgres_restart_under_load(private_postgres: PrivatePostgres, figures: Figures) -> None:
    cluster = private_postgres
    setup_began = time.perf_counter()
    url = cluster.create_database("dtx_reliability")
    with tempfile.TemporaryDirectory() as instance:
        env = app_environment(url, instance)
        # --preload: the workers fork from a built app (quick to boot on a small CI machine);
        # each opens its own connection pool after the fork, as without it
        with GunicornServer("dtx_trials:create_app()", env, workers=4, preload=True) as server:
            # the workers boot while the database is prepared: neither needs the other yet
            prepared = prepare_mci_trial(url, instance, N_PARTICIPANTS)
            token = issue_token(server.port, prepared.username, prepared.password)
            requests = _requests(prepared.code, prepared.subjects, token)
            assert server.process is not None
            workers_before = _child_pids(server.process.pid)

            clients = RetryingClients(server.port, requests, N_CLIENTS)
            began = time.perf_counter()
            deadline = began + LOAD_LIMIT_S
            clients.start()
            try:
                outages = _run_outages(cluster, server.port, clients, began, deadline)
            finally:
                clients.stop(retry_for_s=30)
            ended = time.perf_counter()
            workers_after = _child_pids(server.process.pid)
            is_master_alive = server.process.poll() is None
            server_log = server.log_tail(400)

        attempts = clients.snapshot()
        n_verified, problems = _verify_writes(url, prepared.code, requests, clients.final)
        audit_began = time.perf_counter()
        audit = _audit_verify(env)
        audit_s = time.perf_counter() - audit_began

    statuses = collections.Counter(a.status for a in attempts)
    n_2xx = sum(n for status, n in statuses.items() if 200 <= status < 300)
    others = {s: n for s, n in statuses.items() if not (200 <= s < 300 or s == 503)}
    figures.add("clients", N_CLIENTS)
    figures.add("requests sent (attempts)", len(attempts))
    figures.add("writes requested", len(clients.final))
    figures.add("answered 2xx", n_2xx)
    figures.add("answered 503", statuses.get(503, 0))
    figures.add(
        "other statuses", ", ".join(f"{s}: {n}" for s, n in sorted(others.items())) or "none"
    )
    outage_503s = [_record_outage(figures, outage, attempts) for outage in outages]
    figures.add("setup seconds (database, trial, gunicorn)", f"{began - setup_began:.1f}")
    figures.add("load seconds", f"{ended - began:.1f}")
    figures.add("gunicorn workers replaced", len(workers_before - workers_after))
    figures.add("writes verified in the database", n_verified)
    figures.add("database problems", len(problems))
    figures.add("dtx audit verify", f"exit {audit.returncode}: {audit.stdout.strip()[-120:]}")
    figures.add("dtx audit verify seconds", f"{audit_s:.1f}")

    assert len(outages) == len(OUTAGE_PLAN)
    # the app server was never restarted, and no worker crashed
    assert is_master_alive
    assert workers_before and workers_after == workers_before, server_log
    # only 2xx or the clean 503; never a 500, a 4xx or a cut connection
    unexpected = [line for line in server_log.splitlines() if "database unavailable" not in line]
    assert not others, (others, unexpected)
    unclean = [a.body[:200] for a in attempts if a.status == 503 and not _is_clean_503(a.body)]
    assert not unclean, unclean
    # 503s only while the database was down; writes succeed again once it is up
    for outage, n_503 in zip(outages, outage_503s, strict=True):
        if outage.readyz_down is not None:
            assert n_503 > 0, f"{outage.label} produced no 503: it did not bite"
            assert outage.readyz_down[0] == 503
            assert json.loads(outage.readyz_down[1])["database"] == "unreachable"
        assert clients.successes_started_after(outage.up) > 0
    stray = [
        a for a in attempts
        if a.status == 503 and not any(o.stopping <= a.ended and a.started < o.up for o in outages)
    ]  # fmt: skip
    assert not stray, f"503s outside the outages (pool not recovered): {[a.tag for a in stray]}"
    # every request was acknowledged in the end (the retries got through)
    unanswered = [t for t, a in clients.final.items() if not 200 <= a.status < 300]
    assert not unanswered, f"{len(unanswered)} requests never acknowledged"
    # the database holds exactly what was acknowledged, and the audit trail agrees
    assert not problems, problems
    assert n_verified == len(clients.final)
    assert audit.returncode == 0, audit.stdout + audit.stderr
