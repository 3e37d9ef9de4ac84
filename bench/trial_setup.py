"""Prepare a migrated PostgreSQL database with the MCI example trial and many enrolled
participants (screening MoCA submitted, every row audited), and log in over HTTP."""

from __future__ import annotations

import dataclasses
import http.client
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.harness import FIELD_KEY
from dtx_trials import create_app
from dtx_trials.extensions import db
from dtx_trials.models import Site, Trial
from dtx_trials.models.users import User
from dtx_trials.services import accounts, protocols, trials
from dtx_trials.services.access import command_line, with_role
from dtx_trials.services.simulation import insert_enrolled_mci_participants

LIBRARY = Path(__file__).resolve().parent.parent / "protocols" / "library"
MCI_FILE = "cognitive_impairment.yaml"
MCI_CODE = "MCI-COGTRAIN-01"
# The MCI protocol caps each site at 80 randomizations; the benchmark adds runtime sites
# (the protocol allows them) so that no request is refused by a cap.
PARTICIPANTS_PER_SITE = 60
USERNAME = "bench_investigator"
# a throwaway account in a throwaway database, dropped after the run
PASSWORD = "bench investigator passphrase"  # noqa: S105
CLI = command_line()


@dataclass(frozen=True)
class PreparedTrial:
    """A trial ready for load: its code and the enrolled participants' subject codes."""

    code: str
    subjects: tuple[str, ...]
    username: str
    password: str


def _setup_app(database_url: str, instance_path: str) -> Any:
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "FIELD_KEY": FIELD_KEY,
            "SECRET_KEY": "bench-setup",
            "ARGON2_TIME_COST": 1,
            "ARGON2_MEMORY_KIB": 1024,
        }
    )
    app.instance_path = instance_path
    return app


def prepare_mci_trial(
    database_url: str,
    instance_path: str,
    n_participants: int,
    participants_per_site: int = PARTICIPANTS_PER_SITE,
) -> PreparedTrial:
    """Migrate the database, load the MCI trial, add sites, an investigator and participants
    (``participants_per_site`` each: the number of sites, and so of strata, is the trial's
    shape; a benchmark that enrols more participants than it randomizes may keep it)."""
    from flask_migrate import upgrade

    app = _setup_app(database_url, instance_path)
    with app.app_context():
        upgrade()
        protocols.load_library_file(db.session, CLI, LIBRARY / MCI_FILE)
        accounts.create_user(
            db.session, CLI, username=USERNAME, printed_name="Bench Investigator", password=PASSWORD
        )
        subjects = _enrol(n_participants, is_first_batch=True, per_site=participants_per_site)
        db.session.remove()
        db.engine.dispose()
    return PreparedTrial(MCI_CODE, tuple(subjects), USERNAME, PASSWORD)


def add_participants(
    database_url: str, instance_path: str, prepared: PreparedTrial, n_participants: int
) -> PreparedTrial:
    """Enrol n more participants in the prepared trial, on new sites (the investigator granted
    there too); return the trial with every subject code, the new ones last."""
    app = _setup_app(database_url, instance_path)
    with app.app_context():
        subjects = _enrol(n_participants, is_first_batch=False)
        db.session.remove()
        db.engine.dispose()
    return dataclasses.replace(prepared, subjects=prepared.subjects + tuple(subjects))


def _enrol(
    n_participants: int, *, is_first_batch: bool, per_site: int = PARTICIPANTS_PER_SITE
) -> list[str]:
    """Add the sites n participants need (the trial's own sites first, then BNxx runtime
    sites, PARTICIPANTS_PER_SITE each), grant the investigator on them, enrol."""
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    existing = list(
        db.session.scalars(select(Site).where(Site.trial_id == trial.id).order_by(Site.code))
    )
    sites = existing if is_first_batch else []
    needed = math.ceil(n_participants / per_site) - len(sites)
    sites += add_bench_sites(trial, first=sum(s.code.startswith("BN") for s in existing), n=needed)
    user = db.session.scalars(select(User).where(User.username == USERNAME)).one()
    for site in sites:
        accounts.grant_role(
            db.session, CLI, trial_id=trial.id, user_id=user.id, role="investigator",
            site_id=site.id,
        )  # fmt: skip
    return insert_enrolled_mci_participants(db.session, CLI, trial, sites, n_participants)


def add_bench_sites(trial: Trial, first: int, n: int) -> list[Site]:
    """Add n runtime sites BN<first>, BN<first+1>, ... to the trial (the MCI protocol allows
    sites added at runtime), as the command line acting as the trial's sponsor admin."""
    sponsor = with_role(CLI, trial.id, "sponsor_admin")
    return [
        trials.create_site(db.session, sponsor, trial, {"code": code, "name": f"Bench {code}"})
        for code in (f"BN{index:02d}" for index in range(first, first + max(n, 0)))
    ]


def issue_token(port: int, username: str, password: str) -> str:
    """Log in through the API and return a bearer token."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST",
            "/api/v1/auth/tokens",
            body=json.dumps({"username": username, "password": password}),
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 201:
        raise RuntimeError(f"login failed: {response.status} {body[:300]!r}")
    return str(json.loads(body)["token"])
