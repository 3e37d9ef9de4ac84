"""Server-rendered pages per role: access, site isolation, CSRF, language, blinding, flows."""

from __future__ import annotations

import datetime
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dtx_trials.extensions import db
from dtx_trials.models import Allocation, AuditEvent, FormRecord, Visit
from dtx_trials.services import audit
from dtx_trials.web.i18n import translate_message
from ecrf.fields import FieldValueError, coerce_value
from ecrf.model import FieldDef, Label
from tests.dtx_trials.trial_flow import MCI_SCREENING, api, enrolled_mci_participant, load_trial
from tests.helpers import PASSWORD, login, make_user
from tests.web.web_helpers import ARM_TERMS, MCI, PageClient, check_accessible

CONSENTS = (
    ("main_icf|1.0|zh-CN", "participant"),
    ("partner_icf|1.0|zh-CN", "legally_authorized_representative"),
)


def _randomized(client: FlaskClient) -> tuple[object, str]:
    staff = load_trial(client)
    subject = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "POST", f"/participants/{subject}/randomization", {}, 201)
    return staff, subject


def test_sign_in_home_and_language_switch(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])
    home = sponsor.text("/")
    assert "MCI-COGTRAIN-01" in home and "My trials" in home
    check_accessible(home)
    switched = sponsor.get("/lang/zh?next=/trials/MCI-COGTRAIN-01")
    assert switched.status_code == 302 and switched.headers["Location"].endswith(MCI)
    page = sponsor.text(MCI)
    assert '<html lang="zh-Hans">' in page
    for label in ("入组情况", "研究中心", "方案与中心", "退出"):
        assert label in page
    assert "方案版本" in sponsor.text(f"{MCI}?tab=setup")
    assert "账户与角色" in sponsor.text(f"{MCI}?tab=accounts")
    # an off-site "next" is ignored
    assert sponsor.get("/lang/en?next=//evil.example").headers["Location"] == "/"
    # Accept-Language decides when there is no cookie
    fresh = app.test_client()
    assert "登录" in fresh.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).text


def test_login_errors_are_translated(app: Flask, client: FlaskClient) -> None:
    make_user("alice")
    page = PageClient(app)
    page.client.set_cookie("lang", "zh")
    response = page.sign_in("alice", "wrong password!!")
    assert response.status_code == 401 and "用户名或密码错误" in response.text
    for _ in range(5):
        response = page.sign_in("alice", "wrong password!!")
    assert response.status_code == 429 and "账户已被锁定" in response.text


def test_password_change(app: Flask, client: FlaskClient) -> None:
    account = make_user("alice")
    page = PageClient(app, account)
    check_accessible(page.text("/account/password"))
    wrong = page.post(
        "/account/password",
        {"current_password": "nope nope nope", "new_password": "another long password"},
    )
    assert wrong.status_code == 422 and 'role="alert"' in wrong.text
    short = page.post("/account/password", {"current_password": PASSWORD, "new_password": "short"})
    assert short.status_code == 422 and "at least 12 characters" in short.text
    done = page.post(
        "/account/password",
        {"current_password": PASSWORD, "new_password": "another long password"},
    )
    assert done.status_code == 200 and "Your password was changed." in done.text
    again = PageClient(app)
    assert again.sign_in("alice", "another long password").status_code == 302


def test_a_password_change_ends_every_other_session_and_token(
    app: Flask, client: FlaskClient
) -> None:
    """Issue #13: the thief's browser and API token stop working when the owner changes the
    password; the browser the owner changed it from stays signed in."""
    account = make_user("alice")
    owner = PageClient(app, account)
    thief = PageClient(app, account)
    token = login(client, account).headers
    assert thief.get("/").status_code == 200
    assert client.get("/api/v1/me", headers=token).status_code == 200
    done = owner.post(
        "/account/password",
        {"current_password": PASSWORD, "new_password": "another long password"},
    )
    assert done.status_code == 200
    assert thief.get("/").headers["Location"].endswith("/login")
    assert client.get("/api/v1/me", headers=token).status_code == 401
    assert owner.get("/").status_code == 200
    # A reset by the command line (a superuser) ends every session, the owner's too.
    from dtx_trials.services import accounts
    from tests.helpers import CLI

    accounts.set_password(db.session, CLI, account.user.id, "a third long password")
    assert owner.get("/").headers["Location"].endswith("/login")


def test_anonymous_is_sent_to_sign_in(client: FlaskClient) -> None:
    load_trial(client)
    for path in (MCI, f"{MCI}/participants", f"{MCI}/queries", f"{MCI}/audit"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].endswith("/login")


def test_dashboard_sections_per_role(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    enrolled_mci_participant(client, staff)
    sponsor_client = PageClient(app, staff["sponsor"])
    sponsor = sponsor_client.text(MCI)
    check_accessible(sponsor)
    assert "<svg" in sponsor and "Enrolled: 1" in sponsor
    setup = sponsor_client.text(f"{MCI}?tab=setup")
    check_accessible(setup)
    assert "Protocol versions" in setup and "BJ01" in setup
    assert "Grant role" in sponsor_client.text(f"{MCI}?tab=accounts")
    inv = PageClient(app, staff["inv"]).text(MCI)
    assert "Protocol versions" not in inv and "Grant role" not in inv and "<svg" not in inv
    assert "Participants" in inv and "Audit trail" not in inv
    auditor = PageClient(app, staff["auditor"]).text(MCI)
    assert "Audit trail" in auditor
    stat = PageClient(app, staff["stat"]).text(MCI)
    assert "Analyses" in stat  # statisticians get the analysis pages
    outsider = PageClient(app, make_user("outsider"))
    assert outsider.get(MCI).status_code == 404
    assert outsider.get("/trials/NOPE").status_code == 404


def test_csrf_missing_is_400(app: Flask, client: FlaskClient) -> None:
    staff, subject = _randomized(client)
    inv = PageClient(app, staff["inv"])
    for path in (
        f"{MCI}/participants",
        f"{MCI}/participants/{subject}/consent",
        f"{MCI}/participants/{subject}/randomize",
        f"{MCI}/participants/{subject}/visits/baseline/forms/adas_cog",
        f"{MCI}/queries/1/answer",
        "/account/password",
    ):
        response = inv.client.post(path, data={"site": "BJ01"})
        assert response.status_code == 400, path
        assert "CSRF" in response.text
        wrong = inv.client.post(path, data={"csrf_token": "forged"})
        assert wrong.status_code == 400, path


def test_screen_to_randomize_through_pages(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    inv = PageClient(app, staff["inv"])
    listing = inv.text(f"{MCI}/participants")
    check_accessible(listing)
    screened = inv.post(f"{MCI}/participants", {"site": "BJ01", "full_name": "Wang Fang"})
    assert screened.status_code == 302
    subject = screened.headers["Location"].rsplit("/", 1)[1]
    page = f"{MCI}/participants/{subject}"
    check_accessible(inv.text(page))
    for document, role in CONSENTS:
        assert (
            inv.post(f"{page}/consent", {"document": document, "signer_role": role}).status_code
            == 302
        )
    assert "consented" in inv.text(page)
    # the screening form: an out-of-range value is shown next to its field, then fixed
    form_url = f"{page}/visits/screening/forms/screening"
    bad = inv.post(form_url, {**MCI_SCREENING, "age": "120", "action": "submit"})
    assert bad.status_code == 422
    assert re.search(r'id="err-age" class="error" role="alert">[^<]*100', bad.text)
    assert 'aria-invalid="true"' in bad.text and 'value="120"' in bad.text
    check_accessible(bad.text)
    good = inv.post(form_url, {**{k: str(v) for k, v in MCI_SCREENING.items()}, "action": "submit"})
    assert good.status_code == 302
    moca_url = f"{page}/visits/screening/forms/moca"
    # the education-adjusted total is calculated on the server: a posted total is ignored
    sent_total = inv.post(
        moca_url, {"moca_raw": "20", "moca_edu_point": "1", "moca_total": "25", "action": "submit"}
    )
    assert sent_total.status_code == 302
    fixed = inv.post(moca_url, {"moca_raw": "20", "moca_edu_point": "1", "action": "submit"})
    assert fixed.status_code == 302
    eligible = inv.post(f"{page}/eligibility")
    assert eligible.status_code == 200 and "every criterion is met" in eligible.text
    assert inv.post(f"{page}/enroll").status_code == 302
    # a request id that does not fit its column (the form sends it as typed): a 422, not a
    # failed insert on PostgreSQL, and nothing written
    assert inv.post(f"{page}/randomize", {"request_id": "x" * 81}).status_code == 422
    assert db.session.scalars(select(Allocation)).all() == []
    randomized = inv.post(f"{page}/randomize", {"request_id": "web-1"})
    assert randomized.status_code == 302
    receipt = inv.text(page)
    assert '<dd id="randomization-number">R00001</dd>' in receipt
    assert re.search(r'<dd id="activation-code">MCI-[A-Z0-9-]+</dd>', receipt)
    for term in ARM_TERMS:
        assert term not in receipt
    # a double click with the same request id changes nothing
    assert inv.post(f"{page}/randomize", {"request_id": "web-1"}).status_code == 302
    assert len(db.session.scalars(select(Allocation)).all()) == 1
    # participants list shows the next visit due
    assert "Baseline (day 0)" in inv.text(f"{MCI}/participants")


def test_failed_criteria_are_listed_by_id_and_text(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    inv = PageClient(app, staff["inv"])
    inv.client.set_cookie("lang", "zh")
    subject = (
        inv.post(f"{MCI}/participants", {"site": "BJ01"}).headers["Location"].rsplit("/", 1)[1]
    )
    page = f"{MCI}/participants/{subject}"
    for document, role in CONSENTS:
        inv.post(f"{page}/consent", {"document": document, "signer_role": role})
    values = {**{k: str(v) for k, v in MCI_SCREENING.items()}, "gds_total": "12"}
    assert (
        inv.post(
            f"{page}/visits/screening/forms/screening", {**values, "action": "submit"}
        ).status_code
        == 302
    )
    inv.post(
        f"{page}/visits/screening/forms/moca",
        {"moca_raw": "20", "moca_edu_point": "1", "moca_total": "21", "action": "submit"},
    )
    form_page = inv.text(f"{page}/visits/screening/forms/screening")
    for label in ("筛选与人口学资料", ">年龄 (years)", ">女</label>", "修改原因"):
        assert label in form_page, label
    result = inv.post(f"{page}/eligibility")
    assert result.status_code == 200
    assert "<code>exc_depression</code> GDS-15评分高于9分" in result.text
    assert inv.post(f"{page}/enroll").status_code in (302, 409)
    assert "筛选失败" in inv.text(page)


def test_sequence_errors_show_a_banner(app: Flask, client: FlaskClient) -> None:
    staff = load_trial(client)
    inv = PageClient(app, staff["inv"])
    subject = (
        inv.post(f"{MCI}/participants", {"site": "BJ01"}).headers["Location"].rsplit("/", 1)[1]
    )
    response = inv.post(f"{MCI}/participants/{subject}/enroll")
    assert response.status_code == 409
    assert 'class="banner" role="alert"' in response.text


def test_site_isolation(app: Flask, client: FlaskClient) -> None:
    staff, subject = _randomized(client)
    other = PageClient(app, staff["inv2"])
    assert subject not in other.text(f"{MCI}/participants")
    for path in (
        f"{MCI}/participants/{subject}",
        f"{MCI}/participants/{subject}/visits/baseline/forms/adas_cog",
    ):
        assert other.get(path).status_code == 404, path
    assert other.post(f"{MCI}/participants/{subject}/randomize").status_code == 404
    assert other.post(f"{MCI}/participants", {"site": "BJ01"}).status_code in (403, 404)
    stat = PageClient(app, staff["stat"])
    assert stat.get(f"{MCI}/participants").status_code == 403
    assert PageClient(app, staff["inv"]).get(f"{MCI}/audit").status_code == 403
    assert (
        PageClient(app, staff["monitor"]).get(f"{MCI}/protocol/diff?old=1&new=1").status_code == 403
    )


def test_form_reason_for_change_signature_and_monitor_actions(
    app: Flask, client: FlaskClient
) -> None:
    staff, subject = _randomized(client)
    inv = PageClient(app, staff["inv"])
    url = f"{MCI}/participants/{subject}/visits/baseline/forms/adas_cog"
    page = inv.text(url)
    check_accessible(page)
    assert 'data-calculation="[adas_q01]' in page and "readonly" in page
    values = {f"adas_q{i:02d}": "2" for i in range(1, 14)}
    assert inv.post(url, {**values, "action": "submit"}).status_code == 302
    record = db.session.scalars(select(FormRecord).where(FormRecord.form_code == "adas_cog")).one()
    shown = inv.text(url)
    assert 'value="26"' in shown  # derived total computed by the server
    assert "Reason for change" in shown
    # changing submitted data needs a reason
    changed = {
        **values,
        "adas_q01": "3",
        "action": "submit",
        "expected_version": str(record.version),
    }
    no_reason = inv.post(url, changed)
    assert no_reason.status_code == 422 and 'id="reason-err"' in no_reason.text
    ok = inv.post(url, {**changed, "reason": "transcription error"})
    assert ok.status_code == 302
    # a stale version is a banner, not an overwrite
    stale = inv.post(url, {**changed, "adas_q02": "1", "reason": "x", "expected_version": "1"})
    assert stale.status_code == 409 and 'class="banner"' in stale.text
    # e-signature: wrong password refused inline, right one shows name, time and meaning
    signing = inv.text(url)
    assert "Signing as Inv at" in signing
    assert "content fingerprint" in signing
    seen = re.search(r'name="expected_version" value="(\d+)"', signing).group(1)  # type: ignore[union-attr]
    fingerprint = re.search(r'name="content_sha256" value="([0-9a-f]{64})"', signing).group(1)  # type: ignore[union-attr]
    sign_as = {"meaning": "review", "expected_version": seen, "content_sha256": fingerprint}
    wrong = inv.post(f"{MCI}/records/{record.id}/sign", {**sign_as, "password": "bad"})
    assert wrong.status_code == 422 and "password check failed" in wrong.text
    stale = inv.post(
        f"{MCI}/records/{record.id}/sign",
        {**sign_as, "password": PASSWORD, "expected_version": str(int(seen) - 1)},
    )
    assert stale.status_code == 409 and "changed since you viewed it" in stale.text
    signed = inv.post(f"{MCI}/records/{record.id}/sign", {**sign_as, "password": PASSWORD})
    assert signed.status_code == 302
    assert re.search(r"Signed by Inv on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC — Review", inv.text(url))
    # monitor verifies and raises a query; the investigator answers; the monitor closes it
    monitor = PageClient(app, staff["monitor"])
    monitor_page = monitor.text(url)
    check_accessible(monitor_page)
    assert "Submit" not in monitor_page and "Sign this form" not in monitor_page
    assert (
        monitor.post(f"{MCI}/records/{record.id}/status", {"target": "verified"}).status_code == 302
    )
    raised = monitor.post(
        f"{MCI}/records/{record.id}/queries", {"field": "adas_q07", "text": "Please confirm Q7"}
    )
    assert raised.status_code == 302
    inbox = inv.text(f"{MCI}/queries")
    check_accessible(inbox)
    assert "Please confirm Q7" in inbox
    query_id = int(re.search(r'id="query-(\d+)"', inbox).group(1))  # type: ignore[union-attr]
    empty = inv.post(f"{MCI}/queries/{query_id}/answer", {"answer": " "})
    assert empty.status_code == 422 and "an answer is required" in empty.text
    assert inv.post(f"{MCI}/queries/{query_id}/answer", {"answer": "Confirmed"}).status_code == 302
    assert monitor.post(f"{MCI}/queries/{query_id}/answer", {"answer": "x"}).status_code == 403
    signing = {"password": PASSWORD, "meaning": "review", "expected_version": seen}
    assert monitor.post(f"{MCI}/records/{record.id}/sign", signing).status_code == 403
    assert monitor.post(f"{MCI}/queries/{query_id}/close").status_code == 302
    assert "closed" in monitor.text(f"{MCI}/queries?status=closed")
    assert monitor.post(f"{MCI}/queries/{query_id}/reopen", {"note": "more"}).status_code == 302
    # the data manager locks; the form is then read-only
    dm = PageClient(app, staff["dm"])
    # the reopened query stands: no lock until it is resolved
    refused = dm.post(f"{MCI}/records/{record.id}/status", {"target": "locked"})
    assert refused.status_code == 409 and "unresolved query" in refused.text
    assert inv.post(f"{MCI}/queries/{query_id}/answer", {"answer": "Still 2"}).status_code == 302
    assert monitor.post(f"{MCI}/queries/{query_id}/close").status_code == 302
    assert dm.post(f"{MCI}/records/{record.id}/status", {"target": "locked"}).status_code == 302
    locked = inv.text(url)
    assert "<fieldset disabled>" in locked and "locked" in locked
    assert inv.post(f"{MCI}/records/{record.id}/status", {"target": "locked"}).status_code == 403


def test_repeating_form_entries(app: Flask, client: FlaskClient) -> None:
    staff, subject = _randomized(client)
    inv = PageClient(app, staff["inv"])
    page = inv.text(f"{MCI}/participants/{subject}")
    assert "visits/unscheduled/forms/con_meds?repeat=1" in page
    url = f"{MCI}/participants/{subject}/visits/unscheduled/forms/con_meds"
    body = {"cm_name": "Aspirin", "cm_ongoing": "0", "cm_stop_on": "2026-01-02", "action": "submit"}
    assert inv.post(f"{url}?repeat=1", body).status_code == 302
    assert inv.post(f"{url}?repeat=2", {**body, "cm_name": "Metformin"}).status_code == 302
    page = inv.text(f"{MCI}/participants/{subject}")
    assert "con_meds?repeat=3" in page and "Entry 2" in page
    entry = inv.text(f"{url}?repeat=2")
    assert 'value="Metformin"' in entry and 'data-show-if="[cm_ongoing] = &#39;0&#39;"' in entry


def test_the_unscheduled_visits_forms_are_reached_from_the_participant_page(
    app: Flask, client: FlaskClient
) -> None:
    """The protocol's unscheduled ADAS-Cog (`schedule.unscheduled_forms`) is linked from the
    participant page's visit table (before, only a typed URL reached it), with its status once
    entered; the unscheduled visit has no date form (it takes no date)."""
    staff, subject = _randomized(client)
    inv = PageClient(app, staff["inv"])
    page = inv.text(f"{MCI}/participants/{subject}")
    url = f"{MCI}/participants/{subject}/visits/unscheduled/forms/adas_cog"
    assert "Unscheduled visit" in page and f'href="{url}"' in page
    assert "visits/unscheduled/date" not in page and "visits/baseline/date" in page
    values = {f"adas_q{i:02d}": "2" for i in range(1, 14)}
    assert inv.post(url, {**values, "action": "submit"}).status_code == 302
    row = inv.text(f"{MCI}/participants/{subject}").split("Unscheduled visit", 1)[1]
    assert "submitted" in row.split("</tr>", 1)[0]


def test_blinded_pages_never_show_the_arm(app: Flask, client: FlaskClient) -> None:
    staff, subject = _randomized(client)
    arm = db.session.scalars(select(Allocation.arm_code)).one()
    inv = PageClient(app, staff["inv"])
    inv.post(
        f"{MCI}/participants/{subject}/visits/baseline/forms/adas_cog",
        {**{f"adas_q{i:02d}": "1" for i in range(1, 14)}, "action": "submit"},
    )
    paths = [
        "/",
        MCI,
        f"{MCI}/participants",
        f"{MCI}/participants/{subject}",
        f"{MCI}/participants/{subject}/visits/baseline/forms/adas_cog",
        f"{MCI}/participants/{subject}/visits/screening/forms/moca",
        f"{MCI}/queries",
        f"{MCI}/audit?verify=1",
    ]
    for who in ("inv", "coord", "monitor", "dm", "stat", "sponsor", "auditor"):
        page_client = PageClient(app, staff[who])
        for lang in ("en", "zh"):
            page_client.client.set_cookie("lang", lang)
            for path in paths:
                response = page_client.get(path)
                if response.status_code != 200:
                    assert response.status_code in (403, 404), (who, path)
                    continue
                text = response.text
                for term in (*ARM_TERMS, f">{arm}<", f'"{arm}"'):
                    assert term not in text, (who, path, term)
    audit_page = PageClient(app, staff["auditor"]).text(f"{MCI}/audit?verify=1&per_page=500")
    assert "Intact:" in audit_page


def test_emergency_unblinding_shows_the_arm_only_in_the_response(
    app: Flask, client: FlaskClient
) -> None:
    staff, subject = _randomized(client)
    arm = db.session.scalars(select(Allocation.arm_code)).one()
    inv = PageClient(app, staff["inv"])
    page = f"{MCI}/participants/{subject}"
    form = inv.text(page)
    assert "Emergency unblinding" in form
    check_accessible(form)
    refused = inv.post(
        f"{page}/unblind", {"reason": "SAE", "category": "medical_emergency", "password": "bad"}
    )
    assert refused.status_code == 422 and arm not in refused.text
    response = inv.post(
        f"{page}/unblind",
        {"reason": "anaphylaxis", "category": "serious_adverse_event", "password": PASSWORD},
    )
    assert response.status_code == 200
    assert f"({arm})" in response.text and "Signed by Inv" in response.text.replace(
        "Shown to you only, once. ", ""
    )
    assert response.headers["Cache-Control"] == "no-store"
    assert f"({arm})" not in inv.text(page)
    coord = PageClient(app, staff["coord"])
    assert "Emergency unblinding" not in coord.text(page)
    refused_role = coord.post(
        f"{page}/unblind", {"reason": "x", "category": "other", "password": PASSWORD}
    )
    assert refused_role.status_code == 403 and arm not in refused_role.text


def test_sponsor_protocol_upload_diff_activation_sites_and_roles(
    app: Flask, client: FlaskClient
) -> None:
    staff = load_trial(client)
    sponsor = PageClient(app, staff["sponsor"])
    broken = sponsor.post(
        f"{MCI}/protocol",
        {"protocol_text": "code: MCI-COGTRAIN-01\narms: 3\n", "action": "validate"},
    )
    assert broken.status_code == 422
    assert re.search(r"protocol\.yaml:\d+(:\d+)?", broken.text)
    from tests.dtx_trials.trial_flow import LIBRARY

    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    valid = sponsor.post(f"{MCI}/protocol", {"protocol_text": text, "action": "validate"})
    assert valid.status_code == 200 and "The protocol is valid." in valid.text
    same = sponsor.post(f"{MCI}/protocol", {"protocol_text": text, "action": "upload"})
    assert "Identical to version 1" in same.text
    amended = text.replace("caps: {per_site: 80}", "caps: {per_site: 90}")
    stored = sponsor.post(f"{MCI}/protocol", {"protocol_text": amended, "action": "upload"})
    assert "Stored as version 2." in stored.text
    diff = sponsor.text(f"{MCI}/protocol/diff?old=1&new=2")
    assert "per_site" in diff
    assert sponsor.post(f"{MCI}/protocol/2/activate").status_code == 302
    assert "superseded" in sponsor.text(f"{MCI}?tab=setup")
    assert sponsor.post(f"{MCI}/protocol/2/activate").status_code == 409
    # sites, accounts and roles
    bad_site = sponsor.post(f"{MCI}/sites", {"code": "bad code!", "name": "X"})
    assert bad_site.status_code == 422 and 'id="site-code-err"' in bad_site.text
    assert sponsor.post(f"{MCI}/sites", {"code": "CD01", "name": "Chengdu"}).status_code == 302
    no_email = sponsor.post(f"{MCI}/accounts", {"username": "newbie", "printed_name": "New"})
    assert no_email.status_code == 422 and 'id="new-email-err"' in no_email.text
    assert (
        sponsor.post(
            f"{MCI}/accounts",
            {"username": "newbie", "printed_name": "New Bie", "email": "newbie@example.org"},
        ).status_code
        == 302
    )
    no_site = sponsor.post(f"{MCI}/memberships", {"username": "newbie", "role": "investigator"})
    assert no_site.status_code == 422 and 'id="grant-site-err"' in no_site.text
    unknown = sponsor.post(f"{MCI}/memberships", {"username": "ghost", "role": "monitor"})
    assert unknown.status_code == 422 and 'id="grant-user-err"' in unknown.text
    granted = sponsor.post(
        f"{MCI}/memberships", {"username": "newbie", "role": "investigator", "site": "CD01"}
    )
    assert granted.status_code == 302
    assert "CD01" in sponsor.text(f"{MCI}?tab=setup")
    assert "newbie (New Bie)" in sponsor.text(f"{MCI}?tab=accounts")
    assert (
        PageClient(app, staff["inv"]).post(f"{MCI}/sites", {"code": "X1", "name": "X"}).status_code
        == 403
    )


def test_audit_browser_filters_and_pages(app: Flask, client: FlaskClient) -> None:
    staff, _ = _randomized(client)
    auditor = PageClient(app, staff["auditor"])
    page = auditor.text(f"{MCI}/audit?per_page=10")
    check_accessible(page)
    assert "Page 1 of" in page and 'rel="next"' in page and "per_page=10" in page
    second = auditor.text(f"{MCI}/audit?per_page=10&page=2")
    assert "Page 2 of" in second and 'rel="prev"' in second
    filtered = auditor.text(f"{MCI}/audit?action=randomization.allocate")
    assert "(1 events)" in filtered and "participant.screen" not in filtered.split("<tbody>")[1]
    future = auditor.text(f"{MCI}/audit?since=2999-01-01")
    assert "(0 events)" in future
    verified = auditor.text(f"{MCI}/audit?verify=1")
    assert 'id="integrity-result"' in verified and "Intact:" in verified
    # the unfiltered total is the chain's last seq, the filter choices come from the index
    # skip scan: both as a COUNT and a DISTINCT over the chain would say
    chain = AuditEvent.chain == audit.chain_for(staff.trial.id)
    n_events = db.session.scalar(select(func.count()).select_from(AuditEvent).where(chain))
    pairs = db.session.execute(
        select(AuditEvent.entity_type, AuditEvent.action).where(chain).distinct()
    ).all()
    assert f"({n_events} events)" in page and n_events > 10
    assert audit.filter_choices(db.session, audit.chain_for(staff.trial.id)) == (
        sorted({e for e, _ in pairs}),
        sorted({a for _, a in pairs}),
    )
    assert audit.filter_choices(db.session, "trial:no-such") == ([], [])
    for action in ("randomization.allocate", "participant.screen"):
        assert f">{action}</option>" in page


@pytest.mark.parametrize("path", ["/static/ecrf/expressions.js", "/static/web/form.js"])
def test_scripts_are_served(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    try:
        assert response.status_code == 200
        assert "javascript" in response.headers["Content-Type"]
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "DtxExpr" in response.get_data(as_text=True)
    finally:
        response.close()


def test_overdue_visits_are_highlighted(app: Flask, client: FlaskClient) -> None:
    staff, _ = _randomized(client)
    inv = PageClient(app, staff["inv"])
    listing = inv.text(f"{MCI}/participants")
    assert "Baseline (day 0) · " in listing and 'class="overdue"' not in listing
    # move the schedule 60 days into the past (behind the services: this test reads pages only)
    shift = datetime.timedelta(days=60)
    for visit in db.session.scalars(select(Visit).where(Visit.planned_on.is_not(None))):
        assert visit.planned_on and visit.window_start_on and visit.window_end_on
        visit.planned_on -= shift
        visit.window_start_on -= shift
        visit.window_end_on -= shift
    db.session.commit()
    listing = inv.text(f"{MCI}/participants")
    assert 'class="overdue"' in listing and '<strong class="badge">overdue</strong>' in listing


def _field(type_: str, **kwargs: object) -> FieldDef:
    return FieldDef(id="f", type=type_, label=Label("F"), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "raw", "zh"),
    [
        (_field("integer"), "abc", "须为数字"),
        (_field("integer", min=0), "-1", "不能小于 0"),
        (_field("integer", max=10), "11", "不能大于 10"),
        (_field("decimal", decimals=1), "72.55", "最多 1 位小数"),
        (_field("slider"), "2.5", "须为整数"),
        (_field("text", max_length=3), "abcd", "最多 3 个字符"),
        (_field("date"), "2023-02-29", "不是有效的日期"),
        (_field("date"), "01/02/2024", "须为日期（YYYY-MM-DD）"),
        (_field("date", min="2024-01-01"), "2023-12-31", "不能早于 2024-01-01"),
        (_field("date", max="2024-01-01"), "2024-01-02", "不能晚于 2024-01-01"),
        (_field("datetime"), "2024-01-02", "须为日期和时间（YYYY-MM-DDTHH:MM）"),
        (_field("time"), "8:30", "须为时间（HH:MM 或 HH:MM:SS）"),
        (_field("time", min="08:00"), "07:59", "不能早于 08:00"),
        (_field("yesno"), "maybe", "须为是或否"),
    ],
)
def test_form_engine_messages_are_shown_in_chinese(field: FieldDef, raw: str, zh: str) -> None:
    """What the engine says about a typed value reaches a Chinese page in Chinese."""
    with pytest.raises(FieldValueError) as info:
        coerce_value(field, raw)
    assert translate_message(info.value.message, "zh") == zh
    assert translate_message(info.value.message, "en") == info.value.message


def test_edit_check_messages_use_the_protocols_chinese_text() -> None:
    known = {"age out of range": "年龄超出范围"}
    assert translate_message("age out of range", "zh", known) == "年龄超出范围"
    assert translate_message("no translation for this", "zh", known) == "no translation for this"


def test_visit_date_page_and_deviation_review(app: Flask, client: FlaskClient) -> None:
    staff, subject = _randomized(client)
    inv = PageClient(app, staff["inv"])  # type: ignore[index]
    page_path = f"{MCI}/participants/{subject}"
    page = inv.text(page_path)
    check_accessible(page)
    assert 'name="date"' in page and "Asia/Shanghai" in page
    today = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).date()
    earlier = today - datetime.timedelta(days=2)
    url = f"{page_path}/visits/baseline/date"
    bad = inv.post(url, {"date": "2026-02-30", "request_id": "v-1"})
    assert bad.status_code == 422 and "date: a date YYYY-MM-DD" in bad.text
    future = inv.post(url, {"date": (today + datetime.timedelta(days=2)).isoformat(),
                            "request_id": "v-2"})
    assert future.status_code == 422 and "future" in future.text
    done = inv.post(url, {"date": earlier.isoformat(), "time": "08:15", "request_id": "v-3"})
    assert done.status_code == 302, done.text
    # the same submit again (a double click) replays, it does not raise a second deviation
    again = inv.post(url, {"date": earlier.isoformat(), "time": "08:15", "request_id": "v-3"})
    assert again.status_code == 302
    shown = inv.text(page_path)
    assert f"{earlier.isoformat()} 08:15" in shown
    monitor = PageClient(app, staff["monitor"])  # type: ignore[index]
    listing = monitor.text(f"{MCI}/deviations")
    check_accessible(listing)
    assert listing.count('id="deviation-') == 1 and "Visit out of window" in listing
    deviation_id = int(re.search(r'id="deviation-(\d+)"', listing).group(1))  # type: ignore[union-attr]
    review = f"{MCI}/deviations/{deviation_id}/review"
    assert inv.post(review, {"note": "fine", "request_id": "r-0"}).status_code == 403
    assert monitor.post(review, {"note": "", "request_id": "r-1"}).status_code == 422
    assert monitor.post(review, {"note": "site retrained", "request_id": "r-2"}).status_code == 302
    assert "site retrained" in monitor.text(f"{MCI}/deviations?status=reviewed")
    other = PageClient(app, staff["inv2"])  # type: ignore[index]
    assert 'id="deviation-' not in other.text(f"{MCI}/deviations")


def test_staff_send_a_remote_consent_link_from_the_participant_page(
    app: Flask, client: FlaskClient
) -> None:
    staff = load_trial(client)
    subject = api(client, staff["inv"], "POST", "/participants",
                  {"site": "BJ01", "identifiers": {"phone": "13900004444"}}, 201)["subject_code"]
    inv = PageClient(app, staff["inv"])
    page_path = f"{MCI}/participants/{subject}"
    assert "econsent-doc" in inv.text(page_path)
    url = f"{page_path}/econsent"
    missing = inv.post(url, {"document": "partner_icf|1.0|zh-CN", "channel": "sms",
                             "request_id": "e-1"})
    assert missing.status_code == 422 and "address" in missing.text
    sent = inv.post(url, {"document": "main_icf|1.0|zh-CN", "channel": "sms",
                          "request_id": "e-2"})
    assert sent.status_code == 200
    link = re.search(r'id="econsent-url">[^<]*<code>([^<]+)</code>', sent.text)
    assert link, sent.text[:500]
    path = link.group(1).split("localhost", 1)[1]
    opened = app.test_client().get(path)
    assert opened.status_code == 200 and "受试者知情同意书" in opened.get_data(as_text=True)
    monitor = PageClient(app, staff["monitor"])
    assert monitor.post(url, {"document": "main_icf|1.0|zh-CN", "channel": "sms",
                              "request_id": "e-3"}).status_code == 403
