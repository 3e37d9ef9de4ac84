"""ePRO links: issue, open (token swapped for a cookie), one-time code, save and submit through
save_form, and every way a link can be misused."""

from __future__ import annotations

import datetime
import logging
import re
from urllib.parse import urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from dtx_trials.db import utcnow
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, EproLink, FormRecord, Participant, WebSession
from dtx_trials.services import audit, epro
from dtx_trials.web import epro as web_epro
from ecrf.model import Choice, FieldDef, FormDef, Label
from tests.dtx_trials.trial_flow import (
    MCI_CODE,
    TrialStaff,
    api,
    enrolled_mci_participant,
    load_trial,
)

FORM_PAGE = "/epro/form"
EPRO_RECORDS = select(FormRecord).where(FormRecord.form_code == "app_experience")


class RecordingSender:
    """Captures one-time codes instead of delivering them."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str, str]] = []

    def send_code(self, channel: str, address: str, code: str, *, subject_code: str) -> None:
        self.sent.append((channel, address, code, subject_code))


@pytest.fixture
def sender(app: Flask) -> RecordingSender:
    recording = RecordingSender()
    previous = app.extensions["dtx_epro_sender"]
    app.extensions["dtx_epro_sender"] = recording
    yield recording  # type: ignore[misc]
    app.extensions["dtx_epro_sender"] = previous


def issue(
    client: FlaskClient,
    staff: TrialStaff,
    subject: str,
    expect: int = 201,
    who: str = "coord",
    **body: object,
) -> dict[str, object]:
    payload = {"visit": "week_4", "form": "app_experience", **body}
    return api(client, staff[who], "POST", f"/participants/{subject}/epro-links", payload, expect)  # type: ignore[no-any-return]


def link_path(issued: dict[str, object]) -> str:
    return urlsplit(str(issued["url"])).path


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def open_form(client: FlaskClient, issued: dict[str, object]) -> str:
    """Open the link like a phone would; return the form page's CSRF token."""
    response = client.get(link_path(issued))
    assert response.status_code == 303
    assert response.headers["Location"] == FORM_PAGE
    page = client.get(FORM_PAGE)
    assert page.status_code == 200
    return csrf_of(page.get_data(as_text=True))


@pytest.fixture
def trial_with_subject(client: FlaskClient) -> tuple[TrialStaff, str]:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    return staff, subject


def test_link_opens_to_a_clean_url_and_submission_goes_through_save_form(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    issued = issue(client, staff, subject)
    assert issued["status"] == "issued" and issued["otp_required"] is False
    token = link_path(issued).rsplit("/", 1)[1]
    stored = db.session.scalars(select(EproLink)).one()
    assert stored.token_hash != token and len(stored.token_hash) == 64
    opened = client.get(link_path(issued))
    assert opened.status_code == 303
    assert opened.headers["Location"] == FORM_PAGE and token not in opened.headers["Location"]
    assert opened.headers["Referrer-Policy"] == "no-referrer"
    assert "HttpOnly" in opened.headers["Set-Cookie"]
    page = client.get(FORM_PAGE)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "How easy was the app to use?" in html
    assert 'src="/static/ecrf/expressions.js"' in html and "epro.js" in html
    assert "<script>" not in html and token not in html
    assert 'data-show-if="[app_problem] = &#39;1&#39;"' in html
    token_csrf = csrf_of(html)

    saved = client.post(
        FORM_PAGE, data={"csrf_token": token_csrf, "action": "save", "app_ease": "7"}
    )
    assert saved.status_code == 303 and saved.headers["Location"] == "/epro/form?saved=1"
    draft = db.session.scalars(EPRO_RECORDS).one()
    assert draft.status == "draft" and draft.data["app_ease"] == 7
    resumed = client.get("/epro/form?saved=1").get_data(as_text=True)
    assert 'value="7"' in resumed

    submitted = client.post(
        FORM_PAGE,
        data={
            "csrf_token": token_csrf,
            "action": "submit",
            "version": str(draft.version),
            "app_ease": "8",
            "app_problem": "1",
            "app_problem_text": "The app froze once",
            "device_time": "2026-11-23T21:00:00+08:00",
        },
    )
    assert submitted.status_code == 303 and submitted.headers["Location"] == "/epro/done"
    assert client.get("/epro/done").status_code == 200
    db.session.expire_all()
    record = db.session.scalars(EPRO_RECORDS).one()
    assert record.status == "submitted" and record.form_code == "app_experience"
    assert record.data == {
        "app_ease": 8,
        "app_problem": "1",
        "app_problem_text": "The app froze once",
    }
    assert record.device_time == "2026-11-23T21:00:00+08:00"  # the device's clock, kept apart
    assert record.submitted_at is not None and record.submitted_at <= utcnow()
    events = db.session.scalars(
        select(AuditEvent)
        .where(AuditEvent.entity_type == "form_record", AuditEvent.entity_id == record.id)
        .order_by(AuditEvent.seq)
    ).all()
    assert [e.action for e in events] == ["form.draft", "form.submit"]
    assert {e.actor_name for e in events} == {f"Participant {subject}"}
    assert {e.actor_role for e in events} == {"participant"} and events[0].actor_id is None
    link = db.session.scalars(select(EproLink)).one()
    assert link.completed_at is not None
    # replaying the token after completion: 410; the old cookie is dead
    assert client.get(link_path(issued)).status_code == 410
    assert client.get(FORM_PAGE).status_code == 404
    staff_view = api(
        client, staff["coord"], "GET", f"/participants/{subject}/epro-links", None, 200
    )
    assert staff_view[0]["status"] == "completed" and "url" not in staff_view[0]
    assert audit.verify(db.session).ok


def test_device_time_that_is_not_a_timestamp_is_dropped(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    token_csrf = open_form(client, issue(client, staff, subject))
    response = client.post(
        FORM_PAGE,
        data={"csrf_token": token_csrf, "action": "save", "app_ease": "3", "device_time": "<x>"},
    )
    assert response.status_code == 303
    assert db.session.scalars(EPRO_RECORDS).one().device_time is None


def test_pages_speak_chinese(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    issued = issue(client, staff, subject)
    opened = client.get(link_path(issued) + "?lang=zh")
    assert opened.headers["Location"] == "/epro/form?lang=zh"
    html = client.get("/epro/form?lang=zh").get_data(as_text=True)
    assert "应用使用起来容易吗？" in html and "提交我的回答" in html and 'lang="zh-Hans"' in html
    assert "epro-fallback" not in html  # every text of the form is written in Chinese
    by_header = client.get(FORM_PAGE, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert "提交我的回答" in by_header.get_data(as_text=True)
    # Traditional Chinese (issue #22): the page's own labels from the zh-Hant catalog; the
    # protocol's texts (written in en and zh-Hans only) show in Simplified, marked as such
    hant = client.get("/epro/form?lang=zh-Hant").get_data(as_text=True)
    assert 'lang="zh-Hant"' in hant and "儲存，稍後繼續" in hant
    assert '<span lang="zh-Hans">应用使用起来容易吗？</span>' in hant
    assert '<small class="epro-fallback" lang="zh-Hant">(未翻譯成您的語言)</small>' in hant
    by_region = client.get(FORM_PAGE, headers={"Accept-Language": "zh-TW,zh;q=0.9"})
    assert "儲存，稍後繼續" in by_region.get_data(as_text=True)
    # the switch offers the two other languages, each named in itself
    assert 'href="?lang=en"' in hant and 'href="?lang=zh"' in hant and "简体中文" in hant


def test_a_text_without_a_translation_is_marked_with_the_language_shown() -> None:
    form = FormDef(
        id="diary",
        title=Label("Sleep diary", zh="睡眠日记"),
        fields=(
            FieldDef(id="hours", type="integer", label=Label("Hours slept")),
            FieldDef(
                id="mood",
                type="single_choice",
                label=Label("Mood", zh="情绪", others=(("zh-Hant", "情緒"),)),
                choices=(Choice("1", Label("Good", zh="好")),),
            ),
        ),
    )
    assert web_epro.fallbacks(form, "en") == {}
    assert web_epro.fallbacks(form, "zh") == {"hours": "en"}
    assert web_epro.fallbacks(form, "zh-Hant") == {
        "title": "zh-Hans",
        "hours": "en",
        "mood:1": "zh-Hans",
    }


def test_validation_errors_are_shown_on_the_page(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    token_csrf = open_form(client, issue(client, staff, subject))
    response = client.post(
        FORM_PAGE, data={"csrf_token": token_csrf, "action": "submit", "app_ease": "11"}
    )
    assert response.status_code == 422
    assert 'class="epro-error"' in response.get_data(as_text=True)
    assert db.session.scalars(EPRO_RECORDS).first() is None


def test_unknown_expired_and_revoked_links(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    assert client.get("/epro/" + "x" * 43).status_code == 404
    expired = issue(client, staff, subject, expires_in_hours=1)
    link = db.session.get(EproLink, expired["id"])
    assert link is not None
    link.expires_at = utcnow() - datetime.timedelta(minutes=1)
    db.session.commit()
    gone = client.get(link_path(expired))
    assert gone.status_code == 410
    text = gone.get_data(as_text=True)
    assert "expired, was withdrawn or was already used" in text and subject not in text

    revoked = issue(client, staff, subject)
    csrf = open_form(client, revoked)
    deleted = client.delete(
        f"/api/v1/trials/{MCI_CODE}/participants/{subject}/epro-links/{revoked['id']}",
        headers=staff["coord"].headers,
    )
    assert deleted.status_code == 204
    assert client.get(FORM_PAGE).status_code == 404  # the session ended with the link
    assert client.post(FORM_PAGE, data={"csrf_token": csrf, "action": "save"}).status_code == 400
    assert client.get(link_path(revoked)).status_code == 410
    listed = api(client, staff["coord"], "GET", f"/participants/{subject}/epro-links", None, 200)
    assert [item["status"] for item in listed] == ["revoked", "expired"]
    assert all("token" not in str(item) for item in listed)


def test_a_link_to_a_questionnaire_the_protocol_no_longer_has_is_gone_not_a_server_error(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    """An amendment that removes a questionnaire (no data yet, so not a breaking change)
    leaves its e-mailed links behind: the participant's form page answers 410, as for any
    closed link (before, the protocol's KeyError was a 500). The link's form is set to one the
    protocol does not have, which is what the amendment leaves the link with."""
    staff, subject = trial_with_subject
    issued = issue(client, staff, subject)
    csrf = open_form(client, issued)
    link = db.session.get(EproLink, issued["id"])
    assert link is not None
    link.form_code = "retired_questionnaire"
    db.session.commit()
    page = client.get(FORM_PAGE)
    assert page.status_code == 410
    assert client.post(FORM_PAGE, data={"csrf_token": csrf, "action": "save"}).status_code == 410


def test_a_new_link_supersedes_the_open_one(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    first = issue(client, staff, subject)
    issue(client, staff, subject)
    assert client.get(link_path(first)).status_code == 410


def test_a_link_opens_once(
    client: FlaskClient, app: Flask, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    issued = issue(client, staff, subject)
    open_form(client, issued)
    other_phone = app.test_client()
    assert other_phone.get(link_path(issued)).status_code == 410
    assert client.get(FORM_PAGE).status_code == 200  # the first session goes on
    refused = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "epro.reuse_refused")
    ).all()
    assert len(refused) == 1 and refused[0].actor_role == "participant"


def test_reopening_when_allowed_ends_the_earlier_session(
    client: FlaskClient, app: Flask, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    issued = issue(client, staff, subject)
    open_form(client, issued)
    app.config["EPRO_ALLOW_REOPEN"] = True
    try:
        other_phone = app.test_client()
        other_phone.get(link_path(issued))
        assert other_phone.get(FORM_PAGE).status_code == 200
    finally:
        app.config["EPRO_ALLOW_REOPEN"] = False
    assert client.get(FORM_PAGE).status_code == 404
    live = db.session.scalars(select(WebSession).where(WebSession.revoked_at.is_(None))).all()
    assert len(live) == 1 and live[0].user_id is None


def test_one_time_code_three_wrong_attempts_revoke_the_link(
    client: FlaskClient,
    trial_with_subject: tuple[TrialStaff, str],
    sender: RecordingSender,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    staff, subject = trial_with_subject
    issued = issue(client, staff, subject, channel="sms")
    assert issued["otp_required"] is True and issued["delivered_to"] == "139****1111"
    channel, address, code, to_subject = sender.sent[0]
    assert (channel, address, to_subject) == ("sms", "13900001111", subject)
    assert re.fullmatch(r"\d{6}", code)
    link = db.session.scalars(select(EproLink)).one()
    assert link.otp_hash is not None and code not in link.otp_hash
    client.get(link_path(issued))
    prompt = client.get(FORM_PAGE).get_data(as_text=True)
    assert "Enter your code" in prompt and "How easy" not in prompt
    csrf = csrf_of(prompt)
    # the form cannot be written before the code is given
    blocked = client.post(FORM_PAGE, data={"csrf_token": csrf, "action": "save", "app_ease": "5"})
    assert blocked.status_code == 303 and db.session.scalars(EPRO_RECORDS).first() is None
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    first = client.post("/epro/code", data={"csrf_token": csrf, "code": wrong})
    assert first.status_code == 403 and "Attempts left: 2" in first.get_data(as_text=True)
    assert client.post("/epro/code", data={"csrf_token": csrf, "code": "abc"}).status_code == 403
    third = client.post("/epro/code", data={"csrf_token": csrf, "code": wrong})
    assert third.status_code == 410
    db.session.expire_all()
    assert db.session.get(EproLink, link.id).revoked_at is not None  # type: ignore[union-attr]
    assert client.get(link_path(issued)).status_code == 410
    assert "13900001111" not in caplog.text and "Li Lei" not in caplog.text
    assert audit.verify(db.session).ok


def test_right_code_opens_the_form(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str], sender: RecordingSender
) -> None:
    staff, subject = trial_with_subject
    issued = issue(client, staff, subject, channel="sms")
    client.get(link_path(issued))
    csrf = csrf_of(client.get(FORM_PAGE).get_data(as_text=True))
    accepted = client.post("/epro/code", data={"csrf_token": csrf, "code": sender.sent[0][2]})
    assert accepted.status_code == 303 and accepted.headers["Location"] == FORM_PAGE
    assert "How easy was the app to use?" in client.get(FORM_PAGE).get_data(as_text=True)


def test_log_sender_masks_the_address_and_hides_the_code_in_production(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="dtx_trials.epro")
    epro.LogSender(reveal_codes=False).send_code("sms", "13812341234", "123456", subject_code="S-1")
    epro.LogSender(reveal_codes=False).send_code(
        "email", "li.lei@example.com", "654321", subject_code="S-1"
    )
    assert "138****1234" in caplog.text and "l***@example.com" in caplog.text
    assert "13812341234" not in caplog.text and "li.lei" not in caplog.text
    assert "123456" not in caplog.text and "654321" not in caplog.text
    assert epro.mask_phone("+86 138-1234-1234") == "861******1234"


def test_links_only_for_participant_forms_at_their_visits(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    site_form = issue(client, staff, subject, 422, form="adas_cog")
    assert "form" in site_form["errors"]
    assert "visit" in issue(client, staff, subject, 422, visit="baseline")["errors"]
    assert "form" in issue(client, staff, subject, 422, form="nonexistent")["errors"]
    assert issue(client, staff, subject, 422, channel="email")["errors"]["channel"]
    assert issue(client, staff, subject, 422, expires_in_hours=721)["errors"]
    assert issue(client, staff, subject, 422, extra=1)["errors"]
    # only site staff of the participant's site issue links
    issue(client, staff, subject, 404, who="inv2")
    issue(client, staff, subject, 403, who="monitor")


def test_participant_session_reaches_nothing_else(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    other = enrolled_mci_participant(client, staff)
    open_form(client, issue(client, staff, subject))
    home = client.get("/")
    assert home.status_code == 302 and home.headers["Location"].endswith("/login")
    for path in (
        "/api/v1/me",
        "/api/v1/trials",
        f"/api/v1/trials/{MCI_CODE}/participants",
        f"/api/v1/trials/{MCI_CODE}/participants/{other}/forms",
    ):
        assert client.get(path).status_code == 401, path
    # the participant's actor writes only through its own link: fields of other forms are dropped
    csrf = csrf_of(client.get(FORM_PAGE).get_data(as_text=True))
    client.post(
        FORM_PAGE,
        data={"csrf_token": csrf, "action": "save", "app_ease": "4", "adas_q01": "3", "age": "99"},
    )
    records = db.session.scalars(EPRO_RECORDS).all()
    owner = db.session.scalars(select(Participant).where(Participant.subject_code == subject)).one()
    assert [(r.participant_id, r.form_code, r.data) for r in records] == [
        (owner.id, "app_experience", {"app_ease": 4})
    ]
    assert (
        db.session.scalars(select(FormRecord).where(FormRecord.form_code == "adas_cog")).all() == []
    )


def test_a_staff_session_is_not_an_epro_session(client: FlaskClient) -> None:
    from tests.helpers import PASSWORD, make_trial, make_user

    make_trial()
    user = make_user("alice", password=PASSWORD)
    login_page = client.get("/login").get_data(as_text=True)
    client.post(
        "/login",
        data={
            "csrf_token": csrf_of(login_page),
            "username": user.user.username,
            "password": PASSWORD,
        },
    )
    assert client.get(FORM_PAGE).status_code == 404


def test_withdrawal_closes_links(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    issued = issue(client, staff, subject)
    api(
        client,
        staff["inv"],
        "POST",
        f"/participants/{subject}/withdrawal",
        {"reason": "moved"},
        200,
    )
    assert client.get(link_path(issued)).status_code == 410
    issue(client, staff, subject, 409)


def test_random_form_posts_never_fail_the_server(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    staff, subject = trial_with_subject
    issued = issue(client, staff, subject)
    csrf = open_form(client, issued)
    names = st.sampled_from(
        ["app_ease", "app_problem", "app_problem_text", "version", "device_time", "acknowledged"]
    ) | st.text(max_size=12)
    scalars = st.text(max_size=30) | st.integers(-(10**30), 10**30).map(str)

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.dictionaries(names, scalars, max_size=6),
        st.sampled_from(["save", "save", "submit", "", "delete"]),
    )
    def post(values: dict[str, str], action: str) -> None:
        response = client.post(FORM_PAGE, data={**values, "csrf_token": csrf, "action": action})
        assert response.status_code < 500, response.get_data(as_text=True)[:500]

    post()


def test_a_participant_account_writes_no_form_outside_epro(
    client: FlaskClient, trial_with_subject: tuple[TrialStaff, str]
) -> None:
    from tests.helpers import login, make_user

    staff, subject = trial_with_subject
    site = staff.sites[next(iter(staff.sites))]
    account = login(client, make_user("pat", role="participant", trial=staff.trial, site=site))
    path = f"/participants/{subject}/visits/week_4/forms/app_experience"
    api(client, account, "PUT", path, {"values": {"app_ease": 5}}, 403)
    assert db.session.scalars(EPRO_RECORDS).first() is None
