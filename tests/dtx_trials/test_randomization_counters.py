"""The caps' counters in the locked randomization state row: kept by every allocation and void,
counted once from the allocations for a row from before the counters; derived data, not in the
trail: `audit verify` recounts them from the allocations and names a counter edited behind the
app."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select, update

from dtx_trials.extensions import db
from dtx_trials.models import (
    AuditEvent,
    Participant,
    RandomizationState,
    RandomizationStratum,
    Trial,
)
from dtx_trials.models.users import Role
from dtx_trials.services import audit, randomization
from dtx_trials.services.access import Actor, Grant
from dtx_trials.services.integrity import check_integrity
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


def _randomize(trial_id: int, subjects: list[str]) -> None:
    inv = Actor(user_id=None, username="inv", printed_name="Investigator", via="cli",
                grants=(Grant(trial_id, None, Role.INVESTIGATOR),))  # fmt: skip
    for subject in subjects:
        randomization.randomize_participant(
            db.session, inv, db.session.get(Trial, trial_id), subject
        )


def _randomized(n: int) -> tuple[int, list[str]]:
    trial, subjects = _trial_with_enrolled(n)
    trial_id = trial.id
    _randomize(trial_id, subjects)
    return trial_id, subjects


def _set_counters(value: object) -> None:
    """A DBA's edit of the counters, behind the app."""
    db.session.execute(update(RandomizationState).values(cap_counts=value))
    db.session.commit()


def _allocation_problems(trial_id: int) -> list[str]:
    db.session.remove()
    report = check_integrity(db.session, trial_id)
    return [p.message for p in report.problems if p.kind == "allocation"]


def test_the_counters_are_derived_not_in_the_trail_and_verify_recounts_them(app: Flask) -> None:
    """The advance event records the counter and the trial-level state, not one counter per
    site (which grew every allocation's event with the trial's sites); the counters agree with
    a count of the active allocations, so verify passes."""
    trial_id, subjects = _randomized(4)
    events = db.session.scalars(
        select(AuditEvent).where(
            AuditEvent.entity_type == "randomization_state",
            AuditEvent.action == "randomization.advance",
        )
    ).all()
    assert len(events) == len(subjects)
    for event in events:
        assert {c["field"] for c in event.changes} == {"next_seq", "state", "updated_at"}
    counts = _state().cap_counts
    assert counts is not None and counts["trial"] == len(subjects)
    assert check_integrity(db.session, trial_id).ok


def test_aud_05_dba_lowering_a_site_counter_is_named_by_verify(app: Flask) -> None:
    """A DBA lowers a site's counter (so that the site could pass its cap): verify's recount
    names the counter, and still names it after the next allocation counted on from it."""
    trial, subjects = _trial_with_enrolled(4)
    trial_id = trial.id
    _randomize(trial_id, subjects[:3])
    site_id = db.session.scalars(
        select(Participant.site_id).where(Participant.subject_code == subjects[0])
    ).one()
    counts = _state().cap_counts
    assert counts is not None
    real = counts[f"site:{site_id}"]
    _set_counters({**counts, f"site:{site_id}": 0})
    [problem] = _allocation_problems(trial_id)
    assert f"site:{site_id} says 0 active allocations; the allocations say {real}" in problem
    _randomize(trial_id, subjects[3:])
    [problem] = _allocation_problems(trial_id)
    assert f"site:{site_id} says" in problem
    lowered = _state().cap_counts
    assert lowered is not None and lowered["trial"] == len(subjects)
    # the truth: the lowered site's counter carried the edit on
    counts = {**lowered, f"site:{site_id}": lowered[f"site:{site_id}"] + real}
    _set_counters(counts)
    assert _allocation_problems(trial_id) == []
    # the trial's counter raised (its cap reached early) and one of another mapping
    _set_counters({**counts, "trial": 99})
    [problem] = _allocation_problems(trial_id)
    assert f"trial says 99 active allocations; the allocations say {len(subjects)}" in problem
    _set_counters(["not", "counts"])
    assert any("not a mapping of counts" in p for p in _allocation_problems(trial_id))


def test_aud_05_dba_counter_edit_before_any_allocation_is_named(app: Flask) -> None:
    """Counters that claim allocations of a trial without any are named as well."""
    trial, _ = _trial_with_enrolled(1)
    trial_id = trial.id
    assert _state().cap_counts is None  # the trial's state row, made when it was loaded
    _set_counters({"trial": 5})
    assert any("trial says 5" in p for p in _allocation_problems(trial_id))
