"""Analysis runs as jobs (in-process and on RQ/Redis), reports, exports: roles and blinding."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import Allocation, AuditEvent
from tests import absent
from tests.dtx_trials.analysis_data import populated_trial
from tests.helpers import login, make_user

# a queue of this run's own: suites running side by side on one Redis never share jobs
TEST_QUEUE = f"dtx-test-{os.getpid()}"

CODE = "T2D-COACH-01"


def _accounts(client: FlaskClient, trial):  # type: ignore[no-untyped-def]
    return {
        name: login(client, make_user(name, role=role, trial=trial))
        for name, role in (
            ("stat", "statistician"),
            ("unblinded", "unblinded_statistician"),
            ("dm", "data_manager"),
            ("monitor", "monitor"),
        )
    }


def test_analysis_job_report_and_blinding(client: FlaskClient) -> None:
    trial = populated_trial("type2_diabetes.yaml", 60)
    who = _accounts(client, trial)
    response = client.post(f"/api/v1/trials/{CODE}/analyses", json={}, headers=who["stat"].headers)
    assert response.status_code == 202, response.get_json()
    location = response.headers["Location"]
    run = client.get(location, headers=who["stat"].headers).get_json()
    assert run["status"] == "succeeded", run.get("error")
    assert len(run["data_sha256"]) == 64 and run["provenance"]["blinded"] is True
    assert {"numpy", "statsmodels", "python"} <= set(run["provenance"]["packages"])
    text = json.dumps(run["results"])
    arms = set(db.session.scalars(select(Allocation.arm_code)))
    for arm in arms:
        assert f'"{arm}"' not in text
    # a blinded run is a pooled data review: no comparison between groups
    primary = run["results"]["endpoints"][0]
    assert primary["id"] == "hba1c_change_w24" and primary["headline"] is None
    assert primary["result"]["pooled"]["n_observed"] > 0
    pdf = client.get(f"{location}/report.pdf", headers=who["stat"].headers)
    assert pdf.status_code == 200 and pdf.data[:8] == b"%PDF-1.4"
    pages = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    assert "Usual care" not in pages and "all arms pooled" in pages
    # a blinded statistician cannot run unblinded; the unblinded statistician can
    assert (
        client.post(
            f"/api/v1/trials/{CODE}/analyses", json={"unblinded": True}, headers=who["stat"].headers
        ).status_code
        == 403
    )
    unblinded = client.post(
        f"/api/v1/trials/{CODE}/analyses",
        json={"unblinded": True},
        headers=who["unblinded"].headers,
    )
    assert unblinded.status_code == 202
    detail = client.get(unblinded.headers["Location"], headers=who["unblinded"].headers)
    assert any(f'"{arm}"' in json.dumps(detail.get_json()["results"]) for arm in arms)
    assert detail.get_json()["results"]["endpoints"][0]["headline"] is not None
    # the blinded statistician cannot read the unblinded run, nor see it listed
    assert client.get(unblinded.headers["Location"], headers=who["stat"].headers).status_code == 403
    listed = client.get(f"/api/v1/trials/{CODE}/analyses", headers=who["stat"].headers)
    assert all(not r["is_unblinded"] for r in listed.get_json())
    assert (
        client.post(
            f"/api/v1/trials/{CODE}/analyses", json={}, headers=who["monitor"].headers
        ).status_code
        == 403
    )


def test_exports_deidentified_blinded_and_audited(client: FlaskClient) -> None:
    trial = populated_trial("type2_diabetes.yaml", 30)
    who = _accounts(client, trial)
    for fmt in ("csv", "xpt", "odm", "fhir"):
        response = client.get(f"/api/v1/trials/{CODE}/exports/{fmt}.zip", headers=who["dm"].headers)
        assert response.status_code == 200, (fmt, response.get_json())
        archive = zipfile.ZipFile(io.BytesIO(response.data))
        blob = b" ".join(archive.read(name) for name in archive.namelist())
        for i in range(30):
            assert f"Name {i}".encode() not in blob and f"1380000{i:04d}".encode() not in blob
        for arm in set(db.session.scalars(select(Allocation.arm_code))):
            assert f'"{arm}"'.encode() not in blob and f",{arm},".encode() not in blob
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "export.created"))
    assert len(list(events)) == 4
    assert (
        client.get(
            f"/api/v1/trials/{CODE}/exports/csv.zip", headers=who["monitor"].headers
        ).status_code
        == 403
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_analysis_runs_on_an_rq_worker(
    app: Flask, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DTX_QUEUE_URL the API only enqueues; `dtx worker` (RQ) executes the run."""
    redis_url = os.environ.get("TEST_REDIS_URL")
    if not redis_url:
        absent("RQ test needs TEST_REDIS_URL")
    from redis import Redis
    from rq import Queue, SimpleWorker

    from tests.conftest import FIELD_KEY

    trial = populated_trial("type2_diabetes.yaml", 30)
    client = app.test_client()
    stat = login(client, make_user("stat", role="statistician", trial=trial))
    connection = Redis.from_url(redis_url)
    queue = Queue(TEST_QUEUE, connection=connection)
    app.config["QUEUE_NAME"] = TEST_QUEUE
    monkeypatch.setenv("DTX_QUEUE_NAME", TEST_QUEUE)
    queue.empty()
    app.config["QUEUE_URL"] = redis_url
    try:
        response = client.post(f"/api/v1/trials/{CODE}/analyses", json={}, headers=stat.headers)
        assert response.status_code == 202
        assert response.get_json()["status"] == "queued"
        monkeypatch.setenv("DATABASE_URL", database_url)
        monkeypatch.setenv("DTX_FIELD_KEY", FIELD_KEY)
        SimpleWorker([queue], connection=connection).work(burst=True)
    finally:
        app.config["QUEUE_URL"] = None
    db.session.remove()
    run = client.get(response.headers["Location"], headers=stat.headers).get_json()
    assert run["status"] == "succeeded", run.get("error")


def test_blinded_analysis_when_the_trial_code_contains_an_arm_code(client: FlaskClient) -> None:
    """MCI-COGTRAIN-01 has an arm coded `cogtrain`: the blinded report must still build, and
    must not name an arm anywhere else."""
    from tests.dtx_trials.trial_flow import api, enrolled_mci_participant, load_trial

    staff = load_trial(client)
    for _ in range(2):
        subject = enrolled_mci_participant(client, staff)
        api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    response = client.post("/api/v1/trials/MCI-COGTRAIN-01/analyses", json={},
                           headers=staff["stat"].headers)
    run = client.get(response.headers["Location"], headers=staff["stat"].headers).get_json()
    assert run["status"] == "succeeded", run.get("error")
    pdf = client.get(f"{response.headers['Location']}/report.pdf", headers=staff["stat"].headers)
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.data)).pages)
    for term in ("Adaptive cognitive training", "Sham training", " sham ", " cogtrain "):
        assert term not in text


def test_report_states_lock_state_and_study_period_and_edition_options(
    client: FlaskClient, tmp_path, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    """The title page counts locked records (a draft banner until all are locked), gives the
    first consent and last visit, never prints today as a cut-off; language and paper are
    request options, bad values a 422 naming the field.

    PDF-18 / issue #19 item 6: the interim report stays unsigned and says so; the final one
    (unblinded, all locked) is served signed by the instance's report-signing key, and
    ``report.signed`` holds the SHA-256 of the signed PDF and of its CMS signature, written
    in the transaction that stored the report (right after ``analysis.completed``)."""
    from cryptography.hazmat.primitives import serialization

    from dtx_trials.models import FormRecord, Participant, ProtocolDeviation, Visit
    from dtx_trials.models.users import Role
    from dtx_trials.report_signing import generate_report_key, read_certificate, verify_report
    from dtx_trials.services import forms
    from dtx_trials.services.access import Actor, Grant

    generate_report_key(tmp_path / "report.key", tmp_path / "report.crt", "dtx test signing")
    monkeypatch.setitem(client.application.config, "REPORT_SIGNING_KEY",
                        str(tmp_path / "report.key"))
    monkeypatch.setitem(client.application.config, "REPORT_SIGNING_CERT",
                        str(tmp_path / "report.crt"))
    certificate = read_certificate(tmp_path / "report.crt")
    served: dict[str, bytes] = {}
    trial = populated_trial("type2_diabetes.yaml", 30)
    who = _accounts(client, trial)
    bad = client.post(f"/api/v1/trials/{CODE}/analyses", json={"language": "fr", "paper": "a5"},
                      headers=who["unblinded"].headers)
    assert bad.status_code == 422
    assert {"language", "paper"} <= set(bad.get_json()["errors"]["json"])

    def report(body: dict[str, object]) -> str:
        response = client.post(f"/api/v1/trials/{CODE}/analyses", json=body,
                               headers=who["unblinded"].headers)
        assert response.status_code == 202, response.get_json()
        run = client.get(response.headers["Location"], headers=who["unblinded"].headers)
        assert run.get_json()["status"] == "succeeded", run.get_json().get("error")
        pdf = client.get(f"{response.headers['Location']}/report.pdf",
                         headers=who["unblinded"].headers)
        served["pdf"], served["run"] = pdf.data, str(run.get_json()["id"]).encode()
        reader = PdfReader(io.BytesIO(pdf.data))
        return " ".join(" ".join(p.extract_text().split()) for p in reader.pages)

    n_records = len(db.session.scalars(
        select(FormRecord.id).join(Participant).where(
            Participant.trial_id == trial.id, FormRecord.status != "draft")).all())
    # a deviation the system recorded is listed (16.2.2); a superseded one is not
    someone = db.session.scalars(select(Participant).join(
        Allocation, Allocation.participant_id == Participant.id).where(
        Participant.trial_id == trial.id, Allocation.status == "allocated")).first()
    assert someone is not None
    for description, status in (("Week 12 visit 9 days late", "open"),
                                ("Week 4 visit replaced", "superseded")):
        db.session.add(ProtocolDeviation(trial_id=trial.id, site_id=someone.site_id,
                                         participant_id=someone.id, kind="out_of_window",
                                         description=description, status=status))
    db.session.commit()
    draft = report({"unblinded": True})
    assert "Week 12 visit 9 days late" in draft and "Week 4 visit replaced" not in draft
    assert f"records locked: 0 of {n_records:,}" in draft
    assert "DRAFT: data NOT locked (interim/draft)" in draft
    assert "none set: all data captured up to the report date" in draft
    assert verify_report(served["pdf"], certificate).status == "unsigned"
    assert "Electronic signature none: only the final report (unblinded, every record " \
        "locked) is signed; this report is data not locked" in draft
    assert "Trial sponsor" not in draft and "dtx-trials example sponsor" in draft
    consents = [p.consented_at for p in db.session.scalars(
        select(Participant).where(Participant.trial_id == trial.id)) if p.consented_at]
    visits = [v.actual_on for v in db.session.scalars(
        select(Visit).join(Participant).where(Participant.trial_id == trial.id)) if v.actual_on]
    assert (f"Study start (first consent) {min(consents).date().isoformat()}" if consents
            else "Study start (first consent) no data recorded") in draft
    assert (f"Last visit recorded {max(visits).isoformat()}" if visits
            else "Last visit recorded no data recorded") in draft

    manager = Actor(user_id=None, username="cli", printed_name="Command line", via="cli",
                    grants=(Grant(trial.id, None, Role("data_manager")),))
    for code in db.session.scalars(select(Participant.subject_code).where(
            Participant.trial_id == trial.id)):
        forms.lock_participant(db.session, manager, trial, code)
    locked = report({"unblinded": True, "language": "zh", "paper": "a4"})
    assert f"已锁定记录：{n_records:,} / {n_records:,}" in locked
    assert "草稿" not in locked and "统计分析报告" in locked
    verdict = verify_report(served["pdf"], certificate)
    assert verdict.ok, verdict.messages
    assert "本文件带有 PAdES 数字签名，签名者 dtx test signing" in locked
    run_id = int(served["run"])
    signed = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "report.signed", AuditEvent.trial_id == trial.id)).one()
    completed = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "analysis.completed", AuditEvent.entity_id == run_id)).one()
    details = {c["field"]: c["new"] for c in signed.changes}
    assert signed.entity_id == run_id and signed.seq == completed.seq + 1
    assert details["pdf_sha256"] == verdict.pdf_sha256 == hashlib.sha256(served["pdf"]).hexdigest()
    assert details["signature_sha256"] == verdict.signature_sha256
    assert details["certificate_sha256"] == hashlib.sha256(
        certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def test_dtx_analyze_writes_the_chinese_a4_edition(app: Flask, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from dtx_trials import cli as cli_module

    populated_trial("type2_diabetes.yaml", 30)
    db.session.commit()

    def with_test_app(func):  # type: ignore[no-untyped-def]
        def wrapper(*a, **k):  # type: ignore[no-untyped-def]
            return func(app, *a, **k)

        return wrapper

    monkeypatch.setattr(cli_module, "with_app", with_test_app)
    runner = CliRunner()
    refused = runner.invoke(cli_module.cli, ["analyze", CODE, "--lang", "fr", "--out",
                                             str(tmp_path)])
    assert refused.exit_code == 2 and "--lang" in refused.output
    # a run the protocol does not allow: the service's message and status 2, not a traceback
    denied = runner.invoke(cli_module.cli, ["analyze", CODE, "--review", "comparative", "--out",
                                            str(tmp_path)])
    assert denied.exit_code == 2, denied.output
    assert "error: the protocol does not allow your role a comparative blinded analysis" in (
        denied.output) and "Traceback" not in denied.output
    result = runner.invoke(cli_module.cli, ["analyze", CODE, "--unblinded", "--lang", "zh",
                                            "--paper", "a4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    pdfs = list(tmp_path.glob("*-zh.pdf"))
    assert len(pdfs) == 1
    reader = PdfReader(io.BytesIO(pdfs[0].read_bytes()))
    assert "统计分析报告" in reader.pages[0].extract_text()
    assert [round(float(x)) for x in reader.pages[0].mediabox[2:]] == [595, 842]
    assert "p = " in result.output or "p < " in result.output
