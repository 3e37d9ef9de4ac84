"""Identity: argon2 hashes, lockout, bearer tokens (expiry, revocation), sessions, CSRF."""

from __future__ import annotations

import re
from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.db import utcnow
from dtx_trials.extensions import db
from dtx_trials.models import ApiToken, AuditEvent, User, WebSession
from tests.dtx_trials.test_account_activation import activation_token
from tests.helpers import PASSWORD, login, make_user


def test_sec_01_passwords_hashed_with_argon2_and_min_length(client: FlaskClient) -> None:
    admin = login(client, make_user("root", superuser=True))
    user = db.session.scalars(select(User).where(User.username == "root")).one()
    assert user.password_hash.startswith("$argon2id$")
    created = client.post(
        "/api/v1/users",
        headers=admin.headers,
        json={"username": "bob", "printed_name": "Bob", "email": "bob@example.org"},
    )
    assert created.status_code == 201
    token = activation_token("bob@example.org")
    short = client.post("/api/v1/auth/activation", json={"token": token, "password": "elevenchars"})
    assert short.status_code == 422
    assert "password" in short.get_json()["errors"]


def test_sec_02_lockout_after_repeated_failures(app: Flask, client: FlaskClient) -> None:
    make_user("alice")
    for _ in range(app.config["LOCKOUT_THRESHOLD"] - 1):
        bad = client.post("/api/v1/auth/tokens", json={"username": "alice", "password": "wrong"})
        assert bad.status_code == 401
    locked = client.post("/api/v1/auth/tokens", json={"username": "alice", "password": "wrong"})
    assert locked.status_code == 429
    assert locked.get_json()["code"] == 429
    # even the right password is refused while locked
    refused = client.post("/api/v1/auth/tokens", json={"username": "alice", "password": PASSWORD})
    assert refused.status_code == 429
    actions = [e.action for e in db.session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions.count("login.failed") == app.config["LOCKOUT_THRESHOLD"]
    assert "login.refused_locked" in actions
    # when the lock expires the right password works again
    user = db.session.scalars(select(User).where(User.username == "alice")).one()
    user.locked_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    ok = client.post("/api/v1/auth/tokens", json={"username": "alice", "password": PASSWORD})
    assert ok.status_code == 201


def test_unknown_user_and_wrong_password_look_the_same(client: FlaskClient) -> None:
    make_user("alice")
    a = client.post("/api/v1/auth/tokens", json={"username": "nobody", "password": "x" * 12})
    b = client.post("/api/v1/auth/tokens", json={"username": "alice", "password": "x" * 12})
    assert a.status_code == b.status_code == 401
    assert a.get_json()["message"] == b.get_json()["message"]


def test_token_is_stored_hashed_and_works(client: FlaskClient) -> None:
    account = login(client, make_user("alice"))
    row = db.session.scalars(select(ApiToken)).one()
    assert account.token not in (row.token_hash,)
    assert len(row.token_hash) == 64
    me = client.get("/api/v1/me", headers=account.headers)
    assert me.status_code == 200
    assert me.get_json()["username"] == "alice"


def test_expired_token_is_refused(client: FlaskClient) -> None:
    account = login(client, make_user("alice"))
    row = db.session.scalars(select(ApiToken)).one()
    row.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert client.get("/api/v1/me", headers=account.headers).status_code == 401


def test_revoked_token_is_refused(client: FlaskClient) -> None:
    account = login(client, make_user("alice"))
    token_id = client.get("/api/v1/auth/tokens", headers=account.headers).get_json()[0]["id"]
    assert (
        client.delete(f"/api/v1/auth/tokens/{token_id}", headers=account.headers).status_code == 204
    )
    assert client.get("/api/v1/me", headers=account.headers).status_code == 401


def test_cannot_revoke_someone_elses_token(client: FlaskClient) -> None:
    alice = login(client, make_user("alice"))
    bob = login(client, make_user("bob"))
    alice_token = client.get("/api/v1/auth/tokens", headers=alice.headers).get_json()[0]["id"]
    assert (
        client.delete(f"/api/v1/auth/tokens/{alice_token}", headers=bob.headers).status_code == 404
    )
    assert client.get("/api/v1/me", headers=alice.headers).status_code == 200


def _login_page(client: FlaskClient) -> str:
    page = client.get("/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert match
    return match.group(1)


def test_sec_04_06_web_login_new_session_cookie_flags(client: FlaskClient) -> None:
    make_user("alice")
    csrf = _login_page(client)
    response = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf}
    )
    assert response.status_code == 302
    cookie = response.headers.getlist("Set-Cookie")
    session_cookie = next(c for c in cookie if c.startswith("dtx_session="))
    assert "HttpOnly" in session_cookie
    assert "SameSite=Lax" in session_cookie
    assert client.get("/").status_code == 200
    first = session_cookie.split(";")[0]
    # signing in again yields a different session and revokes the old one
    csrf2 = _login_page(client)
    again = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf2}
    )
    second = next(
        c for c in again.headers.getlist("Set-Cookie") if c.startswith("dtx_session=")
    ).split(";")[0]
    assert first != second
    assert db.session.scalars(select(WebSession).where(WebSession.revoked_at.is_not(None))).all()


def test_sec_08_csrf_required_on_page_posts(client: FlaskClient) -> None:
    make_user("alice")
    _login_page(client)
    response = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert b"CSRF" in response.data


def test_sec_05_logout_ends_session_on_server(client: FlaskClient) -> None:
    make_user("alice")
    csrf = _login_page(client)
    client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf})
    home = client.get("/")
    token = re.search(r'name="csrf_token" value="([^"]+)"', home.get_data(as_text=True))
    assert token
    cookie = client.get_cookie("dtx_session")
    assert cookie is not None
    client.post("/logout", data={"csrf_token": token.group(1)})
    client.set_cookie("dtx_session", cookie.value)  # replay the old cookie
    assert client.get("/").status_code == 302


def test_idle_session_expires(client: FlaskClient, app: Flask) -> None:
    make_user("alice")
    csrf = _login_page(client)
    client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf})
    row = db.session.scalars(select(WebSession)).one()
    row.last_seen_at = utcnow() - timedelta(minutes=app.config["SESSION_IDLE_MINUTES"] + 1)
    db.session.commit()
    assert client.get("/").status_code == 302
