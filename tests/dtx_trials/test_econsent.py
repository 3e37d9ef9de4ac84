"""Remote eConsent: a single-use, expiring personal link; the signer reads the document,
answers the comprehension questions, signs with typed name and a one-time code sent through the
outbox (a real SMTP server); the investigator countersigns; the PDF is stored and hashed."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.channels import SmtpChannel
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, Consent, ConsentInvitation, Notification, Trial
from dtx_trials.services import notifications, protocols
from tests.dtx_trials.trial_flow import LIBRARY, MCI_CODE, TrialStaff, api, trial_staff
from tests.helpers import CLI, PASSWORD
from tests.mail_server import LocalSmtpServer

QUESTIONS = '''    body:
      en: "You will use a training app for 24 weeks.\\nYou may stop at any time."
      zh: "您将使用训练应用24周。\\n您可以随时退出。"
    comprehension:
      - id: can_stop
        text: {en: "Can you stop taking part at any time?", zh: "您可以随时退出研究吗？"}
        choices:
          - {code: "yes", label: {en: "Yes", zh: 可以}}
          - {code: "no", label: {en: "No", zh: 不可以}}
        answer: "yes"
'''


def load_with_questions(client: FlaskClient, tmp_path: Path) -> TrialStaff:
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    old = ('  - {id: partner_icf, version: "1.0", language: zh-CN, '
           'signer: legally_authorized_representative, title: {en: Study partner consent, '
           'zh: 研究伙伴知情同意书}}\n')
    assert old in text
    new = ('  - id: partner_icf\n    version: "1.0"\n    language: zh-CN\n'
           '    signer: legally_authorized_representative\n'
           '    title: {en: Study partner consent, zh: 研究伙伴知情同意书}\n' + QUESTIONS)
    path = tmp_path / "mci.yaml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    return trial_staff(client, trial)


def page_csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def invite(client: FlaskClient, inv: object, **invitation: str) -> dict[str, Any]:
    """A new participant at BJ01 and a consent invitation for them: the invitation as answered
    (201), with the participant's ``subject`` code."""
    subject = api(client, inv, "POST", "/participants",
                  {"site": "BJ01", "identifiers": {"phone": "13900001111"}}, 201)["subject_code"]
    issued = api(client, inv, "POST", f"/participants/{subject}/econsent",
                 {"version": "1.0", **invitation}, 201)
    return {**issued, "subject": subject}


def link_of(issued: dict[str, Any]) -> str:
    return str(issued["url"]).replace("http://localhost", "")


def sent_code() -> str:
    """The one-time code of the (only) code message in the outbox."""
    sms = db.session.scalars(select(Notification).where(Notification.kind == "econsent.code")).one()
    return re.search(r"(\d{6})", sms.body).group(1)  # type: ignore[union-attr]


def test_remote_consent_signed_on_a_link_and_countersigned(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_with_questions(client, tmp_path)
    inv = staff["inv"]
    subject = api(client, inv, "POST", "/participants",
                  {"site": "BJ01", "identifiers": {"phone": "13900001111"}}, 201)["subject_code"]
    base = f"/participants/{subject}"
    api(client, inv, "POST", f"{base}/consents",
        {"document_id": "main_icf", "version": "1.0", "language": "zh-CN"}, 201)
    # the representative must be reachable: no address, no link
    invite = {"document_id": "partner_icf", "version": "1.0", "language": "zh-CN",
              "channel": "email"}
    body = api(client, inv, "POST", f"{base}/econsent", invite, 422)
    assert "address" in body["errors"]
    issued = api(client, inv, "POST", f"{base}/econsent",
                 {**invite, "address": "partner@example.org"}, 201)
    assert issued["signer_role"] == "legally_authorized_representative"
    assert issued["delivered_to"] == "p***@example.org"
    url = link_of(issued)
    token = url.rsplit("/", 1)[1]
    stored = db.session.scalars(select(ConsentInvitation)).one()
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(db.session.execute(select(AuditEvent.changes)).all())

    with LocalSmtpServer() as smtp:
        channels = {"email": SmtpChannel(host="127.0.0.1", port=smtp.port,
                                         sender="trials@example.org")}
        notifications.deliver_pending(db.session, channels)
        (to, link_mail), = smtp.wait_for(1)
        assert to == ["partner@example.org"] and token in link_mail.get_content()

        signer = app.test_client()
        page = signer.get(url)
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert "研究伙伴知情同意书" in html and "您可以随时退出。" in html and "法定代理人" in html
        csrf = page_csrf(html)
        assert signer.post(f"{url}/code", data={}).status_code == 400  # no CSRF value
        sent = signer.post(f"{url}/code", data={"csrf_token": csrf})
        assert sent.status_code == 303
        notifications.deliver_pending(db.session, channels)
        mails = smtp.wait_for(2)
        code = re.search(r"(\d{6})", mails[1][1].get_content()).group(1)  # type: ignore[union-attr]

    sign = {"csrf_token": csrf, "typed_name": "Han Meimei", "code": code, "q_can_stop": "no"}
    wrong = signer.post(f"{url}/sign", data=sign)
    assert wrong.status_code == 422 and "not the right answer" in wrong.get_data(as_text=True)
    bad_code = signer.post(f"{url}/sign", data={**sign, "q_can_stop": "yes", "code": "000000"
                                                if code != "000000" else "111111"})
    assert bad_code.status_code == 403
    done = signer.post(f"{url}/sign", data={**sign, "q_can_stop": "yes"})
    assert done.status_code == 303, done.get_data(as_text=True)
    assert signer.get(url).status_code == 410  # single use
    consent = db.session.scalars(select(Consent).where(Consent.method == "remote")).one()
    assert consent.signer_name == "Han Meimei" and consent.pdf is not None
    # not counted until an investigator countersigns
    assert api(client, inv, "GET", base)["missing_consents"] == ["partner_icf v1.0"]
    countersign = f"{base}/consents/{consent.id}/countersign"
    api(client, staff["coord"], "POST", countersign, {"password": PASSWORD}, 403)
    api(client, inv, "POST", countersign, {"password": "wrong password!"}, 403)
    signed = api(client, inv, "POST", countersign, {"password": PASSWORD}, 200)
    assert signed["countersigned_at"] and signed["method"] == "remote"
    shown = api(client, inv, "GET", base)
    assert shown["missing_consents"] == [] and shown["status"] == "consented"
    api(client, inv, "POST", countersign, {"password": PASSWORD}, 409)
    # the PDF and its hash, in the trail
    response = client.get(f"/api/v1/trials/{MCI_CODE}{base}/consents/{consent.id}/consent.pdf",
                          headers=inv.headers)
    assert response.status_code == 200 and response.data.startswith(b"%PDF")
    digest = hashlib.sha256(response.data).hexdigest()
    assert response.headers["X-Content-SHA256"] == digest == consent.pdf_sha256
    created = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "consent.sign_remote")).one()
    assert digest in str(created.changes)
    monitor = client.get(f"/api/v1/trials/{MCI_CODE}{base}/consents/{consent.id}/consent.pdf",
                         headers=staff["monitor"].headers)
    assert monitor.status_code == 403
    kinds = sorted(db.session.scalars(select(Notification.kind)))
    assert kinds.count("econsent.countersign") >= 1 and "econsent.code" in kinds


def test_three_wrong_codes_revoke_the_link_and_expired_links_are_gone(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_with_questions(client, tmp_path)
    inv = staff["inv"]
    issued = invite(client, inv, document_id="main_icf", language="en",
                    channel="sms")
    assert issued["delivered_to"] == "139****1111"
    url = link_of(issued)
    signer = app.test_client()
    csrf = page_csrf(signer.get(url).get_data(as_text=True))
    assert signer.post(f"{url}/code", data={"csrf_token": csrf}).status_code == 303
    sms = db.session.scalars(select(Notification).where(Notification.kind == "econsent.code")).one()
    assert sms.channel == "sms" and sms.address == "13900001111"
    sign = {"csrf_token": csrf, "typed_name": "Li Lei"}
    code = re.search(r"(\d{6})", sms.body).group(1)  # type: ignore[union-attr]
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(2):
        assert signer.post(f"{url}/sign", data={**sign, "code": wrong}).status_code == 403
    # the third wrong code revokes the link: the page says it can no longer be used
    assert signer.post(f"{url}/sign", data={**sign, "code": wrong}).status_code == 410
    assert signer.post(f"{url}/sign", data={**sign, "code": code}).status_code == 410
    assert db.session.scalars(select(Consent)).all() == []
    assert signer.get("/econsent/not-a-token").status_code == 404


def test_a_link_sent_before_the_participant_left_signs_nothing(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    """A participant withdrawn after an invitation was sent: the link is gone (410) for
    opening, for a code and for signing, and no consent is created after the withdrawal
    (before, the link still signed and asked the investigator to countersign)."""
    staff = load_with_questions(client, tmp_path)
    inv = staff["inv"]
    issued = invite(client, inv, document_id="main_icf", language="en",
                    channel="sms")
    url = link_of(issued)
    signer = app.test_client()
    csrf = page_csrf(signer.get(url).get_data(as_text=True))
    assert signer.post(f"{url}/code", data={"csrf_token": csrf}).status_code == 303
    code = sent_code()
    withdrawal = f"/participants/{issued['subject']}/withdrawal"
    api(client, inv, "POST", withdrawal, {"reason": "moved"}, 200)
    sign = {"csrf_token": csrf, "typed_name": "Li Lei", "code": code}
    assert signer.post(f"{url}/sign", data=sign).status_code == 410
    assert signer.post(f"{url}/code", data={"csrf_token": csrf}).status_code == 410
    assert signer.get(url).status_code == 410
    assert db.session.scalars(select(Consent)).all() == []
    assert "econsent.countersign" not in set(db.session.scalars(select(Notification.kind)))


def test_a_participants_link_goes_only_to_the_participants_address_on_record(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    """A coordinator cannot send a participant's signing link (and its one-time code) to
    another address, say their own, and sign for the participant (before: any address was
    taken). A new phone is recorded on the participant first, with a reason, audited sealed."""
    staff = load_with_questions(client, tmp_path)
    coord = staff["coord"]
    subject = api(client, coord, "POST", "/participants",
                  {"site": "BJ01", "identifiers": {"phone": "13900001111"}}, 201)["subject_code"]
    base = f"/participants/{subject}"
    invitation = {"document_id": "main_icf", "version": "1.0", "language": "en",
                  "channel": "sms"}
    body = api(client, coord, "POST", f"{base}/econsent",
               {**invitation, "address": "13722223333"}, 422)
    assert "address" in body["errors"]
    assert db.session.scalars(select(ConsentInvitation)).all() == []
    assert db.session.scalars(select(Notification)).all() == []
    # the number on record, named or not, is taken
    named = api(client, coord, "POST", f"{base}/econsent",
                {**invitation, "address": "13900001111"}, 201)
    assert named["delivered_to"] == "139****1111"
    # the participant's new phone: recorded first (a reason is required; a monitor may not)
    change = {"phone": "13722223333", "reason": "participant changed phone"}
    api(client, staff["monitor"], "PATCH", f"{base}/identifiers", change, 403)
    body = api(client, coord, "PATCH", f"{base}/identifiers", {"phone": "13722223333"}, 422)
    assert "reason" in body["errors"]["json"]
    changed = api(client, coord, "PATCH", f"{base}/identifiers", change, 200)
    assert changed["subject_code"] == subject and "phone" not in changed
    event = db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "participant.identifiers_changed")).one()
    assert event.reason == "participant changed phone"
    assert [c["field"] for c in event.changes] == ["phone"]
    assert "13722223333" not in str(event.changes) and "13900001111" not in str(event.changes)
    revealed = api(client, coord, "GET", f"{base}/identifiers", None, 200)
    assert (revealed["phone"], revealed["full_name"]) == ("13722223333", None)
    moved = api(client, coord, "POST", f"{base}/econsent", invitation, 201)
    assert moved["delivered_to"] == "137****3333"
    sent = db.session.scalars(select(Notification).order_by(Notification.id.desc())).first()
    assert sent is not None and (sent.entity_id, sent.address) == (moved["id"], "13722223333")
    # a representative's link likewise: the first address given is recorded on the participant
    # (audited), another one is refused
    partner = {"document_id": "partner_icf", "version": "1.0", "language": "zh-CN",
               "channel": "email"}
    api(client, coord, "POST", f"{base}/econsent", {**partner, "address": "wang@example.org"},
        201)
    body = api(client, coord, "POST", f"{base}/econsent",
               {**partner, "address": "coord@example.org"}, 422)
    assert "address" in body["errors"]
    revealed = api(client, coord, "GET", f"{base}/identifiers", None, 200)
    assert revealed["representative_email"] == "wang@example.org"
    assert api(client, coord, "POST", f"{base}/econsent", partner, 201)["delivered_to"] == (
        "w***@example.org")


def test_the_signed_pdf_holds_the_text_in_the_language_the_signer_read(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    """The zh-CN partner consent read on an English page (?lang=en): the signed PDF holds the
    English text the page showed, says it was read in English and keeps the document's
    identity (zh-CN); before, it held the Chinese text the signer never saw."""
    import io

    from pypdf import PdfReader

    staff = load_with_questions(client, tmp_path)
    inv = staff["inv"]
    issued = invite(client, inv, document_id="partner_icf", language="zh-CN",
                    channel="sms", address="13900002222")
    url = link_of(issued)
    signer = app.test_client()
    page = signer.get(f"{url}?lang=en").get_data(as_text=True)
    assert "You may stop at any time." in page and "您可以随时退出。" not in page
    csrf = page_csrf(page)
    assert signer.post(f"{url}/code?lang=en", data={"csrf_token": csrf}).status_code == 303
    code = sent_code()
    done = signer.post(f"{url}/sign?lang=en", data={
        "csrf_token": csrf, "typed_name": "Han Meimei", "code": code, "q_can_stop": "yes"})
    assert done.status_code == 303, done.get_data(as_text=True)
    consent = db.session.scalars(select(Consent)).one()
    assert consent.language == "zh-CN" and consent.pdf is not None
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(consent.pdf)).pages)
    assert "Study partner consent" in text and "You may stop at any time." in text
    assert "您可以随时退出" not in text
    assert "(zh-CN)" in text and "Read and signed in: en" in text


def test_a_consent_document_in_a_declared_language_is_read_in_it(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    """Issue #22: a protocol declaring Japanese ships a Japanese consent; its remote eConsent
    page shows the Japanese text (marked lang="ja") inside the English page."""
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    text = text.replace('\nversion: ', '\nlanguages: [zh-Hans, ja]\nversion: ', 1)
    old = ('  - {id: partner_icf, version: "1.0", language: zh-CN, '
           'signer: legally_authorized_representative, title: {en: Study partner consent, '
           'zh: 研究伙伴知情同意书}}\n')
    assert old in text
    japanese = (
        '  - id: partner_icf\n    version: "1.0"\n    language: ja\n'
        '    signer: legally_authorized_representative\n'
        '    title: {en: Study partner consent, ja: 研究パートナーの同意書}\n'
        '    body: {en: "You may stop at any time.", ja: "いつでも参加をやめることができます。"}\n'
    )
    path = tmp_path / "mci.yaml"
    path.write_text(text.replace(old, old + japanese), encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    trial = db.session.scalars(select(Trial).where(Trial.code == MCI_CODE)).one()
    staff = trial_staff(client, trial)
    inv = staff["inv"]
    issued = invite(client, inv, document_id="partner_icf", language="ja",
                    channel="email", address="partner@example.org")
    page = app.test_client().get(link_of(issued))
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<h1 lang="ja">研究パートナーの同意書</h1>' in html
    assert 'lang="ja"' in html and "いつでも参加をやめることができます。" in html
    assert "You may stop at any time." not in html


def test_signing_page_in_traditional_chinese_marks_texts_it_lacks(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    """Issue #22: the signing page's own labels come from the gettext catalogs in en, zh-Hans
    and zh-Hant, chosen by ?lang= or the browser (zh-TW, zh-HK: Traditional); a document text
    without a Traditional version shows in Simplified Chinese, marked visibly and by lang."""
    staff = load_with_questions(client, tmp_path)
    inv = staff["inv"]
    issued = invite(client, inv, document_id="partner_icf", language="zh-CN",
                    channel="email", address="partner@example.org")
    url = link_of(issued)
    signer = app.test_client()
    by_query = signer.get(f"{url}?lang=zh-Hant").get_data(as_text=True)
    by_browser = signer.get(url, headers={"Accept-Language": "zh-TW,zh;q=0.8"}).get_data(
        as_text=True)
    for html in (by_query, by_browser):
        assert '<html lang="zh-Hant">' in html
        for label in ("簽署前請確認您已理解", "我同意並簽署", "法定代理人", "發送簽署驗證碼"):
            assert label in html, label
        assert '<h1 lang="zh-Hans">研究伙伴知情同意书</h1>' in html  # the Simplified text
        assert html.count("(未翻譯成您的語言)") == 5  # title, body, question, two choices
        assert '<article class="econsent-body" id="consent-body" lang="zh-Hans">' in html
    english = signer.get(f"{url}?lang=en").get_data(as_text=True)
    assert '<html lang="en">' in english and "I agree and sign" in english
    assert "Study partner consent" in english and "not translated" not in english
    simplified = signer.get(url).get_data(as_text=True)  # no browser language: the document's
    assert '<html lang="zh-Hans">' in simplified and "我同意并签署" in simplified
    assert "未翻译" not in simplified
    gone = signer.get("/econsent/not-a-token", headers={"Accept-Language": "zh-HK"})
    assert gone.status_code == 404 and "此連結無效" in gone.get_data(as_text=True)
