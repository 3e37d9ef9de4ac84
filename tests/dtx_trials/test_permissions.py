"""ACC-01/SEC-08: every role x every route x own/other site -> the expected status.

"own" = the account is bound to site S1 (site-bound roles) or trial-wide; "other" = bound to S2
while the route addresses S1. No role in the trial ("outsider") must not even learn the trial
exists (404).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from dtx_trials.models.users import SITE_BOUND_ROLES, Role
from tests.helpers import Account, login, make_site, make_trial, make_user

ALL = [r.value for r in Role]
SITE_BOUND = {r.value for r in SITE_BOUND_ROLES}

# (name, method, path, body, expected(role, site_variant) -> status)
Route = tuple[str, str, str, dict[str, object] | None, Callable[[str, str], int]]


def _only(roles: set[str], ok: int) -> Callable[[str, str], int]:
    def expected(role: str, variant: str) -> int:
        if role == "outsider":
            return 404
        if role == "superuser":
            return 404
        return ok if role in roles else 403

    return expected


def _site_route(roles: set[str], ok: int) -> Callable[[str, str], int]:
    base = _only(roles, ok)

    def expected(role: str, variant: str) -> int:
        if role in SITE_BOUND and variant == "other":
            return 404
        return base(role, variant)

    return expected


def _trial_member(ok: int) -> Callable[[str, str], int]:
    def expected(role: str, variant: str) -> int:
        if role == "outsider":
            return 404
        return ok

    return expected


ROUTES: list[Route] = [
    ("list trials", "GET", "/api/v1/trials", None, lambda r, v: 200),
    (
        "create trial",
        "POST",
        "/api/v1/trials",
        {"code": "NEW", "title": "New"},
        lambda r, v: 201 if r in ("sponsor_admin", "superuser") else 403,
    ),
    ("get trial", "GET", "/api/v1/trials/T1", None, _trial_member(200)),
    (
        "list sites",
        "GET",
        "/api/v1/trials/T1/sites",
        None,
        lambda r, v: 404 if r in ("outsider", "superuser") else 200,
    ),
    (
        "create site",
        "POST",
        "/api/v1/trials/T1/sites",
        {"code": "S3", "name": "Third"},
        _only({"sponsor_admin"}, 201),
    ),
    ("get site", "GET", "/api/v1/trials/T1/sites/S1", None, _site_route(set(ALL), 200)),
    (
        "patch site",
        "PATCH",
        "/api/v1/trials/T1/sites/S1",
        {"name": "Renamed"},
        _site_route({"sponsor_admin"}, 200),
    ),
    (
        "list memberships",
        "GET",
        "/api/v1/trials/T1/memberships",
        None,
        _only({"sponsor_admin"}, 200),
    ),
    (
        "grant membership",
        "POST",
        "/api/v1/trials/T1/memberships",
        {"user_id": 0, "role": "monitor"},
        _only({"sponsor_admin"}, 201),
    ),
    (
        "list users",
        "GET",
        "/api/v1/users",
        None,
        lambda r, v: 200 if r in ("sponsor_admin", "superuser") else 403,
    ),
    ("read audit", "GET", "/api/v1/trials/T1/audit", None, _only({"auditor"}, 200)),
    ("verify audit", "GET", "/api/v1/trials/T1/audit/verify", None, _only({"auditor"}, 200)),
]

CASES = [
    (role, variant)
    for role, variant in itertools.product([*ALL, "outsider", "superuser"], ["own", "other"])
    if variant == "own" or role in SITE_BOUND
]


@pytest.mark.parametrize(("role", "variant"), CASES, ids=[f"{r}-{v}" for r, v in CASES])
def test_acc_01_role_route_site_matrix(client: FlaskClient, role: str, variant: str) -> None:
    trial = make_trial("T1")
    s1 = make_site(trial, "S1", "First")
    s2 = make_site(trial, "S2", "Second")
    other = make_user("someone")
    if role in ("outsider", "superuser"):
        account: Account = make_user("caller", superuser=role == "superuser")
        make_trial("OTHER")
    else:
        site = (s1 if variant == "own" else s2) if role in SITE_BOUND else None
        account = make_user("caller", role=role, trial=trial, site=site)
    login(client, account)
    failures = []
    for name, method, path, body, expected in ROUTES:
        if body is not None and "user_id" in body:
            body = {**body, "user_id": other.user.id}
        response = client.open(path, method=method, json=body, headers=account.headers)
        want = expected(role, variant)
        if response.status_code != want:
            failures.append(
                f"{name}: {response.status_code} != {want} "
                f"({response.get_json().get('message') if response.is_json else ''})"
            )
        if response.status_code >= 400:
            payload = response.get_json()
            assert set(payload) >= {"code", "status", "message"}, payload
    assert not failures, failures
