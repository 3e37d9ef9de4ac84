"""Scheduled ePRO: the protocol's questionnaire windows issue links and reminders by e-mail
through the outbox (caught by a real local SMTP server), and compliance is counted per
participant and per site."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.channels import SmtpChannel
from dtx_trials.extensions import db
from dtx_trials.models import EproLink, Notification, Trial, Visit
from dtx_trials.services import accounts, epro_schedule, notifications, protocols
from tests.dtx_trials.trial_flow import (
    LIBRARY,
    MCI_CODE,
    api,
    enrolled_mci_participant,
    trial_staff,
)
from tests.helpers import CLI
from tests.mail_server import LocalSmtpServer

BASE = "http://trials.example.org/epro"


def load_scheduled(client: FlaskClient, tmp_path: Path) -> object:
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    old = "      day: 0\n      forms: [adas_cog]\n"
    new = "      day: 0\n      forms: [adas_cog, app_experience]\n"
    window = ("  unscheduled_forms: [adas_cog]\n  epro:\n"
              "    - {form: app_experience, visit: baseline, opens: 0, closes: 7, "
              "remind_after_hours: 24}\n")
    assert old in text and "  unscheduled_forms: [adas_cog]\n" in text
    text = text.replace(old, new).replace("  unscheduled_forms: [adas_cog]\n", window)
    path = tmp_path / "mci.yaml"
    path.write_text(text, encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    return trial_staff(client, trial)


def test_links_and_reminders_by_email_and_compliance(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_scheduled(client, tmp_path)
    subject = enrolled_mci_participant(
        client, staff, identifiers={"full_name": "Li Lei", "email": "lilei@example.org"})
    other = enrolled_mci_participant(client, staff)  # enrolled, not randomized: nothing due
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    trial = db.session.get(Trial, staff.trial.id)
    assert trial is not None
    now = datetime.datetime.now(datetime.UTC)
    first = epro_schedule.tick(db.session, trial, link_base=BASE, now=now)
    assert (first.issued, first.reminded, first.open_windows) == (1, 0, 1)
    # the link ends with the window (day 7's last minute at the site, Asia/Shanghai): never
    # later (before: a day later in UTC plus 14 hours, 22:00 local on the day after)
    issued = db.session.scalars(select(EproLink)).one()
    ends = issued.expires_at.astimezone(ZoneInfo("Asia/Shanghai"))
    assert (ends.hour, ends.minute, ends.second) == (0, 0, 0)
    mail = db.session.scalars(select(Notification)).one()
    last_day = re.search(r"Open until (\d{4}-\d{2}-\d{2})", mail.body)
    assert last_day is not None
    assert ends.date() == datetime.date.fromisoformat(last_day.group(1)) + datetime.timedelta(1)
    again = epro_schedule.tick(db.session, trial, link_base=BASE, now=now)
    assert (again.issued, again.reminded) == (0, 0)  # idempotent: the link is open
    # a day later, still unanswered: a reminder with a fresh link (the first one is revoked)
    later = epro_schedule.tick(db.session, trial, link_base=BASE,
                               now=now + datetime.timedelta(hours=25))
    assert (later.issued, later.reminded) == (0, 1)
    assert epro_schedule.tick(db.session, trial, link_base=BASE,
                              now=now + datetime.timedelta(hours=50)).reminded == 0
    links = list(db.session.scalars(select(EproLink).order_by(EproLink.id)))
    assert len(links) == 2 and links[0].revoked_at is not None and links[1].revoked_at is None
    with LocalSmtpServer() as smtp:
        channels = {"email": SmtpChannel(host="127.0.0.1", port=smtp.port,
                                         sender="trials@example.org")}
        notifications.deliver_pending(db.session, channels)
        mails = smtp.wait_for(2)
    assert [m[0] for m in mails] == [["lilei@example.org"], ["lilei@example.org"]]
    assert mails[1][1]["Subject"].startswith("Reminder: App experience")
    url = re.search(r"(http\S+)", mails[1][1].get_content()).group(1)  # type: ignore[union-attr]
    assert url.startswith(BASE)
    # the participant follows the reminder's link and answers
    phone = app.test_client()
    opened = phone.get(url.replace("http://trials.example.org", ""))
    assert opened.status_code == 303
    page = phone.get(opened.headers["Location"]).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    blank = phone.post("/epro/form", data={"csrf_token": csrf, "action": "submit"})
    assert blank.status_code == 422  # an untouched questionnaire is not a submission
    done = phone.post("/epro/form", data={"csrf_token": csrf, "action": "submit",
                                          "app_ease": "8", "app_problem": "0"})
    assert done.status_code == 303, done.get_data(as_text=True)[:300]
    assert epro_schedule.tick(db.session, trial, link_base=BASE,
                              now=now + datetime.timedelta(hours=60)).open_windows == 0
    report = api(client, staff["monitor"], "GET", "/epro-compliance", expect=200)
    rows = {r["subject_code"]: r for r in report["participants"]}
    assert (rows[subject]["n_due"], rows[subject]["n_answered"], rows[subject]["rate"]) == (
        1, 1, 1.0)
    assert rows[other]["n_due"] == 0 and rows[other]["rate"] is None
    assert report["sites"] == [{"site_code": "BJ01", "n_participants": 2, "n_due": 1,
                                "n_answered": 1, "n_missed": 0, "rate": 1.0}]
    assert api(client, staff["inv2"], "GET", "/epro-compliance")["participants"] == []
    kinds = [n.kind for n in db.session.scalars(select(Notification).order_by(Notification.id))]
    assert kinds == ["epro.link", "epro.reminder"]


def load_weekly(client: FlaskClient, tmp_path: Path) -> object:
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    old = "      day: 0\n      forms: [adas_cog]\n"
    new = "      day: 0\n      forms: [adas_cog, app_experience]\n"
    window = ("  unscheduled_forms: [adas_cog]\n  epro:\n"
              "    - {form: app_experience, visit: baseline, opens: 0, closes: 2, "
              "every_days: 7, times: 3}\n")
    text = text.replace(old, new).replace("  unscheduled_forms: [adas_cog]\n", window)
    path = tmp_path / "mci-weekly.yaml"
    path.write_text(text, encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    return trial_staff(client, trial)


def test_a_weekly_questionnaire_opens_a_window_each_week_answered_as_its_own_entry(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_weekly(client, tmp_path)
    subject = enrolled_mci_participant(
        client, staff, identifiers={"full_name": "Li Lei", "email": "lilei@example.org"})
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    trial = db.session.get(Trial, staff.trial.id)
    assert trial is not None
    now = datetime.datetime.now(datetime.UTC)
    phone = app.test_client()

    def answer(link: EproLink, token_url: str, ease: str) -> None:
        opened = phone.get(token_url.replace("http://trials.example.org", ""))
        assert opened.status_code == 303
        page = phone.get(opened.headers["Location"]).get_data(as_text=True)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        done = phone.post("/epro/form", data={"csrf_token": csrf, "action": "submit",
                                              "app_ease": ease, "app_problem": "0"})
        assert done.status_code == 303, done.get_data(as_text=True)[:300]

    urls = []
    with LocalSmtpServer() as smtp:
        channels = {"email": SmtpChannel(host="127.0.0.1", port=smtp.port,
                                         sender="trials@example.org")}
        for week in range(3):
            day = now + datetime.timedelta(days=7 * week, hours=1)
            report = epro_schedule.tick(db.session, trial, link_base=BASE, now=day)
            assert (report.issued, report.open_windows) == (1, 1), week
            notifications.deliver_pending(db.session, channels)
            mail = smtp.wait_for(week + 1)[-1][1]
            urls.append(re.search(r"(http\S+)", mail.get_content()).group(1))  # type: ignore[union-attr]
            link = db.session.scalars(select(EproLink).order_by(EproLink.id.desc())).first()
            assert link is not None
            assert link.meta.get("repeat_index", 1) == week + 1
            answer(link, urls[-1], str(5 + week))
            assert epro_schedule.tick(db.session, trial, link_base=BASE,
                                      now=day).open_windows == 0
    records = api(client, staff["inv"], "GET", f"/participants/{subject}/forms", expect=200)
    weekly = sorted((r["repeat_index"], r["data"]["app_ease"]) for r in records
                    if r["form_code"] == "app_experience")
    assert weekly == [(1, 5), (2, 6), (3, 7)]
    # after the third week nothing more opens
    assert epro_schedule.tick(db.session, trial, link_base=BASE,
                              now=now + datetime.timedelta(days=21, hours=1)).open_windows == 0
    # compliance counts each week: one due today, three once the third window has opened
    report = api(client, staff["monitor"], "GET", "/epro-compliance", expect=200)
    row = next(r for r in report["participants"] if r["subject_code"] == subject)
    assert (row["n_due"], row["n_answered"]) == (1, 1)
    monitor = accounts.actor_for(db.session, staff["monitor"].user, via="api")
    [later] = epro_schedule.compliance(db.session, monitor, trial,
                                       now=now + datetime.timedelta(days=15))
    assert (later.n_due, later.n_answered, later.n_missed) == (3, 3, 0)


def test_a_staff_link_answers_the_week_it_names_and_supersedes_only_that_weeks_link(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    """A coordinator re-sends a weekly questionnaire's link (the participant lost the mail):
    the link names its week (`repeat_index`), supersedes only that week's open link and its
    answer is that week's entry (before: every staff link was week 1, revoked every other
    week's link, and its answer became the baseline value)."""
    staff = load_weekly(client, tmp_path)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    trial = db.session.get(Trial, staff.trial.id)
    assert trial is not None
    now = datetime.datetime.now(datetime.UTC)
    assert epro_schedule.tick(db.session, trial, link_base=BASE, now=now).issued == 1
    week_1 = db.session.scalars(select(EproLink)).one()
    links = f"/participants/{subject}/epro-links"
    payload = {"visit": "baseline", "form": "app_experience"}
    body = api(client, staff["coord"], "POST", links, {**payload, "repeat_index": 4}, 422)
    assert "repeat_index" in body["errors"]
    # week 2's window has not opened: its answer would stand for a week not yet reached
    # (before: issued, and answered in week 1 as week 2's entry)
    body = api(client, staff["coord"], "POST", links, {**payload, "repeat_index": 2}, 409)
    baseline = db.session.scalars(select(Visit).where(Visit.visit_code == "baseline")).one()
    anchor = baseline.actual_on or baseline.planned_on
    assert anchor is not None and body["opens_on"] == (anchor + datetime.timedelta(7)).isoformat()
    assert db.session.scalars(select(EproLink)).all() == [week_1]
    # a week later (the baseline visit's dates moved back a week)
    for column in ("planned_on", "actual_on"):
        if getattr(baseline, column) is not None:
            setattr(baseline, column, getattr(baseline, column) - datetime.timedelta(7))
    db.session.commit()
    # the site's own data entry keeps to the same windows (week 3 not open yet, no week 4)
    entry = f"/participants/{subject}/visits/baseline/forms/app_experience"
    answers = {"values": {"app_ease": "7", "app_problem": "0"}, "submit": True}
    body = api(client, staff["coord"], "PUT", entry, {**answers, "repeat_index": 3}, 409)
    assert body["opens_on"] == (anchor + datetime.timedelta(7)).isoformat()
    body = api(client, staff["coord"], "PUT", entry, {**answers, "repeat_index": 4}, 422)
    assert "repeat_index" in body["errors"]
    week_2 = api(client, staff["coord"], "POST", links, {**payload, "repeat_index": 2}, 201)
    assert week_2["repeat_index"] == 2
    db.session.refresh(week_1)
    assert week_1.revoked_at is None  # week 1's link stands
    phone = app.test_client()
    opened = phone.get(week_2["url"].replace("http://localhost", ""))
    assert opened.status_code == 303
    page = phone.get(opened.headers["Location"]).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    done = phone.post("/epro/form", data={"csrf_token": csrf, "action": "submit",
                                          "app_ease": "9", "app_problem": "0"})
    assert done.status_code == 303, done.get_data(as_text=True)[:300]
    records = api(client, staff["inv"], "GET", f"/participants/{subject}/forms", expect=200)
    assert [(r["repeat_index"], r["data"]["app_ease"]) for r in records
            if r["form_code"] == "app_experience"] == [(2, 9)]
    # the list names each link's week
    listed = api(client, staff["coord"], "GET", links, None, 200)
    assert sorted((item["repeat_index"], item["status"]) for item in listed) == [
        (1, "issued"), (2, "completed")]
