"""App shell: health probes, OpenAPI document, error shape, security headers."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from werkzeug.routing import IntegerConverter

from tests.helpers import login, make_trial, make_user


def test_healthz_and_readyz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "ready"


def test_openapi_document_lists_the_resources(client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["info"]["title"] == "dtx-trials"
    for path in (
        "/api/v1/auth/tokens",
        "/api/v1/trials",
        "/api/v1/trials/{code}/sites",
        "/api/v1/users",
        "/api/v1/trials/{code}/memberships",
        "/api/v1/trials/{code}/audit",
    ):
        assert path in spec["paths"], path
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200
    assert b"/api/v1/trials/{code}/audit" in docs.data


def test_error_shape_on_unknown_route_and_unauthenticated(client: FlaskClient) -> None:
    for response, code in (
        (client.get("/api/v1/nowhere"), 404),
        (client.get("/api/v1/trials"), 401),
    ):
        body = response.get_json()
        assert response.status_code == code
        assert body["code"] == code
        assert set(body) >= {"code", "status", "message"}


def test_invalid_body_gives_422_with_field_paths(client: FlaskClient) -> None:
    admin = login(client, make_user("root", superuser=True))
    response = client.post(
        "/api/v1/trials", json={"code": "bad code!", "extra": 1}, headers=admin.headers
    )
    body = response.get_json()
    assert response.status_code == 422
    assert body["status"] == "Unprocessable Entity"
    assert "code" in body["errors"]["json"]
    assert "extra" in body["errors"]["json"]


def test_security_headers_on_pages_and_api(client: FlaskClient) -> None:
    make_trial()
    for path in ("/login", "/api/v1/openapi.json", "/healthz"):
        response = client.get(path)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Referrer-Policy"] == "no-referrer"
    assert client.get("/api/v1/openapi.json").headers["Cache-Control"] == "no-store"


def test_sec_09_ids_beyond_64_bits_are_404_on_every_id_route(client: FlaskClient) -> None:
    """Found by the full-size schemathesis run: /users/<huge id> overflowed SQLite's INTEGER."""
    from flask import current_app

    trial = make_trial("T1")
    sponsor = make_user("sponsor1", role="sponsor_admin", trial=trial)
    login(client, sponsor)
    huge = str(2**64)
    probed = 0
    for rule in current_app.url_map.iter_rules():
        int_args = [a for a, c in rule._converters.items() if isinstance(c, IntegerConverter)]
        if not int_args:
            continue
        path = re.sub(
            r"<(?:[^:>]+:)?([^>]+)>",
            lambda m, ints=int_args: huge if m[1] in ints else ("T1" if m[1] == "code" else "x"),
            rule.rule,
        )
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method, json={}, headers=sponsor.headers)
            assert response.status_code < 500, (method, path, response.status_code)
            probed += 1
    assert probed >= 20
