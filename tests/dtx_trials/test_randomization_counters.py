"""The caps' counters in the locked randomization state row: kept by every allocation and void,
counted once from the allocations for a row from before the counters, and covered by the trail."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select, update

from dtx_trials.extensions import db
from dtx_trials.models import (
    Participant,
    RandomizationState,
    RandomizationStratum,
    Trial,
)
from dtx_trials.models.users import Role
from dtx_trials.services import audit, randomization
from dtx_trials.services.access import Actor, Grant
from tests.dtx_trials.trial_flow import mci_with_enrolled
from tests.helpers import make_user


def _trial_with_enrolled(n: int) -> tuple[Trial, list[str]]:
    trial_id, subjects = mci_with_enrolled(n)
    trial = db.session.get(Trial, trial_id)
    assert trial is not None
    return trial, subjects


def _stratum_active(key: str) -> int:
    row = db.session.scalars(
        select(RandomizationStratum).where(RandomizationStratum.stratum_key == key)
    ).one()
    return sum(row.state["counts"])


def _state() -> RandomizationState:
    db.session.remove()
    return db.session.scalars(select(RandomizationState)).one()


def test_counters_follow_allocations_and_voids(app: Flask) -> None:
    trial, subjects = _trial_with_enrolled(3)
    trial_id = trial.id
    inv = Actor(user_id=None, username="inv", printed_name="Investigator", via="cli",
                grants=(Grant(trial.id, None, Role.INVESTIGATOR),))  # fmt: skip
    account = make_user("sponsor", role="sponsor_admin", trial=trial)
    sponsor = Actor(user_id=account.user.id, username="sponsor", printed_name="Sponsor",
                    via="cli", grants=(Grant(trial.id, None, Role.SPONSOR_ADMIN),))  # fmt: skip
    first, _ = randomization.randomize_participant(db.session, inv, trial, subjects[0])
    randomization.randomize_participant(db.session, inv, trial, subjects[1])
    key = first.stratum_key
    site_id = db.session.scalars(
        select(Participant.site_id).where(Participant.subject_code == subjects[0])
    ).one()
    counts = _state().cap_counts
    assert counts is not None and counts["trial"] == 2 and counts[f"site:{site_id}"] >= 1
    # a stratum's active allocations are its row's counts, not a trial-row counter
    assert not any(name.startswith("stratum:") for name in counts), counts
    active = _stratum_active(key)
    randomization.void_allocation(
        db.session, sponsor, db.session.get(Trial, trial_id), subjects[0],
        password=account.password, reason="wrong participant",
    )  # fmt: skip
    after_void = _state().cap_counts
    assert after_void is not None and after_void["trial"] == 1
    assert after_void[f"site:{site_id}"] == counts[f"site:{site_id}"] - 1
    assert _stratum_active(key) == active - 1
    assert audit.verify(db.session).ok


def test_a_state_row_from_before_the_counters_is_counted_once(app: Flask) -> None:
    trial, subjects = _trial_with_enrolled(3)
    inv = Actor(user_id=None, username="inv", printed_name="Investigator", via="cli",
                grants=(Grant(trial.id, None, Role.INVESTIGATOR),))  # fmt: skip
    randomization.randomize_participant(db.session, inv, trial, subjects[0])
    randomization.randomize_participant(db.session, inv, trial, subjects[1])
    trial_id = trial.id
    # as a database migrated from before the counters: NULL (not audited as a change, since
    # the column did not exist when the trail recorded the row)
    db.session.execute(update(RandomizationState).values(cap_counts=None))
    db.session.commit()
    randomization.randomize_participant(db.session, inv, db.session.get(Trial, trial_id),
                                        subjects[2])  # fmt: skip
    counts = _state().cap_counts
    assert counts is not None and counts["trial"] == 3
