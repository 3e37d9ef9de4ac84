"""Decentralized trial operations (issue #20): defects found running a multi-site trial —
form definitions answered empty, log forms opening visits the schedule does not have,
unknown time zones accepted, adherence mixing UTC and site-local days."""

from __future__ import annotations

import datetime
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select

from dtx_trials.extensions import db
from dtx_trials.models import FormRecord, Participant, Site, Visit
from tests.dtx_trials.trial_flow import (
    MCI_CODE,
    api,
    enrolled_mci_participant,
    load_trial,
)

BASE = f"/api/v1/trials/{MCI_CODE}"


def test_form_definition_answers_the_description_and_the_fhir_questionnaire(
    client: FlaskClient,
) -> None:
    staff = load_trial(client)
    described = api(client, staff["inv"], "GET", "/forms/moca", expect=200)
    assert described["id"] == "moca" and described["fields"], described
    chinese = api(client, staff["inv"], "GET", "/forms/moca?lang=zh", expect=200)
    assert chinese["title"] != described["title"]
    fhir = api(client, staff["inv"], "GET", "/forms/moca?format=fhir", expect=200)
    assert fhir["resourceType"] == "Questionnaire" and fhir["item"], fhir
    assert fhir["url"] == f"urn:dtx:{MCI_CODE}:form:moca"
    api(client, staff["inv"], "GET", "/forms/nope", expect=404)
    api(client, staff["inv"], "GET", "/forms/moca?format=pdf", expect=422)


def test_log_form_is_entered_at_schedule_visits_only(client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    ae = {"values": {"ae_term": "headache"}}
    n_visits = db.session.scalar(select(func.count()).select_from(Visit))
    body = api(
        client, staff["inv"], "PUT",
        f"/participants/{subject}/visits/week_99/forms/adverse_events", ae, 422,
    )
    assert "week_99 is not in the schedule" in body["message"]
    assert "baseline" in body["errors"]["visit"][0]
    assert db.session.scalar(select(func.count()).select_from(Visit)) == n_visits
    assert db.session.scalar(select(func.count()).select_from(FormRecord).where(
        FormRecord.form_code == "adverse_events")) == 0
    for visit in ("baseline", "unscheduled"):
        api(client, staff["inv"], "PUT",
            f"/participants/{subject}/visits/{visit}/forms/adverse_events", ae, 200)


def test_site_time_zone_is_an_iana_name(client: FlaskClient) -> None:
    staff = load_trial(client)
    body = api(client, staff["sponsor"], "POST", "/sites",
               {"code": "MARS1", "name": "Olympus base", "timezone": "Mars/Olympus"}, 422)
    assert "timezone" in str(body["errors"]), body
    assert db.session.scalar(select(Site).where(Site.code == "MARS1")) is None
    api(client, staff["sponsor"], "PATCH", "/sites/BJ01", {"timezone": "Asia/Nowhere"}, 422)
    api(client, staff["sponsor"], "PATCH", "/sites/BJ01", {"timezone": "Asia/Urumqi"}, 200)
    created = api(client, staff["sponsor"], "POST", "/sites",
                  {"code": "HK02", "name": "Kowloon", "timezone": "Asia/Hong_Kong"}, 201)
    assert created["timezone"] == "Asia/Hong_Kong"


def test_site_country_is_an_iso_3166_alpha_2_code(client: FlaskClient) -> None:
    """The API, and the service the dashboard's form calls, refuse a country code DM.COUNTRY
    could not carry (before, any two letters were kept and exported as CHN; a longer one was
    a database error on PostgreSQL)."""
    import pytest

    from dtx_trials.models import Trial
    from dtx_trials.models.users import Role
    from dtx_trials.services import trials
    from dtx_trials.services.access import Actor, Grant
    from dtx_trials.services.errors import ValidationError

    staff = load_trial(client)
    body = api(client, staff["sponsor"], "POST", "/sites",
               {"code": "XX1", "name": "Nowhere", "country": "XZ"}, 422)
    assert list(body["errors"]) == ["json"] and "country" in body["errors"]["json"], body
    assert db.session.scalar(select(Site).where(Site.code == "XX1")) is None
    api(client, staff["sponsor"], "PATCH", "/sites/BJ01", {"country": "China"}, 422)
    # hostile bytes (PostgreSQL refuses a NUL that SQLite stores) are a 422, never the database's
    api(client, staff["sponsor"], "PATCH", "/sites/BJ01", {"country": "\x00\x00"}, 422)
    api(client, staff["sponsor"], "POST", "/sites",
        {"code": "XX2", "name": "Nul", "country": "J\x00"}, 422)
    api(client, staff["sponsor"], "PATCH", "/sites/BJ01", {"country": "JP"}, 200)
    created = api(client, staff["sponsor"], "POST", "/sites",
                  {"code": "DE01", "name": "Berlin", "country": "DE"}, 201)
    assert created["country"] == "DE"
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    sponsor = Actor(user_id=None, username="sponsor", printed_name="Sponsor", via="cli",
                    grants=(Grant(trial.id, None, Role.SPONSOR_ADMIN),))
    with pytest.raises(ValidationError) as refused:
        trials.create_site(db.session, sponsor, trial,
                           {"code": "WEB1", "name": "Web form", "country": "Chinese"})
    assert "country" in refused.value.errors
    assert db.session.scalar(select(Site).where(Site.code == "WEB1")) is None


def test_adherence_counts_the_site_local_day_near_midnight(client: FlaskClient) -> None:
    """Haikou (UTC+8) at 00:30 local is 16:30 UTC the day before: a record sent at local
    'now' belongs to the local day that has just begun, and so does 'today'."""
    from dataclasses import replace

    from dtx_trials.services import devices
    from dtx_trials.services.protocols import active_protocol

    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    yesterday = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=1)
    midnight = datetime.datetime.combine(yesterday, datetime.time(16, 0), datetime.UTC)
    participant = db.session.scalars(
        select(Participant).where(Participant.subject_code == subject)
    ).one()
    # randomized the evening before (local), i.e. the UTC morning of the same UTC day
    participant.randomized_at = midnight - datetime.timedelta(hours=10)
    db.session.commit()
    sent_at = (midnight + datetime.timedelta(minutes=29)).astimezone(
        datetime.timezone(datetime.timedelta(hours=8))
    )
    record: dict[str, Any] = {
        "subject": subject, "stream": "training_minutes", "time": sent_at.isoformat(),
        "value": 40, "unit": "min", "source": "cogtrain-android-2.3",
    }
    response = client.post(f"{BASE}/device-data", json=[record], headers=staff["dm"].headers)
    assert response.get_json()["accepted"] == 1, response.get_json()
    _, protocol = active_protocol(db.session, staff.trial)
    stream = protocol.device_streams[0]
    assert stream.adherence is not None
    rule = replace(stream.adherence, window_start_visit=None, window_end_visit=None,
                   condition=None)
    protocol = replace(protocol, device_streams=(replace(stream, adherence=rule),))
    now = midnight + datetime.timedelta(minutes=30)  # 00:30 in Shanghai, 16:30 UTC
    result = devices.adherence(db.session, staff.trial, protocol, now=now)[subject].streams[0]
    local_today = yesterday + datetime.timedelta(days=1)
    assert result.window_end_on == local_today
    assert result.window_start_on == yesterday
    assert result.value == 0.5  # two local days, the record on the second


def test_an_all_blank_questionnaire_is_not_a_submission(client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    url = f"/participants/{subject}/visits/week_4/forms/app_experience"
    for blank in ({}, {"app_ease": "", "app_problem": ""}):
        body = api(client, staff["coord"], "PUT", url, {"values": blank, "submit": True}, 422)
        assert body["errors"]["values"]["_form"] == ["answer at least one question"]
    assert db.session.scalar(select(func.count()).select_from(FormRecord).where(
        FormRecord.form_code == "app_experience")) == 0
    api(client, staff["coord"], "PUT", url, {"values": {}, "submit": False}, 200)  # a draft
    saved = api(client, staff["coord"], "PUT", url,
                {"values": {"app_problem": "0"}, "submit": True}, 200)
    assert saved["record"]["status"] == "submitted"
