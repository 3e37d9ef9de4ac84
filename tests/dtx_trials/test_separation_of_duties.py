"""Issue #14, tried as the insiders would: a sponsor administrator granting itself roles, two
administrators and the two-person rule, accounts on both sides of the blind, and the
protocol's ``blinded_roles`` deciding who sees arms (an outcome assessor included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, Membership, Participant, Site, Trial
from dtx_trials.services import notifications, protocols
from tests.dtx_trials.analysis_data import populated_trial
from tests.dtx_trials.trial_flow import LIBRARY, MCI_CODE, TrialStaff, api, load_trial
from tests.helpers import CLI, Account, login, make_user
from tests.web.web_helpers import PageClient

MCI = f"/api/v1/trials/{MCI_CODE}"


def grant(
    client: FlaskClient, who: Account, user: Account, role: str, site: str | None = None
) -> Any:
    return client.post(
        f"{MCI}/memberships",
        json={"user_id": user.user.id, "role": role, "site": site},
        headers=who.headers,
    )


@pytest.fixture
def staff(client: FlaskClient) -> TrialStaff:
    return load_trial(client)


def second_admin(client: FlaskClient, staff: TrialStaff) -> Account:
    return login(client, make_user("admin2", role="sponsor_admin", trial=staff.trial))


def actions(entity_id: int) -> list[str]:
    db.session.rollback()
    return list(
        db.session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.entity_type == "membership", AuditEvent.entity_id == entity_id)
            .order_by(AuditEvent.seq)
        )
    )


def test_nobody_grants_a_role_to_themselves(client: FlaskClient, staff: TrialStaff) -> None:
    sponsor = staff["sponsor"]
    for role, site in (
        ("unblinded_statistician", None),
        ("investigator", "BJ01"),
        ("auditor", None),
    ):
        response = grant(client, sponsor, sponsor, role, site)
        assert response.status_code == 403, response.get_json()
        assert "themselves" in response.get_json()["message"]
    assert client.get(f"{MCI}/allocations", headers=sponsor.headers).status_code == 403
    roles = db.session.scalars(
        select(Membership.role).where(Membership.user_id == sponsor.user.id)
    ).all()
    assert roles == ["sponsor_admin"]


def test_an_unblinded_grant_waits_for_a_second_administrator(
    client: FlaskClient, staff: TrialStaff
) -> None:
    sponsor, other = staff["sponsor"], second_admin(client, staff)
    newcomer = login(client, make_user("newcomer"))
    asked = grant(client, sponsor, newcomer, "unblinded_statistician")
    assert asked.status_code == 201
    body = asked.get_json()
    assert body["is_pending_approval"] and not body["is_active"]
    newcomer_headers = login(client, newcomer).headers
    assert client.get(f"{MCI}/allocations", headers=newcomer_headers).status_code == 404
    approve = f"{MCI}/memberships/{body['id']}/approval"
    # the administrator who asked cannot approve; neither can the grantee
    assert client.post(approve, headers=sponsor.headers).status_code == 403
    assert client.post(approve, headers=newcomer.headers).status_code == 404  # no role yet
    approved = client.post(approve, headers=other.headers)
    assert approved.status_code == 200 and approved.get_json()["is_active"]
    assert approved.get_json()["approved_by_id"] == other.user.id
    assert client.get(f"{MCI}/allocations", headers=newcomer_headers).status_code == 200
    assert actions(body["id"]) == ["membership.request", "membership.approve"]
    assert client.post(approve, headers=other.headers).status_code == 409  # nothing pending


def test_an_administrator_never_approves_what_an_administrator_they_appointed_asked(
    client: FlaskClient, staff: TrialStaff
) -> None:
    """Admin A appoints P (an account A may control) as administrator, signs in as P, asks
    for an unblinded role for S and approves it as A: refused, and still after A revokes P's
    administrator role (before: approved, one person made S unblinded). An administrator
    appointed apart from A approves."""
    sponsor = staff["sponsor"]
    puppet = login(client, make_user("puppet"))
    made = grant(client, sponsor, puppet, "sponsor_admin")
    assert made.status_code == 201 and made.get_json()["is_active"]
    sock = login(client, make_user("sock"))
    asked = grant(client, puppet, sock, "unblinded_statistician")
    assert asked.status_code == 201 and asked.get_json()["is_pending_approval"]
    approve = f"{MCI}/memberships/{asked.get_json()['id']}/approval"
    refused = client.post(approve, headers=sponsor.headers)
    assert refused.status_code == 403 and "appointed" in refused.get_json()["message"]
    revoked = client.delete(f"{MCI}/memberships/{made.get_json()['id']}",
                            headers=sponsor.headers)
    assert revoked.status_code in (200, 204), revoked.get_json()
    assert client.post(approve, headers=sponsor.headers).status_code == 403
    assert client.get(f"{MCI}/allocations", headers=sock.headers).status_code == 404
    other = second_admin(client, staff)  # appointed by the operator, not by A
    assert client.post(approve, headers=other.headers).status_code == 200


def test_an_unblinded_grant_before_any_protocol_waits_for_a_second_administrator(
    client: FlaskClient, staff: TrialStaff
) -> None:
    """A new trial has no protocol yet, so it does not know whom it will blind: an unblinded
    role granted then waits for approval as in a blinded trial (before: the trial counted as
    open label, the grant was active at once and stayed so when the double-blind protocol was
    activated)."""
    created = client.post("/api/v1/trials", json={"code": "NEW-1", "title": "New trial"},
                          headers=staff["sponsor"].headers)
    assert created.status_code == 201, created.get_json()
    newcomer = login(client, make_user("newcomer"))
    asked = client.post("/api/v1/trials/NEW-1/memberships",
                        json={"user_id": newcomer.user.id, "role": "unblinded_statistician"},
                        headers=staff["sponsor"].headers)
    assert asked.status_code == 201, asked.get_json()
    assert asked.get_json()["is_pending_approval"] and not asked.get_json()["is_active"]


def test_an_unblinded_grant_made_while_open_label_waits_when_the_trial_is_blinded(
    client: FlaskClient, tmp_path: Path
) -> None:
    """One administrator activates an open-label version, grants an unblinded role (live at
    once: nobody is blinded) and activates a double-blind version: the grant now waits for a
    second administrator (before: it stayed live)."""
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    blinded = ("  level: double\n  blinded_roles: [participant, investigator, coordinator, "
               "outcome_assessor, statistician, sponsor]\n")
    assert blinded in text
    open_label = tmp_path / "mci-open.yaml"
    notify = "  unblinding_notify: [sponsor_admin, monitor, investigator]\n"
    assert notify in text
    open_label.write_text(
        text.replace(blinded, "  level: open\n  blinded_roles: []\n").replace(notify, ""),
        encoding="utf-8")
    protocols.load_library_file(db.session, CLI, open_label)
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    sponsor = login(client, make_user("sponsor", role="sponsor_admin", trial=trial))
    newcomer = login(client, make_user("newcomer"))
    made = grant(client, sponsor, newcomer, "unblinded_statistician")
    assert made.status_code == 201 and made.get_json()["is_active"]
    versions = f"{MCI}/protocol-versions"
    uploaded = client.post(versions, data=text.encode("utf-8"),
                           headers={**sponsor.headers, "Content-Type": "application/yaml"})
    assert uploaded.status_code == 201, uploaded.get_json()
    activate = f"{versions}/{uploaded.get_json()['version_no']}/activate"
    activated = client.post(activate, json={}, headers=sponsor.headers)
    if activated.status_code == 409:  # the blinding change, accepted by id
        accepted = activated.get_json()["breaking_ids"]
        activated = client.post(activate, json={"accepted_migrations": accepted},
                                headers=sponsor.headers)
    assert activated.status_code == 200, activated.get_json()
    db.session.expire_all()
    membership = db.session.get(Membership, made.get_json()["id"])
    assert membership is not None and not membership.is_active and membership.pending_since
    assert actions(membership.id) == ["membership.grant", "membership.request"]
    assert client.get(f"{MCI}/allocations", headers=newcomer.headers).status_code == 404


def test_trial_wide_roles_take_no_site_and_a_sites_monitor_hears_of_its_site_only(
    client: FlaskClient, staff: TrialStaff
) -> None:
    """A data manager, auditor, statistician or administrator "of one site" still read every
    site's exports and trail: such a grant is refused (before: taken). A monitor of one site
    is told of that site's events only (before: of every site's unblinding)."""
    newcomer = login(client, make_user("newcomer"))
    first, second = list(staff.sites)[:2]
    for role in ("data_manager", "auditor", "statistician", "unblinded_statistician",
                 "sponsor_admin"):
        refused = grant(client, staff["sponsor"], newcomer, role, first)
        assert refused.status_code == 422 and "site" in refused.get_json()["errors"], role
    assert db.session.scalars(
        select(Membership).where(Membership.user_id == newcomer.user.id)).all() == []
    assert grant(client, staff["sponsor"], newcomer, "monitor", second).status_code == 201
    at_first = {user.username for user, _ in notifications.recipients(
        db.session, staff.trial.id, ["monitor"], staff.sites[first].id)}
    at_second = {user.username for user, _ in notifications.recipients(
        db.session, staff.trial.id, ["monitor"], staff.sites[second].id)}
    assert "newcomer" not in at_first and "monitor" in at_first
    assert {"newcomer", "monitor"} <= at_second


def test_two_administrators_still_cannot_make_one_of_them_unblinded(
    client: FlaskClient, staff: TrialStaff
) -> None:
    """Admin B asks for itself through admin A's hands: A asks, B may not approve its own."""
    sponsor, other = staff["sponsor"], second_admin(client, staff)
    asked = grant(client, sponsor, other, "unblinded_statistician")
    # B holds a sponsor-side blinded role: unblinded and blinded roles never mix
    assert asked.status_code == 409
    assert "blinded one" in asked.get_json()["message"]


def test_an_account_never_holds_blinded_and_unblinded_roles(
    client: FlaskClient, staff: TrialStaff
) -> None:
    response = grant(client, staff["sponsor"], staff["stat"], "unblinded_statistician")
    assert response.status_code == 409
    assert response.get_json()["conflicting_role"] == "statistician"
    response = grant(client, staff["sponsor"], staff["unblinded"], "statistician")
    assert response.status_code == 409


def test_an_account_never_works_on_both_sides(client: FlaskClient, staff: TrialStaff) -> None:
    """A second sponsor administrator made investigator at a site could unblind as one."""
    other = second_admin(client, staff)
    response = grant(client, staff["sponsor"], other, "investigator", "BJ01")
    assert response.status_code == 409
    assert "both the sponsor's side and a site's side" in response.get_json()["message"]
    response = grant(client, staff["sponsor"], staff["monitor"], "coordinator", "BJ01")
    assert response.status_code == 409


def test_changing_sides_of_the_blind_later_needs_a_second_person(
    client: FlaskClient, staff: TrialStaff
) -> None:
    """A blinded statistician whose role was revoked may become the unblinded one, but not on
    one administrator's word."""
    stat = staff["stat"]
    membership = db.session.scalars(
        select(Membership).where(Membership.user_id == stat.user.id)
    ).one()
    revoked = client.delete(
        f"{MCI}/memberships/{membership.id}", headers=staff["sponsor"].headers
    )
    assert revoked.status_code == 204
    asked = grant(client, staff["sponsor"], stat, "unblinded_statistician")
    assert asked.status_code == 201 and asked.get_json()["is_pending_approval"]


def test_the_command_line_grants_at_once(client: FlaskClient, staff: TrialStaff) -> None:
    """`dtx users grant` is run by the operator of the server: no second person to ask."""
    from dtx_trials.services import accounts

    newcomer = make_user("newcomer")
    made = accounts.grant_role(
        db.session, CLI, trial_id=staff.trial.id, user_id=newcomer.user.id,
        role="unblinded_statistician",
    )
    assert made.is_active and made.pending_since is None
    assert actions(made.id) == ["membership.grant"]


def test_pages_show_and_approve_pending_grants(
    app: Flask, client: FlaskClient, staff: TrialStaff
) -> None:
    other = second_admin(client, staff)
    newcomer = make_user("newcomer")
    body = grant(client, staff["sponsor"], newcomer, "unblinded_statistician").get_json()
    own = PageClient(app, staff["sponsor"])
    page = own.text(f"/trials/{MCI_CODE}?tab=accounts")
    assert "Waiting for a second administrator" in page
    assert f"/memberships/{body['id']}/approve" not in page  # the one who asked sees no button
    approver = PageClient(app, other)
    assert f"/memberships/{body['id']}/approve" in approver.text(f"/trials/{MCI_CODE}?tab=accounts")
    done = approver.post(f"/trials/{MCI_CODE}/memberships/{body['id']}/approve")
    assert done.status_code == 302
    assert db.session.get(Membership, body["id"]).is_active  # type: ignore[union-attr]


def test_activation_refuses_a_blinding_that_splits_an_account(
    client: FlaskClient, tmp_path: Path
) -> None:
    """Under the myopia protocol (assessor-blinded) investigators know the arm and outcome
    assessors do not: an account holding both cannot survive an amendment to it."""
    text = (LIBRARY / "pediatric_myopia.yaml").read_text(encoding="utf-8")
    path = tmp_path / "open.yaml"
    path.write_text(
        text.replace("level: single", "level: open").replace(
            "  blinded_roles: [outcome_assessor, statistician, sponsor]\n", ""
        ),
        encoding="utf-8",
    )
    protocols.load_library_file(db.session, CLI, path)
    trial = db.session.scalars(select(Trial).where(Trial.code == "MYOPIA-DTX-01")).one()
    site = db.session.scalars(select(Site).where(Site.trial_id == trial.id)).first()
    assert site is not None
    both = make_user("both", role="investigator", trial=trial, site=site)
    make_user("other", role="sponsor_admin", trial=trial)
    from dtx_trials.services import accounts

    accounts.grant_role(  # open label: both roles know the arm, so the grant is allowed
        db.session, CLI, trial_id=trial.id, user_id=both.user.id, role="outcome_assessor",
        site_id=site.id,
    )
    with pytest.raises(Exception, match="would hold both a role that knows"):
        protocols.load_library_file(db.session, CLI, LIBRARY / "pediatric_myopia.yaml")


# --- blinding declared by the protocol ----------------------------------------------------


def myopia_with_assessor_forms(tmp_path: Path) -> Trial:
    text = (LIBRARY / "pediatric_myopia.yaml").read_text(encoding="utf-8")
    marked = text.replace(
        "  - id: refraction\n    title:",
        "  - id: refraction\n    respondent: outcome_assessor\n    title:",
    )
    assert marked != text
    path = tmp_path / "pediatric_myopia.yaml"
    path.write_text(marked, encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    return db.session.scalars(select(Trial).where(Trial.code == "MYOPIA-DTX-01")).one()


def test_outcome_assessors_enter_their_forms_and_only_those(
    client: FlaskClient, tmp_path: Path
) -> None:
    trial = myopia_with_assessor_forms(tmp_path)
    site = db.session.scalars(select(Site).where(Site.trial_id == trial.id)).first()
    assert site is not None
    inv = login(client, make_user("inv", role="investigator", trial=trial, site=site))
    oa = login(client, make_user("oa", role="outcome_assessor", trial=trial, site=site))
    base = f"/api/v1/trials/{trial.code}"
    subject = client.post(
        f"{base}/participants",
        json={"site": site.code, "identifiers": {"full_name": "Chen Xiao"}},
        headers=inv.headers,
    ).get_json()["subject_code"]
    for document, signer in (("guardian_icf", "guardian"), ("child_assent", "participant")):
        consent = {"document_id": document, "version": "1.0", "language": "zh-CN",
                   "signer_role": signer}
        assert client.post(f"{base}/participants/{subject}/consents", json=consent,
                           headers=inv.headers).status_code == 201
    refraction = f"{base}/participants/{subject}/visits/screening/forms/refraction"
    by_inv = client.put(refraction, json={"values": {"cyclo_done": "1"}}, headers=inv.headers)
    assert by_inv.status_code == 403 and "outcome assessor" in by_inv.get_json()["message"]
    by_oa = client.put(refraction, json={"values": {"cyclo_done": "1"}}, headers=oa.headers)
    assert by_oa.status_code == 200, by_oa.get_json()
    screening = f"{base}/participants/{subject}/visits/screening/forms/screening"
    assert client.put(screening, json={"values": {}}, headers=oa.headers).status_code == 403
    # the assessor works on pseudonymous data: no identifiers
    assert client.get(f"{base}/participants/{subject}", headers=oa.headers).status_code == 200
    identifiers = client.get(f"{base}/participants/{subject}/identifiers", headers=oa.headers)
    assert identifiers.status_code == 403


def allocation_keys(client: FlaskClient, code: str, subject: str, who: Account) -> set[str]:
    response = client.get(
        f"/api/v1/trials/{code}/participants/{subject}/randomization", headers=who.headers
    )
    assert response.status_code == 200, response.get_json()
    return set(response.get_json())


def test_blinded_roles_decide_who_sees_the_arm(app: Flask, client: FlaskClient) -> None:
    """T2D is assessor-blinded (outcome_assessor, statistician, sponsor): its site staff see
    the arm, in the API and on the page; its assessors and sponsor staff never."""
    trial = populated_trial("type2_diabetes.yaml", 8)
    subject, site_id = db.session.execute(
        select(Participant.subject_code, Participant.site_id).where(
            Participant.trial_id == trial.id, Participant.randomized_at.is_not(None)
        )
    ).first()  # type: ignore[misc]
    site = db.session.get(Site, site_id)
    assert site is not None
    seeing = {
        name: login(client, make_user(name, role=role, trial=trial, site=at))
        for name, role, at in (
            ("inv", "investigator", site),
            ("coord", "coordinator", site),
            ("oa", "outcome_assessor", site),
            ("monitor", "monitor", None),
        )
    }
    assert "arm_code" in allocation_keys(client, trial.code, subject, seeing["inv"])
    assert "arm_code" in allocation_keys(client, trial.code, subject, seeing["coord"])
    assert "arm_code" not in allocation_keys(client, trial.code, subject, seeing["oa"])
    assert "arm_code" not in allocation_keys(client, trial.code, subject, seeing["monitor"])
    page = PageClient(app, seeing["inv"]).text(f"/trials/{trial.code}/participants/{subject}")
    assert 'id="arm"' in page
    blind = PageClient(app, seeing["oa"]).text(f"/trials/{trial.code}/participants/{subject}")
    assert 'id="arm"' not in blind


def test_double_blind_keeps_site_staff_blind(client: FlaskClient, staff: TrialStaff) -> None:
    from tests.dtx_trials.trial_flow import enrolled_mci_participant

    subject = enrolled_mci_participant(client, staff)
    receipt = api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    assert "arm_code" not in receipt
    for who in ("inv", "coord", "monitor", "sponsor", "auditor"):
        assert "arm_code" not in allocation_keys(client, MCI_CODE, subject, staff[who])
    listed = client.get(f"{MCI}/allocations", headers=staff["unblinded"].headers).get_json()
    assert [a["subject_code"] for a in listed if "arm_code" in a] == [subject]
