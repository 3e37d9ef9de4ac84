"""Randomization under concurrency: gap-free sequence, no participant twice, balance bounds,
rollback leaves no trace, replay from the secret (randomization-methods.md §2.2, §2.5, §2.6)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from dtx_trials.db import deferred_commit
from dtx_trials.extensions import db
from dtx_trials.models import (
    Allocation,
    AuditEvent,
    Participant,
    RandomizationState,
    RandomizationStratum,
    Trial,
    Visit,
)
from dtx_trials.models.users import Role
from dtx_trials.services import audit, protocols, randomization
from dtx_trials.services.access import Actor, Grant
from tests.conftest import make_test_app
from tests.dtx_trials.trial_flow import investigator_actor, mci_with_enrolled


def _check_invariants(trial_id: int, n: int) -> None:
    db.session.remove()
    rows = list(
        db.session.scalars(
            select(Allocation).where(Allocation.trial_id == trial_id).order_by(Allocation.seq_no)
        )
    )
    assert [a.seq_no for a in rows] == list(range(1, n + 1))
    assert len({a.participant_id for a in rows}) == n
    state = db.session.scalars(select(RandomizationState)).one()
    assert state.next_seq == n + 1
    # each stratum's counts in its own row (none left in the trial's row), as allocated
    assert state.state["strata"] == {}
    counts = {
        row.stratum_key: row.state["counts"]
        for row in db.session.scalars(select(RandomizationStratum))
    }
    allocated: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for a in rows:
        allocated[a.stratum_key][0 if a.arm_code == "cogtrain" else 1] += 1
    assert counts == allocated
    # permuted blocks of 4 and 6: within every stratum |D_j| <= 3 at every step
    running: dict[str, int] = defaultdict(int)
    for a in rows:
        running[a.stratum_key] += 1 if a.arm_code == "cogtrain" else -1
        assert abs(running[a.stratum_key]) <= 3, a.stratum_key
    assert not randomization.replay_problems(db.session, db.session.get(Trial, trial_id))
    assert audit.verify(db.session, trial_id).ok


def test_concurrent_threads_gap_free(app: Flask, backend: str) -> None:
    n = 200 if backend == "postgresql" else 60
    trial_id, subjects = mci_with_enrolled(n)
    db.session.remove()
    errors: list[BaseException] = []
    lock = threading.Lock()
    queue = list(subjects)

    def worker() -> None:
        with app.app_context():
            trial = db.session.get(Trial, trial_id)
            actor = investigator_actor(trial_id)
            while True:
                with lock:
                    if not queue:
                        return
                    subject = queue.pop()
                try:
                    randomization.randomize_participant(
                        db.session, actor, trial, subject, request_id=f"req-{subject}"
                    )
                except BaseException as exc:
                    errors.append(exc)
                finally:
                    db.session.remove()
                    trial = db.session.get(Trial, trial_id)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    _check_invariants(trial_id, n)


def _process_worker(url: str, trial_id: int, subjects: list[str]) -> int:
    app = make_test_app(url)
    done = 0
    with app.app_context():
        for subject in subjects:
            trial = db.session.get(Trial, trial_id)
            randomization.randomize_participant(
                db.session, investigator_actor(trial_id), trial, subject, request_id=f"p-{subject}"
            )
            db.session.remove()
            done += 1
        db.engine.dispose()
    return done


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_processes_gap_free(app: Flask, database_url: str) -> None:
    n = 200
    trial_id, subjects = mci_with_enrolled(n)
    db.session.remove()
    chunks = [subjects[i::4] for i in range(4)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=context) as pool:
        done = sum(pool.map(_process_worker, [database_url] * 4, [trial_id] * 4, chunks))
    assert done == n
    _check_invariants(trial_id, n)


def test_failure_inside_the_transaction_leaves_no_trace(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial_id, subjects = mci_with_enrolled(2)
    trial = db.session.get(Trial, trial_id)
    events_before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    state_before = dict(db.session.scalars(select(RandomizationState)).one().state)

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected fault after the allocation row was written")

    monkeypatch.setattr(randomization, "plan_participant_visits", fail)
    with pytest.raises(RuntimeError, match="injected fault"):
        randomization.randomize_participant(
            db.session, investigator_actor(trial_id), trial, subjects[0]
        )
    monkeypatch.undo()
    db.session.remove()
    assert db.session.scalar(select(func.count()).select_from(Allocation)) == 0
    state = db.session.scalars(select(RandomizationState)).one()
    assert state.next_seq == 1 and state.state == state_before
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == events_before
    participant = db.session.scalars(
        select(Participant).where(Participant.subject_code == subjects[0])
    ).one()
    assert participant.status == "enrolled"
    # and the next allocation still gets seq 1
    allocation, _ = randomization.randomize_participant(
        db.session, investigator_actor(trial_id), db.session.get(Trial, trial_id), subjects[1]
    )
    assert allocation.seq_no == 1


def test_cap_reached_is_409(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    trial_id, subjects = mci_with_enrolled(3)
    from dtx_trials.services.errors import Conflict

    # a trial cap of 1: the protocol is immutable, so cap through a stub protocol view
    _, protocol = protocols.active_protocol(db.session, db.session.get(Trial, trial_id))
    from dataclasses import replace

    capped = replace(
        protocol,
        randomization=replace(
            protocol.randomization, caps=replace(protocol.randomization.caps, trial=1)
        ),
    )
    monkeypatch.setattr(randomization, "protocol_for", lambda session, p: capped)
    actor = investigator_actor(trial_id)
    randomization.randomize_participant(
        db.session, actor, db.session.get(Trial, trial_id), subjects[0]
    )
    with pytest.raises(Conflict, match="cap of 1 reached for trial"):
        randomization.randomize_participant(
            db.session, actor, db.session.get(Trial, trial_id), subjects[1]
        )
    # refused under the trial's lock (where, on PostgreSQL, the allocation is already the
    # session's object): nothing written, and the same session randomizes on
    assert db.session.scalar(select(func.count()).select_from(Allocation)) == 1
    refused = db.session.scalars(
        select(Participant).where(Participant.subject_code == subjects[1])
    ).one()
    assert (refused.status, refused.randomized_at) == ("enrolled", None)
    monkeypatch.setattr(randomization, "protocol_for", lambda session, p: protocol)
    second, created = randomization.randomize_participant(
        db.session, actor, db.session.get(Trial, trial_id), subjects[1]
    )
    assert created and second.seq_no == 2 and second.participant_id == refused.id
    db.session.remove()
    stored = db.session.scalars(select(Allocation).order_by(Allocation.seq_no)).all()
    assert [(a.seq_no, a.arm_code) for a in stored][1] == (2, second.arm_code)
    assert audit.verify(db.session, trial_id).ok
    assert not randomization.replay_problems(db.session, db.session.get(Trial, trial_id))


def test_objects_the_session_holds_show_what_the_randomization_wrote(app: Flask) -> None:
    """The randomization reads and writes the participant's and the trial state's rows without
    ORM objects (`_lock_participant`, `db.set_held`): objects of those rows that the session
    holds, in a unit of work committed later (a request's), show what the rows hold once it
    has written them, with nothing left to flush; the commit then writes nothing more."""
    trial_id, subjects = mci_with_enrolled(2)
    actor = investigator_actor(trial_id)
    # the trial's first allocation reads the whole state row under its lock; the second the
    # counters only (`_lock_counters`)
    randomization.randomize_participant(
        db.session, actor, db.session.get(Trial, trial_id), subjects[0]
    )
    db.session.remove()
    with deferred_commit(db.session):
        trial = db.session.get(Trial, trial_id)
        held = db.session.scalars(
            select(Participant).where(Participant.subject_code == subjects[1])
        ).one()
        state = db.session.scalars(select(RandomizationState)).one()
        assert (held.status, state.next_seq, state.active_allocations) == ("enrolled", 2, 1)
        allocation, created = randomization.randomize_participant(
            db.session, actor, trial, subjects[1]
        )
        at = allocation.allocated_at
        assert created and allocation.seq_no == 2
        assert (held.status, held.randomized_at) == ("randomized", at)
        assert (state.next_seq, state.active_allocations, state.updated_at) == (3, 2, at)
        assert not db.session.is_modified(held) and not db.session.is_modified(state)
        held.status = "randomized"  # a no-op change: the values are the row's
        assert not db.session.is_modified(held)
    db.session.commit()
    db.session.remove()
    stored = db.session.scalars(
        select(Participant).where(Participant.subject_code == subjects[1])
    ).one()
    assert (stored.status, stored.randomized_at) == ("randomized", at)
    assert db.session.scalars(select(RandomizationState.next_seq)).one() == 3
    assert audit.verify(db.session, trial_id).ok
    assert not randomization.replay_problems(db.session, db.session.get(Trial, trial_id))


def test_void_retires_the_slot(app: Flask) -> None:
    from tests.helpers import make_user

    trial_id, subjects = mci_with_enrolled(3)
    trial = db.session.get(Trial, trial_id)
    account = make_user("sponsor", role="sponsor_admin", trial=trial)
    sponsor = Actor(
        user_id=account.user.id,
        username="sponsor",
        printed_name="Sponsor",
        via="cli",
        grants=(Grant(trial_id, None, Role.SPONSOR_ADMIN),),
    )
    inv = investigator_actor(trial_id)
    randomization.randomize_participant(db.session, inv, trial, subjects[0])
    voided = randomization.void_allocation(
        db.session,
        sponsor,
        trial,
        subjects[0],
        password=account.password,
        reason="wrong participant",
    )
    assert voided.status == "voided" and voided.seq_no == 1
    second, _ = randomization.randomize_participant(db.session, inv, trial, subjects[1])
    assert second.seq_no == 2  # the voided slot is never handed out again
    assert not randomization.replay_problems(db.session, trial)
    assert os.environ.get("NEVER_SET_IN_TESTS") is None


def test_audit_verify_replays_allocations(app: Flask) -> None:
    """A stored arm edited behind the app's back fails the replay in `dtx audit verify`."""
    from sqlalchemy import text

    from dtx_trials.services.integrity import check_integrity

    trial_id, subjects = mci_with_enrolled(4)
    trial = db.session.get(Trial, trial_id)
    for subject in subjects:
        randomization.randomize_participant(
            db.session, investigator_actor(trial_id), trial, subject
        )
    assert check_integrity(db.session, trial_id).ok
    target = db.session.scalars(select(Allocation).where(Allocation.seq_no == 2)).one()
    flipped = "sham" if target.arm_code == "cogtrain" else "cogtrain"
    db.session.remove()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE allocation SET arm_code = :a WHERE seq_no = 2"), {"a": flipped})
    report = check_integrity(db.session, trial_id)
    messages = [p.message for p in report.problems]
    assert any("seq 2): stored arm differs from the replayed allocation" in m for m in messages)
    assert any("allocation id=" in m and "arm_code" in m for m in messages)  # the trail, too


def test_a_request_id_is_checked_and_an_empty_one_is_none(app: Flask) -> None:
    """A request id longer than its column (or not of the API's characters) is a 422 with its
    field, before anything is written (PostgreSQL failed the insert: a 500); an empty one is no
    request id (stored as null, never matched), not an empty string."""
    from dtx_trials.services.errors import ValidationError

    trial_id, subjects = mci_with_enrolled(2)
    trial = db.session.get(Trial, trial_id)
    inv = investigator_actor(trial_id)
    for bad in ("x" * 81, "bad id", "nul\x00"):
        with pytest.raises(ValidationError) as refused:
            randomization.randomize_participant(db.session, inv, trial, subjects[0], bad)
        assert "request_id" in refused.value.errors
    assert db.session.scalars(select(Allocation)).all() == []
    first, _ = randomization.randomize_participant(db.session, inv, trial, subjects[0], "")
    second, _ = randomization.randomize_participant(db.session, inv, trial, subjects[1], "")
    assert (first.request_id, second.request_id, second.seq_no) == (None, None, 2)


def test_a_retry_returns_the_allocation_and_any_other_attempt_is_409(app: Flask) -> None:
    """The participant's allocation is read with its lock: a retry with the request id returns
    it (created=False, nothing written), the same request id for another participant and a
    second randomization of the participant are 409s that write nothing."""
    from dtx_trials.services.errors import Conflict

    trial_id, subjects = mci_with_enrolled(2)
    trial = db.session.get(Trial, trial_id)
    inv = investigator_actor(trial_id)
    first, created = randomization.randomize_participant(
        db.session, inv, trial, subjects[0], request_id="req-1"
    )
    assert created and first.seq_no == 1
    events = db.session.scalar(select(func.count()).select_from(AuditEvent))
    again, created = randomization.randomize_participant(
        db.session, inv, trial, subjects[0], request_id="req-1"
    )
    assert (again.id, again.seq_no, created) == (first.id, 1, False)
    with pytest.raises(Conflict, match="request id was used for another participant"):
        randomization.randomize_participant(db.session, inv, trial, subjects[1], "req-1")
    for request_id in (None, "req-2"):
        with pytest.raises(Conflict, match="already randomized") as refused:
            randomization.randomize_participant(db.session, inv, trial, subjects[0], request_id)
        assert refused.value.extra == {"randomization_number": first.randomization_number}
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == events
    assert db.session.scalar(select(func.count()).select_from(Allocation)) == 1
    second, created = randomization.randomize_participant(db.session, inv, trial, subjects[1])
    assert created and second.seq_no == 2
    assert not randomization.replay_problems(db.session, trial)


def _hold_participant_lock(trial_id: int, subject: str) -> Any:
    """Another transaction holding the participant's lock (a connection in a transaction)."""
    connection = db.engine.connect()
    connection.begin()
    connection.execute(
        text("SELECT id FROM participant WHERE trial_id = :t AND subject_code = :s FOR UPDATE"),
        {"t": trial_id, "s": subject},
    )
    return connection


def _wait_for_lock_waiters(n: int) -> None:
    """Until n backends wait for a row lock (a transaction id lock not granted)."""
    deadline = time.monotonic() + 30
    with db.engine.connect() as probe:
        while time.monotonic() < deadline:
            waiting = probe.execute(
                text("SELECT count(*) FROM pg_locks WHERE NOT granted")
            ).scalar_one()
            if waiting >= n:
                return
            time.sleep(0.01)
    raise AssertionError(f"{n} lock waiters never appeared")


def _randomize_in_thread(
    app: Flask, trial_id: int, subject: str, request_id: str, out: list[Any]
) -> threading.Thread:
    def run() -> None:
        with app.app_context():
            try:
                trial = db.session.get(Trial, trial_id)
                allocation, created = randomization.randomize_participant(
                    db.session, investigator_actor(trial_id), trial, subject, request_id=request_id
                )
                out.append((allocation.id, created))
            except BaseException as exc:
                out.append(exc)
            finally:
                db.session.remove()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_retry_waiting_for_the_original_gets_its_allocation(
    app: Flask, database_url: str
) -> None:
    """Two requests with one request id (a client retrying a request still in flight) wait on
    the participant's lock; the second, granted it after the first committed, answers with
    the first's allocation, not a 409: what the lock guards is read after it is granted."""
    trial_id, subjects = mci_with_enrolled(1)
    db.session.remove()
    holder = _hold_participant_lock(trial_id, subjects[0])
    out: list[Any] = []
    threads = [_randomize_in_thread(app, trial_id, subjects[0], "req-twice", out)
               for _ in range(2)]  # fmt: skip
    _wait_for_lock_waiters(2)
    holder.commit()
    holder.close()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(isinstance(o, BaseException) for o in out), out
    assert sorted(created for _, created in out) == [False, True]
    assert len({allocation_id for allocation_id, _ in out}) == 1
    _check_invariants(trial_id, 1)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_visit_opened_while_waiting_for_the_participant_lock_is_not_planned_again(
    app: Flask, database_url: str
) -> None:
    """A form save opened a visit anchored on randomization (data entered before it) and
    commits while the randomization waits on the participant's lock: the randomization sees
    the visit and plans the others, no duplicate and no error."""
    trial_id, subjects = mci_with_enrolled(2)
    trial = db.session.get(Trial, trial_id)
    randomization.randomize_participant(
        db.session, investigator_actor(trial_id), trial, subjects[0]
    )

    def codes(subject: str) -> list[str]:
        return list(
            db.session.scalars(
                select(Visit.visit_code)
                .join(Participant, Participant.id == Visit.participant_id)
                .where(Participant.subject_code == subject)
                .order_by(Visit.visit_code)
            )
        )

    anchored_on_randomization = sorted(set(codes(subjects[0])) - set(codes(subjects[1])))
    opened = anchored_on_randomization[0]
    participant_id = db.session.scalars(
        select(Participant.id).where(Participant.subject_code == subjects[1])
    ).one()
    db.session.remove()
    holder = _hold_participant_lock(trial_id, subjects[1])
    holder.execute(
        text(
            "INSERT INTO visit (participant_id, visit_code, occurrence, is_unscheduled, "
            "status) VALUES (:p, :v, 1, false, 'open')"
        ),
        {"p": participant_id, "v": opened},
    )
    out: list[Any] = []
    thread = _randomize_in_thread(app, trial_id, subjects[1], "req-visit", out)
    _wait_for_lock_waiters(1)
    holder.commit()
    holder.close()
    thread.join(timeout=60)
    assert len(out) == 1 and not isinstance(out[0], BaseException), out
    assert codes(subjects[1]) == codes(subjects[0])  # each visit once
    # the chain holds every row but the one this test inserted behind the app
    hand_inserted = db.session.scalars(
        select(Visit.id).where(Visit.participant_id == participant_id, Visit.visit_code == opened)
    ).one()
    assert [p.message for p in audit.verify(db.session).problems] == [
        f"visit id={hand_inserted}: row has no audit trail (inserted behind the app)"
    ]
