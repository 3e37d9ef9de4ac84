"""Worker crashes under load: gunicorn with 4 sync workers on PostgreSQL, concurrent clients
submitting eCRFs and randomizing, workers killed with SIGKILL at random moments (gunicorn's
master starts new ones) and, independently, the workers' database connections terminated with
``pg_terminate_backend`` at other random moments (a connection dying under a request, in its
commit or in its teardown). Afterwards every acknowledged (2xx) write is present with the
acknowledged values, no allocation is duplicated or skipped, no form is stored twice, and
``dtx audit verify`` passes (every row has its audit event, every chain is intact).

A client whose connection dies with its worker, or that gets a 503, sends the same request
again, as a real client would: randomizations carry an idempotency key in the body
(``request_id``), so a retry after a lost answer returns the original allocation; form submits
carry the ``Idempotency-Key`` header, so a retry replays the first answer. No answer may be a
500 (the teardown of a request whose connection was terminated used to turn into gunicorn's
plain-text 500).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from bench.ecrf import VISITS, adas_values
from bench.harness import (
    GunicornServer,
    HttpRequest,
    LoadResult,
    app_environment,
    run_threaded_load,
    throwaway_database,
)
from bench.trial_setup import issue_token, prepare_mci_trial
from dtx_trials.models import Allocation, FormRecord, Participant, Trial, Visit
from tests.reliability.conftest import Figures, require_server_stack, scaled

RETRY_STATUSES = frozenset({0, 502, 503})
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class Sizes:
    n_clients: int
    n_randomizations: int
    n_forms: int
    kill_every_s: tuple[float, float]  # uniform pause after the killed worker is replaced
    commits_between_cuts: tuple[int, int]  # committed transactions between two terminations
    time_limit_s: float  # a guard against a hang, not a speed target (the time is printed)


SIZES = scaled(
    Sizes(
        n_clients=16,
        n_randomizations=120,
        n_forms=120,
        kill_every_s=(0.3, 1.0),
        commits_between_cuts=(20, 60),
        time_limit_s=600,
    ),
    Sizes(
        n_clients=64,
        n_randomizations=600,
        n_forms=600,
        kill_every_s=(0.3, 1.0),
        commits_between_cuts=(20, 60),
        time_limit_s=1800,
    ),
)
WORKERS = 4


def worker_pids(master_pid: int) -> list[int]:
    """Return the pids of the gunicorn master's current child processes (its workers)."""
    try:
        children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in children.split()]


class WorkerKiller(threading.Thread):
    """SIGKILL a random worker of a gunicorn master at random moments until stopped.

    After each kill it waits until the master runs all its workers again (the app is preloaded
    in the master, so a forked replacement is ready at once), then pauses a random time.
    """

    def __init__(
        self, master_pid: int, n_workers: int, pause_s: tuple[float, float], seed: int
    ) -> None:
        super().__init__(daemon=True)
        self.master_pid = master_pid
        self.n_workers = n_workers
        self.pause_s = pause_s
        self.rng = random.Random(seed)
        self.stopped = threading.Event()
        self.killed: list[int] = []

    def run(self) -> None:
        while not self.stopped.wait(self.rng.uniform(*self.pause_s)):
            pids = worker_pids(self.master_pid)
            if not pids:
                continue
            pid = self.rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.killed.append(pid)
            deadline = time.monotonic() + 60
            while len(worker_pids(self.master_pid)) < self.n_workers or pid in worker_pids(
                self.master_pid
            ):
                if self.stopped.wait(0.1) or time.monotonic() > deadline:
                    return


class BackendKiller(threading.Thread):
    """Terminate a random backend of the app's database (``pg_terminate_backend``), as a DBA,
    a failover or a network cut would, every ``commits_between`` committed transactions (drawn
    anew each time): the fault rate follows the server's progress, not the wall clock, so a
    slow or busy machine gets as many faults per request as a fast one."""

    def __init__(self, url: str, commits_between: tuple[int, int], seed: int) -> None:
        super().__init__(daemon=True)
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")
        self.commits_between = commits_between
        self.rng = random.Random(seed)
        self.stopped = threading.Event()
        self.terminated = 0

    def run(self) -> None:
        commits = text(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        try:
            with self.engine.connect() as conn:
                mark = conn.execute(commits).scalar() or 0
                due = self.rng.randint(*self.commits_between)
                while not self.stopped.wait(0.05):
                    now = conn.execute(commits).scalar() or 0
                    if now - mark < due:
                        continue
                    pids = conn.execute(
                        text(
                            "SELECT pid FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    ).scalars().all()
                    if pids:
                        killed = conn.execute(
                            text("SELECT pg_terminate_backend(:pid)"),
                            {"pid": self.rng.choice(pids)},
                        ).scalar()
                        self.terminated += bool(killed)
                    mark, due = now, self.rng.randint(*self.commits_between)
        finally:
            self.engine.dispose()


def wait_for_workers(master_pid: int, n: int, timeout_s: float = 60) -> int:
    """Wait until the master runs n workers again; return how many it runs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if len(worker_pids(master_pid)) >= n:
            break
        time.sleep(0.2)
    return len(worker_pids(master_pid))


def audit_verify(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the real ``dtx audit verify`` against the server's database."""
    return subprocess.run(
        [sys.executable, "-m", "dtx_trials", "audit", "verify"],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_rel_01_acknowledged_writes_survive_worker_sigkill(figures: Figures) -> None:
    require_server_stack()
    sizes = SIZES
    rng = random.Random(20261123)
    n_form_subjects = -(-sizes.n_forms // len(VISITS))
    with throwaway_database("crash") as url, tempfile.TemporaryDirectory() as instance:
        env = app_environment(url, instance)
        with GunicornServer("dtx_trials:create_app()", env, WORKERS, preload=True) as server:
            prepared = prepare_mci_trial(url, instance, sizes.n_randomizations + n_form_subjects)
            token = issue_token(server.port, prepared.username, prepared.password)
            headers = {"Authorization": f"Bearer {token}"}
            to_randomize = prepared.subjects[: sizes.n_randomizations]
            to_fill = prepared.subjects[sizes.n_randomizations :]
            code = prepared.code
            requests = [
                HttpRequest(
                    "POST",
                    f"/api/v1/trials/{code}/participants/{subject}/randomization",
                    {"request_id": f"crash-{subject}"},
                    headers,
                    f"rand:{subject}",
                )
                for subject in to_randomize
            ] + [
                HttpRequest(
                    "PUT",
                    f"/api/v1/trials/{code}/participants/{subject}/visits/{visit}/forms/adas_cog",
                    {"values": adas_values(rng), "submit": True},
                    {**headers, "Idempotency-Key": f"crash-form-{subject}-{visit}"},
                    f"form:{subject}:{visit}",
                )
                for visit in VISITS
                for subject in to_fill
            ][: sizes.n_forms]
            rng.shuffle(requests)
            assert server.process is not None
            master = server.process.pid
            assert wait_for_workers(master, WORKERS) == WORKERS
            killer = WorkerKiller(master, WORKERS, sizes.kill_every_s, seed=rng.randrange(2**32))
            cutter = BackendKiller(url, sizes.commits_between_cuts, seed=rng.randrange(2**32))
            killer.start()
            cutter.start()
            try:
                result = run_threaded_load(
                    server.port,
                    requests,
                    sizes.n_clients,
                    sizes.time_limit_s,
                    retry_statuses=RETRY_STATUSES,
                    max_attempts=MAX_ATTEMPTS,
                )
            finally:
                killer.stopped.set()
                cutter.stopped.set()
                killer.join()
                cutter.join()
            n_workers_after = wait_for_workers(master, WORKERS)
            after = run_threaded_load(server.port, [HttpRequest("GET", "/readyz")], 1, 30)
        verdict = verify(url, code, requests, result)
        audit = audit_verify(env)

    statuses = result.statuses()
    attempts = sum(o.attempts for o in result.outcomes)
    figures.add("clients / gunicorn workers", f"{sizes.n_clients} / {WORKERS}")
    figures.add("writes sent (randomizations + form submits)", len(requests))
    figures.add("HTTP requests (with retries)", attempts)
    figures.add("workers killed with SIGKILL (faults injected)", len(killer.killed))
    figures.add("database connections terminated (faults injected)", cutter.terminated)
    figures.add("workers running afterwards", n_workers_after)
    figures.add("answers lost with a killed worker (retried)", attempts - len(result.outcomes))
    figures.add("final statuses", ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    figures.add("acknowledged writes (2xx)", verdict.acknowledged)
    figures.add("acknowledged writes verified in the database", verdict.verified)
    replayed = sum(o.tag.startswith("rand:") and o.status == 200 for o in result.outcomes)
    figures.add("allocations committed, answer lost, retry got the original", replayed)
    figures.add("writes committed but never acknowledged", verdict.committed_unacknowledged)
    figures.add("allocations (seq_no 1..N, no participant twice)", verdict.n_allocations)
    figures.add("load wall time", f"{result.elapsed_s:.1f} s")
    figures.add("dtx audit verify", audit.stdout.strip().splitlines()[-1] if audit.stdout else "")
    figures.add("problems", len(verdict.problems))

    assert len(result.outcomes) == len(requests), "the load hit its time limit"
    assert killer.killed, "no worker was killed: the suite injected no fault"
    assert cutter.terminated, "no connection was terminated: the suite injected no fault"
    assert n_workers_after == WORKERS, "gunicorn did not restart the killed workers"
    assert after.statuses() == {200: 1}, "the server does not answer after the faults"
    assert not [o for o in result.outcomes if o.status >= 500], statuses
    assert not verdict.problems, verdict.problems[:20]
    assert verdict.acknowledged == verdict.verified > 0
    assert audit.returncode == 0, audit.stdout + audit.stderr


@dataclass(frozen=True)
class Verdict:
    acknowledged: int
    verified: int
    committed_unacknowledged: int
    n_allocations: int
    problems: list[str]


def verify(url: str, code: str, requests: list[HttpRequest], result: LoadResult) -> Verdict:
    """Compare every answer with the database: acknowledged writes, sequence, duplicates."""
    sent = {r.tag: r for r in requests}
    problems: list[str] = []
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            trial = session.scalars(select(Trial).where(Trial.code == code)).one()
            allocations = {
                subject: (seq_no, number)
                for subject, seq_no, number in session.execute(
                    select(
                        Participant.subject_code, Allocation.seq_no, Allocation.randomization_number
                    )
                    .join(Participant, Participant.id == Allocation.participant_id)
                    .where(Allocation.trial_id == trial.id)
                )
            }
            n_allocation_rows = len(
                session.scalars(select(Allocation.id).where(Allocation.trial_id == trial.id)).all()
            )
            forms: dict[str, list[FormRecord]] = {}
            for subject, visit_code, record in session.execute(
                select(Participant.subject_code, Visit.visit_code, FormRecord)
                .join(Participant, Participant.id == FormRecord.participant_id)
                .join(Visit, Visit.id == FormRecord.visit_id)
                .where(Participant.trial_id == trial.id, FormRecord.form_code == "adas_cog")
            ):
                forms.setdefault(f"form:{subject}:{visit_code}", []).append(record)
            form_values = {
                tag: (records[0].status, dict(records[0].data)) for tag, records in forms.items()
            }
            duplicated_forms = [tag for tag, records in forms.items() if len(records) > 1]
    finally:
        engine.dispose()

    acknowledged = verified = committed_unacknowledged = 0
    for outcome in result.outcomes:
        kind, subject = outcome.tag.split(":", 2)[:2]
        is_ok = 200 <= outcome.status < 300
        acknowledged += is_ok
        if kind == "rand":
            stored = allocations.get(subject)
            if not is_ok:
                committed_unacknowledged += stored is not None
                continue
            answer = json.loads(outcome.body)
            if stored != (answer["seq_no"], answer["randomization_number"]):
                problems.append(f"{outcome.tag}: answered {answer}, stored {stored}")
                continue
        else:
            stored_form = form_values.get(outcome.tag)
            if not is_ok:
                committed_unacknowledged += stored_form is not None
                continue
            values = sent[outcome.tag].body["values"]
            if stored_form is None or stored_form[0] != "submitted":
                problems.append(f"{outcome.tag}: answered {outcome.status}, stored {stored_form}")
                continue
            if any(stored_form[1].get(k) != v for k, v in values.items()):
                problems.append(f"{outcome.tag}: stored values differ from the submitted ones")
                continue
        verified += 1

    seq_nos = sorted(seq for seq, _ in allocations.values())
    if seq_nos != list(range(1, len(seq_nos) + 1)):
        problems.append(f"allocation seq_no not 1..N: {seq_nos}")
    if n_allocation_rows != len(allocations):
        problems.append(f"{n_allocation_rows - len(allocations)} participant(s) allocated twice")
    problems.extend(f"{tag}: stored twice" for tag in duplicated_forms)
    return Verdict(acknowledged, verified, committed_unacknowledged, len(allocations), problems)
