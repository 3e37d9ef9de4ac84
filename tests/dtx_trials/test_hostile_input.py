"""SEC-09, issue #13: the hostile requests reviewers sent on PostgreSQL, each a named test on
both databases. Every one must be a clear 4xx naming the field (or a safe answer), never a 5xx,
and must leave nothing written."""

from __future__ import annotations

import datetime
import io
import time
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dtx_trials.edge import DEFAULT_BODY_LIMIT, MAX_PROTOCOL_BYTES
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, DeviceObservation, FormRecord, Participant
from tests.dtx_trials.trial_flow import (
    MCI_CODE,
    TrialStaff,
    api,
    enrolled_mci_participant,
    load_trial,
)

BASE = f"/api/v1/trials/{MCI_CODE}"


@pytest.fixture
def staff(client: FlaskClient) -> TrialStaff:
    return load_trial(client)


def n_rows(model: Any) -> int:
    db.session.rollback()
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def refused(response: Any, status: int = 422) -> dict[str, Any]:
    """The one error shape, with the field path of what was refused."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    body = response.get_json()
    assert {"code", "status", "message"} <= set(body), body
    assert body["errors"], body
    return dict(body["errors"])


def post_json(client: FlaskClient, path: str, text: str, headers: dict[str, str]) -> Any:
    return client.post(path, data=text, content_type="application/json", headers=headers)


# --- NUL bytes, lone surrogates and control characters --------------------------------------


def test_sec_09_nul_in_login_is_422_naming_the_field(client: FlaskClient) -> None:
    before = n_rows(AuditEvent)
    errors = refused(
        client.post("/api/v1/auth/tokens", json={"username": "ad\x00min", "password": "x"})
    )
    assert "NUL" in errors["json"]["username"][0]
    assert n_rows(AuditEvent) == before  # refused before any password check


def test_sec_09_nul_in_a_form_value_is_422_and_nothing_is_written(
    client: FlaskClient, staff: TrialStaff
) -> None:
    subject = enrolled_mci_participant(client, staff)
    records, events = n_rows(FormRecord), n_rows(AuditEvent)
    response = client.put(
        f"{BASE}/participants/{subject}/visits/baseline/forms/adverse_events",
        json={"values": {"ae_term": "head\x00ache", "ae_onset_on": "2026-01-02"}},
        headers=staff["inv"].headers,
    )
    errors = refused(response)
    assert "NUL" in errors["json"]["values"]["ae_term"][0]
    assert (n_rows(FormRecord), n_rows(AuditEvent)) == (records, events)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("x\ud800y", "surrogate"),
        ("x\udfff", "surrogate"),
        ("bell\x07", "U+0007"),
        ("\ufffe", "U+FFFE"),
    ],
)
def test_sec_09_lone_surrogates_and_control_characters_are_422(
    client: FlaskClient, staff: TrialStaff, text: str, words: str
) -> None:
    """A lone surrogate used to fail when hashed for the audit (UnicodeEncodeError, 500)."""
    subject = enrolled_mci_participant(client, staff)
    events = n_rows(AuditEvent)
    response = client.post(
        f"{BASE}/participants/{subject}/withdrawal",
        json={"reason": text},
        headers=staff["inv"].headers,
    )
    assert words in refused(response)["json"]["reason"][0]
    assert n_rows(AuditEvent) == events
    assert api(client, staff["inv"], "GET", f"/participants/{subject}")["status"] == "enrolled"


def test_sec_09_identifiers_with_nul_are_refused_not_stored(
    client: FlaskClient, staff: TrialStaff
) -> None:
    participants = n_rows(Participant)
    response = client.post(
        f"{BASE}/participants",
        json={"site": "BJ01", "identifiers": {"full_name": "Li\x00Lei"}},
        headers=staff["inv"].headers,
    )
    assert "full_name" in refused(response)["json"]["identifiers"]
    assert n_rows(Participant) == participants


def test_sec_09_nul_in_a_json_key_is_named_escaped(client: FlaskClient, staff: TrialStaff) -> None:
    response = client.post(
        f"{BASE}/participants", json={"si\x00te": "BJ01"}, headers=staff["inv"].headers
    )
    assert "si\\x00te" in refused(response)["json"]


@pytest.mark.parametrize(
    ("path", "location", "name"),
    [
        (f"{BASE}/participants/BJ01-%00001", "path", "subject"),
        (f"{BASE}/audit?entity_type=allo%00cation", "query", "entity_type"),
        (f"{BASE}/queries?status=open%01", "query", "status"),
    ],
)
def test_sec_09_nul_and_controls_in_path_and_query_are_422(
    client: FlaskClient, staff: TrialStaff, path: str, location: str, name: str
) -> None:
    response = client.get(path, headers=staff["auditor"].headers)
    assert name in refused(response)[location]


def test_sec_09_nul_in_a_page_form_field_is_422(client: FlaskClient, staff: TrialStaff) -> None:
    """Pages get the same check (form fields), answered with the HTML error page."""
    page = client.get("/login")
    csrf = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post(
        "/login",
        data={"username": "inv\x00", "password": "x", "csrf_token": csrf},
    )
    assert response.status_code == 422
    assert "U+0000" in response.get_data(as_text=True) or "NUL" in response.get_data(as_text=True)


# --- Numbers, nesting and sizes ------------------------------------------------------------------


def test_sec_09_deeply_nested_json_is_422_not_a_recursion_error(
    client: FlaskClient, staff: TrialStaff
) -> None:
    headers = staff["inv"].headers
    for depth in (40, 5_000, 100_000):
        body = '{"site": ' + "[" * depth + "]" * depth + "}"
        errors = refused(post_json(client, f"{BASE}/participants", body, headers))
        assert "nested" in str(errors["json"])


@pytest.mark.parametrize(
    "number",
    ["9" * 5000, "-" + "9" * 30, str(2**63), "1e999", "NaN", "-Infinity"],
)
def test_sec_09_numbers_no_column_can_hold_are_422(
    client: FlaskClient, staff: TrialStaff, number: str
) -> None:
    subject = enrolled_mci_participant(client, staff)
    body = '{"values": {"adas_total": 12}, "expected_version": ' + number + "}"
    response = client.put(
        f"{BASE}/participants/{subject}/visits/baseline/forms/adas_cog",
        data=body,
        content_type="application/json",
        headers=staff["inv"].headers,
    )
    assert "out of range" in refused(response)["json"]["expected_version"][0]


def test_sec_09_integers_beyond_32_bits_are_422_on_the_audit_filter(
    client: FlaskClient, staff: TrialStaff
) -> None:
    """entity_id=2**70 used to overflow in the driver (500); the columns are 32-bit."""
    auditor = staff["auditor"].headers
    for value in (2**70, 2**40, -(2**31) - 1):
        errors = refused(client.get(f"{BASE}/audit?entity_id={value}", headers=auditor))
        assert "between" in errors["query"]["entity_id"][0]
    assert "page" in refused(client.get(f"{BASE}/audit?page={2**62}", headers=auditor))["query"]
    assert client.get(f"{BASE}/audit?entity_id={2**31 - 1}", headers=auditor).status_code == 200


def test_sec_09_body_over_the_route_limit_is_413(client: FlaskClient, staff: TrialStaff) -> None:
    body = '{"site": "' + "x" * DEFAULT_BODY_LIMIT + '"}'
    response = post_json(client, f"{BASE}/participants", body, staff["inv"].headers)
    assert response.status_code == 413
    assert response.get_json()["code"] == 413


def test_sec_09_chunked_protocol_upload_stops_at_2_mib(
    client: FlaskClient, staff: TrialStaff
) -> None:
    """No Content-Length (chunked, as gunicorn hands it on): the cap holds while reading."""

    stream = io.BytesIO(b"#" * (MAX_PROTOCOL_BYTES * 2 + 500_000))  # 4.5 MB, as reported
    started = time.perf_counter()
    response = client.post(
        f"{BASE}/protocol-versions",
        input_stream=stream,
        content_type="application/yaml",
        headers=staff["sponsor"].headers,
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert stream.tell() <= MAX_PROTOCOL_BYTES + 64 * 1024  # read up to the cap, not beyond
    assert time.perf_counter() - started < 5


# --- Protocol documents: aliases, depth, time ----------------------------------------------------


def _validate(client: FlaskClient, staff: TrialStaff, text: str) -> list[dict[str, Any]]:
    response = client.post(
        "/api/v1/protocols/validate",
        data=text.encode(),
        content_type="application/yaml",
        headers=staff["sponsor"].headers,
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return list(response.get_json()["issues"])


def _alias_bomb(levels: int, width: int = 9) -> str:
    lines = ["l0: &l0 [" + ",".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * width) + "]")
    lines.append(f"arms: [*l{levels - 1}]")
    return "\n".join(lines) + "\n"


def test_sec_09_yaml_alias_bomb_is_refused_at_once(client: FlaskClient, staff: TrialStaff) -> None:
    """A 1.2 KB "billion laughs" used to cost 10 s of CPU (cubic growth)."""
    bomb = _alias_bomb(levels=9)
    assert len(bomb) < 1500
    started = time.perf_counter()
    issues = _validate(client, staff, bomb)
    assert time.perf_counter() - started < 2
    assert any("document refused: aliases expand" in i["message"] for i in issues), issues
    # Fewer aliases than the cap, but the count alone also stops a flatter bomb.
    many = "a: &a x\nb: [" + ",".join(["*a"] * 150) + "]\n"
    assert any("more than 100 aliases" in i["message"] for i in _validate(client, staff, many))


def test_sec_09_recursive_yaml_alias_is_refused(client: FlaskClient, staff: TrialStaff) -> None:
    issues = _validate(client, staff, "arms: &a [*a]\n")
    assert any("recursive" in i["message"] and i["line"] == 1 for i in issues), issues


@pytest.mark.parametrize(
    "document",
    [
        "arms: " + "[" * 5000 + "]" * 5000 + "\n",
        '{"arms": ' + "[" * 3000 + "]" * 3000 + "}",
        "".join(" " * i + "- \n" for i in range(200)),
    ],
    ids=["yaml-flow", "json", "yaml-block"],
)
def test_sec_09_deeply_nested_protocol_is_refused_with_a_line(
    client: FlaskClient, staff: TrialStaff, document: str
) -> None:
    issues = _validate(client, staff, document)
    assert any("nested deeper than 64 levels" in i["message"] for i in issues), issues


def test_sec_09_nul_escaped_in_a_protocol_label_is_an_issue_with_its_line(
    client: FlaskClient, staff: TrialStaff
) -> None:
    text = 'code: X\ntherapeutic_area: "cognitive\\0 impairment"\n'
    issue = next(i for i in _validate(client, staff, text) if i["path"] == "therapeutic_area")
    assert "NUL" in issue["message"] and issue["line"] == 2


# --- Dates, redirects and exports -----------------------------------------------------------


def test_sec_09_device_time_in_year_one_is_a_rejected_record(
    client: FlaskClient, staff: TrialStaff
) -> None:
    """0001-01-01T00:00+14:00 overflowed when moved to UTC (500 for the whole batch)."""
    subject = enrolled_mci_participant(client, staff)
    record = {
        "subject": subject,
        "stream": "training_minutes",
        "time": "0001-01-01T00:00+14:00",
        "value": 10,
        "unit": "min",
        "source": "cogtrain-ios",
    }
    response = client.post(f"{BASE}/device-data", json=[record], headers=staff["dm"].headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["rejected"] == 1 and body["errors"][0]["field"] == "time"
    assert n_rows(DeviceObservation) == 0


def test_sec_09_form_dates_outside_1900_2199_are_field_errors(
    client: FlaskClient, staff: TrialStaff
) -> None:
    subject = enrolled_mci_participant(client, staff)
    response = client.put(
        f"{BASE}/participants/{subject}/visits/baseline/forms/adverse_events",
        json={"values": {"ae_term": "headache", "ae_onset_on": "0001-01-01"}},
        headers=staff["inv"].headers,
    )
    assert response.status_code == 422
    assert "1900-01-01" in str(response.get_json()["errors"])


@pytest.mark.parametrize(
    "target",
    [
        "/%09/evil.example",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "/a%0d%0aSet-Cookie:%20x=1",
        "/%0a/evil.example",
        "javascript:alert(1)",
    ],
)
def test_sec_09_language_switch_never_redirects_off_site(client: FlaskClient, target: str) -> None:
    response = client.get(f"/lang/zh?next={target}")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_language_switch_returns_to_the_page(client: FlaskClient) -> None:
    response = client.get("/lang/zh?next=/trials/X/participants%3Fpage%3D2")
    assert response.headers["Location"] == "/trials/X/participants?page=2"


def test_sec_09_xpt_export_with_a_chinese_ae_term_is_422_naming_it(
    client: FlaskClient, staff: TrialStaff
) -> None:
    subject = enrolled_mci_participant(client, staff)
    api(
        client,
        staff["inv"],
        "PUT",
        f"/participants/{subject}/visits/baseline/forms/adverse_events",
        {
            "values": {
                "ae_term": "头晕",
                "ae_onset_on": datetime.date.today().isoformat(),
                "ae_severity": "moderate",
                "ae_serious": "0",
                "ae_related": "possibly",
            },
            "submit": True,
        },
        200,
    )
    unblinded = staff["unblinded"].headers
    response = client.get(f"{BASE}/exports/xpt.zip", headers=unblinded)
    errors = refused(response)
    assert "ASCII" in response.get_json()["message"]
    assert "not printable ASCII" in errors["xpt"][0]
    # UTF-8 formats carry the term intact.
    assert client.get(f"{BASE}/exports/csv.zip", headers=unblinded).status_code == 200


def test_sec_09_an_unknown_query_parameter_is_422_naming_it(
    client: FlaskClient, staff: TrialStaff
) -> None:
    """Every API operation with query parameters (from the OpenAPI document) refuses one it
    does not know, as a body refuses an unknown key: a misspelt filter or page size is not
    silently dropped (a list would answer unfiltered)."""
    subject = enrolled_mci_participant(client, staff)
    spec = client.get("/api/v1/openapi.json").get_json()
    values = {"code": MCI_CODE, "subject": subject}
    checked = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method != "get" or not any(
                p["in"] == "query" for p in operation.get("parameters", [])
            ):
                continue
            url = path
            for name in (p["name"] for p in operation.get("parameters", []) if p["in"] == "path"):
                url = url.replace("{" + name + "}", values.get(name, "1"))
            response = client.get(f"{url}?stauts=open", headers=staff["dm"].headers)
            if response.status_code == 401:  # another kind of caller (the app's)
                continue
            assert "stauts" in str(refused(response)), (url, response.get_json())
            checked.append(url)
    assert len(checked) >= 8, checked
    # the known parameters still work
    listed = client.get(f"{BASE}/participants?status=enrolled", headers=staff["dm"].headers)
    assert listed.status_code == 200 and [p["subject_code"] for p in listed.get_json()] == [
        subject
    ]
