"""A monitor's, data manager's and auditor's view of a record's life, tried as they would try
it: a submitted form is never emptied by a draft save, a missed visit takes no data, a visit
with data is not swept as missed, a locked record's visit date stands, a signature's hash is
its record's until the data change, and a record with an unresolved query is not locked
(SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import func, select

from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, FormRecord, Signature, Trial
from dtx_trials.services import deviations, forms
from dtx_trials.services.access import SYSTEM
from tests.dtx_trials.test_visits import SHANGHAI, load_variant, local_today, visits_of
from tests.dtx_trials.trial_flow import api, enrolled_mci_participant, load_trial, moca
from tests.helpers import PASSWORD

APP_EXPERIENCE = {"app_ease": "7", "app_problem": "0"}


def test_a_submitted_form_is_corrected_as_a_submission_never_a_draft(
    client: FlaskClient,
) -> None:
    """A draft save skips the required fields and the warnings: over a submitted form it
    is a 409 and the record keeps its values (before: saved, the form emptied, still
    "submitted")."""
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    path = f"/participants/{subject}/visits/screening/forms/moca"
    record = next(r for r in api(client, staff["inv"], "GET", f"/participants/{subject}/forms")
                  if r["form_code"] == "moca")
    body = api(client, staff["inv"], "PUT", path,
               {"values": {}, "submit": False, "reason": "x",
                "expected_version": record["version"]}, 409)
    assert "submit: true" in body["message"]
    stored = db.session.get(FormRecord, record["id"])
    assert stored is not None and stored.status == "submitted"
    assert stored.data == record["data"] and stored.version == record["version"]


def test_a_signature_stands_through_lock_and_unlock_and_its_hash_is_the_records(
    client: FlaskClient,
) -> None:
    """SIG-02: the signature's content hash is the record's until the data change (before:
    the version moved at the signing itself, so no signed record's hash ever matched); an
    unlocked record is "signed" again while its signature stands (before: "submitted")."""
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    record = next(r for r in api(client, staff["inv"], "GET", f"/participants/{subject}/forms")
                  if r["form_code"] == "moca")
    rid = record["id"]
    seen = api(client, staff["inv"], "GET", f"/records/{rid}")
    signature = api(client, staff["inv"], "POST", f"/records/{rid}/sign",
                    {"password": PASSWORD, "expected_version": seen["version"],
                     "content_sha256": seen["content_sha256"]}, 201)
    signed = api(client, staff["inv"], "GET", f"/records/{rid}")
    assert signed["status"] == "signed" and signed["version"] > seen["version"]
    assert signed["content_sha256"] == signature["content_sha256"] == seen["content_sha256"]
    api(client, staff["dm"], "POST", f"/records/{rid}/lock", {}, 200)
    api(client, staff["dm"], "POST", f"/records/{rid}/unlock", {"reason": "query"}, 200)
    unlocked = api(client, staff["inv"], "GET", f"/records/{rid}")
    assert unlocked["status"] == "signed"
    trail = list(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.entity_type == "form_record", AuditEvent.entity_id == rid
    ).order_by(AuditEvent.seq)))
    assert trail[-2:] == ["form.locked", "form.submitted"]  # the unlock, named as such
    assert [s["status"] for s in unlocked["signatures"]] == ["valid"]
    row, stored = db.session.get(FormRecord, rid), db.session.get(Signature, signature["id"])
    assert row is not None and stored is not None and forms.signature_is_valid(row, stored)
    # a data change voids it, and the record's hash moves on
    api(client, staff["inv"], "PUT", f"/participants/{subject}/visits/screening/forms/moca",
        {"values": moca(24), "submit": True, "reason": "rescored"}, 200)
    changed = api(client, staff["inv"], "GET", f"/records/{rid}")
    assert changed["status"] == "submitted"
    assert changed["content_sha256"] != signature["content_sha256"]
    assert [s["status"] for s in changed["signatures"]] == ["invalidated"]


def test_a_record_with_an_unresolved_query_is_not_locked_nor_its_casebook(
    client: FlaskClient,
) -> None:
    """Locked, a record could no longer be corrected to resolve its query (before: locked,
    and the status grid showed "locked" and hid the query)."""
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    rid = next(r["id"] for r in api(client, staff["inv"], "GET", f"/participants/{subject}/forms")
               if r["form_code"] == "moca")
    query = api(client, staff["monitor"], "POST", f"/records/{rid}/queries",
                {"field": "moca_raw", "text": "Please confirm"}, 201)
    assert api(client, staff["dm"], "POST", f"/records/{rid}/lock", {}, 409)["queries"] == [
        query["id"]]
    body = api(client, staff["dm"], "POST", f"/participants/{subject}/lock", {}, 409)
    assert body["queries"] == [query["id"]]
    assert set(db.session.scalars(select(FormRecord.status))) == {"submitted"}
    api(client, staff["inv"], "POST", f"/queries/{query['id']}/answer", {"answer": "Yes"}, 200)
    assert api(client, staff["dm"], "POST", f"/records/{rid}/lock", {}, 409)  # answered only
    api(client, staff["monitor"], "POST", f"/queries/{query['id']}/close", {}, 200)
    api(client, staff["dm"], "POST", f"/participants/{subject}/lock", {}, 200)
    assert set(db.session.scalars(select(FormRecord.status))) == {"locked"}


def test_visit_dates_missed_visits_and_locked_forms(client: FlaskClient, tmp_path: Path) -> None:
    """A missed visit takes no data (before: data went into a visit recorded as not done);
    the sweep never marks missed a visit holding submitted forms (before: it did, and its
    date was then refused); a visit holding locked forms keeps its date (before: changed
    under them, the collection date of every export); year 1 is a 422 (before: a 500)."""
    staff = load_variant(client, tmp_path, reanchor=True)  # visits planned from baseline
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    today = local_today()
    url = f"/participants/{subject}/visits"
    baseline_on = today - datetime.timedelta(days=200)
    api(client, staff["coord"], "POST", f"{url}/baseline/date",
        {"date": baseline_on.isoformat(), "reason": "entered late"}, 200)
    events = db.session.scalar(select(func.count()).select_from(AuditEvent))
    body = api(client, staff["inv"], "POST", f"{url}/week_4/date",
               {"date": "0001-01-01", "time": "00:00"}, 422)
    assert "date" in body["errors"]
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == events

    api(client, staff["inv"], "POST", f"{url}/week_12/missed", {"reason": "travelling"}, 200)
    body = api(client, staff["inv"], "PUT", f"{url}/week_12/forms/app_experience",
               {"values": APP_EXPERIENCE, "submit": True}, 409)
    assert "missed" in body["message"]

    # week 24's forms are in, its date not yet: its window closes, it is not missed
    api(client, staff["inv"], "PUT", f"{url}/week_24/forms/app_experience",
        {"values": APP_EXPERIENCE, "submit": True}, 200)
    trial = db.session.get(Trial, staff.trial.id)
    assert trial is not None
    closed = datetime.datetime.combine(today + datetime.timedelta(days=1), datetime.time(),
                                       SHANGHAI)
    swept = deviations.detect_missed_visits(db.session, SYSTEM, trial, now=closed)
    assert {d.description.split()[1] for d in swept} == {"week_4"}  # no data, no date
    assert visits_of(client, staff, subject)["week_24"]["status"] != "missed"
    week_24_on = baseline_on + datetime.timedelta(days=168)
    api(client, staff["inv"], "POST", f"{url}/week_24/date",
        {"date": week_24_on.isoformat()}, 200)

    # locked forms keep their visit's date
    rid = next(r["id"] for r in api(client, staff["inv"], "GET", f"/participants/{subject}/forms")
               if r["form_code"] == "app_experience")
    api(client, staff["dm"], "POST", f"/records/{rid}/lock", {}, 200)
    moved = (week_24_on + datetime.timedelta(days=1)).isoformat()
    body = api(client, staff["inv"], "POST", f"{url}/week_24/date",
               {"date": moved, "reason": "typo"}, 409)
    assert "locked" in body["message"]
    assert visits_of(client, staff, subject)["week_24"]["actual_on"] == week_24_on.isoformat()
    api(client, staff["dm"], "POST", f"/records/{rid}/unlock", {"reason": "date typo"}, 200)
    api(client, staff["inv"], "POST", f"{url}/week_24/date", {"date": moved, "reason": "typo"},
        200)
