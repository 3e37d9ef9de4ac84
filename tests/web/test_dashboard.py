"""Sponsor dashboard (issue #22): key figures, projection, screen failures, queries by age,
form progress, weekly app adherence — each chart with its table and CSV; tabs; roles, sites
and blinding."""

from __future__ import annotations

import csv
import datetime
import io
from pathlib import Path
from zoneinfo import ZoneInfo

from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import FormRecord, Participant
from dtx_trials.services.dashboard import (
    epro_outcomes,
    lag_buckets,
    project_enrollment,
    weekly_adherence,
)
from dtx_trials.web.chart_png import describe
from dtx_trials.web.trial_pages import CHART_TITLES, DASHBOARD_TABLES
from protocols.model import AdherenceRule
from tests.dtx_trials.test_devices import minutes, post
from tests.dtx_trials.test_epro_schedule import load_scheduled
from tests.dtx_trials.trial_flow import (
    MCI_SCREENING,
    api,
    consented_mci_participant,
    enrolled_mci_participant,
    load_trial,
    moca,
)
from tests.web.web_helpers import ARM_TERMS, MCI, PageClient, check_accessible

D = datetime.date
ADAS_COG = {f"adas_q{i:02d}": 1 for i in range(1, 14)}


def test_projection_is_a_straight_line_at_the_mean_rate() -> None:
    # 10 enrolled over the 10 days from 1 to 10 June: 1 a day, 190 more take 190 days
    dates = [D(2026, 6, day) for day in range(1, 11)]
    p = project_enrollment(dates, 200, D(2026, 6, 10))
    assert p.rate_per_week == 7.0 and p.projected_on == D(2026, 6, 10) + datetime.timedelta(190)
    # everyone on one day (the demo's old vertical line) still projects from that day to today
    same_day = project_enrollment([D(2026, 6, 1)] * 4, 10, D(2026, 6, 4))
    assert same_day.rate_per_week == 7.0 and same_day.projected_on == D(2026, 6, 10)
    assert project_enrollment([], 200, D(2026, 6, 1)).note == "no_enrolment"
    assert project_enrollment(dates, None, D(2026, 6, 10)).projected_on is None
    assert project_enrollment(dates, 10, D(2026, 6, 10)).note == "target_reached"


def test_every_projection_note_reads_in_each_page_language() -> None:
    """The page shows a projection's note through the catalogs (no English left in zh pages)."""
    from dtx_trials.web import i18n

    for note in ("no_enrolment", "no_sample_size", "target_reached", "no_site_target"):
        shown = {lang: i18n.translate(f"projection_{note}", lang) for lang in i18n.LANGUAGES}
        assert f"projection_{note}" not in shown.values() and len(set(shown.values())) == 3, shown


def test_weekly_adherence_applies_the_protocol_rule_per_whole_week() -> None:
    rule = AdherenceRule(metric="fraction_of_days_meeting_minimum", threshold=0.7, daily_minimum=20)
    start = D(2026, 1, 1)
    trained = [(start + datetime.timedelta(days=i), 30.0) for i in range(7)]  # week 1 only
    weeks = weekly_adherence(
        rule,
        "training_minutes",
        {1: (start, D(2026, 1, 15)), 2: (start, D(2026, 1, 10))},
        {1: trained},
    )
    # participant 1 has two whole weeks, participant 2 one
    assert [(w.week, w.n_participants, w.n_adherent) for w in weeks] == [(1, 2, 1), (2, 1, 0)]
    assert weeks[0].percent_adherent == 50.0 and weeks[0].mean_value == 0.5


def _csv(client: PageClient, path: str) -> list[list[str]]:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    assert (
        response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    )
    return list(csv.reader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))


def test_overview_figures_tables_csv_and_blinding(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    subjects = [enrolled_mci_participant(client, staff) for _ in range(2)]
    enrolled_mci_participant(client, staff, site_account="inv2")
    api(client, staff["inv"], "POST", f"/participants/{subjects[0]}/randomization", {}, 201)
    record = db.session.scalars(select(FormRecord).where(FormRecord.form_code == "moca")).first()
    assert record is not None
    api(
        client,
        staff["monitor"],
        "POST",
        f"/records/{record.id}/queries",
        {"field": "moca_raw", "text": "Source?"},
        201,
    )
    sponsor = PageClient(app, staff["sponsor"])
    page = sponsor.text(MCI)
    check_accessible(page)
    assert "Enrolled: 3" in page and "3 / 200" in page  # target N from the protocol
    assert 'aria-current="page"' in page and "Protocol versions" not in page
    for heading in ("Screen failures by criterion", "Open queries by age", "Forms by status"):
        assert heading in page
    # no screen failure yet: that chart says so instead of drawing nothing
    # (visit compliance and SDV/signature progress always have rows; deviations not yet)
    # (no ePRO schedule in this protocol, no form of a dated visit submitted yet)
    assert page.count("<desc ") == 6 and "No data yet." in page and page.count("Download CSV") == 10
    assert "#0072B2" in page  # Okabe-Ito blue
    # the blinded sponsor and monitor see nothing arm-shaped, on any tab or CSV
    monitor = PageClient(app, staff["monitor"])
    for who in (sponsor, monitor):
        for path in (MCI, f"{MCI}?tab=adherence"):
            text = who.text(path)
            assert not [term for term in ARM_TERMS if term in text], path
    rows = _csv(sponsor, f"{MCI}/dashboard/sites.csv")
    # each site against its protocol target (sites.initial[].target)
    assert rows[0] == ["Site", "Enrolled", "Target", "% of target"]
    assert ["BJ01", "2", "60", "3.3"] in rows and ["GZ01", "1", "50", "2.0"] in rows
    assert "BJ01 2 / 60" in page
    enrolment = _csv(sponsor, f"{MCI}/dashboard/enrollment.csv")
    assert enrolment[-1][2] == "3"
    ages = _csv(sponsor, f"{MCI}/dashboard/queries_by_age.csv")
    assert ages[1] == ["0-7", "1"]
    projection = _csv(sponsor, f"{MCI}/dashboard/projection.csv")
    assert projection[1][:2] == ["200", "3"]
    # one site's view
    bj = _csv(sponsor, f"{MCI}/dashboard/sites.csv?site=GZ01")
    assert bj[1:] == [["GZ01", "1", "50", "2.0"]]
    site_page = sponsor.text(f"{MCI}?site=GZ01")
    assert "Enrolled: 1" in site_page and "1 / 50" in site_page  # the site's own target
    assert "no target per site" not in site_page
    assert _csv(sponsor, f"{MCI}/dashboard/projection.csv?site=GZ01")[1][:2] == ["50", "1"]
    assert sponsor.get(f"{MCI}?site=NOPE").status_code == 404
    assert sponsor.get(f"{MCI}/dashboard/nothing.csv").status_code == 404
    assert sponsor.get(f"{MCI}?tab=nothing").status_code == 404
    # site staff and the statistician get no operational figures
    inv = PageClient(app, staff["inv"])
    assert inv.get(f"{MCI}/dashboard/sites.csv").status_code == 403
    assert inv.get(f"{MCI}?tab=adherence").status_code == 404
    assert PageClient(app, staff["stat"]).get(f"{MCI}/dashboard/sites.csv").status_code == 403


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(client: PageClient, path: str) -> dict[str, str]:
    """Fetch a chart image; return its text chunks (title, the drawn rows as text)."""
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    assert response.mimetype == "image/png" and response.data.startswith(PNG_SIGNATURE)
    assert "attachment" in response.headers["Content-Disposition"]
    image = Image.open(io.BytesIO(response.data))
    image.load()
    assert image.format == "PNG" and image.size[0] >= 600
    return dict(image.text)  # type: ignore[attr-defined]


def test_dashboard_charts_as_png(app: Flask, client: FlaskClient) -> None:
    """Issue #22: every chart downloads as PNG, drawn from its CSV's numbers, with the same
    roles, site filter and blinding as the CSV."""
    staff = load_trial(client)
    for account in ("inv", "inv", "inv2"):
        enrolled_mci_participant(client, staff, site_account=account)
    sponsor = PageClient(app, staff["sponsor"])
    assert sponsor.text(MCI).count("Download PNG") == 6  # the charts drawn (not the empty ones)
    for table in CHART_TITLES:
        text = _png(sponsor, f"{MCI}/dashboard/{table}.png")
        # the blinded sponsor's image carries no arm: it is drawn from the pooled CSV rows
        assert not [term for term in ARM_TERMS if term in str(text)], table
        assert text["Description"] == (
            describe(_csv(sponsor, f"{MCI}/dashboard/{table}.csv")[1:]) or "-"
        ), table
    # one site's image holds that site's rows only, against its target
    gz = _png(sponsor, f"{MCI}/dashboard/sites.png?site=GZ01")
    assert gz["Description"] == "GZ01, 1, 50, 2.0" and gz["Title"] == "Enrolled by site"
    # the page's language: title and labels in Traditional Chinese (drawn with a CJK font)
    sponsor.client.set_cookie("lang", "zh-Hant")
    zh = _png(sponsor, f"{MCI}/dashboard/enrollment.png")
    assert zh["Title"] == "累計入組人數隨時間變化"
    assert sponsor.get(f"{MCI}/dashboard/projection.png").status_code == 404  # a table only
    assert sponsor.get(f"{MCI}/dashboard/sites.png?site=NOPE").status_code == 404
    inv = PageClient(app, staff["inv"])
    assert inv.get(f"{MCI}/dashboard/sites.png").status_code == 403
    assert PageClient(app, staff["stat"]).get(f"{MCI}/dashboard/sites.png").status_code == 403


def test_screen_failures_are_counted_by_criterion(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    enrolled_mci_participant(client, staff)
    # MoCA 30 is above the inclusion range (18-25): a screen failure
    subject = consented_mci_participant(client, staff)
    base = f"/participants/{subject}/visits/screening/forms"
    api(
        client,
        staff["inv"],
        "PUT",
        f"{base}/screening",
        {"values": MCI_SCREENING, "submit": True},
        200,
    )
    api(client, staff["inv"], "PUT", f"{base}/moca", {"values": moca(30), "submit": True}, 200)
    result = api(client, staff["inv"], "POST", f"/participants/{subject}/eligibility", {}, 200)
    assert result["failed"], result
    failed_ids = {c["id"] for c in result["failed"]}
    rows = _csv(PageClient(app, staff["sponsor"]), f"{MCI}/dashboard/screen_failures.csv")
    assert {r[0] for r in rows[1:]} == failed_ids and all(r[2] == "1" for r in rows[1:])


def test_adherence_by_week(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    participant = db.session.scalars(
        select(Participant).where(Participant.subject_code == subject)
    ).one()
    assert participant.randomized_at is not None
    participant.randomized_at -= datetime.timedelta(days=15)  # two whole weeks behind us
    db.session.commit()
    start = participant.randomized_at.astimezone(datetime.timezone(datetime.timedelta(hours=8)))
    first_week = [minutes(subject, start.date() + datetime.timedelta(days=i), 30) for i in range(7)]
    assert post(client, staff, first_week).status_code == 200
    sponsor = PageClient(app, staff["sponsor"])
    page = sponsor.text(f"{MCI}?tab=adherence")
    check_accessible(page)
    assert "App adherence by week" in page and "Daily training minutes" in page
    rows = _csv(sponsor, f"{MCI}/dashboard/adherence.csv")
    assert rows[1][:5] == ["training_minutes", "1", "1", "1", "100.0"]
    assert rows[2][:5] == ["training_minutes", "2", "1", "0", "0.0"]


def test_visit_compliance_deviations_sdv_and_signature_progress(
    app: Flask, client: FlaskClient
) -> None:
    """Issue #22: scheduled visits done in or out of their window or missed, protocol
    deviations by kind and status, and the share of submitted forms verified and signed."""
    staff = load_trial(client)
    late, on_time = (enrolled_mci_participant(client, staff) for _ in range(2))
    for subject in (late, on_time):
        api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    today = datetime.datetime.now(ZoneInfo("Asia/Shanghai")).date()
    api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{on_time}/visits/baseline/date",
        {"date": today.isoformat()},
        200,
    )
    api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{late}/visits/baseline/date",
        {"date": (today + datetime.timedelta(days=-60)).isoformat()},
        200,
    )
    record = db.session.scalars(select(FormRecord).where(FormRecord.form_code == "moca")).first()
    assert record is not None
    api(client, staff["monitor"], "POST", f"/records/{record.id}/verify", {"reason": "SDV"}, 200)
    sponsor = PageClient(app, staff["sponsor"])
    page = sponsor.text(MCI)
    check_accessible(page)
    for heading in (
        "Visit compliance (scheduled visits)",
        "Protocol deviations by kind",
        "SDV and signature progress",
    ):
        assert heading in page
    visits = _csv(sponsor, f"{MCI}/dashboard/visits.csv")
    assert visits == [
        ["Scheduled visit", "Visits"],
        ["done in window", "1"],
        ["done out of window", "1"],
        ["missed", "0"],
    ]
    deviations = _csv(sponsor, f"{MCI}/dashboard/deviations.csv")
    assert deviations[1] == ["visit out of window", "open", "1"]
    progress = _csv(sponsor, f"{MCI}/dashboard/progress.csv")
    submitted = db.session.query(FormRecord).filter(FormRecord.status != "draft").count()
    assert progress[1] == [
        "Source data verified",
        "1",
        str(submitted),
        str(round(100 / submitted, 1)),
    ]
    assert progress[2][:2] == ["Signed by the investigator", "0"]
    # one site's view counts only its own
    assert _csv(sponsor, f"{MCI}/dashboard/visits.csv?site=GZ01")[1:] == [
        ["done in window", "0"],
        ["done out of window", "0"],
        ["missed", "0"],
    ]
    # the Traditional Chinese dashboard
    sponsor.client.set_cookie("lang", "zh-Hant")
    assert "訪視依從性（計畫訪視）" in sponsor.text(MCI)


def test_epro_outcomes_and_lag_buckets_are_pure() -> None:
    today = D(2026, 6, 10)
    windows = [
        (D(2026, 6, 1), D(2026, 6, 3), True),  # answered
        (D(2026, 6, 1), D(2026, 6, 3), False),  # closed unanswered: missed
        (D(2026, 6, 8), D(2026, 6, 10), False),  # closes today: still open
        (D(2026, 6, 11), D(2026, 6, 13), False),  # not open yet: not due
    ]
    assert dict(epro_outcomes(windows, today)) == {"answered": 1, "missed": 1, "open": 1}
    rows, median = lag_buckets([0, 1, 5, -2, 40])
    assert dict(rows) == {"0-1": 3, "2-3": 0, "4-7": 1, "8-14": 0, "15-30": 0, "31+": 1}
    assert median == 1.0 and lag_buckets([])[1] is None and lag_buckets([2, 5])[1] == 3.5


def test_epro_compliance_and_data_entry_lag(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    """Issue #22: scheduled ePRO windows answered/missed/open, and days from each site form's
    visit to its first submission; both per site, neither by arm."""
    staff = load_scheduled(client, tmp_path)  # app_experience due days 0-7 after baseline
    late, on_time = (enrolled_mci_participant(client, staff) for _ in range(2))
    for subject in (late, on_time):
        api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    today = datetime.datetime.now(ZoneInfo("Asia/Shanghai")).date()
    for subject, days in ((late, -20), (on_time, 0)):
        api(
            client,
            staff["inv"],
            "POST",
            f"/participants/{subject}/visits/baseline/date",
            {"date": (today + datetime.timedelta(days=days)).isoformat()},
            200,
        )
    # a baseline form submitted today for the visit 20 days ago: a lag of 20 days
    api(
        client,
        staff["inv"],
        "PUT",
        f"/participants/{late}/visits/baseline/forms/adas_cog",
        {"values": ADAS_COG, "submit": True},
        200,
    )
    sponsor = PageClient(app, staff["sponsor"])
    page = sponsor.text(MCI)
    check_accessible(page)
    assert "ePRO compliance (scheduled questionnaires)" in page
    assert "Data-entry lag (days from visit to first submission)" in page
    epro_rows = _csv(sponsor, f"{MCI}/dashboard/epro.csv")
    assert epro_rows == [
        ["Questionnaire window", "Questionnaires", "% of due"],
        ["answered", "0", "0.0"],
        ["missed", "1", "50.0"],
        ["still open", "1", "50.0"],
    ]
    lag = dict((r[0], r[1]) for r in _csv(sponsor, f"{MCI}/dashboard/entry_lag.csv")[1:])
    assert lag["15-30"] == "1"
    # the other site sees neither
    assert _csv(sponsor, f"{MCI}/dashboard/epro.csv?site=GZ01")[1:] == [
        ["answered", "0", ""],
        ["missed", "0", ""],
        ["still open", "0", ""],
    ]
    assert _csv(sponsor, f"{MCI}/dashboard/entry_lag.csv?site=GZ01")[1:] == []
    # as the adversary: no page or CSV of a blinded role names an arm or splits by one
    monitor = PageClient(app, staff["monitor"])
    for who in (sponsor, monitor):
        for table in DASHBOARD_TABLES:
            text = who.get(f"{MCI}/dashboard/{table}.csv").get_data(as_text=True)
            assert not [term for term in ARM_TERMS if term in text], table
        for path in (MCI, f"{MCI}?tab=adherence", f"{MCI}?site=BJ01"):
            text = who.text(path)
            assert not [term for term in ARM_TERMS if term in text], path
    # Traditional Chinese labels
    sponsor.client.set_cookie("lang", "zh-Hant")
    assert "ePRO依從性（計畫問卷）" in sponsor.text(MCI)
