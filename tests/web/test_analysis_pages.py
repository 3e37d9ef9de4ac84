"""Statistician pages: run the SAP from the browser session, read results and figures, download
the PDF and exports; blinded statisticians never see arms; other roles get 403."""

from __future__ import annotations

import io
import re

from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import Allocation, AnalysisRun
from dtx_trials.services import accounts, analyses
from tests.dtx_trials.analysis_data import populated_trial
from tests.helpers import PASSWORD, make_user

CODE = "T2D-COACH-01"


def _sign_in(client: FlaskClient, username: str) -> str:
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    client.post(
        "/login", data={"username": username, "password": PASSWORD, "csrf_token": token.group(1)}
    )
    home = client.get(f"/trials/{CODE}/analyses").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', home)
    assert csrf, home[:500]
    return csrf.group(1)


def test_statistician_runs_the_sap_and_sees_figures(client: FlaskClient) -> None:
    trial = populated_trial("type2_diabetes.yaml", 45)
    make_user("stat", role="statistician", trial=trial)
    csrf = _sign_in(client, "stat")
    response = client.post(f"/trials/{CODE}/analyses", data={"csrf_token": csrf})
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "succeeded" in page and "<svg" in page and "Kaplan-Meier" in page
    for arm in set(db.session.scalars(select(Allocation.arm_code))):
        assert f">{arm}<" not in page and "Usual care" not in page
    pdf = client.get(re.search(r'href="([^"]+report.pdf)"', page).group(1))  # type: ignore[union-attr]
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF-1.4")
    assert client.get(f"/trials/{CODE}/downloads/csv.zip").status_code == 200


def test_other_roles_cannot_run_analyses(client: FlaskClient) -> None:
    trial = populated_trial("type2_diabetes.yaml", 12)
    make_user("mon", role="monitor", trial=trial)
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    client.post(
        "/login", data={"username": "mon", "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert client.get(f"/trials/{CODE}/analyses").status_code == 403
    assert client.get(f"/trials/{CODE}/downloads/csv.zip").status_code == 403


def test_sponsor_compares_randomization_designs(client: FlaskClient) -> None:
    from tests.dtx_trials.trial_flow import load_trial

    load_trial(client)
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    client.post(
        "/login", data={"username": "sponsor", "password": PASSWORD, "csrf_token": token.group(1)}
    )
    dashboard = client.get("/trials/MCI-COGTRAIN-01?tab=setup").get_data(as_text=True)
    assert "/randomization/simulation" in dashboard
    result = client.get("/trials/MCI-COGTRAIN-01/randomization/simulation?n=40&runs=5")
    text = result.get_data(as_text=True)
    assert result.status_code == 200
    for label in ("protocol: permuted_block", "simple", "minimization (p=0.8)", "correct guesses"):
        assert label in text
    assert " ± " in text
    bad = client.get("/trials/MCI-COGTRAIN-01/randomization/simulation?n=999999&runs=5")
    assert bad.status_code == 200 and 'role="alert"' in bad.get_data(as_text=True)
    logout_csrf = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert logout_csrf
    client.post("/logout", data={"csrf_token": logout_csrf.group(1)})
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    client.post(
        "/login", data={"username": "monitor", "password": PASSWORD, "csrf_token": token.group(1)}
    )
    assert client.get("/trials/MCI-COGTRAIN-01/randomization/simulation").status_code == 403


def test_run_page_shows_a_headline_without_an_estimate(client: FlaskClient) -> None:
    """A model that could not estimate the contrast leaves `estimate` empty: the page says NA
    (found by the security scan as a 500 on a small simulated trial)."""
    trial = populated_trial("type2_diabetes.yaml", 12)
    stat = make_user("stat", role="statistician", trial=trial)
    actor = accounts.actor_for(db.session, stat.user, via="api")
    run = analyses.request_analysis(db.session, actor, trial)
    row = db.session.get(AnalysisRun, run.id)
    assert row is not None
    row.status, row.progress = "succeeded", 1.0
    headline = {
        "contrast": "B vs A",
        "estimate": None,
        "ci_low": None,
        "ci_high": None,
        "p_value": None,
    }
    row.results = {"endpoints": [{"name": "HbA1c", "model": "ancova", "headline": headline}]}
    db.session.commit()
    _sign_in(client, "stat")
    page = client.get(f"/trials/{CODE}/analyses/{run.id}")
    assert page.status_code == 200
    assert "<td>B vs A</td><td>NA</td>" in page.get_data(as_text=True)


def test_statistician_runs_a_chinese_a4_report_and_bad_options_are_refused(
    client: FlaskClient,
) -> None:
    trial = populated_trial("type2_diabetes.yaml", 30)
    make_user("stat", role="statistician", trial=trial)
    csrf = _sign_in(client, "stat")
    page = client.get(f"/trials/{CODE}/analyses").get_data(as_text=True)
    assert 'name="language"' in page and 'name="paper"' in page
    refused = client.post(f"/trials/{CODE}/analyses",
                          data={"csrf_token": csrf, "language": "fr", "paper": "a4"})
    assert refused.status_code == 200 and "unknown language" in refused.get_data(as_text=True)
    response = client.post(f"/trials/{CODE}/analyses",
                           data={"csrf_token": csrf, "language": "zh", "paper": "a4"})
    assert response.status_code == 302
    run = db.session.scalars(select(AnalysisRun).order_by(AnalysisRun.id.desc())).first()
    assert run is not None and run.status == "succeeded", run and run.error
    assert run.provenance["language"] == "zh" and run.provenance["paper"] == "a4"
    assert run.report_name and run.report_name.endswith("-zh.pdf")
    reader = PdfReader(io.BytesIO(run.report_pdf or b""))
    assert "统计分析报告" in reader.pages[0].extract_text()
    assert [round(float(x)) for x in reader.pages[0].mediabox[2:]] == [595, 842]  # A4
