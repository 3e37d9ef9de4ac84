"""Staff accounts get an activation link and choose their own password (issue #14, item 3): an
administrator — the sponsor admin who creates "Dr Real Investigator" — never knows it, never
sees the link, and cannot sign in as the new account."""

from __future__ import annotations

import re
from datetime import timedelta

from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.db import utcnow
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, Notification, User
from dtx_trials.services import audit
from tests.helpers import login, make_trial, make_user

NEW_PASSWORD = "my own long passphrase"


def activation_token(email: str) -> str:
    """The token of the link e-mailed to `email` (what only the account's owner reads)."""
    rows = db.session.scalars(
        select(Notification)
        .where(Notification.kind == "account_activation")
        .order_by(Notification.id.desc())
    ).all()
    for row in rows:
        if row.address == email:  # the address is encrypted at rest: compared after reading
            match = re.search(r"/activate/([A-Za-z0-9_-]+)", row.body)
            assert match, row.body
            return match.group(1)
    raise AssertionError(f"no activation e-mail to {email}")


def _create(client: FlaskClient, admin, **extra) -> object:  # type: ignore[no-untyped-def]
    return client.post(
        "/api/v1/users",
        headers=admin.headers,
        json={"username": "drreal", "printed_name": "Dr Real Investigator",
              "email": "real@example.org", **extra},
    )


def test_the_administrator_never_knows_the_password(client: FlaskClient) -> None:
    trial = make_trial("T1")
    admin = login(client, make_user("sponsor", role="sponsor_admin", trial=trial))
    # choosing a password for someone else is refused
    chosen = _create(client, admin, password="a password the admin knows")
    assert chosen.status_code == 422 and "password" in chosen.get_json()["errors"]["json"]
    no_email = client.post("/api/v1/users", headers=admin.headers,
                           json={"username": "drreal", "printed_name": "Dr Real Investigator"})
    assert no_email.status_code == 422 and "email" in no_email.get_json()["errors"]["json"]
    created = _create(client, admin)
    assert created.status_code == 201
    token = activation_token("real@example.org")
    # the link is nowhere the administrator can read: the response, the account, the trail
    user_id = created.get_json()["id"]
    readable = created.get_data(as_text=True) + client.get(
        f"/api/v1/users/{user_id}", headers=admin.headers
    ).get_data(as_text=True)
    trail = " ".join(str(e.changes) + str(e.reason) for e in db.session.scalars(select(AuditEvent)))
    assert token not in readable and token not in trail
    # nobody can sign in before the owner chooses a password: not with an empty or a guessed one
    for guess in ("", "a password the admin knows", token):
        refused = client.post("/api/v1/auth/tokens",
                              json={"username": "drreal", "password": guess})
        assert refused.status_code in (401, 422)
    # the owner activates once
    mismatch = client.post("/api/v1/auth/activation", json={"token": token + "x",
                                                            "password": NEW_PASSWORD})
    assert mismatch.status_code == 404
    done = client.post("/api/v1/auth/activation", json={"token": token, "password": NEW_PASSWORD})
    assert done.status_code == 204, done.get_json()
    again = client.post("/api/v1/auth/activation", json={"token": token, "password": "x" * 20})
    assert again.status_code == 404
    signed_in = client.post("/api/v1/auth/tokens",
                            json={"username": "drreal", "password": NEW_PASSWORD})
    assert signed_in.status_code == 201
    event = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "user.activated")
    ).one()
    # the owner set it, with the link, not the administrator (no session existed yet)
    assert event.entity_id == user_id and event.actor_id is None
    assert "account's owner" in (event.reason or "")
    assert audit.verify(db.session).ok


def test_an_expired_link_is_refused(client: FlaskClient) -> None:
    trial = make_trial("T1")
    admin = login(client, make_user("sponsor", role="sponsor_admin", trial=trial))
    assert _create(client, admin).status_code == 201
    token = activation_token("real@example.org")
    user = db.session.scalars(select(User).where(User.username == "drreal")).one()
    before = audit.snapshot(user)
    user.activation_expires_at = utcnow() - timedelta(seconds=1)
    from tests.helpers import CLI

    audit.record_update(db.session, CLI, "user.activation_expired", user, before)
    db.session.commit()
    expired = client.post("/api/v1/auth/activation", json={"token": token,
                                                           "password": NEW_PASSWORD})
    assert expired.status_code == 404 and "expired" in expired.get_json()["message"]


def test_activation_in_the_browser(client: FlaskClient) -> None:
    trial = make_trial("T1")
    admin = login(client, make_user("sponsor", role="sponsor_admin", trial=trial))
    assert _create(client, admin).status_code == 201
    token = activation_token("real@example.org")
    page = client.get(f"/activate/{token}")
    assert page.status_code == 200 and 'name="password_again"' in page.get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert csrf
    no_csrf = client.post(f"/activate/{token}",
                          data={"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})
    assert no_csrf.status_code == 400
    differ = client.post(f"/activate/{token}", data={
        "csrf_token": csrf.group(1), "password": NEW_PASSWORD, "password_again": "other"})
    assert differ.status_code == 422
    weak = client.post(f"/activate/{token}", data={
        "csrf_token": csrf.group(1), "password": "short", "password_again": "short"})
    assert weak.status_code == 422 and 'id="password-err"' in weak.get_data(as_text=True)
    ok = client.post(f"/activate/{token}", data={
        "csrf_token": csrf.group(1), "password": NEW_PASSWORD, "password_again": NEW_PASSWORD})
    assert ok.status_code == 302 and "msg=activated" in ok.headers["Location"]
    assert "Sign in" in client.get(ok.headers["Location"]).get_data(as_text=True)
    reused = client.get(f"/activate/{token}")
    assert reused.status_code == 200  # the form; posting it again is refused
    again = re.search(r'name="csrf_token" value="([^"]+)"', reused.get_data(as_text=True))
    assert again
    assert client.post(f"/activate/{token}", data={
        "csrf_token": again.group(1), "password": NEW_PASSWORD, "password_again": NEW_PASSWORD,
    }).status_code == 404
