"""Factories for database tests: rows are created through the services (so they are audited)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import event

from dtx_trials.extensions import db
from dtx_trials.models import Site, Trial, User
from dtx_trials.services import accounts, trials
from dtx_trials.services.access import Actor, command_line

CLI = command_line()
PASSWORD = "correct horse battery"
_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


@contextmanager
def counted() -> Iterator[list[str]]:
    """The statements sent to the database inside the block, whitespace collapsed (transaction
    control left out: psycopg sends BEGIN with the first statement, SQLite's never leaves the
    process)."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(_CONTROL):
            statements.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


@dataclass
class Account:
    user: User
    password: str
    token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        assert self.token, "call login() first"
        return {"Authorization": f"Bearer {self.token}"}


def make_trial(code: str = "T1", title: str = "Test trial") -> Trial:
    return trials.create_trial(db.session, CLI, code=code, title=title)


def make_site(trial: Trial, code: str = "S1", name: str = "Site one") -> Site:
    actor = Actor(
        user_id=None,
        username="cli",
        printed_name="Command line",
        via="cli",
        is_superuser=True,
        grants=(accounts.Grant(trial.id, None, accounts.Role.SPONSOR_ADMIN),),
    )
    return trials.create_site(db.session, actor, trial, {"code": code, "name": name})


def make_user(
    username: str,
    *,
    role: str | None = None,
    trial: Trial | None = None,
    site: Site | None = None,
    superuser: bool = False,
    password: str = PASSWORD,
    email: str | None = None,
) -> Account:
    user = accounts.create_user(
        db.session,
        CLI,
        username=username,
        printed_name=username.title(),
        password=password,
        email=email,
        is_superuser=superuser,
    )
    if role is not None:
        assert trial is not None
        accounts.grant_role(
            db.session,
            CLI,
            trial_id=trial.id,
            user_id=user.id,
            role=role,
            site_id=site.id if site else None,
        )
    return Account(user, password)


def login(client: FlaskClient, account: Account) -> Account:
    response = client.post(
        "/api/v1/auth/tokens",
        json={"username": account.user.username, "password": account.password},
    )
    assert response.status_code == 201, response.get_json()
    account.token = response.get_json()["token"]
    return account


# a known randomization secret (hex): allocations that are the same in every run
KNOWN_SECRET = "5a" * 32


def fix_randomization_secret(trial_id: int, secret: str = KNOWN_SECRET) -> None:
    """Give a trial a known randomization secret (audited as the operator's change), so that its
    allocations, and whatever depends on them, are the same in every run."""
    from sqlalchemy import select

    from dtx_trials.models import RandomizationState
    from dtx_trials.services import audit

    state = db.session.scalars(
        select(RandomizationState).where(RandomizationState.trial_id == trial_id)
    ).one()
    before = audit.snapshot(state)
    state.secret = secret
    audit.record_update(db.session, CLI, "randomization.secret_fixed", state, before)
    db.session.commit()
