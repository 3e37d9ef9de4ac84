"""The DTx app's API (issue #20): participant tokens redeemed once from the activation code,
today's questionnaires with their definitions, answers, usage data, the participant's own
schedule (never the arm unless open-label); service credentials for an app vendor's backend
(client credentials, scoped to one trial and device-data write, hashed, revocable, audited);
device data read back per participant (paged) and exported."""

from __future__ import annotations

import datetime
import io
import zipfile
from pathlib import Path
from typing import Any

import yaml
from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import AppToken, AuditEvent, ServiceCredential
from dtx_trials.services import protocols
from dtx_trials.services.accounts import sha256_hex
from dtx_trials.services.integrity import check_integrity
from tests.dtx_trials.trial_flow import (
    LIBRARY,
    MCI_CODE,
    TrialStaff,
    api,
    enrolled_mci_participant,
    trial_staff,
)
from tests.helpers import CLI, login, make_user

ARM_WORDS = ("cogtrain", "sham", "Adaptive cognitive training", "Sham training")


def load_mci(client: FlaskClient, tmp_path: Path, *, open_label: bool = False) -> TrialStaff:
    """The MCI trial with a questionnaire window (app experience, around week 4)."""
    doc = yaml.safe_load((LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8"))
    doc["schedule"]["epro"] = [{"form": "app_experience", "visit": "week_4", "opens": -3,
                                "closes": 4, "remind_after_hours": 24}]
    if open_label:
        doc["blinding"] = {"level": "open", "blinded_roles": []}
    path = tmp_path / "mci.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    from dtx_trials.models import Trial

    return trial_staff(client, db.session.scalars(
        select(Trial).where(Trial.code == MCI_CODE)).one())


def randomized(client: FlaskClient, staff: TrialStaff) -> tuple[str, str]:
    subject = enrolled_mci_participant(client, staff)
    receipt = api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    return subject, receipt["activation_code"]


def app_call(client: FlaskClient, token: str | None, method: str, path: str, json: Any = None,
             expect: int | None = None, query: str = "") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.open(f"/api/v1/app{path}{query}", method=method, json=json,
                           headers=headers)
    if expect is not None:
        assert response.status_code == expect, (response.status_code, response.get_json())
    return response.get_json()


def redeem(client: FlaskClient, code: str, expect: int = 201) -> Any:
    return app_call(client, None, "POST", "/activation",
                    {"trial": MCI_CODE, "activation_code": code}, expect)


def test_the_activation_code_is_redeemed_once_for_a_token_that_opens_the_app_api_only(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_mci(client, tmp_path)
    subject, code = randomized(client, staff)
    assert redeem(client, "MCI-ZZZZ-ZZZZ", 404)["message"] == "unknown activation code"
    issued = redeem(client, code.lower())  # typed as the participant reads it
    token = issued["token"]
    assert token.startswith("dtxp_") and issued["subject_code"] == subject
    assert "already been redeemed" in redeem(client, code, 409)["message"]
    stored = db.session.scalars(select(AppToken)).one()
    assert stored.token_hash == sha256_hex(token) and stored.kind == "participant"
    assert db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "app.activated")).one().entity_id == stored.id

    me = app_call(client, token, "GET", "/me", expect=200)
    assert me["subject_code"] == subject and me["trial"] == MCI_CODE
    assert "arm" not in me  # a double-blind trial never tells the app the arm
    for path in ("/me", "/schedule", "/questionnaires"):
        body = client.get(f"/api/v1/app{path}", headers={"Authorization": f"Bearer {token}"})
        assert not any(word in body.get_data(as_text=True) for word in ARM_WORDS)

    # the app token opens nothing of the staff API; a staff token nothing of the app API
    for staff_path in (f"/api/v1/trials/{MCI_CODE}/participants",
                       f"/api/v1/trials/{MCI_CODE}/participants/{subject}", "/api/v1/me"):
        assert client.get(staff_path, headers={"Authorization": f"Bearer {token}"}
                          ).status_code == 401
    assert client.get("/api/v1/app/me", headers=staff["inv"].headers).status_code == 401
    app_call(client, None, "GET", "/me", expect=401)

    # site staff end the token (a lost phone); the code stays spent
    assert api(client, staff["inv"], "DELETE", f"/participants/{subject}/app-tokens",
               expect=200) == {"revoked": 1}
    app_call(client, token, "GET", "/me", expect=401)
    redeem(client, code, 409)


def test_an_open_label_trial_tells_the_app_the_arm(client: FlaskClient, tmp_path: Path) -> None:
    staff = load_mci(client, tmp_path, open_label=True)
    _, code = randomized(client, staff)
    me = app_call(client, redeem(client, code)["token"], "GET", "/me", expect=200)
    assert me["arm"]["code"] in ("cogtrain", "sham") and me["arm"]["name_zh"]


def test_todays_questionnaires_answers_and_schedule(client: FlaskClient, tmp_path: Path) -> None:
    staff = load_mci(client, tmp_path)
    subject, code = randomized(client, staff)
    token = redeem(client, code)["token"]
    assert app_call(client, token, "GET", "/questionnaires", expect=200) == []
    schedule = app_call(client, token, "GET", "/schedule", expect=200)
    week_4 = next(q for q in schedule["questionnaires"] if q["visit"] == "week_4")
    assert week_4["status"] == "upcoming"
    body = app_call(client, token, "PUT", "/questionnaires/week_4/app_experience",
                    {"values": {"app_ease": 7}, "submit": True}, 409)
    assert "is not open today; it is open" in body["message"]

    # the week 4 visit took place today: its questionnaire is open (site calendar)
    today = datetime.date.today().isoformat()
    api(client, staff["inv"], "POST", f"/participants/{subject}/visits/week_4/date",
        {"date": today}, 200)
    [due] = app_call(client, token, "GET", "/questionnaires", expect=200, query="?lang=zh")
    assert (due["visit"], due["form"], due["status"]) == ("week_4", "app_experience", "open")
    assert [f["id"] for f in due["definition"]["fields"]] == [
        "app_ease", "app_problem", "app_problem_text"]
    assert due["definition"]["title"] == "应用使用体验（受试者填写）"

    url = "/questionnaires/week_4/app_experience"
    body = app_call(client, token, "PUT", url, {"values": {}, "submit": True}, 422)
    assert body["errors"]["values"]["_form"] == ["answer at least one question"]
    app_call(client, token, "PUT", "/questionnaires/week_4/adas_cog",
             {"values": {"adas_q01": 1}}, 404)  # a site form is not the participant's
    saved = app_call(client, token, "PUT", url,
                     {"values": {"app_ease": 7, "app_problem": "0"}, "submit": True,
                      "device_time": "2026-12-05T09:00:00+08:00"}, 200)
    assert saved["record"]["status"] == "submitted"
    assert app_call(client, token, "GET", "/questionnaires", expect=200) == []
    app_call(client, token, "PUT", url, {"values": {"app_ease": 2}, "submit": True}, 409)
    schedule = app_call(client, token, "GET", "/schedule", expect=200)
    assert {q["status"] for q in schedule["questionnaires"] if q["visit"] == "week_4"} == {
        "answered"}
    assert next(v for v in schedule["visits"] if v["visit"] == "week_4")["actual_on"] == today
    # the submission is the participant's, through the app
    event = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "form.submit")
        .order_by(AuditEvent.id.desc())).first()
    assert event is not None and event.actor_name == f"Participant {subject}"
    assert event.auth_ref == f"app_token:{db.session.scalars(select(AppToken.id)).one()}"
    # the trail names the app token, and verify accepts it as the participant's own
    report = check_integrity(db.session)
    assert report.ok, [p.message for p in report.problems]


def usage(day: int, value: float, subject: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"stream": "training_minutes",
                              "time": f"2026-11-0{day}T20:00:00+08:00", "value": value,
                              "unit": "min", "source": "dtx-app"}
    if subject is not None:
        record["subject"] = subject
    return record


def test_usage_upload_read_back_per_participant_and_exported(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_mci(client, tmp_path)
    subject, code = randomized(client, staff)
    other = enrolled_mci_participant(client, staff)
    token = redeem(client, code)["token"]
    result = app_call(client, token, "POST", "/device-data", [usage(1, 25), usage(2, 31.5)], 200)
    assert (result["accepted"], result["rejected"]) == (2, 0)
    # resent: duplicates, nothing stored twice
    assert app_call(client, token, "POST", "/device-data", [usage(1, 25)], 200)[
        "duplicates"] == 1
    body = app_call(client, token, "POST", "/device-data", [usage(3, 10, other)], 422)
    assert body["errors"]["subject"] == [f"must be {subject} or left out"]

    path = f"/participants/{subject}/device-data"
    response = client.get(f"/api/v1/trials/{MCI_CODE}{path}?per_page=1&page=2",
                          headers=staff["monitor"].headers)
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "2"
    [row] = response.get_json()
    assert (row["stream"], row["value"], row["unit"]) == ("training_minutes", 31.5, "min")
    assert row["time"].startswith("2026-11-02T12:00:00")
    assert len(api(client, staff["dm"], "GET", path, expect=200)) == 2
    api(client, staff["inv2"], "GET", path, expect=404)  # another site's participant
    api(client, staff["stat"], "GET", path, expect=403)

    export = client.get(f"/api/v1/trials/{MCI_CODE}/exports/csv.zip", headers=staff["dm"].headers)
    assert export.status_code == 200
    with zipfile.ZipFile(io.BytesIO(export.data)) as archive:
        text = archive.read("csv/device_observations.csv").decode()
    lines = text.splitlines()
    assert lines[0] == ("subject_code,site_code,stream,time_utc,value,unit,source,"
                        "received_at_utc")
    assert lines[1].startswith(f"{subject},BJ01,training_minutes,2026-11-01T12:00:00+00:00,25.0,"
                               "min,dtx-app,")
    assert len(lines) == 3


def approve_credential(client: FlaskClient, staff: TrialStaff, credential_id: int) -> None:
    """A second administrator approves the credential the trial's administrator created; its
    creator cannot, nor an administrator the creator appointed (an account it may control)."""
    approval = f"/service-credentials/{credential_id}/approval"
    api(client, staff["sponsor"], "POST", approval, None, 403)
    puppet = login(client, make_user("puppet"))
    api(client, staff["sponsor"], "POST", "/memberships",
        {"user_id": puppet.user.id, "role": "sponsor_admin"}, 201)
    api(client, puppet, "POST", approval, None, 403)
    other = login(client, make_user("admin2", role="sponsor_admin", trial=staff.trial))
    approved = api(client, other, "POST", approval, None, 200)
    assert approved["approved_by_id"] == other.user.id and approved["approved_at"]
    api(client, other, "POST", approval, None, 409)


def test_service_credentials_write_device_data_of_their_trial_only(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_mci(client, tmp_path)
    subject, _ = randomized(client, staff)
    api(client, staff["inv"], "POST", "/service-credentials", {"name": "Vendor"}, 403)
    created = api(client, staff["sponsor"], "POST", "/service-credentials",
                  {"name": "CogTrain backend"}, 201)
    secret, client_id = created["client_secret"], created["client_id"]
    listed = api(client, staff["sponsor"], "GET", "/service-credentials", expect=200)
    assert [c["client_id"] for c in listed] == [client_id]
    assert "client_secret" not in listed[0]
    stored = db.session.scalars(select(ServiceCredential)).one()
    assert stored.secret_hash == sha256_hex(secret) and secret not in str(stored.__dict__)

    grant = {"grant_type": "client_credentials", "client_id": client_id}
    # live once a second administrator approved it: one administrator alone never holds a
    # way to write participants' device data (before: live at once, in its creator's hands)
    assert created["approved_at"] is None
    waiting = app_call(client, None, "POST", "/token", {**grant, "client_secret": secret}, 403)
    assert "second administrator" in waiting["message"]
    approve_credential(client, staff, created["id"])
    app_call(client, None, "POST", "/token", {**grant, "client_secret": "wrong"}, 401)
    app_call(client, None, "POST", "/token",
             {**grant, "client_secret": secret, "scope": "forms.write"}, 422)
    issued = app_call(client, None, "POST", "/token", {**grant, "client_secret": secret}, 201)
    assert issued["scope"] == "device_data.write" and issued["expires_in"] == 3600
    assert issued["trial"] == MCI_CODE
    token = issued["access_token"]
    result = app_call(client, token, "POST", "/device-data", [usage(1, 40, subject)], 200)
    assert result["accepted"] == 1
    # device-data write, nothing else
    assert app_call(client, token, "GET", "/me", expect=403)["message"].startswith(
        "a participant's app token")
    assert client.get(f"/api/v1/trials/{MCI_CODE}/participants",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 401
    actions = [e.action for e in db.session.scalars(
        select(AuditEvent).where(AuditEvent.action.like("service%")).order_by(AuditEvent.id))]
    assert actions == ["service_credential.create", "service_credential.approve",
                       "service.token_issued"]

    api(client, staff["sponsor"], "DELETE", f"/service-credentials/{created['id']}", expect=200)
    app_call(client, token, "POST", "/device-data", [usage(2, 40, subject)], 401)
    app_call(client, None, "POST", "/token", {**grant, "client_secret": secret}, 401)
    report = check_integrity(db.session)
    assert report.ok, [p.message for p in report.problems]


def test_a_service_token_cannot_reach_another_trials_participant(
    client: FlaskClient, tmp_path: Path
) -> None:
    """SEC (adversary): a vendor's credential of one trial names a subject code of another trial
    (same site-numbered code pattern): the record is refused and nothing reaches that trial."""
    from dtx_trials.models import DeviceObservation, Participant, Trial
    from tests.dtx_trials.analysis_data import populated_trial

    staff = load_mci(client, tmp_path)
    subject, _ = randomized(client, staff)
    other_trial = populated_trial("type2_diabetes.yaml", 4)
    foreign = db.session.scalars(select(Participant.subject_code).where(
        Participant.trial_id == other_trial.id).order_by(Participant.id)).first()
    assert foreign is not None and foreign != subject
    created = api(client, staff["sponsor"], "POST", "/service-credentials",
                  {"name": "CogTrain backend"}, 201)
    approve_credential(client, staff, created["id"])
    token = app_call(client, None, "POST", "/token", {
        "grant_type": "client_credentials", "client_id": created["client_id"],
        "client_secret": created["client_secret"]}, 201)["access_token"]

    result = app_call(client, token, "POST", "/device-data",
                      [usage(1, 40, foreign), usage(2, 41, subject)], 200)
    assert (result["accepted"], result["rejected"]) == (1, 1)
    [error] = result["errors"]
    assert error["index"] == 0 and "subject" in str(error)
    rows = db.session.execute(select(DeviceObservation.trial_id, Participant.subject_code).join(
        Participant, Participant.id == DeviceObservation.participant_id)).all()
    mci = db.session.scalars(select(Trial.id).where(Trial.code == MCI_CODE)).one()
    assert [tuple(r) for r in rows] == [(mci, subject)]
    # the other trial's data are not reachable with the token either
    assert client.get(f"/api/v1/trials/{other_trial.code}/participants/{foreign}/device-data",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 401
