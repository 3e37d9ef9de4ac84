"""Record-status grid (issue #22): participants × scheduled visits × forms, one status per cell
in words, with search, site, participant-status and form-status filters, site scope, nothing
arm-correlated for blinded roles, and a fixed number of statements per page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select

from dtx_trials.extensions import db
from dtx_trials.models import FormRecord, Participant
from tests.dtx_trials.trial_flow import (
    api,
    consented_mci_participant,
    enrolled_mci_participant,
    load_trial,
)
from tests.web.web_helpers import ARM_TERMS, MCI, PageClient, check_accessible

GRID = f"{MCI}/records"


def _rows(html: str) -> dict[str, list[str]]:
    """Subject code → the cell statuses of its row, in column order."""
    rows = {}
    for subject, body in re.findall(
        r'<th scope="row"><a href="[^"]*/participants/([A-Za-z0-9-]+)">[^<]*</a></th>(.*?)</tr>',
        html,
        re.S,
    ):
        rows[subject] = re.findall(r'data-status="([a-z]+)"', body)
    return rows


def _columns(html: str) -> list[str]:
    head = html.split("<thead>")[1].split("</thead>")[0]
    return [
        f"{visit}/{form}"
        for visit, form in re.findall(
            r'<th scope="col" data-visit="([^"]*)" data-form="([^"]*)">', head
        )
    ]


@contextmanager
def counted_statements() -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        # the sign-in session's own bookkeeping (its last-seen time, written at most once a
        # minute, in a transaction of its own) is not the page's work
        if statement.startswith(("BEGIN", "SAVEPOINT", "RELEASE")) or "web_session" in statement:
            return
        statements.append(statement)

    db.session.expunge_all()  # every count starts from an empty identity map
    engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _record(subject: str, form: str) -> FormRecord:
    record = db.session.scalars(
        select(FormRecord)
        .join(Participant, Participant.id == FormRecord.participant_id)
        .where(Participant.subject_code == subject, FormRecord.form_code == form)
    ).one()
    return record


def test_grid_shows_each_cells_status_in_words_and_filters(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    queried, verified, plain = (enrolled_mci_participant(client, staff) for _ in range(3))
    other_site = enrolled_mci_participant(client, staff, site_account="inv2")
    screened = consented_mci_participant(client, staff)
    # a draft: saved, not submitted
    api(
        client,
        staff["inv"],
        "PUT",
        f"/participants/{screened}/visits/screening/forms/screening",
        {"values": {"age": 70}, "submit": False},
        200,
    )
    record = _record(queried, "screening")
    api(
        client,
        staff["monitor"],
        "POST",
        f"/records/{record.id}/queries",
        {"field": "age", "text": "Please confirm the age"},
        201,
    )
    moca = _record(verified, "moca")
    api(client, staff["monitor"], "POST", f"/records/{moca.id}/verify", {"reason": "SDV"}, 200)
    inv = PageClient(app, staff["inv"])
    page = inv.text(GRID)
    check_accessible(page)
    columns = _columns(page)
    rows = _rows(page)
    # site scope: the investigator sees only the participants of BJ01
    assert set(rows) == {queried, verified, plain, screened}
    assert other_site not in page
    screening_col = columns.index("screening/screening")
    assert rows[queried][screening_col] == "queried"
    assert rows[plain][screening_col] == "submitted"
    assert rows[screened][screening_col] == "draft"
    assert "verified" in rows[verified] and "queried" not in rows[verified]
    assert all(s == "empty" for s in rows[plain][screening_col + 2 :])
    # the status is written in each cell, not told by colour alone
    assert page.count(">queried</a></td>") == 1 and page.count(">empty</td>") > 10
    # filters: form status, participant status, search; page links keep them
    assert set(_rows(inv.text(f"{GRID}?record=queried"))) == {queried}
    assert set(_rows(inv.text(f"{GRID}?record=draft"))) == {screened}
    assert set(_rows(inv.text(f"{GRID}?record=verified"))) == {verified}
    assert set(_rows(inv.text(f"{GRID}?status=consented"))) == {screened}
    assert set(_rows(inv.text(f"{GRID}?q={plain[-4:].lower()}"))) >= {plain}
    first = inv.text(f"{GRID}?per_page=2&record=submitted")
    assert "Rows 1–2 of 3" in first
    next_link = re.search(r'href="([^"]*)" rel="next"', first).group(1)  # type: ignore[union-attr]
    assert "record=submitted" in next_link and "per_page=2" in next_link
    # the monitor (every site) filters by site
    monitor = PageClient(app, staff["monitor"])
    assert set(_rows(monitor.text(f"{GRID}?site=GZ01"))) == {other_site}
    # bad arguments: 422 naming the argument, never a 500
    for bad in ("record=empty", "record=asleep", "status=x", "per_page=0", "page=y"):
        response = inv.get(f"{GRID}?{bad}")
        assert response.status_code == 422, bad
        assert bad.split("=")[0] in response.text
    # the chinese page writes the statuses in chinese
    inv.client.set_cookie("lang", "zh")
    assert "有质疑" in inv.text(GRID)


def test_grid_for_blinded_roles_carries_nothing_of_the_arm(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    subjects = [enrolled_mci_participant(client, staff) for _ in range(4)]
    for subject in subjects:
        api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    read = []
    for who in ("inv", "coord", "oa", "monitor", "dm", "stat", "auditor"):
        page = PageClient(app, staff[who]).get(GRID)
        assert page.status_code in (200, 403), who
        if page.status_code == 200:
            html = page.get_data(as_text=True)
            assert len(_rows(html)) == 4, who
            assert not [term for term in ARM_TERMS if term in html], who
            read.append(who)
    assert {"inv", "oa", "monitor"} <= set(read), read


def test_grid_page_costs_the_same_statements_for_more_participants(
    app: Flask, client: FlaskClient
) -> None:
    staff = load_trial(client)
    inv = PageClient(app, staff["inv"])
    subjects = [enrolled_mci_participant(client, staff) for _ in range(2)]
    inv.text(GRID)  # warm (templates, protocol cache)
    with counted_statements() as few:
        assert len(_rows(inv.text(GRID))) == 2
    subjects += [enrolled_mci_participant(client, staff) for _ in range(5)]
    api(client, staff["inv"], "POST", f"/participants/{subjects[0]}/randomization", {}, 201)
    with counted_statements() as many:
        assert len(_rows(inv.text(GRID))) == 7
    assert len(many) == len(few), "\n---\n".join(many)
    with counted_statements() as paged:
        assert len(_rows(inv.text(f"{GRID}?per_page=3&page=2"))) == 3
    assert len(paged) == len(few)
    # session, memberships, trial, protocol, COUNT, page, records, sites
    assert len(few) <= 8, few
