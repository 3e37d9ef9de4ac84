"""Lists paged server-side (issue #22): participants, queries and the audit trail, in the pages
and the API — search, filters, stable sort, page links, 422 for bad arguments, site scope."""

from __future__ import annotations

import datetime
import re

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import DataQuery, FormRecord, Visit
from tests.dtx_trials.trial_flow import api, enrolled_mci_participant, load_trial
from tests.web.web_helpers import MCI, PageClient, check_accessible


def _subjects(html: str) -> list[str]:
    return re.findall(r'/participants/([A-Za-z0-9-]+)">', html)


def _screen(client: FlaskClient, staff: object, n: int, account: str = "inv") -> list[str]:
    site = "BJ01" if account == "inv" else "GZ01"
    return [
        api(client, staff[account], "POST", "/participants", {"site": site}, 201)["subject_code"]  # type: ignore[index]
        for _ in range(n)
    ]


def test_participant_list_pages_searches_filters_and_sorts(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    mine = _screen(client, staff, 7)
    theirs = _screen(client, staff, 2, "inv2")
    inv = PageClient(app, staff["inv"])
    first = inv.text(f"{MCI}/participants?per_page=3")
    check_accessible(first)
    assert "Rows 1–3 of 7 (page 1 of 3)" in first and 'rel="next"' in first
    assert _subjects(first) == sorted(mine)[:3]
    last = inv.text(f"{MCI}/participants?per_page=3&page=3")
    assert "Rows 7–7 of 7" in last and _subjects(last) == sorted(mine)[6:]
    assert 'rel="prev"' in last and 'rel="next"' not in last
    # the next link keeps the filters
    assert "per_page=3" in re.search(r'href="([^"]*)" rel="next"', first).group(1)  # type: ignore[union-attr]
    descending = inv.text(f"{MCI}/participants?dir=desc")
    assert _subjects(descending) == sorted(mine, reverse=True)
    found = inv.text(f"{MCI}/participants?q={mine[4][-3:].lower()}")
    assert mine[4] in _subjects(found)
    assert not set(theirs) & set(_subjects(inv.text(f"{MCI}/participants?per_page=500")))
    assert "Nothing matches" in inv.text(f"{MCI}/participants?status=withdrawn")
    # a site the investigator does not hold shows nothing of it
    assert _subjects(inv.text(f"{MCI}/participants?site=GZ01")) == []
    # the sponsor-side monitor sees every site and filters by one
    monitor = PageClient(app, staff["monitor"])
    assert sorted(_subjects(monitor.text(f"{MCI}/participants?site=GZ01"))) == sorted(theirs)
    # arguments url_for would take as its own are not carried into the page links
    odd = inv.get(f"{MCI}/participants?per_page=3&code=X&_external=1&_anchor=a&page=2")
    assert odd.status_code == 200
    for rel in ("prev", "next"):
        link = re.search(rf'href="([^"]*)" rel="{rel}"', odd.text).group(1)  # type: ignore[union-attr]
        assert "code=X" not in link and "_anchor" not in link and "per_page=3" in link
    assert auditor_page_ok(app, staff)
    for bad in ("per_page=0", "page=x", "status=asleep", "sort=name", "per_page=501"):
        response = inv.get(f"{MCI}/participants?{bad}")
        assert response.status_code == 422, bad
        assert 'class="error" role="alert"' in response.text
        assert bad.split("=")[0] in response.text


def auditor_page_ok(app: Flask, staff: object) -> bool:
    auditor = PageClient(app, staff["auditor"])  # type: ignore[index]
    page = auditor.get(f"{MCI}/audit?per_page=10&code=X&_external=1&page=1")
    link = re.search(r'href="([^"]*)" rel="next"', page.text)
    return page.status_code == 200 and link is not None and "code=X" not in link.group(1)


def test_participant_api_pages_with_headers_and_422(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    mine = _screen(client, staff, 5)
    response = client.get(
        "/api/v1/trials/MCI-COGTRAIN-01/participants?per_page=2&page=2",
        headers=staff["inv"].headers,
    )
    assert response.status_code == 200
    assert [p["subject_code"] for p in response.get_json()] == sorted(mine)[2:4]
    assert response.headers["X-Total-Count"] == "5" and response.headers["X-Page"] == "2"
    links = response.headers["Link"]
    assert 'page=3>; rel="next"' in links and 'page=1>; rel="prev"' in links
    assert 'rel="last"' in links and "per_page=2" in links
    searched = api(client, staff["inv"], "GET", f"/participants?q={mine[3]}", expect=200)
    assert [p["subject_code"] for p in searched] == [mine[3]]
    for bad, field in (("per_page=0", "per_page"), ("status=x", "status"), ("sort=id", "sort")):
        body = api(client, staff["inv"], "GET", f"/participants?{bad}", expect=422)
        assert field in body["errors"]["query"], body


def test_finished_participants_are_never_overdue(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    subjects = [enrolled_mci_participant(client, staff) for _ in range(2)]
    for subject in subjects:
        api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    shift = datetime.timedelta(days=60)
    for visit in db.session.scalars(select(Visit).where(Visit.planned_on.is_not(None))):
        assert visit.planned_on and visit.window_start_on and visit.window_end_on
        visit.planned_on -= shift
        visit.window_start_on -= shift
        visit.window_end_on -= shift
    db.session.commit()
    inv = PageClient(app, staff["inv"])
    assert inv.text(f"{MCI}/participants").count('class="overdue"') == 2
    api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{subjects[0]}/withdrawal",
        {"reason": "moved away"},
        200,
    )
    listing = inv.text(f"{MCI}/participants")
    assert listing.count('class="overdue"') == 1
    row = listing.split(f"/participants/{subjects[0]}")[1].split("</tr>")[0]
    assert "withdrawn" in row and "overdue" not in row


def test_query_inbox_pages_and_filters_by_age(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    record = db.session.scalars(
        select(FormRecord).where(FormRecord.form_code == "screening")
    ).first()
    assert record is not None
    for n in range(3):
        api(
            client,
            staff["monitor"],
            "POST",
            f"/records/{record.id}/queries",
            {"field": "age", "text": f"Check age {n}"},
            201,
        )
    # one query is 20 days old
    oldest = db.session.scalars(select(DataQuery).order_by(DataQuery.id)).first()
    assert oldest is not None
    oldest.raised_at = oldest.raised_at - datetime.timedelta(days=20)
    db.session.commit()
    inv = PageClient(app, staff["inv"])
    page = inv.text(f"{MCI}/queries?per_page=2")
    check_accessible(page)
    assert "Rows 1–2 of 3" in page and subject in page and 'rel="next"' in page
    old = inv.text(f"{MCI}/queries?age=15-30")
    assert "Check age 0" in old and "Check age 1" not in old
    fresh = inv.text(f"{MCI}/queries?age=0-7")
    assert "Check age 0" not in fresh and "Check age 2" in fresh
    assert inv.get(f"{MCI}/queries?age=old").status_code == 422
    headers = staff["inv"].headers
    response = client.get("/api/v1/trials/MCI-COGTRAIN-01/queries?age=15-30", headers=headers)
    assert response.status_code == 200 and response.headers["X-Total-Count"] == "1"
    assert [q["text"] for q in response.get_json()] == ["Check age 0"]
    newest_first = api(client, staff["inv"], "GET", "/queries?sort=raised_at&dir=desc", expect=200)
    assert [q["text"] for q in newest_first] == ["Check age 2", "Check age 1", "Check age 0"]
    assert (
        "age" in api(client, staff["inv"], "GET", "/queries?age=9", expect=422)["errors"]["query"]
    )
    # the other site's investigator sees none of them
    assert api(client, staff["inv2"], "GET", "/queries", expect=200) == []


def test_audit_page_filters_by_actor_and_refuses_bad_dates(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    _screen(client, staff, 2)
    auditor = PageClient(app, staff["auditor"])
    by_inv = auditor.text(f"{MCI}/audit?actor={staff['inv'].user.id}&action=participant.screen")
    assert "(2 events)" in by_inv
    by_name = auditor.text(f"{MCI}/audit?actor=nobody-at-all")
    assert "(0 events)" in by_name
    bad = auditor.get(f"{MCI}/audit?since=yesterday")
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.text
    today = datetime.date.today().isoformat()
    assert "(0 events)" not in auditor.text(f"{MCI}/audit?until={today}")
    assert PageClient(app, staff["monitor"]).get(f"{MCI}/audit").status_code == 403
