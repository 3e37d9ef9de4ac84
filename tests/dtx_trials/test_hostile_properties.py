"""SEC-09, issue #13: for every request body and query schema in the OpenAPI document,
hypothesis sends arbitrary Unicode with NUL bytes, unpaired surrogates and control characters,
numbers no column can hold (huge, NaN, Infinity) and deep nesting. Each must be a 4xx that
names where the problem is, and nothing may be written, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from dtx_trials.db import Base
from dtx_trials.extensions import db
from tests.dtx_trials.trial_flow import MCI_CODE, enrolled_mci_participant, load_trial
from tests.helpers import login, make_user

EXAMPLES_PER_OPERATION = 10
BAD_CHARACTERS = ["\x00", "\ud800", "\udfff", "\x01", "\x1b", "\ufffe", "\uffff"]


class Raw:
    """A JSON token written as is (numbers json.dumps cannot or will not write)."""

    def __init__(self, token: str) -> None:
        self.token = token


def dumps(value: Any) -> str:
    if isinstance(value, Raw):
        return value.token
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value)  # ensure_ascii: a lone surrogate travels as \\ud800


hostile_text = st.builds(
    lambda head, bad, tail: head + bad + tail,
    st.text(max_size=6),
    st.sampled_from(BAD_CHARACTERS),
    st.text(max_size=6),
)
hostile_number = st.one_of(
    st.integers(min_value=2**63, max_value=10**40).map(lambda n: Raw(str(n))),
    st.integers(min_value=20, max_value=6000).map(lambda n: Raw("9" * n)),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e400"]).map(Raw),
)
# A URL carries bytes: an unpaired surrogate cannot be percent-encoded as UTF-8 at all.
hostile_query_text = st.builds(
    lambda head, bad, tail: head + bad + tail,
    st.text(max_size=6).filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t)),
    st.sampled_from([c for c in BAD_CHARACTERS if not "\ud800" <= c <= "\udfff"]),
    st.text(max_size=6).filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t)),
)
deep = st.integers(min_value=33, max_value=3000).map(lambda n: Raw("[" * n + "]" * n))
hostile_value = st.one_of(hostile_text, hostile_number, deep)


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _body(spec: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A body of the operation's shape with one hostile value at a random place (a property,
    a nested property, an array item, or a key)."""
    schema = _resolve(spec, schema)
    if schema.get("type") == "array":
        item = _resolve(spec, schema.get("items", {}))
        names = sorted(item.get("properties", {})) or ["value"]
        return st.builds(
            lambda name, bad, n: [{"x": 1}] * n + [{name: bad}],
            st.sampled_from(names),
            hostile_value,
            st.integers(0, 2),
        )
    names = sorted(schema.get("properties", {})) or ["value"]
    return st.one_of(
        st.builds(lambda name, bad: {name: bad}, st.sampled_from(names), hostile_value),
        st.builds(
            lambda name, bad: {name: {"inner": [bad]}}, st.sampled_from(names), hostile_value
        ),
        st.builds(lambda key: {key: "x"}, hostile_text),
    )


def _operations(
    spec: dict[str, Any],
) -> list[tuple[str, str, dict[str, Any] | None, list[tuple[str, str]]]]:
    """(method, path, JSON body schema or None, query parameters with their types) of every
    operation that takes a JSON body or query parameters."""
    found = []
    for path, item in sorted(spec["paths"].items()):
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            query = [
                (p["name"], p.get("schema", {}).get("type", "string"))
                for p in operation.get("parameters", [])
                if p["in"] == "query"
            ]
            if body or query:
                found.append((method.upper(), path, body["schema"] if body else None, query))
    return found


def _query_text(value: str | Raw) -> str:
    return quote(value if isinstance(value, str) else value.token[:4000], safe="")


def _fill(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    return path


def _table_counts() -> dict[str, int]:
    db.session.rollback()
    counts = {
        table.name: int(db.session.scalar(select(func.count()).select_from(table)) or 0)
        for table in Base.metadata.sorted_tables
    }
    db.session.rollback()
    return counts


def _names_a_place(errors: Any) -> bool:
    return isinstance(errors, dict) and bool(errors)


def _probe(
    client: FlaskClient,
    headers: dict[str, str],
    method: str,
    strategy: st.SearchStrategy[tuple[str, str]],
    failures: list[str],
) -> int:
    """Send the strategy's requests; record each answer that is not a 4xx naming a place."""
    sent = 0

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=strategy)
    def probe(request: tuple[str, str]) -> None:
        nonlocal sent
        target, body = request
        response = client.open(
            target,
            method=method,
            data=body.encode() if body else None,
            content_type="application/json" if body else None,
            headers=headers,
        )
        sent += 1
        payload = response.get_json(silent=True) or {}
        if not 400 <= response.status_code < 500 or not _names_a_place(payload.get("errors")):
            failures.append(
                f"{method} {target[:120]} {body[:80]!r} -> {response.status_code} {payload}"
            )

    probe()
    return sent


def test_sec_09_hostile_values_in_every_body_and_query_schema(
    app: Flask, client: FlaskClient
) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    root = login(client, make_user("root", superuser=True))
    # the DTx app's routes open to a participant's app token only (staff tokens are refused)
    randomized = client.post(f"/api/v1/trials/{MCI_CODE}/participants/{subject}/randomization",
                             json={}, headers=staff["inv"].headers)
    assert randomized.status_code == 201, randomized.get_json()
    redeemed = client.post("/api/v1/app/activation", json={
        "trial": MCI_CODE, "activation_code": randomized.get_json()["activation_code"]})
    assert redeemed.status_code == 201, redeemed.get_json()
    app_headers = {"Authorization": f"Bearer {redeemed.get_json()['token']}"}
    ids = {
        "code": MCI_CODE,
        "subject": subject,
        "site_code": "BJ01",
        "visit": "baseline",
        "form_code": "adas_cog",
        "record_id": "1",
        "query_id": "1",
        "deviation_id": "1",
        "consent_id": "1",
        "event_id": "1",
        "run_id": "1",
        "version_no": "1",
        "old_no": "1",
        "new_no": "1",
        "user_id": str(root.user.id),
        "token_id": "1",
        "membership_id": "1",
        "link_id": "1",
        "fmt": "csv",
    }
    spec = client.get("/api/v1/openapi.json").get_json()
    operations = _operations(spec)
    assert len(operations) >= 25
    baseline = _table_counts()
    failures: list[str] = []
    sent = 0
    for method, path, schema, query in operations:
        url = _fill(path, ids)
        if schema is not None:
            strategy: st.SearchStrategy[tuple[str, str]] = _body(spec, schema).map(
                lambda body, url=url: (url, dumps(body))
            )
        else:
            strategy = st.sampled_from(query).flatmap(
                lambda param, url=url: st.one_of(  # type: ignore[misc]
                    hostile_query_text, *([hostile_number] if param[1] == "integer" else [])
                ).map(lambda bad, name=param[0]: (f"{url}?{name}={_query_text(bad)}", ""))
            )

        headers = app_headers if path.startswith("/api/v1/app/") else root.headers
        sent += _probe(client, headers, method, strategy, failures)
    print(f"hostile requests sent: {sent} over {len(operations)} operations")
    assert sent >= len(operations) * 3
    assert not failures, "\n".join(failures[:20])
    assert _table_counts() == baseline
