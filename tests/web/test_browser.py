"""End-to-end flows in a real browser (Debian's chromium driven by Playwright).

The application runs in a background thread (werkzeug) on a SQLite file migrated with Alembic and
loaded with the cognitive-impairment example trial and its staff. Each page visited is saved as
a screenshot under test-artifacts/screenshots/. Without chromium these tests are skipped, except
under CI=true where that is a failure.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from werkzeug.serving import make_server

from dtx_trials.extensions import db
from dtx_trials.web.i18n import HTML_LANG, translate
from protocols.loader import load_protocol
from tests import absent
from tests.conftest import make_test_app
from tests.dtx_trials.trial_flow import LIBRARY, api, enrolled_mci_participant, load_trial
from tests.helpers import PASSWORD
from tests.web.web_helpers import ARM_TERMS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
PROTOCOL = load_protocol(LIBRARY / "cognitive_impairment.yaml")
# The staff flows run once per page language; the browser's language picks it (Accept-Language).
LANGS = pytest.mark.parametrize("lang", ["en", "zh"])
# the builder runs in the three page languages (zh-Hant: Traditional Chinese, issue #22)
ALL_LANGS = pytest.mark.parametrize("lang", ["en", "zh", "zh-Hant"])


def form_title(form_id: str, lang: str) -> str:
    """The title of a protocol form as the page shows it in `lang`."""
    return PROTOCOL.form(form_id).title.get(lang)


def _need_browser() -> None:
    missing = None
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        missing = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed"
    if missing:
        absent(missing)


@pytest.fixture(scope="module")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str, Any]]:
    """The app on a migrated SQLite file with the example trial, served on a random port."""
    _need_browser()
    from flask_migrate import upgrade

    path = tmp_path_factory.mktemp("browser") / "e2e.sqlite"
    app = make_test_app(f"sqlite:///{path}")
    with app.app_context():
        upgrade()
        client = app.test_client()
        staff = load_trial(client)
        subject = enrolled_mci_participant(client, staff)
        # a randomized participant with a personal ePRO link for the week-4 questionnaire
        phone_subject = enrolled_mci_participant(client, staff)
        api(client, staff["inv"], "POST", f"/participants/{phone_subject}/randomization", {}, 201)
        issued = api(
            client,
            staff["coord"],
            "POST",
            f"/participants/{phone_subject}/epro-links",
            {"visit": "week_4", "form": "app_experience"},
            201,
        )
        zh_subject = enrolled_mci_participant(client, staff)
        api(client, staff["inv"], "POST", f"/participants/{zh_subject}/randomization", {}, 201)
        issued_zh = api(
            client,
            staff["coord"],
            "POST",
            f"/participants/{zh_subject}/epro-links",
            {"visit": "week_4", "form": "app_experience"},
            201,
        )
        db.session.remove()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            app,
            f"http://127.0.0.1:{server.server_port}",
            {
                "enrolled": subject,
                "epro_path": urlsplit(str(issued["url"])).path,
                "epro_path_zh": urlsplit(str(issued_zh["url"])).path,
            },
        )
    finally:
        server.shutdown()
        thread.join(timeout=5)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="module")
def browser(live_app: tuple[Flask, str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def click_and_load(page: Any, selector: str) -> None:
    """Click a link or a control that posts a form, and wait for the next page to load."""
    with page.expect_navigation():
        page.click(selector)


class Session:
    """One browser context (its own cookies) signed in as one user."""

    def __init__(
        self, browser: Any, base: str, name: str, lang: str = "en", blinded: bool = True
    ) -> None:
        locale = {"en": "en-US", "zh": "zh-CN", "zh-Hant": "zh-TW"}[lang]
        self.context = browser.new_context(locale=locale)
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.base = base
        self.name = name if lang == "en" else f"{name}-{lang}"
        self.lang = lang
        self.blinded = blinded
        self.n_shots = 0

    def t(self, key: str, **values: object) -> str:
        """A page label in this session's language."""
        return translate(key, self.lang, **values)

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)

    def shot(self, label: str) -> None:
        """Save a screenshot; check the page is in the session's language and, for a blinded
        user, that it names no arm."""
        assert self.page.locator("html").get_attribute("lang") == HTML_LANG[self.lang], label
        if self.blinded:
            content = self.page.content()
            assert not [term for term in ARM_TERMS if term in content], label
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.n_shots += 1
        self.page.screenshot(
            path=str(SCREENSHOTS / f"{self.name}-{self.n_shots:02d}-{label}.png"), full_page=True
        )

    def sign_in(self, username: str, password: str = PASSWORD) -> None:
        self.goto("/login")
        self.page.fill("#username", username)
        self.page.fill("#password", password)
        click_and_load(self.page, "main button[type=submit]")
        self.page.wait_for_url(self.base + "/")

    def close(self) -> None:
        self.context.close()


def test_sponsor_signs_in_and_sees_the_trial(live_app: Any, browser: Any) -> None:
    _, base, _ = live_app
    s = Session(browser, base, "sponsor")
    try:
        s.goto("/login")
        s.shot("login")
        s.sign_in("sponsor")
        assert s.page.locator("html").get_attribute("lang") == "en"
        s.shot("home")
        click_and_load(s.page, "text=MCI-COGTRAIN-01")
        s.page.wait_for_selector("svg.chart")
        assert s.page.locator("#enrollment-h").is_visible()
        s.shot("dashboard")
        click_and_load(s.page, f"text={s.t('tab_setup')}")
        assert s.page.locator("#versions-h").is_visible()
        s.shot("dashboard-setup")
        # keyboard: the skip link is the first stop and is visible when focused
        s.page.keyboard.press("Tab")
        assert s.page.evaluate("document.activeElement.className") == "skip"
    finally:
        s.close()


@LANGS
def test_investigator_screens_to_randomization_and_live_branching(
    live_app: Any, browser: Any, lang: str
) -> None:
    _, base, _ = live_app
    s = Session(browser, base, "investigator", lang)
    page = s.page
    try:
        s.sign_in("inv")
        s.goto("/trials/MCI-COGTRAIN-01/participants")
        s.shot("participants")
        page.select_option("#screen-site", "BJ01")
        page.fill("#screen-name", "Zhang Wei")
        click_and_load(page, "form[method=post][action$='/participants'] button[type=submit]")
        page.wait_for_selector("#participant-status")
        subject = page.locator("h1").inner_text().split()[-1]
        for document, role in (
            ("main_icf|1.0|zh-CN", "participant"),
            ("partner_icf|1.0|zh-CN", "legally_authorized_representative"),
        ):
            page.select_option("#consent-doc", document)
            page.select_option("#consent-role", role)
            click_and_load(page, f"text={s.t('record_consent')}")
        assert page.locator("#participant-status").inner_text() == s.t("st_consented")
        s.shot("consented")
        click_and_load(page, f"text={form_title('screening', lang)}")
        page.fill("#screening_on", "2026-11-20")
        page.fill("#age", "120")
        page.check("#sex-2")
        page.fill("#education_years", "9")
        page.fill("#gds_total", "4")
        for field, choice in (
            ("dementia_dx", 2),
            ("study_partner", 1),
            ("has_device", 1),
            ("achei_use", 2),
        ):
            page.check(f"#{field}-{choice}")
        click_and_load(page, "button[value=submit]")
        error = page.locator("#err-age")
        error.wait_for()
        # the engine's range message, in the page's language
        expected = {"en": "must be at most 100", "zh": "不能大于 100"}[lang]
        assert error.get_attribute("role") == "alert" and error.inner_text() == expected
        assert (
            page.locator(".banner").first.inner_text()
            == {
                "en": "the form has errors",
                "zh": "表单有错误",
            }[lang]
        )
        assert page.locator("#age").get_attribute("aria-invalid") == "true"
        s.shot("screening-error")
        page.fill("#age", "72")
        click_and_load(page, "button[value=submit]")
        page.wait_for_selector(f"text={s.t('saved')}")
        assert page.locator("#record-status").inner_text() == s.t("st_submitted")
        click_and_load(page, f"text={subject}")
        click_and_load(page, f"text={form_title('moca', lang)}")
        page.fill("#moca_raw", "20")
        page.check("#moca_edu_point-1")
        click_and_load(page, "button[value=submit]")
        page.wait_for_selector(f"text={s.t('saved')}")
        # the education-adjusted total is calculated by the server and shown read-only
        assert page.locator("#moca_total").input_value() == "21"
        click_and_load(page, f"text={subject}")
        click_and_load(page, f"text={s.t('check_eligibility')}")
        page.wait_for_selector(f"text={s.t('eligible')}")
        s.shot("eligible")
        click_and_load(page, f"button:has-text('{s.t('enroll')}')")
        click_and_load(page, f"button:has-text('{s.t('randomize')}')")
        number = page.locator("#randomization-number")
        number.wait_for()
        assert re.fullmatch(r"R\d{5}", number.inner_text())
        assert page.locator("#activation-code").inner_text().startswith("MCI-")
        s.shot("randomized")
        # a visit form whose follow-up question appears and disappears as the answer changes
        week_4 = PROTOCOL.visit("week_4").label.get(lang)
        with page.expect_navigation():
            page.locator("tr", has_text=week_4).locator(
                f"text={form_title('app_experience', lang)}"
            ).click()
        follow_up = page.locator("#wrap-app_problem_text")
        assert follow_up.is_hidden()
        page.check("#app_problem-1")
        follow_up.wait_for(state="visible")
        page.fill("#app_problem_text", "The app froze once")
        s.shot("branching-shown")
        page.check("#app_problem-2")
        follow_up.wait_for(state="hidden")
        assert page.locator("#app_problem_text").is_disabled()
        s.shot("branching-hidden")
        page.check("#app_problem-1")
        follow_up.wait_for(state="visible")
        page.fill("#app_ease", "7")
        click_and_load(page, "button[value=submit]")
        page.wait_for_selector(f"text={s.t('saved')}")
        assert page.locator("#app_problem_text").input_value() == "The app froze once"
        s.shot("visit-form-saved")
    finally:
        s.close()


@LANGS
def test_monitor_query_answered_by_investigator(live_app: Any, browser: Any, lang: str) -> None:
    _, base, state = live_app
    subject = state["enrolled"]
    form = f"/trials/MCI-COGTRAIN-01/participants/{subject}/visits/screening/forms/screening"
    question = f"Please check the GDS-15 total against the source ({lang})"
    reply = f"Verified against the clinic chart ({lang})"
    monitor = Session(browser, base, "monitor", lang)
    inv = Session(browser, base, "query-answer", lang)
    try:
        monitor.sign_in("monitor")
        monitor.goto(form)
        monitor.page.select_option("#query-field", "gds_total")
        monitor.page.fill("#query-text", question)
        click_and_load(monitor.page, f"button:has-text('{monitor.t('raise_query')}')")
        monitor.page.wait_for_selector(f"text={question}")
        monitor.shot("query-raised")
        inv.sign_in("inv")
        inv.goto("/trials/MCI-COGTRAIN-01/queries")
        row = inv.page.locator("tr", has_text=question)
        row.locator("input[name=answer]").fill(reply)
        inv.shot("inbox")
        with inv.page.expect_navigation():
            row.locator(f"button:has-text('{inv.t('answer_query')}')").click()
        answered = inv.page.locator("tr", has_text=reply)
        answered.wait_for()
        assert inv.t("st_answered") in answered.inner_text()
        inv.shot("answered")
        monitor.goto("/trials/MCI-COGTRAIN-01/queries?status=answered")
        row = monitor.page.locator("tr", has_text=reply)
        with monitor.page.expect_navigation():
            row.locator(f"button:has-text('{monitor.t('close')}')").click()
        monitor.goto("/trials/MCI-COGTRAIN-01/queries?status=closed")
        assert question in monitor.page.content()
        monitor.shot("closed")
    finally:
        monitor.close()
        inv.close()


def test_sign_in_and_dashboard_in_chinese(live_app: Any, browser: Any) -> None:
    _, base, _ = live_app
    s = Session(browser, base, "zh")
    page = s.page
    try:
        s.goto("/login")
        click_and_load(page, "text=简体中文")
        s.lang = "zh"  # the switch link set the language cookie
        page.wait_for_selector("text=登录")
        assert page.locator("html").get_attribute("lang") == "zh-Hans"
        assert page.locator("label[for=username]").inner_text() == "用户名"
        s.shot("login")
        page.fill("#username", "sponsor")
        page.fill("#password", PASSWORD)
        click_and_load(page, "main button[type=submit]")
        page.wait_for_selector("text=我的试验")
        s.shot("home")
        click_and_load(page, "text=MCI-COGTRAIN-01")
        page.wait_for_selector("text=入组情况")
        for label in ("研究中心", "账户", "入组情况", "双盲", "居家认知训练应用", "下载 CSV"):
            assert label in page.content()
        s.shot("dashboard")
        s.goto("/trials/MCI-COGTRAIN-01?tab=setup")
        page.wait_for_selector("text=方案版本")
        s.goto("/trials/MCI-COGTRAIN-01?tab=accounts")
        page.wait_for_selector("text=账户与角色")
        s.goto("/trials/MCI-COGTRAIN-01/participants")
        assert "筛选新受试者" not in page.content() and "受试者编号" in page.content()
        s.shot("participants")
    finally:
        s.close()


def test_participant_completes_an_epro_on_a_phone(live_app: Any, browser: Any) -> None:
    """The personal link on a 390 x 844 phone: clean URL, live branching, completion."""
    _, base, data = live_app
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(base + data["epro_path"])
        page.wait_for_url(base + "/epro/form")
        assert data["epro_path"].rsplit("/", 1)[1] not in page.url
        assert not page.locator("#f-app_problem_text").is_visible()
        page.check("input[name=app_problem][value='1']")
        page.locator("#f-app_problem_text").wait_for(state="visible")
        page.fill("#f-app_problem_text", "The app froze once")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "participant-01-epro-phone.png"), full_page=True)
        click_and_load(page, "button[value=submit]")
        page.wait_for_selector("text=Thank you")
        page.screenshot(path=str(SCREENSHOTS / "participant-02-epro-done.png"), full_page=True)
        for term in ARM_TERMS:
            assert term not in page.content()
        # the link is spent: opening it again is refused
        page.goto(base + data["epro_path"])
        assert "Thank you" not in page.content()
    finally:
        context.close()


@LANGS
def test_statistician_runs_the_sap_and_downloads_the_pdf(
    live_app: Any, browser: Any, lang: str
) -> None:
    _, base, _ = live_app
    s = Session(browser, base, "statistician", lang)
    try:
        s.sign_in("stat")
        s.goto("/trials/MCI-COGTRAIN-01/analyses")
        s.shot("analyses")
        click_and_load(s.page, f"button:has-text('{s.t('run_sap')}')")
        s.page.wait_for_selector(f"strong:has-text('{s.t('st_succeeded')}')")
        # the endpoint is named in the page's language (the protocol's label)
        s.page.get_by_text(PROTOCOL.endpoints[0].name.get(lang)).first.wait_for()
        s.shot("run")
        with s.page.expect_download() as download:
            s.page.click(f"text={s.t('report')} (PDF)")
        path = download.value.path()
        assert path is not None and Path(path).read_bytes().startswith(b"%PDF-1.4")
    finally:
        s.close()


def test_participant_completes_an_epro_in_chinese(live_app: Any, browser: Any) -> None:
    _, base, data = live_app
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(base + data["epro_path_zh"])
        page.wait_for_url(base + "/epro/form")
        assert "应用使用体验" in page.content() and "上次访视以来是否遇到技术问题" in page.content()
        page.check("input[name=app_problem][value='0']")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "participant-03-epro-zh.png"), full_page=True)
        click_and_load(page, "button[value=submit]")
        page.wait_for_selector("text=谢谢")
    finally:
        context.close()


@pytest.mark.parametrize(("lang", "per_site"), [("en", 90), ("zh", 100)])
def test_sponsor_validates_and_uploads_an_amendment(
    live_app: Any, browser: Any, lang: str, per_site: int
) -> None:
    """The sponsor pastes an amended protocol: line-numbered errors first, then a new version."""
    _, base, _ = live_app
    original = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    # the pasted protocol names the arms: it is the design, not an allocation
    s = Session(browser, base, "sponsor-amendment", lang, blinded=False)
    try:
        s.sign_in("sponsor")
        s.goto("/trials/MCI-COGTRAIN-01?tab=setup")
        s.page.fill(
            "#protocol_text", original.replace("block_sizes: [4, 6]", "block_sizes: [3, 6]")
        )
        click_and_load(s.page, "button[value=validate]")
        assert "block size 3 is not a multiple of ratio sum 2" in s.page.content()
        assert re.search(r"protocol\.yaml:\d+:\d+: randomization\.block_sizes", s.page.content())
        s.shot("protocol-errors")
        s.page.fill(
            "#protocol_text",
            original.replace("caps: {per_site: 80}", f"caps: {{per_site: {per_site}}}"),
        )
        click_and_load(s.page, "button[value=upload]")
        stored = re.escape(s.t("protocol_uploaded", n="#")).replace("\\#", r"\d+")
        s.page.get_by_text(re.compile(stored)).wait_for()
        s.shot("protocol-uploaded")
    finally:
        s.close()


def test_representative_signs_a_remote_consent_on_a_phone(live_app: Any, browser: Any) -> None:
    """Remote eConsent on a 390 x 844 phone, in Chinese: read the document, ask for a code
    (sent through the outbox), type the name, sign; the investigator then countersigns."""
    from sqlalchemy import select

    from dtx_trials.models import Consent, Notification, User
    from tests.helpers import Account, login

    app, base, _ = live_app
    with app.app_context():
        client = app.test_client()
        user = db.session.scalars(select(User).where(User.username == "inv")).one()
        inv = login(client, Account(user, PASSWORD))
        staff = {"inv": inv}
        subject = api(client, staff["inv"], "POST", "/participants",
                      {"site": "BJ01", "identifiers": {"phone": "13900003333"}},
                      201)["subject_code"]
        link = api(client, staff["inv"], "POST", f"/participants/{subject}/econsent",
                   {"document_id": "partner_icf", "version": "1.0", "language": "zh-CN",
                    "channel": "sms", "address": "13700007777"}, 201)
        db.session.remove()
    path = urlsplit(str(link["url"])).path
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="zh-CN")
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        page.goto(base + path)
        page.wait_for_selector("text=研究伙伴知情同意书")
        assert "法定代理人" in page.content()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "econsent-01-document.png"), full_page=True)
        click_and_load(page, "#send-code")
        page.wait_for_selector("#code-sent")
        assert "137****7777" in page.locator("#code-sent").inner_text()
        with app.app_context():
            sms = db.session.scalars(
                select(Notification).where(Notification.kind == "econsent.code")
            ).all()[-1]
            code = re.search(r"(\d{6})", sms.body).group(1)  # type: ignore[union-attr]
            db.session.remove()
        page.fill("#typed_name", "韩梅梅")
        page.fill("#code", code)
        page.screenshot(path=str(SCREENSHOTS / "econsent-02-sign.png"), full_page=True)
        click_and_load(page, "#sign")
        page.wait_for_selector("text=谢谢")
        page.screenshot(path=str(SCREENSHOTS / "econsent-03-done.png"), full_page=True)
        page.goto(base + path)
        assert "已无法使用" in page.content()  # single use
    finally:
        context.close()
    with app.app_context():
        consent = db.session.scalars(select(Consent).where(Consent.method == "remote")).one()
        assert consent.signer_name == "韩梅梅" and consent.pdf_sha256
        client = app.test_client()
        api(client, inv, "POST",
            f"/participants/{subject}/consents/{consent.id}/countersign",
            {"password": PASSWORD}, 200)
        db.session.remove()


@ALL_LANGS
def test_sponsor_builds_a_trial_in_the_browser_and_a_site_enters_its_form(
    live_app: Any, browser: Any, lang: str
) -> None:
    """Issue #22: a sponsor admin creates a trial, builds its protocol in the form builder
    (a form with a range, choices, branching and a calculation previewed live on the form
    engine; a visit), saves and activates it, adds a site and grants an investigator there;
    the investigator screens, consents, enrols a participant and enters the new form."""
    from playwright.sync_api import expect

    _, base, _ = live_app
    code = f"SLEEP-{lang.upper().replace('-', '')}"
    s = Session(browser, base, "builder", lang, blinded=False)
    page = s.page
    try:
        s.sign_in("sponsor")
        click_and_load(page, "#new-trial")
        page.fill("#nt-code", code)
        page.fill("#nt-title", "Digital CBT-I for insomnia")
        click_and_load(page, "main button[type=submit]")
        page.wait_for_url(f"{base}/trials/{code}/builder")
        assert int(page.locator("#b-errors").get_attribute("data-errors") or "0") > 0
        s.shot("builder-new")
        page.fill("#b-t-area", "insomnia")
        page.fill("#b-t-title-zh", "失眠数字认知行为治疗")
        page.fill("#b-t-languages", "zh-Hans, zh-Hant")
        click_and_load(page, "#b-put-trial")
        # the declared Traditional Chinese has its own inputs now
        page.fill("#b-t-title-zh-Hant", "失眠數位認知行為治療")
        click_and_load(page, "#b-put-trial")
        page.fill("#b-form-id", "sleep_diary")
        page.fill("#b-form-title-en", "Sleep diary")
        page.fill("#b-form-title-zh", "睡眠日记")
        page.fill("#b-form-title-zh-Hant", "睡眠日記")
        click_and_load(page, "#b-put-form")

        def add_field(field_id: str, field_type: str, label: str, **extra: str) -> None:
            page.select_option("#b-f-form", "sleep_diary")
            page.fill("#b-f-id", field_id)
            page.select_option("#b-f-type", field_type)
            page.fill("#b-f-label-en", label)
            for selector, value in extra.items():
                page.fill(f"#b-f-{selector}", value)

        add_field("hours_slept", "decimal", "Hours slept", min="0", max="24", dec="1")
        page.check("#b-f-req")
        click_and_load(page, "#b-put-field")
        add_field("napped", "single_choice", "Napped today?", choices="1 = Yes | 是\n2 = No | 否")
        click_and_load(page, "#b-put-field")
        add_field("nap_minutes", "integer", "Nap length (minutes)")
        page.fill("#b-sample", '{"napped": "1", "hours_slept": 7.5}')
        page.fill("#b-f-show", "[napped] = '1'")
        expect(page.locator("#b-f-show-out")).to_have_text("→ true")
        page.check("#b-f-miss-unknown")
        click_and_load(page, "#b-put-field")
        add_field("minutes_slept", "calculated", "Minutes slept")
        page.fill("#b-sample", '{"hours_slept": 7.5}')
        page.fill("#b-f-calc", "[hours_slept] * ")
        expect(page.locator("#b-f-calc-out")).to_have_attribute("data-ok", "0")
        page.fill("#b-f-calc", "[hours_slept] * 60")
        expect(page.locator("#b-f-calc-out")).to_have_text("→ 450")
        s.shot("builder-preview")
        click_and_load(page, "#b-put-field")
        page.fill("#b-v-id", "baseline")
        page.fill("#b-v-label-en", "Baseline")
        page.fill("#b-v-label-zh", "基线")
        page.fill("#b-v-day", "0")
        page.fill("#b-v-forms", "sleep_diary")
        page.select_option("#b-v-anchor", "screening")
        click_and_load(page, "#b-put-visit")
        if lang == "en":  # the other sections, once (their labels: the catalog tests)

            selects = {"kind", "severity", "signer", "cadence", "role", "model", "analysis-set"}

            def put(section: str, **inputs: str) -> None:
                for name, value in inputs.items():
                    if name in selects:
                        page.select_option(f"#b-{section}-{name}", value)
                    else:
                        page.fill(f"#b-{section}-{name}", value)
                click_and_load(page, f"#b-put-{section}")
                errors = page.locator("p.error")
                assert not errors.count(), errors.all_inner_texts()

            page.fill("#b-sample", '{"hours_slept": 7.5}')
            page.fill("#b-eligibility-expression", "[hours_slept] < 6")
            expect(page.locator("#b-eligibility-expression-out")).to_have_text("→ false")
            put("eligibility", id="inc_short_sleep", kind="inclusion",
                **{"text-en": "Sleeps less than 6 hours"})
            put("checks", form="sleep_diary", id="nap_sane", condition="[nap_minutes] <= 180",
                severity="warning", **{"message-en": "A nap over 3 hours?"})
            put("consents", id="main_icf", language="en", version="1.0", signer="participant",
                **{"title-en": "Participant consent"})
            put("streams", id="sleep_tracker", kind="sleep", unit="min", cadence="daily",
                **{"label-en": "Minutes asleep (tracker)"})
            put("factors", id="sleep_band", field="hours_slept",
                levels="short | [hours_slept] < 5 | en: Under 5 h\nlonger | * | en: 5 h or more",
                **{"label-en": "Sleep band"})
            put("endpoints", id="hours_w0", role="primary", model="ancova",
                **{"name-en": "Hours slept at baseline", "population-en": "All randomized",
                   "analysis-set": "fas", "variable-en": "Hours slept", "summary-en": "Mean",
                   "outcome-fields": "hours_slept", "visits": "baseline"})
            # Edit fills the criterion's inputs from the YAML; Remove takes it out again (the
            # site below screens with no sleep data yet)
            click_and_load(page, "button[value='edit:eligibility:inc_short_sleep']")
            assert page.locator("#b-eligibility-expression").input_value() == "[hours_slept] < 6"
            click_and_load(page, "button[value='remove:eligibility:inc_short_sleep']")
            assert "inc_short_sleep" not in page.locator("#b-yaml").input_value()
            page.fill("#b-sim-n", "40")
            page.fill("#b-sim-runs", "5")
            click_and_load(page, "#b-simulate")
            expect(page.locator("#b-sim-table")).to_contain_text("correct guesses")
            s.shot("builder-sections")
        assert page.locator("#b-errors").get_attribute("data-errors") == "0", page.locator(
            "ul.issues"
        ).all_inner_texts()
        assert page.locator("#b-errors").inner_text() == s.t("b_valid")
        s.shot("builder-valid")
        click_and_load(page, "#b-save")
        assert page.locator("#b-saved").inner_text() == s.t("protocol_uploaded", n=1)
        click_and_load(page, "#b-activate")
        click_and_load(page, f"text={s.t('tab_setup')}")
        page.fill("#site-code", "SL01")
        page.fill("#site-name", "Sleep clinic")
        click_and_load(page, f"button:has-text('{s.t('add_site')}')")
        click_and_load(page, f"text={s.t('tab_accounts')}")
        page.fill("#grant-user", "inv")
        page.select_option("#grant-role", "investigator")
        page.select_option("#grant-site", "SL01")
        click_and_load(page, f"button:has-text('{s.t('grant_role')}')")
        if lang == "en":
            page.fill("#invite-email", "night.nurse@example.org")
            page.fill("#invite-printed", "Night Nurse")
            page.fill("#invite-username", "nightnurse")
            page.select_option("#invite-role", "coordinator")
            page.select_option("#invite-site", "SL01")
            click_and_load(page, "#invite-send")
            expect(page.locator("p.notice")).to_have_text(s.t("invited"))
    finally:
        s.close()
    inv = Session(browser, base, "builder-site", lang)
    page = inv.page
    try:
        inv.sign_in("inv")
        inv.goto(f"/trials/{code}/participants")
        page.select_option("#screen-site", "SL01")
        click_and_load(page, "form[method=post][action$='/participants'] button[type=submit]")
        page.wait_for_selector("#participant-status")
        subject = page.locator("h1").inner_text().split()[-1]
        click_and_load(page, f"text={inv.t('record_consent')}")
        assert page.locator("#participant-status").inner_text() == inv.t("st_consented")
        click_and_load(page, f"text={inv.t('check_eligibility')}")
        click_and_load(page, f"button:has-text('{inv.t('enroll')}')")
        assert page.locator("#participant-status").inner_text() == inv.t("st_enrolled")
        title = {"en": "Sleep diary", "zh": "睡眠日记", "zh-Hant": "睡眠日記"}[lang]
        click_and_load(page, f"text={title}")
        follow_up = page.locator("#wrap-nap_minutes")
        assert follow_up.is_hidden()
        page.fill("#hours_slept", "7.5")
        page.check("#napped-1")
        follow_up.wait_for(state="visible")
        page.fill("#nap_minutes", "20")
        click_and_load(page, "button[value=submit]")
        page.wait_for_selector(f"text={inv.t('saved')}")
        assert page.locator("#minutes_slept").input_value() == "450"
        assert page.locator("#record-status").inner_text() == inv.t("st_submitted")
        inv.shot("built-form-entered")
        inv.goto(f"/trials/{code}/records")
        row = page.locator("tr", has_text=subject)
        assert row.locator("td.cell").first.get_attribute("data-status") == "submitted"
        inv.shot("built-trial-grid")
    finally:
        inv.close()
