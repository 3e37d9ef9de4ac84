"""Visit dates in the site's time zone, windows, protocol deviations and re-planning from the
actual date (schedule.visits[].reanchor), through the API."""

from __future__ import annotations

import datetime
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, ProtocolDeviation, Trial
from dtx_trials.services import deviations, protocols
from dtx_trials.services.access import SYSTEM
from tests.dtx_trials.trial_flow import (
    LIBRARY,
    MCI_CODE,
    TrialStaff,
    api,
    enrolled_mci_participant,
    trial_staff,
)
from tests.helpers import CLI

SHANGHAI = datetime.timezone(datetime.timedelta(hours=8))


def load_variant(client: FlaskClient, tmp_path: Path, reanchor: bool) -> TrialStaff:
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    old = "      day: 0\n      forms: [adas_cog]\n"
    assert old in text
    if reanchor:
        text = text.replace(old, old + "      reanchor: true\n")
    path = tmp_path / "mci.yaml"
    path.write_text(text, encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    return trial_staff(client, trial)


def visits_of(client: FlaskClient, staff: TrialStaff, subject: str) -> dict[str, dict]:
    rows = api(client, staff["inv"], "GET", f"/participants/{subject}/visits", expect=200)
    return {v["visit_code"]: v for v in rows if not v["is_unscheduled"]}


def local_today() -> datetime.date:
    return datetime.datetime.now(SHANGHAI).date()


def test_visit_dates_windows_deviations_and_replanning(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_variant(client, tmp_path, reanchor=True)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    today = local_today()
    baseline_on = today - datetime.timedelta(days=40)
    url = f"/participants/{subject}/visits"
    visit = api(client, staff["coord"], "POST", f"{url}/baseline/date",
                {"date": baseline_on.isoformat(), "time": "09:30"}, 200)
    assert visit["status"] == "completed" and visit["actual_on"] == baseline_on.isoformat()
    # 09:30 in Beijing (the site's zone) is 01:30 UTC
    assert visit["actual_at"].startswith(f"{baseline_on.isoformat()}T01:30:00")
    planned = visits_of(client, staff, subject)
    week_4 = baseline_on + datetime.timedelta(days=28)
    assert planned["week_4"]["planned_on"] == week_4.isoformat()  # re-planned from the actual
    assert planned["week_4"]["window_end_on"] == (week_4 + datetime.timedelta(days=7)).isoformat()

    listed = api(client, staff["monitor"], "GET", "/deviations", expect=200)
    assert [(d["kind"], d["visit_code"], d["days_outside"]) for d in listed] == [
        ("out_of_window", "baseline", -40)
    ]
    # week 4 three days after its window closed
    late_on = week_4 + datetime.timedelta(days=10)
    api(client, staff["inv"], "POST", f"{url}/week_4/date", {"date": late_on.isoformat()}, 200)
    late = api(client, staff["monitor"], "GET", "/deviations?status=open", expect=200)[0]
    assert (late["visit_code"], late["days_outside"]) == ("week_4", 3)
    assert "after its window" in late["description"]
    # a correction needs a reason; the corrected date is in window, the deviation superseded
    body = api(client, staff["inv"], "POST", f"{url}/week_4/date",
               {"date": week_4.isoformat()}, 422)
    assert "reason" in body["errors"]
    api(client, staff["inv"], "POST", f"{url}/week_4/date",
        {"date": week_4.isoformat(), "reason": "transcription error"}, 200)
    statuses = {d["id"]: d["status"] for d in api(client, staff["monitor"], "GET", "/deviations")}
    assert statuses[late["id"]] == "superseded"
    assert len(api(client, staff["monitor"], "GET", "/deviations?status=open")) == 1

    # the site's future, a visit the schedule lacks, a malformed time, another site: refused
    tomorrow = (today + datetime.timedelta(days=1)).isoformat()
    body = api(client, staff["inv"], "POST", f"{url}/week_12/date", {"date": tomorrow}, 422)
    assert "date" in body["errors"]
    api(client, staff["inv"], "POST", f"{url}/week_99/date", {"date": today.isoformat()}, 422)
    api(client, staff["inv"], "POST", f"{url}/week_12/date",
        {"date": today.isoformat(), "time": "25:00"}, 422)
    api(client, staff["inv2"], "POST", f"{url}/week_12/date", {"date": today.isoformat()}, 404)
    api(client, staff["monitor"], "POST", f"{url}/week_12/date", {"date": today.isoformat()}, 403)

    # a missed visit (reason required) raises a deviation; it cannot be dated afterwards
    api(client, staff["inv"], "POST", f"{url}/week_12/missed", {"reason": ""}, 422)
    api(client, staff["inv"], "POST", f"{url}/week_12/missed",
        {"reason": "participant travelling"}, 200)
    api(client, staff["inv"], "POST", f"{url}/week_12/date", {"date": today.isoformat()}, 409)
    kinds = [d["kind"] for d in api(client, staff["monitor"], "GET", "/deviations?status=open")]
    assert kinds == ["missed_visit", "out_of_window"]

    # the monitor reviews; site staff may not; a reviewed deviation is not reviewed twice
    first = api(client, staff["monitor"], "GET", "/deviations?status=open")[0]
    api(client, staff["inv"], "POST", f"/deviations/{first['id']}/review", {"note": "ok"}, 403)
    reviewed = api(client, staff["monitor"], "POST", f"/deviations/{first['id']}/review",
                   {"note": "site informed"}, 200)
    assert reviewed["status"] == "reviewed" and reviewed["review_note"] == "site informed"
    api(client, staff["monitor"], "POST", f"/deviations/{first['id']}/review", {"note": "x"}, 409)
    # site staff at another site see none of them
    assert api(client, staff["inv2"], "GET", "/deviations", expect=200) == []

    # week 24's window closes unvisited: the sweep marks it missed, in the site's calendar
    week_24_end = baseline_on + datetime.timedelta(days=168 + 14)
    trial = db.session.get(Trial, staff.trial.id)
    assert trial is not None
    midnight = datetime.datetime.combine(week_24_end, datetime.time(23, 59), SHANGHAI)
    assert deviations.detect_missed_visits(db.session, SYSTEM, trial, now=midnight) == []
    later = midnight + datetime.timedelta(minutes=2)
    raised = deviations.detect_missed_visits(db.session, SYSTEM, trial, now=later)
    assert [d.kind for d in raised] == ["missed_visit"]
    assert visits_of(client, staff, subject)["week_24"]["status"] == "missed"
    actions = set(db.session.scalars(select(AuditEvent.action)))
    assert {"deviation.out_of_window", "deviation.missed_visit", "deviation.review",
            "deviation.superseded", "visit.date", "visit.replan", "visit.missed"} <= actions
    assert db.session.query(ProtocolDeviation).count() == 4


def test_without_reanchor_the_schedule_keeps_its_planned_dates(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_variant(client, tmp_path, reanchor=False)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    before = visits_of(client, staff, subject)["week_4"]["planned_on"]
    baseline_on = local_today() - datetime.timedelta(days=3)
    api(client, staff["inv"], "POST", f"/participants/{subject}/visits/baseline/date",
        {"date": baseline_on.isoformat()}, 200)
    assert visits_of(client, staff, subject)["week_4"]["planned_on"] == before


def test_schedule_anchors_are_the_sites_calendar_day() -> None:
    """Randomized at 00:30 in Beijing (16:30 UTC the day before): the schedule is anchored on
    the site's day, whatever the hour CI runs at (this failed between 16:00 and 24:00 UTC)."""
    from zoneinfo import ZoneInfo

    from dtx_trials.models import Participant
    from dtx_trials.services.participants import anchors_of

    participant = Participant(
        screened_at=datetime.datetime(2026, 2, 20, 23, 0),  # naive UTC, as stored
        enrolled_at=datetime.datetime(2026, 2, 28, 3, 0, tzinfo=datetime.UTC),
        randomized_at=datetime.datetime(2026, 3, 1, 16, 30),
    )
    assert anchors_of(participant, ZoneInfo("Asia/Shanghai")) == {
        "screening": datetime.date(2026, 2, 21),
        "enrollment": datetime.date(2026, 2, 28),
        "randomization": datetime.date(2026, 3, 2),
    }
    assert anchors_of(participant, ZoneInfo("America/Los_Angeles"))["randomization"] == (
        datetime.date(2026, 3, 1)
    )
    assert anchors_of(participant, datetime.UTC)["screening"] == datetime.date(2026, 2, 20)
