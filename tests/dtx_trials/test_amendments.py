"""Amendments reach participants (issue #20): on activation of a new protocol version, the
participants already in the trial move to it by the rule the amendment declares
(`amendment.transition`: immediately, at their next visit, after re-consent); until moved their
forms follow their own version; records captured before keep the version they were captured
under and show it (API and pages); every move is audited."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, FormRecord, Participant
from dtx_trials.models.participants import IDENTIFIER_COLUMNS
from dtx_trials.services import protocols
from protocols.loader import load_protocol_report
from tests.dtx_trials.trial_flow import LIBRARY, api, enrolled_mci_participant, load_trial
from tests.helpers import CLI, counted
from tests.web.web_helpers import MCI, PageClient

Doc = dict[str, Any]


def mci_doc() -> Doc:
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)  # type: ignore[no-any-return]


def add_field(form_id: str, field_id: str) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        form = next(f for f in doc["forms"] if f["id"] == form_id)
        form["fields"].append({"id": field_id, "type": "integer", "min": 0, "max": 10,
                               "label": {"en": "Added by amendment 1.1", "zh": "方案修订新增"}})

    return edit


def new_main_consent(doc: Doc) -> None:
    for document in doc["consents"]:
        if document["id"] == "main_icf":
            document["version"] = "1.1"


def amend(tmp_path: Path, transition: str | None, *edits: Callable[[Doc], None]) -> None:
    """Load and activate version 1.1 of the MCI protocol (as `dtx protocol load` does)."""
    doc = mci_doc()
    doc["version"] = "1.1"
    for edit in edits:
        edit(doc)
    if transition is not None:
        doc["amendment"] = {"transition": transition}
    path = tmp_path / "mci-1.1.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)


def adas(**extra: object) -> dict[str, Any]:
    return {"values": {"adas_q01": 3, **extra}}


def moves(subject: str) -> list[AuditEvent]:
    person = db.session.scalars(
        select(Participant).where(Participant.subject_code == subject)
    ).one()
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "participant.protocol_version",
                                 AuditEvent.entity_id == person.id)
    ))


def test_amendment_transition_is_validated() -> None:
    doc = mci_doc()
    doc["amendment"] = {"transition": "whenever"}
    report = load_protocol_report(yaml.safe_dump(doc), "mci.yaml")
    assert report.protocol is None
    assert any("amendment.transition" in str(e) and "next_visit" in str(e)
               for e in report.errors)
    doc["amendment"] = {"transition": "after_reconsent"}
    doc.pop("consents")
    report = load_protocol_report(yaml.safe_dump(doc), "mci.yaml")
    assert [e.path for e in report.errors] == ["amendment.transition"]
    assert "needs the consent documents" in report.errors[0].message


def test_next_visit_moves_the_participant_when_their_next_visit_takes_place(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    subject = enrolled_mci_participant(client, staff)
    api(client, inv, "POST", f"/participants/{subject}/randomization", {}, 201)
    baseline = f"/participants/{subject}/visits/baseline/forms/adas_cog"
    api(client, inv, "PUT", baseline, adas(), 200)
    amend(tmp_path, "next_visit", add_field("adas_cog", "adas_video_rating"))

    shown = api(client, inv, "GET", f"/participants/{subject}", expect=200)
    assert shown["protocol_version"] == {"version_no": 1, "version": "1.0"}
    assert shown["amendment_pending"] == {"version_no": 2, "version": "1.1",
                                          "transition": "next_visit", "missing_consents": []}
    # not moved yet: the field version 1.1 adds is unknown to their version
    body = api(client, inv, "PUT", baseline, adas(adas_video_rating=4), 422)
    assert body["errors"]["values"]["adas_video_rating"] == ["unknown field"]
    assert moves(subject) == []

    # the first data of week 4 is their next visit: they move, then the data is validated
    week_4 = f"/participants/{subject}/visits/week_4/forms/adas_cog"
    with counted() as statements:
        saved = api(client, inv, "PUT", week_4, adas(adas_video_rating=4), 200)
    assert saved["record"]["protocol_version"] == {"version_no": 2, "version": "1.1"}
    # the move is audited without reading (so decrypting) the participant's identifiers
    read = [f"participant.{c}" for c in IDENTIFIER_COLUMNS]
    assert not any(c in s for s in statements for c in read), statements
    shown = api(client, inv, "GET", f"/participants/{subject}", expect=200)
    assert shown["protocol_version"]["version_no"] == 2 and shown["amendment_pending"] is None
    [event] = moves(subject)
    assert event.reason == "amendment v2: moved at the next visit"

    # the baseline record keeps the version it was captured under, and its data as is
    records = api(client, inv, "GET", f"/participants/{subject}/forms", expect=200)
    by_visit = {r["visit_code"]: r for r in records}
    assert by_visit["baseline"]["protocol_version"]["version_no"] == 1
    assert by_visit["baseline"]["data"]["adas_q01"] == 3
    assert "adas_video_rating" not in by_visit["baseline"]["data"]
    body = api(client, inv, "PUT", baseline, adas(adas_video_rating=2), 422)
    assert body["errors"]["values"]["adas_video_rating"] == ["unknown field"]


def test_next_visit_moves_the_participant_when_a_visit_date_is_recorded(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    subject = enrolled_mci_participant(client, staff)
    api(client, inv, "POST", f"/participants/{subject}/randomization", {}, 201)
    amend(tmp_path, "next_visit", add_field("adas_cog", "adas_video_rating"))
    assert api(client, inv, "GET", f"/participants/{subject}")["protocol_version"][
        "version_no"] == 1
    api(client, inv, "POST", f"/participants/{subject}/visits/baseline/date",
        {"date": datetime.date.today().isoformat()}, 200)
    assert api(client, inv, "GET", f"/participants/{subject}")["protocol_version"][
        "version_no"] == 2
    assert len(moves(subject)) == 1


def test_after_reconsent_moves_the_participant_once_the_new_consent_counts(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    subject = enrolled_mci_participant(client, staff)
    api(client, inv, "POST", f"/participants/{subject}/randomization", {}, 201)
    log = f"/participants/{subject}/visits/baseline/forms/adverse_events"
    api(client, inv, "PUT", log, {"values": {"ae_term": "headache"}}, 200)
    amend(tmp_path, "after_reconsent", new_main_consent,
          add_field("adverse_events", "ae_app_related"))

    shown = api(client, inv, "GET", f"/participants/{subject}", expect=200)
    assert shown["missing_consents"] == ["main_icf v1.1"]
    assert shown["amendment_pending"]["transition"] == "after_reconsent"
    assert shown["amendment_pending"]["missing_consents"] == ["main_icf v1.1"]
    # the consent gate names the document; a log form may still be entered, under their own
    # version (no field of 1.1 before they move)
    body = api(client, inv, "PUT", f"/participants/{subject}/visits/baseline/forms/adas_cog",
               adas(), 409)
    assert body["errors"]["consent"] == ["main_icf v1.1"]
    second = {"values": {"ae_term": "rash", "ae_app_related": 1}, "repeat_index": 2}
    body = api(client, inv, "PUT", log, second, 422)
    assert body["errors"]["values"]["ae_app_related"] == ["unknown field"]

    api(client, inv, "POST", f"/participants/{subject}/consents",
        {"document_id": "main_icf", "version": "1.1", "language": "zh-CN",
         "signer_role": "participant"}, 201)
    shown = api(client, inv, "GET", f"/participants/{subject}", expect=200)
    assert shown["protocol_version"]["version_no"] == 2
    assert shown["amendment_pending"] is None and shown["missing_consents"] == []
    [event] = moves(subject)
    assert event.reason == "amendment v2: moved after re-consent"

    saved = api(client, inv, "PUT", log, second, 200)
    assert saved["record"]["protocol_version"]["version_no"] == 2
    first = db.session.scalars(
        select(FormRecord).where(FormRecord.form_code == "adverse_events",
                                 FormRecord.repeat_index == 1)
    ).one()
    assert first.data["ae_term"] == "headache" and "ae_app_related" not in first.data
    assert first.protocol_version_id != db.session.scalars(
        select(FormRecord.protocol_version_id).where(FormRecord.repeat_index == 2)
    ).one()


def test_immediately_is_the_default_and_the_activation_counts_are_audited(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    enrolled = enrolled_mci_participant(client, staff)
    screened = api(client, inv, "POST", "/participants", {"site": "BJ01"}, 201)["subject_code"]
    api(client, inv, "POST", f"/participants/{screened}/withdrawal", {"reason": "moved away"},
        200)
    amend(tmp_path, None, add_field("adas_cog", "adas_video_rating"))
    assert api(client, inv, "GET", f"/participants/{enrolled}")["protocol_version"][
        "version_no"] == 2
    # a withdrawn participant takes no part any more and stays where they were
    assert api(client, inv, "GET", f"/participants/{screened}")["protocol_version"][
        "version_no"] == 1
    [applied] = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "protocol.amendment_applied")
    )
    details = {c["field"]: c["new"] for c in applied.changes}
    assert details == {"transition": "immediately", "moved": 1, "waiting": 0}
    [event] = moves(enrolled)
    assert event.reason == "amendment v2: moved on activation"
    api(client, inv, "PUT", f"/participants/{enrolled}/visits/baseline/forms/adas_cog",
        adas(adas_video_rating=4), 200)


def test_pages_show_each_records_version_and_the_pending_move(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    subject = enrolled_mci_participant(client, staff)
    api(client, inv, "POST", f"/participants/{subject}/randomization", {}, 201)
    api(client, inv, "PUT", f"/participants/{subject}/visits/baseline/forms/adas_cog",
        adas(), 200)
    amend(tmp_path, "next_visit", add_field("adas_cog", "adas_video_rating"))
    pages = PageClient(app, inv)
    page = pages.text(f"{MCI}/participants/{subject}")
    assert 'id="participant-protocol-version">v1 (1.0)<' in page
    assert 'id="amendment-pending">v2 (1.1) · at the next visit<' in page
    # the week 4 form is their next visit: it is shown as version 1.1 shows it
    form = pages.text(f"{MCI}/participants/{subject}/visits/week_4/forms/adas_cog")
    assert 'name="adas_video_rating"' in form
    baseline = pages.text(f"{MCI}/participants/{subject}/visits/baseline/forms/adas_cog")
    assert 'name="adas_video_rating"' not in baseline
    assert 'id="record-protocol-version">v1 (1.0)<' in baseline

    api(client, inv, "PUT", f"/participants/{subject}/visits/week_4/forms/adas_cog",
        adas(adas_video_rating=4), 200)
    page = pages.text(f"{MCI}/participants/{subject}")
    assert 'id="participant-protocol-version">v2 (1.1)<' in page
    assert 'id="amendment-pending"' not in page
    assert 'id="earlier-records"' in page and "v1 (1.0)" in page.split('id="earlier-records"')[1]
