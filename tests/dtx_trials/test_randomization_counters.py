"""The caps' counters: the trial's active allocations in the locked randomization state row, a
site's in its own row (`randomization_site_count`), kept by every allocation and void under the
trial's lock and counted from the allocations by the migration that made them; derived data,
not in the trail: `audit verify` recounts them and names a counter edited behind the app."""

from __future__ import annotations

from collections import Counter

import pytest
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import delete, insert, select, update

from dtx_trials.extensions import db
from dtx_trials.models import (
    Allocation,
    AuditEvent,
    Participant,
    RandomizationSiteCount,
    RandomizationState,
    RandomizationStratum,
    Site,
    Trial,
)
from dtx_trials.models.users import Role
from dtx_trials.services import audit, randomization
from dtx_trials.services.access import Actor, Grant
from dtx_trials.services.errors import Conflict
from dtx_trials.services.integrity import check_integrity
from tests.dtx_trials.trial_flow import mci_with_enrolled
from tests.helpers import make_user

# the revision before the counters' rows (a JSON of every site's counter in the state row)
BEFORE_SITE_ROWS = "7b3e5a1c9d42"


def _trial_with_enrolled(n: int, n_sites: int | None = None) -> tuple[Trial, list[str]]:
    trial_id, subjects = mci_with_enrolled(n, n_sites)
    trial = db.session.get(Trial, trial_id)
    assert trial is not None
    return trial, subjects


def _stratum_active(key: str) -> int:
    row = db.session.scalars(
        select(RandomizationStratum).where(RandomizationStratum.stratum_key == key)
    ).one()
    return sum(row.state["counts"])


def _trial_active() -> int:
    db.session.remove()
    return db.session.scalars(select(RandomizationState.active_allocations)).one()


def _site_rows() -> dict[int, int]:
    """The sites' counters as stored: {site id: active allocations}."""
    db.session.remove()
    rows = db.session.execute(
        select(RandomizationSiteCount.site_id, RandomizationSiteCount.active_allocations)
    )
    return {site_id: n for site_id, n in rows}


def _active_by_site() -> Counter[int]:
    """The active allocations counted by the participants' sites."""
    return Counter(
        db.session.scalars(
            select(Participant.site_id)
            .join(Allocation, Allocation.participant_id == Participant.id)
            .where(Allocation.status == "allocated")
        )
    )


def _site_of(subject: str) -> int:
    return db.session.scalars(
        select(Participant.site_id).where(Participant.subject_code == subject)
    ).one()


def _randomize(trial_id: int, subjects: list[str]) -> None:
    inv = Actor(user_id=None, username="inv", printed_name="Investigator", via="cli",
                grants=(Grant(trial_id, None, Role.INVESTIGATOR),))  # fmt: skip
    for subject in subjects:
        randomization.randomize_participant(
            db.session, inv, db.session.get(Trial, trial_id), subject
        )


def _void(trial_id: int, subject: str) -> None:
    """Void the subject's allocation ("randomized in error") as a sponsor admin made for it."""
    trial = db.session.get(Trial, trial_id)
    account = make_user("sponsor", role="sponsor_admin", trial=trial)
    sponsor = Actor(user_id=account.user.id, username="sponsor", printed_name="Sponsor",
                    via="cli", grants=(Grant(trial_id, None, Role.SPONSOR_ADMIN),))  # fmt: skip
    randomization.void_allocation(
        db.session, sponsor, db.session.get(Trial, trial_id), subject,
        password=account.password, reason="wrong participant",
    )  # fmt: skip


def _set_site(site_id: int, value: object) -> None:
    """A DBA's edit of a site's counter, behind the app."""
    db.session.execute(
        update(RandomizationSiteCount)
        .where(RandomizationSiteCount.site_id == site_id)
        .values(active_allocations=value)
    )
    db.session.commit()


def _set_trial(value: object) -> None:
    db.session.execute(update(RandomizationState).values(active_allocations=value))
    db.session.commit()


def _allocation_problems(trial_id: int) -> list[str]:
    db.session.remove()
    report = check_integrity(db.session, trial_id)
    return [p.message for p in report.problems if p.kind == "allocation"]


def test_counters_follow_allocations_and_voids_site_by_site(app: Flask) -> None:
    """Six allocations over three sites: the trial's counter and one row per site allocated
    at, equal to the active allocations there; a void takes one off the trial, its site and its
    stratum, and no other site's row changes."""
    trial, subjects = _trial_with_enrolled(6, n_sites=3)
    trial_id = trial.id
    _randomize(trial_id, subjects)
    assert _trial_active() == 6
    sites = _site_rows()
    assert sites == dict(_active_by_site()) and sorted(sites.values()) == [2, 2, 2]
    voided_site = _site_of(subjects[0])
    key = db.session.scalars(
        select(Allocation.stratum_key)
        .join(Participant, Participant.id == Allocation.participant_id)
        .where(Participant.subject_code == subjects[0])
    ).one()
    active = _stratum_active(key)
    _void(trial_id, subjects[0])
    assert _trial_active() == 5
    assert _site_rows() == {**sites, voided_site: 1}
    assert _stratum_active(key) == active - 1
    assert audit.verify(db.session).ok


def test_a_sites_cap_counts_its_own_row(app: Flask) -> None:
    """The per-site cap reads the site's row: a site at its cap refuses (409, nothing
    written), another site still allocates."""
    trial, subjects = _trial_with_enrolled(4, n_sites=2)
    trial_id = trial.id
    _randomize(trial_id, subjects[:2])  # one at each site
    full = _site_of(subjects[2])
    _set_site(full, 80)  # as if the site had allocated its cap of 80 (the protocol's)
    refused = _site_rows()
    with pytest.raises(Conflict, match="randomization cap of 80 reached for site"):
        _randomize(trial_id, [subjects[2]])
    assert _site_rows() == refused and _trial_active() == 2
    _randomize(trial_id, [subjects[3]])  # the other site
    assert _trial_active() == 3
    assert _site_rows()[_site_of(subjects[3])] == 2


def test_the_counters_are_derived_not_in_the_trail_and_verify_recounts_them(app: Flask) -> None:
    """The advance event records the counter and the trial-level state, not the caps'
    counters; no event is written for a site's counter; the counters agree with a count of
    the active allocations, so verify passes."""
    trial, subjects = _trial_with_enrolled(4)
    trial_id = trial.id
    _randomize(trial_id, subjects)
    events = db.session.scalars(
        select(AuditEvent).where(
            AuditEvent.entity_type == "randomization_state",
            AuditEvent.action == "randomization.advance",
        )
    ).all()
    assert len(events) == len(subjects)
    for event in events:
        assert {c["field"] for c in event.changes} == {"next_seq", "state", "updated_at"}
    assert not db.session.scalars(
        select(AuditEvent.id).where(AuditEvent.entity_type == "randomization_site_count")
    ).all()
    assert _trial_active() == len(subjects)
    assert check_integrity(db.session, trial_id).ok


def test_aud_05_dba_lowering_a_site_counter_is_named_by_verify(app: Flask) -> None:
    """A DBA lowers a site's counter (so that the site could pass its cap): verify's recount
    names the counter, and still names it after the next allocation there counted on from it.
    Raising the trial's, deleting a site's row, adding a row for a site without allocations,
    writing text into the counter (SQLite stores it): each named; the truth restored: none."""
    trial, subjects = _trial_with_enrolled(4, n_sites=1)
    trial_id = trial.id
    _randomize(trial_id, subjects[:3])
    site_id = _site_of(subjects[0])
    _set_site(site_id, 0)
    [problem] = _allocation_problems(trial_id)
    assert f"site:{site_id} says 0 active allocations; the allocations say 3" in problem
    _randomize(trial_id, subjects[3:])
    [problem] = _allocation_problems(trial_id)
    assert f"site:{site_id} says 1 active allocations; the allocations say 4" in problem
    assert _trial_active() == len(subjects)
    _set_site(site_id, 4)  # the truth
    assert _allocation_problems(trial_id) == []
    _set_trial(99)  # the trial's cap reached early
    [problem] = _allocation_problems(trial_id)
    assert f"trial says 99 active allocations; the allocations say {len(subjects)}" in problem
    _set_trial(len(subjects))
    db.session.execute(delete(RandomizationSiteCount))
    db.session.commit()
    [problem] = _allocation_problems(trial_id)
    assert f"site:{site_id} says 0 active allocations; the allocations say 4" in problem
    other = db.session.scalars(
        select(Site.id).where(Site.trial_id == trial_id, Site.id != site_id)
    ).first()
    db.session.execute(insert(RandomizationSiteCount).values(
        trial_id=trial_id, site_id=site_id, active_allocations=4))  # fmt: skip
    db.session.execute(insert(RandomizationSiteCount).values(
        trial_id=trial_id, site_id=other, active_allocations=2))  # fmt: skip
    db.session.commit()
    [problem] = _allocation_problems(trial_id)
    assert f"site:{other} says 2 active allocations; the allocations say 0" in problem
    db.session.execute(
        delete(RandomizationSiteCount).where(RandomizationSiteCount.site_id == other)
    )
    db.session.commit()
    assert _allocation_problems(trial_id) == []
    if db.engine.dialect.name == "sqlite":  # PostgreSQL refuses text in an integer column
        _set_site(site_id, "four")
        [problem] = _allocation_problems(trial_id)
        assert f"site:{site_id} says 'four' active allocations" in problem


def test_aud_05_dba_counter_edit_before_any_allocation_is_named(app: Flask) -> None:
    """Counters that claim allocations of a trial without any are named as well."""
    trial, _ = _trial_with_enrolled(1)
    trial_id = trial.id
    assert _trial_active() == 0 and _site_rows() == {}  # the state row made when it was loaded
    _set_trial(5)
    assert any("trial says 5" in p for p in _allocation_problems(trial_id))


def test_the_migration_counts_the_counters_from_the_allocations(app: Flask) -> None:
    """A database from before the site rows (its state row's JSON of counters is left NULL by
    the downgrade, as the code of that revision reads: not counted yet) upgraded: the trial's
    counter and a row per site are the active allocations, a voided one not counted."""
    trial, subjects = _trial_with_enrolled(5, n_sites=2)
    trial_id = trial.id
    _randomize(trial_id, subjects)
    _void(trial_id, subjects[0])
    expected = dict(_active_by_site())
    db.session.remove()
    downgrade(revision=BEFORE_SITE_ROWS)
    upgrade()
    assert _trial_active() == 4
    assert _site_rows() == expected and sum(expected.values()) == 4
    assert check_integrity(db.session, trial_id).ok
