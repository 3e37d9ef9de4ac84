"""A loaded example trial with staff at two sites, and API helpers to move participants along."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import Site, Trial
from dtx_trials.models.users import Role
from dtx_trials.services import protocols
from dtx_trials.services.access import Actor, Grant
from dtx_trials.services.simulation import insert_enrolled_mci_participants
from tests.helpers import CLI, Account, login, make_user

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"
MCI_CODE = "MCI-COGTRAIN-01"


@dataclass
class TrialStaff:
    trial: Trial
    sites: dict[str, Site]
    accounts: dict[str, Account]

    def __getitem__(self, name: str) -> Account:
        return self.accounts[name]


def investigator_actor(trial_id: int) -> Actor:
    """A service-level caller with the investigator's role at every site of the trial (no app
    session to name in the trail)."""
    return Actor(user_id=None, username="inv", printed_name="Investigator", via="cli",
                 grants=(Grant(trial_id, None, Role.INVESTIGATOR),))  # fmt: skip


def enrolled_at_sites(trial: Trial, n: int, n_sites: int | None = None) -> list[str]:
    """Enrol n MCI participants with screening data (audited; the fast path of the load
    tests) at the trial's first `n_sites` sites by code (all by default); their subjects."""
    sites = list(
        db.session.scalars(select(Site).where(Site.trial_id == trial.id).order_by(Site.code))
    )
    return insert_enrolled_mci_participants(db.session, CLI, trial, sites[:n_sites], n)


def mci_with_enrolled(n: int, n_sites: int | None = None) -> tuple[int, list[str]]:
    """Load the MCI example trial and enrol n participants (`enrolled_at_sites`); return the
    trial's id and their subjects."""
    protocols.load_library_file(db.session, CLI, LIBRARY / "cognitive_impairment.yaml")
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    return trial.id, enrolled_at_sites(trial, n, n_sites)


def library_code(filename: str) -> str:
    """The trial code of an example protocol of the library."""
    text = (LIBRARY / filename).read_text(encoding="utf-8")
    return text.split("\ncode: ", 1)[1].split("\n", 1)[0].strip()


def load_trial(client: FlaskClient, filename: str = "cognitive_impairment.yaml") -> TrialStaff:
    protocols.load_library_file(db.session, CLI, LIBRARY / filename)
    trial = db.session.scalars(select(Trial).where(Trial.code == library_code(filename))).one()
    return trial_staff(client, trial)


def trial_staff(client: FlaskClient, trial: Trial, *, emails: bool = False) -> TrialStaff:
    """Sign in one account per staff role (site-bound roles at the first two sites); with
    `emails`, each account has the address `<name>@example.org`."""
    sites = {
        s.code: s
        for s in db.session.scalars(
            select(Site).where(Site.trial_id == trial.id).order_by(Site.code)
        )
    }
    first, second = list(sites.values())[:2]
    plan = [
        ("sponsor", "sponsor_admin", None),
        ("inv", "investigator", first),
        ("coord", "coordinator", first),
        ("oa", "outcome_assessor", first),
        ("inv2", "investigator", second),
        ("monitor", "monitor", None),
        ("dm", "data_manager", None),
        ("stat", "statistician", None),
        ("unblinded", "unblinded_statistician", None),
        ("auditor", "auditor", None),
    ]
    accounts = {
        name: login(client, make_user(name, role=role, trial=trial, site=site,
                                      email=f"{name}@example.org" if emails else None))
        for name, role, site in plan
    }
    return TrialStaff(trial, sites, accounts)


MCI_SCREENING = {
    "screening_on": datetime.date.today().isoformat(),
    "age": 72,
    "sex": "2",
    "education_years": 9,
    "gds_total": 4,
    "dementia_dx": "0",
    "study_partner": "1",
    "has_device": "1",
    "achei_use": "0",
}


def moca(raw: int, edu_point: bool = True) -> dict[str, Any]:
    """MoCA inputs; the education-adjusted total is calculated by the server."""
    return {"moca_raw": raw, "moca_edu_point": "1" if edu_point else "0"}


def api(
    client: FlaskClient,
    who: Account,
    method: str,
    path: str,
    json: Any = None,
    expect: int | None = None,
) -> Any:
    response = client.open(
        f"/api/v1/trials/{MCI_CODE}{path}" if path.startswith("/") else path,
        method=method,
        json=json,
        headers=who.headers,
    )
    if expect is not None:
        assert response.status_code == expect, (response.status_code, response.get_json())
    return response.get_json()


def consented_mci_participant(
    client: FlaskClient,
    staff: TrialStaff,
    site_account: str = "inv",
    identifiers: dict[str, str] | None = None,
) -> str:
    """Screen a participant (with identifiers) and record both consents; return subject."""
    who = staff[site_account]
    site = next(iter(staff.sites)) if site_account in ("inv", "coord") else list(staff.sites)[1]
    identity = identifiers or {"full_name": "Li Lei", "phone": "13900001111"}
    subject = api(
        client, who, "POST", "/participants", {"site": site, "identifiers": identity}, 201
    )["subject_code"]
    for document, role in (
        ("main_icf", "participant"),
        ("partner_icf", "legally_authorized_representative"),
    ):
        api(
            client,
            who,
            "POST",
            f"/participants/{subject}/consents",
            {"document_id": document, "version": "1.0", "language": "zh-CN", "signer_role": role},
            201,
        )
    return subject


def enrolled_mci_participant(
    client: FlaskClient,
    staff: TrialStaff,
    raw_moca: int = 20,
    site_account: str = "inv",
    identifiers: dict[str, str] | None = None,
) -> str:
    """Screen, consent, submit screening forms, assess eligibility and enroll; return subject."""
    who = staff[site_account]
    subject = consented_mci_participant(client, staff, site_account, identifiers)
    api(
        client,
        who,
        "PUT",
        f"/participants/{subject}/visits/screening/forms/screening",
        {"values": MCI_SCREENING, "submit": True},
        200,
    )
    api(
        client,
        who,
        "PUT",
        f"/participants/{subject}/visits/screening/forms/moca",
        {"values": moca(raw_moca), "submit": True},
        200,
    )
    result = api(client, who, "POST", f"/participants/{subject}/eligibility", None, 200)
    assert result["eligible"], result
    api(client, who, "POST", f"/participants/{subject}/enrollment", None, 200)
    return subject
