"""Issue #20, done when: the three-site adolescent-depression trial of the library runs end to
end, through the API and a phone browser (Debian's chromium driven by Playwright), with every
e-mail caught by a real local SMTP server.

One participant at the Beijing site (Asia/Shanghai): the guardian consents and the adolescent
assents on the phone page (comprehension questions, one-time code by e-mail, typed name), the
investigator countersigns; screening, eligibility, enrollment, randomization; the weekly PHQ-A
link and its reminder by e-mail; the answer (item 9 above 0) alerts the site, which
acknowledges it; a visit recorded out of its window is a deviation the monitor sees; amendment
1.1 (a new assent version, after re-consent) reaches the participant once the new assent is
signed on the phone; an SAE is reported within its 24 h clock; the DTx app redeems the
activation code and never learns the arm; the audit trail verifies.
"""

from __future__ import annotations

import datetime
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.serving import make_server

from dtx_trials.channels import SmtpChannel
from dtx_trials.extensions import db
from dtx_trials.models import Notification, SafetyEvent, Site, Trial
from dtx_trials.services import epro_schedule, notifications, protocols, safety
from dtx_trials.services.integrity import check_integrity
from tests.conftest import make_test_app
from tests.dtx_trials.trial_flow import LIBRARY
from tests.helpers import CLI, PASSWORD, Account, login, make_user
from tests.mail_server import LocalSmtpServer
from tests.web.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    _need_browser,
    click_and_load,
)

FILE = LIBRARY / "adolescent_depression.yaml"
CODE = "ADOL-DEP-01"
ARMS = ("Smartphone CBT programme", "behavioural activation", "attention control", "认知行为治疗",
        "行为激活", '"cbt"', '"activation"', '"attention"')
SCREENING = {"age_years": 15, "sex": "2", "has_phone": "1", "suicide_plan": "0",
             "psychosis_bipolar": "0", "antidepressant": "0"}
PHQA_SCREEN = {f"phqa_{i}": v for i, v in enumerate((2, 2, 1, 2, 1, 2, 1, 1, 0), start=1)}


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[Flask, str]]:
    _need_browser()
    import tempfile

    from flask_migrate import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        app = make_test_app(f"sqlite:///{Path(tmp) / 'adolescent.sqlite'}")
        with app.app_context():
            upgrade()
            protocols.load_library_file(db.session, CLI, FILE)
            db.session.remove()
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield app, f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            thread.join(timeout=5)
            with app.app_context():
                db.engine.dispose()


class Api:
    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def __call__(self, who: Account, method: str, path: str, json: Any = None,
                 expect: int | None = 200) -> Any:
        url = path if path.startswith("/api/") else f"/api/v1/trials/{CODE}{path}"
        response = self.client.open(url, method=method, json=json, headers=who.headers)
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code,
                                                    response.get_json())
        return response.get_json()


def deliver(smtp: LocalSmtpServer) -> None:
    channels = {"email": SmtpChannel(host="127.0.0.1", port=smtp.port,
                                     sender="trials@example.org")}
    notifications.deliver_pending(db.session, channels)


def mails_to(smtp: LocalSmtpServer, address: str) -> list[Any]:
    return [m for rcpts, m in smtp.messages if address in rcpts]


def signing_code(smtp: LocalSmtpServer, address: str, since: int, timeout: float = 15) -> str:
    """The one-time signing code e-mailed to `address` after message number `since`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with smtp.lock:
            received = list(smtp.messages)[since:]
        for rcpts, message in received:
            if address in rcpts and message["Subject"] in ("Your signing code", "签署验证码"):
                found = re.search(r"(\d{6})", message.get_content())
                assert found
                return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no signing code e-mailed to {address}")


def sign_on_phone(browser: Any, base: str, url: str, answers: dict[str, str], name: str,
                  smtp: LocalSmtpServer, address: str, lang: str, shot: str) -> None:
    """The signer opens the personal link on a 390 x 844 phone, reads the document, answers
    the comprehension questions, asks for a one-time code (by e-mail, caught by the test SMTP
    server), types their name and the code, and signs."""
    context = browser.new_context(viewport={"width": 390, "height": 844},
                                  locale="zh-CN" if lang == "zh" else "en-US")
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(base + urlsplit(url).path)
        page.wait_for_selector("#consent-body")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        content = page.content()
        assert not [arm for arm in ARMS if arm in content]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"adolescent-{shot}-1-document.png"),
                        full_page=True)
        before = len(smtp.messages)
        click_and_load(page, "#send-code")
        page.wait_for_selector("#code-sent")
        deliver(smtp)  # the outbox: the link's e-mail (if not sent yet) and the code's
        db.session.remove()
        code = signing_code(smtp, address, since=before)
        for question, choice in answers.items():
            page.check(f"input[name='q_{question}'][value='{choice}']")
        page.fill("#typed_name", name)
        page.fill("#code", code)
        page.screenshot(path=str(SCREENSHOTS / f"adolescent-{shot}-2-sign.png"), full_page=True)
        click_and_load(page, "#sign")
        page.wait_for_url(re.compile(r".*/econsent-done$"))
        page.screenshot(path=str(SCREENSHOTS / f"adolescent-{shot}-3-done.png"), full_page=True)
    finally:
        context.close()


def test_adolescent_depression_trial_end_to_end(live: tuple[Flask, str], browser: Any) -> None:
    app, base = live
    with LocalSmtpServer() as smtp, app.app_context():
        client = app.test_client()
        api = Api(client)
        trial = db.session.scalars(select(Trial).where(Trial.code == CODE)).one()
        trial_id = trial.id
        sites = {s.code: s for s in db.session.scalars(
            select(Site).where(Site.trial_id == trial.id))}
        # three sites in three IANA time zones
        assert {s.code: s.timezone for s in sites.values()} == {
            "BJ6": "Asia/Shanghai", "URC": "Asia/Urumqi", "SFO": "America/Los_Angeles"}
        bj6 = sites["BJ6"]
        people = {
            name: login(client, make_user(name, role=role, trial=trial,
                                          site=bj6 if bound else None,
                                          email=f"{name}@example.org"))
            for name, role, bound in (
                ("sponsor", "sponsor_admin", False), ("inv", "investigator", True),
                ("coord", "coordinator", True), ("oa", "outcome_assessor", True),
                ("monitor", "monitor", False))
        }
        inv, coord, oa, monitor = (people[n] for n in ("inv", "coord", "oa", "monitor"))
        subject = api(inv, "POST", "/participants", {
            "site": "BJ6", "identifiers": {"full_name": "Wang Xiaoyu",
                                           "email": "teen@example.org"}}, 201)["subject_code"]
        db.session.remove()

        # ---- guardian consent and adolescent assent on the phone, countersigned
        guardian = api(inv, "POST", f"/participants/{subject}/econsent", {
            "document_id": "guardian_icf", "version": "1.0", "language": "zh-CN",
            "channel": "email", "address": "guardian@example.org"}, 201)
        assert guardian["signer_role"] == "guardian"
        db.session.remove()
        sign_on_phone(browser, base, guardian["url"], {"withdraw": "yes"}, "王芳", smtp,
                      "guardian@example.org", "zh", "guardian")
        assent = api(inv, "POST", f"/participants/{subject}/econsent", {
            "document_id": "minor_assent", "version": "1.0", "language": "en",
            "channel": "email"}, 201)
        db.session.remove()
        sign_on_phone(browser, base, assent["url"], {"stop": "yes"}, "Wang Xiaoyu", smtp,
                      "teen@example.org", "en", "assent")
        shown = api(inv, "GET", f"/participants/{subject}")
        assert shown["status"] == "screening"  # remote consents count once countersigned
        consents = api(inv, "GET", f"/participants/{subject}/consents", expect=200)
        assert sorted((c["document_id"], c["signer_role"], c["method"]) for c in consents) == [
            ("guardian_icf", "guardian", "remote"), ("minor_assent", "participant", "remote")]
        for consent in consents:
            assert consent["pdf_sha256"]
            api(inv, "POST", f"/participants/{subject}/consents/{consent['id']}/countersign",
                {"password": PASSWORD})
        assert api(inv, "GET", f"/participants/{subject}")["status"] == "consented"

        # ---- screening, eligibility, enrollment, randomization
        today = datetime.datetime.now(ZoneInfo("Asia/Shanghai")).date()
        api(inv, "PUT", f"/participants/{subject}/visits/screening/forms/screening",
            {"values": {**SCREENING, "screening_on": today.isoformat()}, "submit": True})
        api(inv, "PUT", f"/participants/{subject}/visits/screening/forms/phq_a",
            {"values": PHQA_SCREEN, "submit": True})
        assert api(inv, "POST", f"/participants/{subject}/eligibility")["eligible"]
        api(inv, "POST", f"/participants/{subject}/enrollment")
        receipt = api(inv, "POST", f"/participants/{subject}/randomization", {}, 201)
        assert receipt["activation_code"].startswith("ADP-")
        assert not [arm for arm in ARMS if arm in str(receipt)]  # the investigator is not blind
        # to design, but the receipt shown to a blinded participant's app names no arm (below)
        visits = {v["visit_code"]: v for v in api(inv, "GET", f"/participants/{subject}/visits")}
        baseline_on = visits["baseline"]["planned_on"]
        api(inv, "POST", f"/participants/{subject}/visits/baseline/date",
            {"date": baseline_on})
        api(oa, "PUT", f"/participants/{subject}/visits/baseline/forms/cdrs",
            {"values": {"cdrs_total": 58, "cdrs_by_interview": "1"}, "submit": True})

        # ---- the weekly PHQ-A: link by e-mail, a reminder a day later, answered on the phone
        now = datetime.datetime.now(datetime.UTC)
        trial = db.session.get(Trial, trial_id)
        assert trial is not None
        first = epro_schedule.tick(db.session, trial, link_base=f"{base}/epro", now=now)
        assert (first.issued, first.open_windows) == (1, 1)
        # (the link's own clock started a moment after `now`: the reminder is due 24 h later)
        reminder = epro_schedule.tick(db.session, trial, link_base=f"{base}/epro",
                                      now=now + datetime.timedelta(hours=24, minutes=1))
        assert reminder.reminded == 1
        deliver(smtp)
        smtp.wait_for(len(smtp.messages))
        to_teen = mails_to(smtp, "teen@example.org")
        assert to_teen[-1]["Subject"].startswith("Reminder: PHQ-A")
        link = re.search(r"(http\S+)", to_teen[-1].get_content()).group(1)  # type: ignore[union-attr]
        db.session.remove()
        phone = app.test_client()
        opened = phone.get(urlsplit(link).path)
        assert opened.status_code == 303
        page = phone.get(opened.headers["Location"]).get_data(as_text=True)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        answers = {f"phqa_{i}": str(v) for i, v in
                   enumerate((2, 2, 1, 2, 1, 1, 1, 1, 1), start=1)}
        done = phone.post("/epro/form", data={"csrf_token": csrf, "action": "submit", **answers})
        assert done.status_code == 303, done.get_data(as_text=True)[:400]

        # ---- item 9 above 0: the site is alerted by e-mail and acknowledges
        [alert] = api(coord, "GET", "/safety-events?status=open")
        assert alert["kind"] == "alert" and alert["rule_id"] == "phqa_item9"
        deliver(smtp)
        alert_mails = [m for m in smtp.wait_for(len(smtp.messages))
                       if "ALERT phqa_item9" in m[1]["Subject"]]
        assert sorted(r for rcpts, _ in alert_mails for r in rcpts) == [
            "coord@example.org", "inv@example.org"]
        acknowledged = api(coord, "POST", f"/safety-events/{alert['id']}/acknowledge")
        assert acknowledged["status"] == "acknowledged"
        late = safety.escalate_overdue(db.session, db.session.get(Trial, trial_id),
                                       now + datetime.timedelta(hours=5))
        assert late == []  # acknowledged in time: no escalation

        # ---- a visit recorded outside its window is a deviation the monitor sees
        api(inv, "POST", f"/participants/{subject}/visits/week_4/date", {"date": today.isoformat()})
        deviations = api(monitor, "GET", "/deviations")
        [deviation] = [d for d in deviations if d["subject_code"] == subject]
        assert deviation["kind"] == "out_of_window" and deviation["visit_code"] == "week_4"
        assert deviation["days_outside"] < 0

        # ---- amendment 1.1: a new assent version; the participant moves after re-consent
        doc = yaml.safe_load(FILE.read_text(encoding="utf-8"))
        doc["version"] = "1.1"
        for document in doc["consents"]:
            if document["id"] == "minor_assent":
                document["version"] = "1.1"
        cdrs = next(f for f in doc["forms"] if f["id"] == "cdrs")
        cdrs["fields"].append({"id": "cdrs_rater_confidence", "type": "integer", "min": 1,
                               "max": 5, "label": {"en": "Rater confidence",
                                                   "zh": "评定者信心"}})
        amended = Path(app.instance_path) / "adolescent-1.1.yaml"
        amended.parent.mkdir(parents=True, exist_ok=True)
        amended.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False),
                           encoding="utf-8")
        protocols.load_library_file(db.session, CLI, amended)
        shown = api(inv, "GET", f"/participants/{subject}")
        assert shown["amendment_pending"] == {"version_no": 2, "version": "1.1",
                                              "transition": "after_reconsent",
                                              "missing_consents": ["minor_assent v1.1"]}
        week_4 = f"/participants/{subject}/visits/week_4/forms/cdrs"
        refused = api(oa, "PUT", week_4, {"values": {"cdrs_total": 50}}, 409)
        assert refused["errors"]["consent"] == ["minor_assent v1.1"]
        reassent = api(inv, "POST", f"/participants/{subject}/econsent", {
            "document_id": "minor_assent", "version": "1.1", "language": "zh-CN",
            "channel": "email"}, 201)
        db.session.remove()
        sign_on_phone(browser, base, reassent["url"], {"stop": "yes"}, "王小雨", smtp,
                      "teen@example.org", "zh", "reassent")
        new_assent = next(c for c in api(inv, "GET", f"/participants/{subject}/consents")
                          if c["consent_version"] == "1.1")
        api(inv, "POST", f"/participants/{subject}/consents/{new_assent['id']}/countersign",
            {"password": PASSWORD})
        shown = api(inv, "GET", f"/participants/{subject}")
        assert shown["protocol_version"] == {"version_no": 2, "version": "1.1"}
        assert shown["amendment_pending"] is None
        saved = api(oa, "PUT", week_4, {"values": {"cdrs_total": 50, "cdrs_by_interview": "1",
                                                   "cdrs_rater_confidence": 4},
                                        "submit": True})
        assert saved["record"]["protocol_version"]["version_no"] == 2
        records = {(r["form_code"], r["visit_code"], r["repeat_index"]): r
                   for r in api(inv, "GET", f"/participants/{subject}/forms")}
        assert records[("cdrs", "baseline", 1)]["protocol_version"]["version_no"] == 1
        assert records[("phq_a", "baseline", 1)]["data"]["phqa_9"] == 1

        # ---- an SAE: e-mails at once, reported within its 24 h clock
        api(inv, "PUT", f"/participants/{subject}/visits/week_4/forms/adverse_events",
            {"values": {"ae_term": "self-harm requiring hospital care",
                        "ae_onset_on": today.isoformat(), "ae_severity": "severe",
                        "ae_serious": "1", "ae_related": "no"}, "submit": True})
        [sae] = api(inv, "GET", "/safety-events?status=open")
        assert sae["kind"] == "sae"
        due = datetime.datetime.fromisoformat(sae["due_at"])
        assert due - datetime.datetime.fromisoformat(sae["detected_at"]) == datetime.timedelta(
            hours=24)
        deliver(smtp)
        sae_mails = [m for m in smtp.wait_for(len(smtp.messages))
                     if f"SAE for {subject}" in m[1]["Subject"]]
        assert sorted(r for rcpts, _ in sae_mails for r in rcpts) == [
            "inv@example.org", "monitor@example.org", "sponsor@example.org"]
        reported = api(inv, "POST", f"/safety-events/{sae['id']}/report", {
            "causality": "unlikely", "expectedness": "expected",
            "narrative": "Admitted overnight; safety plan reviewed with the guardian."})
        assert reported["status"] == "reported" and reported["is_within_clock"] is True

        # ---- the DTx app: the activation code redeemed once; never the arm (blinded)
        token = client.post("/api/v1/app/activation", json={
            "trial": CODE, "activation_code": receipt["activation_code"]}).get_json()["token"]
        app_me = client.get("/api/v1/app/me", headers={"Authorization": f"Bearer {token}"})
        assert app_me.status_code == 200 and "arm" not in app_me.get_json()
        schedule = client.get("/api/v1/app/schedule",
                              headers={"Authorization": f"Bearer {token}"}).get_json()
        weekly = [q for q in schedule["questionnaires"] if q["form"] == "phq_a"]
        assert [q["occurrence"] for q in weekly] == list(range(1, 13))
        assert weekly[0]["status"] == "answered"
        assert not [arm for arm in ARMS if arm in str(schedule)]

        # ---- everything above is in the trail, and the trail verifies
        report = check_integrity(db.session)
        assert report.ok, [p.message for p in report.problems][:5]
        kinds = {n.kind for n in db.session.scalars(select(Notification))}
        assert {"econsent.link", "econsent.code", "epro.link", "epro.reminder", "safety.alert",
                "safety.sae"} <= kinds
        assert db.session.scalars(select(SafetyEvent)).all()
        db.session.remove()


@pytest.fixture(scope="module")
def browser(live: tuple[Flask, str]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
