"""Safety: an SAE starts its 24 h expedited-report clock and e-mails the protocol's roles;
an alert rule on an answer alerts the site, waits for an acknowledgement and escalates."""

from __future__ import annotations

import datetime
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, Notification, SafetyEvent, Trial
from dtx_trials.services import protocols, safety
from tests.dtx_trials.trial_flow import (
    LIBRARY,
    MCI_CODE,
    TrialStaff,
    api,
    enrolled_mci_participant,
    trial_staff,
)
from tests.helpers import CLI

SAFETY = """
safety:
  form: adverse_events
  serious_if: "[ae_serious] = '1'"
  report_within_hours: 24
  notify: [sponsor_admin, investigator, monitor]
  alerts:
    - id: app_distress
      form: app_experience
      when: "[app_ease] <= 2"
      message: {en: "The participant finds the app very hard to use", zh: 受试者认为应用非常难用}
      notify: [investigator, coordinator]
      escalate_after_hours: 4
      escalate_to: [sponsor_admin, monitor]
"""
AE = {"ae_term": "fall with fracture", "ae_onset_on": datetime.date.today().isoformat(),
      "ae_severity": "severe", "ae_related": "not_related"}


def load_with_safety(client: FlaskClient, tmp_path: Path) -> TrialStaff:
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    text = text.split("\nsafety:\n", 1)[0]  # the library's SAE rule, replaced with alerts
    path = tmp_path / "mci.yaml"
    path.write_text(text.rstrip("\n") + "\n" + SAFETY, encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    return trial_staff(client, trial)


def notified(kind: str) -> list[str]:
    return sorted(
        n.recipient_role or ""
        for n in db.session.scalars(select(Notification).where(Notification.kind == kind))
    )


def serious_adverse_event(
    client: FlaskClient, tmp_path: Path
) -> tuple[TrialStaff, str, dict[str, object]]:
    """The safety trial, a participant's AE entered as serious by the investigator: the staff,
    the AE form's path and the SAE as listed."""
    staff = load_with_safety(client, tmp_path)
    subject = enrolled_mci_participant(client, staff)
    url = f"/participants/{subject}/visits/baseline/forms/adverse_events"
    api(client, staff["inv"], "PUT", url, {"values": {**AE, "ae_serious": "1"}, "submit": True},
        200)
    (event,) = api(client, staff["inv"], "GET", "/safety-events", expect=200)
    return staff, url, event


def test_sae_clock_and_report(client: FlaskClient, tmp_path: Path) -> None:
    staff = load_with_safety(client, tmp_path)
    inv = staff["inv"]
    subject = enrolled_mci_participant(client, staff)
    url = f"/participants/{subject}/visits/baseline/forms/adverse_events"
    api(client, inv, "PUT", url, {"values": {**AE, "ae_serious": "0"}, "submit": True}, 200)
    assert db.session.scalars(select(SafetyEvent)).all() == []
    before = datetime.datetime.now(datetime.UTC)
    api(client, inv, "PUT", url, {"values": {**AE, "ae_serious": "1"}, "submit": True,
                                  "repeat_index": 2}, 200)
    (event,) = api(client, staff["monitor"], "GET", "/safety-events", expect=200)
    assert event["kind"] == "sae" and event["status"] == "open"
    assert "fall with fracture" in event["message"]
    due = datetime.datetime.fromisoformat(event["due_at"])
    detected = datetime.datetime.fromisoformat(event["detected_at"])
    assert due - detected == datetime.timedelta(hours=24) and detected >= before
    assert notified("safety.sae") == ["investigator", "monitor", "sponsor_admin"]
    # a later correction of the same entry does not start a second clock
    api(client, inv, "PUT", url, {"values": {**AE, "ae_serious": "1", "ae_term": "fall"},
                                  "submit": True, "repeat_index": 2, "reason": "term"}, 200)
    assert len(api(client, inv, "GET", "/safety-events")) == 1
    report = f"/safety-events/{event['id']}/report"
    filed = {"causality": "not_related", "expectedness": "unexpected",
             "narrative": "Fell at home; hospitalised overnight."}
    api(client, staff["coord"], "POST", report, filed, 403)
    api(client, inv, "POST", report, {**filed, "causality": "maybe"}, 422)
    done = api(client, inv, "POST", report, filed, 200)
    assert done["status"] == "reported" and done["is_within_clock"] is True
    api(client, inv, "POST", report, filed, 409)
    assert api(client, staff["inv2"], "GET", "/safety-events") == []
    actions = set(db.session.scalars(select(AuditEvent.action)))
    assert {"safety.sae", "safety.report"} <= actions


def test_sae_follow_ups_track_causality_expectedness_and_outcome(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff, _, event = serious_adverse_event(client, tmp_path)
    inv = staff["inv"]
    follow = f"/safety-events/{event['id']}/follow-ups"
    update = {"causality": "possibly", "expectedness": "unexpected", "outcome": "recovering",
              "narrative": "Discharged; physiotherapy started."}
    body = api(client, inv, "POST", follow, update, 409)
    assert body["message"] == "file the initial report first"
    api(client, inv, "POST", f"/safety-events/{event['id']}/report",
        {"causality": "not_related", "expectedness": "unexpected",
         "narrative": "Fell at home; hospitalised overnight."}, 200)
    api(client, staff["coord"], "POST", follow, update, 403)
    body = api(client, inv, "POST", follow, {**update, "outcome": "better"}, 422)
    assert "outcome" in body["errors"]["json"]
    first = api(client, inv, "POST", follow, update, 201)
    assert first["status"] == "reported"
    assert [(f["number"], f["causality"], f["outcome"]) for f in first["follow_ups"]] == [
        (1, "possibly", "recovering")]
    final = api(client, inv, "POST", follow,
                {**update, "outcome": "recovered", "narrative": "Fully recovered.",
                 "is_final": True}, 201)
    assert final["status"] == "closed" and len(final["follow_ups"]) == 2
    assert api(client, inv, "POST", follow, update, 409)["message"] == (
        "the SAE was closed by its final follow-up")
    # a closed case's initial report is not filed again: neither reopened nor rewritten (its
    # time, author, assessment and narrative; before, a closed event took a second report)
    report = f"/safety-events/{event['id']}/report"
    again = {"causality": "related", "expectedness": "expected", "narrative": "Rewritten."}
    assert api(client, inv, "POST", report, again, 409)["message"] == (
        "the initial report was already filed")
    (closed,) = api(client, staff["monitor"], "GET", "/safety-events")
    assert (closed["status"], closed["causality"], closed["expectedness"]) == (
        "closed", "not_related", "unexpected")
    assert closed["is_within_clock"] is True
    stored = db.session.get(SafetyEvent, event["id"])
    assert stored is not None and stored.narrative == "Fell at home; hospitalised overnight."
    assert [e["status"] for e in api(client, staff["monitor"], "GET",
                                     "/safety-events?status=closed")] == ["closed"]
    # the changed assessment is named in the trail, the closure is audited
    reasons = [e.reason for e in db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "safety.follow_up").order_by(AuditEvent.id))]
    assert reasons == ["assessment changed: causality", None]
    assert db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "safety.close")).one()
    from dtx_trials.services.integrity import check_integrity

    assert check_integrity(db.session).ok


def test_an_sae_corrected_to_not_serious_is_downgraded_not_escalated(
    client: FlaskClient, tmp_path: Path
) -> None:
    """The site corrects an AE entered as serious by mistake before the initial report: the
    SAE is downgraded, its clock and escalation stop and the roles are told (before, it stayed
    open and was escalated as an overdue report). Corrected back, it opens on its first
    clock; a downgraded SAE takes no expedited report."""
    staff, url, event = serious_adverse_event(client, tmp_path)
    inv = staff["inv"]
    # seriousness is the investigator's call: a coordinator's correction leaves it open
    api(client, staff["coord"], "PUT", url, {"values": {**AE, "ae_serious": "0"},
                                             "submit": True, "reason": "typo"}, 200)
    assert [e["status"] for e in api(client, inv, "GET", "/safety-events")] == ["open"]
    api(client, inv, "PUT", url, {"values": {**AE, "ae_serious": "1"}, "submit": True,
                                  "reason": "serious after all"}, 200)
    api(client, inv, "PUT", url, {"values": {**AE, "ae_serious": "0"}, "submit": True,
                                  "reason": "not serious: no hospitalisation"}, 200)
    (downgraded,) = api(client, staff["monitor"], "GET", "/safety-events?status=downgraded")
    assert downgraded["id"] == event["id"] and downgraded["due_at"] == event["due_at"]
    assert notified("safety.downgrade") == ["investigator", "monitor", "sponsor_admin"]
    trial = db.session.get(Trial, staff.trial.id)
    assert trial is not None
    late = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=25)
    assert safety.escalate_overdue(db.session, trial, now=late) == []
    report = f"/safety-events/{event['id']}/report"
    filed = {"causality": "not_related", "expectedness": "unexpected", "narrative": "Fell."}
    assert "no expedited report is due" in api(client, inv, "POST", report, filed, 409)["message"]
    # a second save while not serious changes nothing more
    api(client, inv, "PUT", url, {"values": {**AE, "ae_serious": "0", "ae_term": "fall"},
                                  "submit": True, "reason": "term"}, 200)
    assert len(notified("safety.downgrade")) == 3
    # serious after all: open again, due when first due (escalated now, being overdue)
    api(client, inv, "PUT", url, {"values": {**AE, "ae_serious": "1"}, "submit": True,
                                  "reason": "hospitalised after all"}, 200)
    (reopened,) = api(client, inv, "GET", "/safety-events", expect=200)
    assert (reopened["id"], reopened["status"], reopened["due_at"]) == (
        event["id"], "open", event["due_at"])
    assert notified("safety.reopen") == ["investigator", "monitor", "sponsor_admin"]
    assert [e.id for e in safety.escalate_overdue(db.session, trial, now=late)] == [event["id"]]
    reasons = [e.reason or "" for e in db.session.scalars(
        select(AuditEvent).where(AuditEvent.action.in_(["safety.downgrade", "safety.reopen"]))
        .order_by(AuditEvent.id))]
    assert [r.split(":")[0] for r in reasons] == [
        "the AE record no longer meets the serious criteria",
        "the AE record meets the serious criteria again"]
    assert api(client, inv, "POST", report, filed, 200)["status"] == "reported"


def test_alert_acknowledged_or_escalated(client: FlaskClient, tmp_path: Path) -> None:
    staff = load_with_safety(client, tmp_path)
    trial = db.session.get(Trial, staff.trial.id)
    assert trial is not None
    first, second = (enrolled_mci_participant(client, staff) for _ in range(2))
    for subject in (first, second):
        api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
        api(client, staff["coord"], "PUT",
            f"/participants/{subject}/visits/week_4/forms/app_experience",
            {"values": {"app_ease": 1}, "submit": True}, 200)
    alerts = api(client, staff["coord"], "GET", "/safety-events?status=open", expect=200)
    assert [a["rule_id"] for a in alerts] == ["app_distress", "app_distress"]
    assert notified("safety.alert") == ["coordinator", "coordinator", "investigator",
                                        "investigator"]
    by_subject = {a["subject_code"]: a for a in alerts}
    ack = api(client, staff["coord"], "POST",
              f"/safety-events/{by_subject[first]['id']}/acknowledge", None, 200)
    assert ack["status"] == "acknowledged"
    api(client, staff["coord"], "POST", f"/safety-events/{by_subject[first]['id']}/acknowledge",
        None, 409)
    api(client, staff["monitor"], "POST",
        f"/safety-events/{by_subject[second]['id']}/acknowledge", None, 403)
    now = datetime.datetime.now(datetime.UTC)
    assert safety.escalate_overdue(db.session, trial, now + datetime.timedelta(hours=3)) == []
    escalated = safety.escalate_overdue(db.session, trial, now + datetime.timedelta(hours=5))
    assert [e.id for e in escalated] == [by_subject[second]["id"]]  # the unacknowledged one
    assert notified("safety.escalation") == ["monitor", "sponsor_admin"]
    assert safety.escalate_overdue(db.session, trial, now + datetime.timedelta(hours=9)) == []
    shown = {a["subject_code"]: a for a in api(client, staff["monitor"], "GET", "/safety-events")}
    assert shown[second]["escalated_at"] and shown[first]["escalated_at"] is None
