"""Development instance content: example protocols from protocols/library and demo accounts."""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import Site, Trial, User
from dtx_trials.services import accounts
from dtx_trials.services.access import Actor

LIBRARY = Path(__file__).resolve().parent.parent.parent / "protocols" / "library"

# username, printed name, role, site-bound
DEMO_ROLES = [
    ("sponsor", "Sam Sponsor", "sponsor_admin", False),
    ("investigator", "Dr Ida Investigator", "investigator", True),
    ("coordinator", "Cora Coordinator", "coordinator", True),
    ("monitor", "Mona Monitor", "monitor", False),
    ("datamanager", "Dan Datamanager", "data_manager", False),
    ("statistician", "Stella Statistician", "statistician", False),
    ("unblinded", "Uma Unblinded", "unblinded_statistician", False),
    ("auditor", "Otto Auditor", "auditor", False),
]


def library_files() -> list[Path]:
    return sorted(LIBRARY.glob("*.yaml"))


def load_library_protocols(actor: Actor) -> list[str]:
    """Load each example protocol not yet present; return one line per file."""
    from dtx_trials.services import protocols as protocol_service

    files = library_files()
    if not files:
        return ["no example protocols in protocols/library"]
    return [protocol_service.load_library_file(db.session, actor, path) for path in files]


def create_demo_accounts(actor: Actor) -> list[tuple[str, str, str]]:
    """Create the demo accounts that do not exist yet; return (username, password, roles).

    Passwords are random and shown once. Each account gets its role in every trial, at the
    trial's first site for site-bound roles.
    """
    created: list[tuple[str, str, str]] = []
    session = db.session
    trials = list(session.scalars(select(Trial).order_by(Trial.code)))
    for username, name, role, site_bound in [
        ("admin", "Ada Admin", "superuser", False),
        *DEMO_ROLES,
    ]:
        if session.scalars(select(User).where(User.username == username)).first():
            continue
        password = secrets.token_urlsafe(12)
        user = accounts.create_user(
            session,
            actor,
            username=username,
            printed_name=name,
            password=password,
            is_superuser=role == "superuser",
        )
        granted = []
        for trial in trials if role != "superuser" else []:
            site = session.scalars(
                select(Site).where(Site.trial_id == trial.id).order_by(Site.code)
            ).first()
            if site_bound and site is None:
                continue
            accounts.grant_role(
                session,
                actor,
                trial_id=trial.id,
                user_id=user.id,
                role=role,
                site_id=site.id if site_bound and site else None,
            )
            granted.append(
                f"{role}@{trial.code}" + (f"/{site.code}" if site_bound and site else "")
            )
        created.append((username, password, ", ".join(granted) or role))
    return created
