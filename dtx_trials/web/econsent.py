"""The signer's remote eConsent pages (phone-first, en/zh): read the document, answer the
comprehension questions, ask for a one-time code, type the name and sign.

The link's token is the capability: pages post back to it, with a CSRF value derived from it
(`csrf_for`), since the signer has no session."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from dtx_trials.crypto import cipher
from dtx_trials.extensions import db
from dtx_trials.services import econsent as service
from dtx_trials.services.epro import LinkGoneError, LinkNotFoundError, OtpRejectedError
from dtx_trials.services.errors import Conflict, ValidationError

bp = Blueprint("econsent", __name__, template_folder="templates")

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Consent",
        "language": "中文",
        "version": "Version",
        "questions": "Before you sign: check your understanding",
        "send_code": "Send me a signing code",
        "code_sent": "A 6-digit code was sent to {to}.",
        "sign_title": "Sign",
        "signer": "You sign as: {role}",
        "typed_name": "Type your full name",
        "code_label": "6-digit code",
        "sign": "I agree and sign",
        "code_wrong": "That code is not correct. Attempts left: {n}.",
        "fix": "Please check the answers marked below.",
        "done_title": "Thank you",
        "done_text": "Your signed consent was sent to the study team. You can close this page.",
        "gone_title": "This link can no longer be used",
        "gone_text": "It has expired, was withdrawn or was already used. "
        "Please contact your study team.",
        "invalid_title": "This link is not valid",
        "invalid_text": "Please check the link you received, or contact your study team.",
        "participant": "participant",
        "guardian": "parent or guardian",
        "legally_authorized_representative": "legally authorised representative",
    },
    "zh": {
        "title": "知情同意",
        "language": "English",
        "version": "版本",
        "questions": "签署前请确认您已理解",
        "send_code": "发送签署验证码",
        "code_sent": "6位验证码已发送至 {to}。",
        "sign_title": "签署",
        "signer": "您的签署身份：{role}",
        "typed_name": "请输入您的全名",
        "code_label": "6位验证码",
        "sign": "我同意并签署",
        "code_wrong": "验证码不正确。剩余尝试次数：{n}。",
        "fix": "请检查下面标出的回答。",
        "done_title": "谢谢",
        "done_text": "您签署的知情同意书已发送给研究团队，可以关闭此页面。",
        "gone_title": "此链接已无法使用",
        "gone_text": "链接已过期、已被撤回或已被使用。请联系研究团队。",
        "invalid_title": "此链接无效",
        "invalid_text": "请核对您收到的链接，或联系研究团队。",
        "participant": "受试者本人",
        "guardian": "父母或监护人",
        "legally_authorized_representative": "法定代理人",
    },
}


def csrf_for(token: str) -> str:
    """The CSRF value of a signer's page: derived from the link token it posts back to."""
    return cipher().mac_hex(token[:200], "econsent.csrf")[:32]


def _lang(document_language: str | None = None) -> str:
    asked = request.args.get("lang", "")
    if asked in TEXT:
        return asked
    if document_language:
        return "zh" if document_language.startswith("zh") else "en"
    return request.accept_languages.best_match(["en", "zh"], default="en") or "en"


def _message(kind: str, status: int, lang: str) -> tuple[str, int]:
    text = TEXT[lang]
    return render_template(
        "epro/message.html", lang=lang, t=text, heading=text[f"{kind}_title"],
        body=text[f"{kind}_text"], other_lang="en" if lang == "zh" else "zh",
    ), status


def _page(token: str, status: int = 200, **extra: Any) -> tuple[str, int]:
    try:
        view = service.open_invitation(db.session, token)
    except LinkNotFoundError:
        return _message("invalid", 404, _lang())
    except LinkGoneError:
        return _message("gone", 410, _lang())
    lang = _lang(view.document.language)
    # the page's own words are English or Chinese; a document in another language (ja, ko, ...)
    # is read in its own language, the one it was approved in
    document_language = view.document.language
    text_lang = lang if document_language.split("-")[0] in ("en", "zh") else document_language
    return render_template(
        "econsent/sign.html",
        lang=lang,
        text_lang=text_lang,
        t=TEXT[lang],
        other_lang="en" if lang == "zh" else "zh",
        view=view,
        document=view.document,
        token=token,
        csrf_token=csrf_for(token),
        sent_to=request.args.get("sent"),
        answers=request.form if request.method == "POST" else {},
        **extra,
    ), status


@bp.get("/econsent/<token>")
def page(token: str) -> tuple[str, int]:
    """The consent document, its questions and the signing form."""
    return _page(token)


@bp.post("/econsent/<token>/code")
def code(token: str) -> Response | tuple[str, int]:
    """Send a one-time signing code through the outbox (SMS or e-mail)."""
    try:
        sent_to = service.send_code(db.session, token)
    except LinkNotFoundError:
        return _message("invalid", 404, _lang())
    except LinkGoneError:
        return _message("gone", 410, _lang())
    except Conflict as exc:
        return _page(token, 409, banner=exc.message)
    args = {"sent": sent_to, **({"lang": request.args["lang"]} if "lang" in request.args else {})}
    return redirect(url_for("econsent.page", token=token, **args), code=303)


@bp.post("/econsent/<token>/sign")
def sign(token: str) -> Response | tuple[str, int]:
    """Sign: answers, typed name and the one-time code."""
    answers = {
        key[len("q_"):]: value for key, value in request.form.items() if key.startswith("q_")
    }
    try:
        service.sign_invitation(
            db.session, token, typed_name=request.form.get("typed_name", ""),
            code=request.form.get("code", "")[:20], answers=answers,
        )
    except LinkNotFoundError:
        return _message("invalid", 404, _lang())
    except LinkGoneError:
        return _message("gone", 410, _lang())
    except ValidationError as exc:
        return _page(token, 422, errors=exc.errors)
    except OtpRejectedError as exc:
        return _page(token, 403, attempts_left=int(exc.extra.get("attempts_left", 0)))
    except Conflict as exc:
        return _page(token, 409, banner=exc.message)
    return redirect(url_for("econsent.done", lang=request.args.get("lang") or None), code=303)


@bp.get("/econsent-done")
def done() -> tuple[str, int]:
    """Confirm the signature (shows no data)."""
    return _message("done", 200, _lang())
