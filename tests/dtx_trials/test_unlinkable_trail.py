"""Trail entries for arms and identifiers are unlinkable (issue #14, item 2): every sealed value
carries its own salt, so an auditor who groups equal values across allocations learns nothing,
while `dtx audit verify` still checks each value against the row. Seals written before (``s1``,
unsalted) still verify, and `dtx keys rotate` reseals them."""

from __future__ import annotations

from collections import Counter

from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials import crypto
from dtx_trials.extensions import db
from dtx_trials.models import Allocation, AuditEvent
from dtx_trials.services import audit
from tests.dtx_trials.trial_flow import api, enrolled_mci_participant, load_trial
from tests.helpers import CLI


def test_allocations_to_one_arm_leave_unrelated_seals(client: FlaskClient) -> None:
    staff = load_trial(client)
    subjects = [enrolled_mci_participant(client, staff) for _ in range(6)]
    for subject in subjects:
        api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    arms = Counter(db.session.scalars(select(Allocation.arm_code)))
    assert max(arms.values()) >= 2  # some arm holds several allocations: the grouping attack
    # the auditor reads the trail as the API serves it and groups equal values
    page = api(client, staff["auditor"], "GET",
               "/audit?entity_type=allocation&per_page=500", None, 200)
    sealed_arms = [
        c["new"] for e in page["items"] for c in e["changes"] if c["field"] == "arm_code"
    ]
    assert len(sealed_arms) == len(subjects)
    assert len(set(sealed_arms)) == len(sealed_arms)  # no two alike: nothing to group
    assert all(s.startswith(f"s2:{crypto.cipher().current.kid}:") for s in sealed_arms)
    for field in ("arm_code",):
        # an identifier-like value sealed twice differs too (phone numbers, names, codes)
        one, two = (crypto.cipher().seal("same", f"allocation.{field}") for _ in range(2))
        assert one != two
    # and still each seal verifies against its own row
    assert audit.verify(db.session).ok
    allocation = db.session.scalars(select(Allocation)).first()
    assert allocation is not None
    event = db.session.scalars(
        select(AuditEvent).where(
            AuditEvent.entity_type == "allocation", AuditEvent.entity_id == allocation.id
        )
    ).first()
    assert event is not None
    recorded = next(c["new"] for c in event.changes if c["field"] == "arm_code")
    ring = crypto.cipher()
    assert ring.seal_matches(recorded, allocation.arm_code, "allocation.arm_code")
    other = next(a for a in arms if a != allocation.arm_code)
    assert not ring.seal_matches(recorded, other, "allocation.arm_code")


def test_an_unchanged_sealed_column_is_not_recorded_as_changed(client: FlaskClient) -> None:
    """The salt makes every seal a new string; updates still record only what changed."""
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    allocation = db.session.scalars(select(Allocation)).one()
    before = audit.snapshot(allocation)
    assert audit.record_update(db.session, CLI, "allocation.touch", allocation, before) is None
    db.session.rollback()


def test_seals_written_before_the_salt_still_verify() -> None:
    ring = crypto.cipher()
    key = ring.current
    old = f"s1:{key.kid}:{key.mac_hex('cogtrain', 'allocation.arm_code')}"
    assert ring.seal_matches(old, "cogtrain", "allocation.arm_code")
    assert not ring.seal_matches(old, "sham", "allocation.arm_code")
    assert ring.sealed_key_id(old) is None  # not the current scheme: `dtx keys rotate` reseals it
    new = ring.seal("cogtrain", "allocation.arm_code")
    assert ring.sealed_key_id(new) == key.kid
    # a salt moved from another seal, or a truncated seal, does not verify
    parts = new.split(":")
    assert not ring.seal_matches(":".join([*parts[:3], "0" * 64]), "cogtrain",
                                 "allocation.arm_code")
    assert not ring.seal_matches(":".join([*parts[:2], *parts[3:]]), "cogtrain",
                                 "allocation.arm_code")
