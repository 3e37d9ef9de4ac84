"""Issue #13: every create a client may retry takes an Idempotency-Key; a retry after a lost
answer replays the first answer instead of doing the work twice."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from dtx_trials.extensions import db
from dtx_trials.models import (
    Allocation,
    AuditEvent,
    Consent,
    DataQuery,
    DeviceObservation,
    FormRecord,
    IdempotentRequest,
    Participant,
    Signature,
)
from tests.dtx_trials.trial_flow import (
    MCI_CODE,
    MCI_SCREENING,
    TrialStaff,
    api,
    enrolled_mci_participant,
    load_trial,
)
from tests.helpers import PASSWORD

BASE = f"/api/v1/trials/{MCI_CODE}"


def count(model: Any) -> int:
    db.session.rollback()
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


def send(
    client: FlaskClient, staff: TrialStaff, who: str, method: str, path: str, body: Any, key: str
) -> Any:
    headers = {**staff[who].headers, "Idempotency-Key": key}
    return client.open(f"{BASE}{path}", method=method, json=body, headers=headers)


@pytest.fixture
def staff(client: FlaskClient) -> TrialStaff:
    return load_trial(client)


def test_a_retried_participant_creation_replays_the_first_answer(
    client: FlaskClient, staff: TrialStaff
) -> None:
    body = {"site": "BJ01", "identifiers": {"full_name": "Wang Fang", "phone": "13800000000"}}
    first = send(client, staff, "inv", "POST", "/participants", body, "create-1")
    assert first.status_code == 201
    participants, events = count(Participant), count(AuditEvent)
    again = send(client, staff, "inv", "POST", "/participants", body, "create-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert (count(Participant), count(AuditEvent)) == (participants, events)
    # a new key is a new participant
    other = send(client, staff, "inv", "POST", "/participants", body, "create-2")
    assert other.get_json()["subject_code"] != first.get_json()["subject_code"]
    assert count(Participant) == participants + 1


def test_the_same_key_with_a_different_body_is_422(client: FlaskClient, staff: TrialStaff) -> None:
    send(client, staff, "inv", "POST", "/participants", {"site": "BJ01"}, "k-1")
    participants = count(Participant)
    other = send(client, staff, "inv", "POST", "/participants", {"site": "BJ02"}, "k-1")
    assert other.status_code == 422
    assert "Idempotency-Key" in other.get_json()["errors"]["headers"]
    assert count(Participant) == participants


def test_keys_belong_to_their_user(client: FlaskClient, staff: TrialStaff) -> None:
    """Another user's key is another key: no replay of someone else's answer."""
    first = send(client, staff, "inv", "POST", "/participants", {"site": "BJ01"}, "shared")
    second = send(client, staff, "coord", "POST", "/participants", {"site": "BJ01"}, "shared")
    assert second.status_code == 201 and "Idempotent-Replayed" not in second.headers
    assert first.get_json()["subject_code"] != second.get_json()["subject_code"]


def test_stored_answers_are_encrypted_at_rest(client: FlaskClient, staff: TrialStaff) -> None:
    body = {"site": "BJ01", "identifiers": {"full_name": "Zhao Min"}}
    subject = send(client, staff, "inv", "POST", "/participants", body, "enc-1").get_json()
    raw = db.session.execute(text("SELECT response FROM idempotent_request")).scalars().all()
    assert len(raw) == 1
    assert subject["subject_code"].encode() not in bytes(raw[0])


def test_a_failed_request_stores_nothing_and_can_be_sent_again(
    client: FlaskClient, staff: TrialStaff
) -> None:
    bad = send(client, staff, "inv", "POST", "/participants", {"site": "NOPE"}, "retry-me")
    assert bad.status_code == 404
    assert count(IdempotentRequest) == 0
    good = send(client, staff, "inv", "POST", "/participants", {"site": "NOPE"}, "retry-me")
    assert good.status_code == 404  # the same request is simply carried out again


@pytest.mark.parametrize("key", ["", "a" * 129, "with space", "tab\there"])
def test_malformed_keys_are_422(client: FlaskClient, staff: TrialStaff, key: str) -> None:
    response = send(client, staff, "inv", "POST", "/participants", {"site": "BJ01"}, key)
    assert response.status_code == 422
    assert count(Participant) == 0


def test_every_retryable_create_replays(client: FlaskClient, staff: TrialStaff) -> None:
    """Consents, form saves, device batches, queries, signatures and randomization: a retry
    with the same key changes nothing and answers as the first time."""
    subject = send(
        client, staff, "inv", "POST", "/participants", {"site": "BJ01"}, "p"
    ).get_json()["subject_code"]
    steps: list[tuple[str, str, str, Any, Any]] = []
    for document, role in (
        ("main_icf", "participant"),
        ("partner_icf", "legally_authorized_representative"),
    ):
        steps.append(
            (
                "inv",
                "POST",
                f"/participants/{subject}/consents",
                {"document_id": document, "version": "1.0", "language": "zh-CN",
                 "signer_role": role},
                Consent,
            )
        )
    steps += [
        (
            "inv",
            "PUT",
            f"/participants/{subject}/visits/screening/forms/screening",
            {"values": MCI_SCREENING, "submit": True},
            FormRecord,
        ),
        (
            "inv",
            "PUT",
            f"/participants/{subject}/visits/screening/forms/moca",
            {"values": {"moca_raw": 20, "moca_edu_point": "1"}, "submit": True},
            FormRecord,
        ),
    ]
    for i, (who, method, path, body, model) in enumerate(steps):
        first = send(client, staff, who, method, path, body, f"step-{i}")
        assert first.status_code in (200, 201), first.get_json()
        rows, events = count(model), count(AuditEvent)
        again = send(client, staff, who, method, path, body, f"step-{i}")
        assert (again.status_code, again.get_json()) == (first.status_code, first.get_json())
        assert (count(model), count(AuditEvent)) == (rows, events), path
    api(client, staff["inv"], "POST", f"/participants/{subject}/eligibility", None, 200)
    api(client, staff["inv"], "POST", f"/participants/{subject}/enrollment", None, 200)
    record_id = api(client, staff["inv"], "GET", f"/participants/{subject}/forms")[0]["id"]
    later = [
        ("inv", "POST", f"/participants/{subject}/randomization", {}, Allocation),
        ("monitor", "POST", f"/records/{record_id}/queries",
         {"field": "age", "text": "please check"}, DataQuery),
        ("inv", "POST", f"/records/{record_id}/sign",
         {"password": PASSWORD, "meaning": "approval", "expected_version": 1}, Signature),
        ("dm", "POST", "/device-data",
         [{"subject": subject, "stream": "training_minutes", "time": "2026-01-01T08:00:00+08:00",
           "value": 30, "unit": "min", "source": "cogtrain-ios"}], DeviceObservation),
    ]
    for i, (who, method, path, body, model) in enumerate(later):
        first = send(client, staff, who, method, path, body, f"later-{i}")
        assert first.status_code in (200, 201), (path, first.get_json())
        rows, events = count(model), count(AuditEvent)
        again = send(client, staff, who, method, path, body, f"later-{i}")
        assert again.headers.get("Idempotent-Replayed") == "true", path
        assert (again.status_code, again.get_json()) == (first.status_code, first.get_json())
        assert (count(model), count(AuditEvent)) == (rows, events), path
    # without the key the retry is a new request: randomizing twice is refused
    assert client.post(
        f"{BASE}/participants/{subject}/randomization", json={}, headers=staff["inv"].headers
    ).status_code == 409


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_first_attempts_make_one_participant(
    app: Flask, client: FlaskClient, staff: TrialStaff
) -> None:
    """Two copies of one request race: one commits, the other is told to retry (409) and its
    retry replays the first answer. Exactly one participant exists."""
    key = uuid.uuid4().hex
    headers = {**staff["inv"].headers, "Idempotency-Key": key}
    barrier = threading.Barrier(4)
    answers: list[tuple[int, Any]] = []

    def attempt() -> None:
        with app.app_context(), app.test_client() as own:
            barrier.wait()
            response = own.post(f"{BASE}/participants", json={"site": "BJ01"}, headers=headers)
            answers.append((response.status_code, response.get_json()))
            db.session.remove()

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert count(Participant) == 1
    created = [body for status, body in answers if status == 201]
    assert created and all(status in (201, 409) for status, _ in answers), answers
    retry = client.post(f"{BASE}/participants", json={"site": "BJ01"}, headers=headers)
    assert retry.status_code == 201 and retry.get_json() == created[0]
    assert count(Participant) == 1


def test_openapi_documents_the_header(client: FlaskClient) -> None:
    spec = client.get("/api/v1/openapi.json").get_json()
    create = spec["paths"]["/api/v1/trials/{code}/participants"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])


def test_enrolled_participant_flow_still_works_without_keys(
    client: FlaskClient, staff: TrialStaff
) -> None:
    subject = enrolled_mci_participant(client, staff)
    assert api(client, staff["inv"], "GET", f"/participants/{subject}")["status"] == "enrolled"
    assert count(IdempotentRequest) == 0


def test_a_double_submitted_page_form_screens_one_participant(
    app: Flask, client: FlaskClient, staff: TrialStaff
) -> None:
    """The page's form carries a fresh request_id; posting it twice (a double click, a
    resubmission after a lost answer) replays the first redirect."""
    from tests.web.web_helpers import MCI, PageClient

    page = PageClient(app, staff["inv"])
    html = page.text(f"{MCI}/participants")
    form = html[html.index('action="/trials/MCI-COGTRAIN-01/participants"') :]
    request_id = form.split('name="request_id" value="')[1].split('"')[0]
    data = {"site": "BJ01", "request_id": request_id}
    first = page.post(f"{MCI}/participants", data)
    second = page.post(f"{MCI}/participants", data)
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert count(Participant) == 1
    # another render of the page gives another key: a deliberate second screening works
    html = page.text(f"{MCI}/participants")
    form = html[html.index('action="/trials/MCI-COGTRAIN-01/participants"') :]
    fresh = form.split('name="request_id" value="')[1].split('"')[0]
    assert fresh != request_id
    again = page.post(f"{MCI}/participants", {"site": "BJ01", "request_id": fresh})
    assert again.status_code == 302
    assert count(Participant) == 2
