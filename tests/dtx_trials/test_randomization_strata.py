"""A stratum's design state in a row of its own (`randomization_stratum`), written only by the
allocations and voids in that stratum; a trial from before those rows keeps its strata in the
trial's state row until each is next used, and the move is audited."""

from __future__ import annotations

import json
from typing import NamedTuple

import pytest
from flask import Flask
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import (
    Allocation,
    AuditEvent,
    RandomizationState,
    RandomizationStratum,
    Trial,
)
from dtx_trials.models.users import Role
from dtx_trials.services import audit, randomization
from dtx_trials.services.access import Actor, Grant
from dtx_trials.services.errors import PermissionDenied
from randomization.state import RandomizationState as DesignState
from randomization.state import StratumState
from tests.dtx_trials.trial_flow import investigator_actor, mci_with_enrolled
from tests.helpers import CLI, make_user


def _trial(n: int) -> tuple[int, list[str]]:
    # one site: every participant's stratum is the site's and the screening MoCA band's
    return mci_with_enrolled(n, n_sites=1)


class _Made(NamedTuple):
    stratum_key: str
    seq_no: int


def _randomize(trial_id: int, subject: str) -> _Made:
    trial = db.session.get(Trial, trial_id)
    assert trial is not None
    allocation, created = randomization.randomize_participant(
        db.session, investigator_actor(trial_id), trial, subject
    )
    assert created
    return _Made(allocation.stratum_key, allocation.seq_no)


def test_each_stratum_is_a_row_and_its_state_is_sealed_in_the_trail(app: Flask) -> None:
    trial_id, subjects = _trial(6)
    made = [_randomize(trial_id, s) for s in subjects]
    db.session.remove()
    state = db.session.scalars(select(RandomizationState)).one()
    assert state.state["strata"] == {} and state.state["n_allocations"] == 6
    rows = {r.stratum_key: r for r in db.session.scalars(select(RandomizationStratum))}
    assert set(rows) == {a.stratum_key for a in made}
    for key, row in rows.items():
        stratum = StratumState.from_json(row.state)
        assert stratum.n_slots == sum(a.stratum_key == key for a in made) == stratum.n_active
    # the counts and block position reveal arms: the trail holds them sealed, never as JSON
    events = db.session.scalars(
        select(AuditEvent).where(AuditEvent.entity_type == "randomization_stratum")
    ).all()
    # one per allocation: its stratum's row created by the first, advanced by the others
    assert sorted(e.op for e in events) == ["create"] * len(rows) + ["update"] * (6 - len(rows))
    for event in events:
        (change,) = [c for c in event.changes if c["field"] == "state"]
        assert "counts" not in json.dumps(change), change
    assert audit.verify(db.session, trial_id).ok
    assert randomization.replay_problems(db.session, db.session.get(Trial, trial_id)) == []


def _as_before_the_stratum_rows(trial_id: int) -> None:
    """Make the trial look as a trial allocated before the stratum rows: its strata in the
    trial's state row, no stratum row; each change audited (as the release before wrote it,
    the rows' removal as deletions), so that the trail still verifies."""
    state_row = db.session.scalars(select(RandomizationState)).one()
    strata = {r.stratum_key: r for r in db.session.scalars(select(RandomizationStratum))}
    before = audit.snapshot(state_row)
    whole = DesignState.from_json(state_row.state)
    state_row.state = DesignState(
        last_seq_no=whole.last_seq_no,
        n_allocations=whole.n_allocations,
        strata={key: StratumState.from_json(row.state) for key, row in strata.items()},
        voided_seq_nos=whole.voided_seq_nos,
    ).to_json()
    audit.record_update(db.session, CLI, "randomization.advance", state_row, before)
    for row in strata.values():
        audit.append(db.session, CLI, op="delete", action="randomization.advance",
                     entity_type="randomization_stratum", entity_id=row.id, changes=[],
                     trial_id=trial_id)  # fmt: skip
        db.session.delete(row)
    db.session.commit()
    assert audit.verify(db.session, trial_id).ok


def test_a_trial_from_before_the_stratum_rows_moves_a_stratum_when_next_used(app: Flask) -> None:
    trial_id, subjects = _trial(8)
    made = [_randomize(trial_id, s) for s in subjects[:4]]
    _as_before_the_stratum_rows(trial_id)
    legacy = DesignState.from_json(db.session.scalars(select(RandomizationState)).one().state)
    assert set(legacy.strata) == {a.stratum_key for a in made}
    # the next allocations carry on each stratum from its state in the trial's row (a stratum
    # started afresh would draw slot 1 of block 1 again: the replay below would name it)
    made += [_randomize(trial_id, s) for s in subjects[4:]]
    db.session.remove()
    state = db.session.scalars(select(RandomizationState)).one()
    moved = {r.stratum_key: StratumState.from_json(r.state)
             for r in db.session.scalars(select(RandomizationStratum))}  # fmt: skip
    used_after = {a.stratum_key for a in made[4:]}
    assert set(moved) == used_after
    assert set(DesignState.from_json(state.state).strata) == set(legacy.strata) - used_after
    for key, stratum in moved.items():
        assert stratum.n_slots == sum(a.stratum_key == key for a in made)
    trial = db.session.get(Trial, trial_id)
    assert trial is not None
    assert randomization.replay_problems(db.session, trial) == []
    assert audit.verify(db.session, trial_id).ok


def test_a_void_in_a_stratum_still_in_the_trial_row_moves_it(app: Flask) -> None:
    trial_id, subjects = _trial(3)
    made = [_randomize(trial_id, s) for s in subjects]
    _as_before_the_stratum_rows(trial_id)
    trial = db.session.get(Trial, trial_id)
    assert trial is not None
    account = make_user("sponsor", role="sponsor_admin", trial=trial)
    sponsor = Actor(user_id=account.user.id, username="sponsor", printed_name="Sponsor",
                    via="cli", grants=(Grant(trial_id, None, Role.SPONSOR_ADMIN),))  # fmt: skip
    key = made[0].stratum_key
    randomization.void_allocation(db.session, sponsor, db.session.get(Trial, trial_id),
                                  subjects[0], password=account.password,
                                  reason="randomized in error")  # fmt: skip
    db.session.remove()
    row = db.session.scalars(
        select(RandomizationStratum).where(RandomizationStratum.stratum_key == key)
    ).one()
    stratum = StratumState.from_json(row.state)
    in_stratum = sum(a.stratum_key == key for a in made)
    assert stratum.n_slots == in_stratum and stratum.n_active == in_stratum - 1
    state = DesignState.from_json(db.session.scalars(select(RandomizationState)).one().state)
    assert key not in state.strata and state.voided_seq_nos == (made[0].seq_no,)
    assert audit.verify(db.session, trial_id).ok
    assert randomization.replay_problems(db.session, db.session.get(Trial, trial_id)) == []


def test_the_future_slots_of_a_stratum_are_the_arms_it_then_allocates(app: Flask) -> None:
    """`GET …/allocations/future` reads the stratum's row: the next arms it shows (the
    unblinded statistician only) are the arms the next allocations in that stratum receive,
    whether the stratum has a row yet or not."""
    trial_id, subjects = _trial(10)
    trial = db.session.get(Trial, trial_id)
    assert trial is not None
    statistician = Actor(user_id=None, username="ustat", printed_name="Unblinded statistician",
                         via="cli",
                         grants=(Grant(trial_id, None, Role.UNBLINDED_STATISTICIAN),))  # fmt: skip
    with pytest.raises(PermissionDenied):
        randomization.next_slots(db.session, investigator_actor(trial_id), trial, "x", 1)
    first = _randomize(trial_id, subjects[0])
    shown = randomization.next_slots(
        db.session, statistician, db.session.get(Trial, trial_id), first.stratum_key, 10
    )
    made = [_randomize(trial_id, s) for s in subjects[1:]]
    db.session.remove()
    arms = dict(db.session.execute(select(Allocation.seq_no, Allocation.arm_code)).all())
    same = [arms[m.seq_no] for m in made if m.stratum_key == first.stratum_key]
    assert len(same) >= 2 and same == shown[: len(same)]
