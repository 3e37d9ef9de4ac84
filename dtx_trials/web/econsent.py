"""The signer's remote eConsent pages (phone-first, in English, Simplified or Traditional
Chinese, labels from the gettext catalogs): read the document, answer the comprehension
questions, ask for a one-time code, type the name and sign. A document text missing in the
page's language shows in the language it falls back to, marked as such (as on the ePRO pages).

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
from dtx_trials.web import i18n
from dtx_trials.web.epro import shown_in
from protocols.model import ConsentDocument

bp = Blueprint("econsent", __name__, template_folder="templates")


def texts(lang: str) -> dict[str, str]:
    """The signing pages' own labels in ``lang``, from the gettext catalogs."""
    translate = i18n.translate
    return {
        "title": translate("econsent_title", lang),
        "language": translate("epro_language", lang),
        "untranslated": translate("epro_untranslated", lang),
        "version": translate("econsent_version", lang),
        "questions": translate("econsent_questions", lang),
        "send_code": translate("econsent_send_code", lang),
        "code_sent": translate("econsent_code_sent", lang),
        "sign_title": translate("econsent_sign_title", lang),
        "signer": translate("econsent_signer", lang),
        "typed_name": translate("econsent_typed_name", lang),
        "code_label": translate("econsent_code_label", lang),
        "sign": translate("econsent_sign", lang),
        "code_wrong": translate("econsent_code_wrong", lang),
        "fix": translate("econsent_fix", lang),
        "done_title": translate("econsent_done_title", lang),
        "done_text": translate("econsent_done_text", lang),
        "gone_title": translate("econsent_gone_title", lang),
        "gone_text": translate("econsent_gone_text", lang),
        "invalid_title": translate("econsent_invalid_title", lang),
        "invalid_text": translate("econsent_invalid_text", lang),
        "participant": translate("econsent_participant", lang),
        "guardian": translate("econsent_guardian", lang),
        "legally_authorized_representative": translate(
            "econsent_legally_authorized_representative", lang
        ),
    }


def document_fallbacks(document: ConsentDocument, lang: str) -> dict[str, str]:
    """Which texts of a consent document show in another language than the page's (``title``,
    ``body``, a question's id, ``<question>:<choice code>``), each mapped to the language
    shown (the ePRO pages' rule, ``web.epro.shown_in``)."""
    found: dict[str, str | None] = {
        "title": shown_in(document.title, lang),
        "body": shown_in(document.body, lang),
    }
    for question in document.comprehension:
        found[question.id] = shown_in(question.text, lang)
        for choice in question.choices:
            found[f"{question.id}:{choice.code}"] = shown_in(choice.label, lang)
    return {key: shown for key, shown in found.items() if shown}


def csrf_for(token: str) -> str:
    """The CSRF value of a signer's page: derived from the link token it posts back to."""
    return cipher().mac_hex(token[:200], "econsent.csrf")[:32]


def _lang(document_language: str | None = None) -> str:
    """``?lang=`` (en, zh, zh-Hant), else the browser's language (zh-TW, zh-HK and zh-Hant read
    Traditional Chinese), else the document's own language, else English (as the ePRO pages)."""
    asked = request.args.get("lang", "")
    if asked in i18n.LANGUAGES:
        return asked
    wanted = [request.headers.get("Accept-Language"), document_language]
    return i18n.pick_language(None, ",".join(w for w in wanted if w))


def _chrome(lang: str) -> dict[str, Any]:
    """What every signing page shows around its content: labels, html lang, language links."""
    return {
        "lang": lang,
        "html_lang": i18n.HTML_LANG[lang],
        "t": texts(lang),
        "other_languages": [(code, i18n.LANGUAGE_NAMES[code], i18n.HTML_LANG[code])
                            for code in i18n.LANGUAGES if code != lang],
    }


def _message(kind: str, status: int, lang: str) -> tuple[str, int]:
    chrome = _chrome(lang)
    return render_template(
        "epro/message.html", heading=chrome["t"][f"{kind}_title"],
        body=chrome["t"][f"{kind}_text"], **chrome,
    ), status


def _text_language(document: ConsentDocument, lang: str) -> tuple[str, dict[str, str]]:
    """The language the document's text is shown in on a page in ``lang``, and the texts that
    fell back to another: a document in a language with no page catalog (ja, ko, ...) is read in
    its own language, the one it was approved in; one in English or Chinese follows the page's
    language, a text missing in it falls back (Label.get) and is marked as such."""
    if document.language.split("-")[0] in ("en", "zh"):
        return i18n.HTML_LANG[lang], document_fallbacks(document, lang)
    return document.language, {}


def _page(token: str, status: int = 200, **extra: Any) -> tuple[str, int]:
    try:
        view = service.open_invitation(db.session, token)
    except LinkNotFoundError:
        return _message("invalid", 404, _lang())
    except LinkGoneError:
        return _message("gone", 410, _lang())
    document = view.document
    lang = _lang(document.language)
    chrome = _chrome(lang)
    text_lang, fallbacks = _text_language(document, lang)
    return render_template(
        "econsent/sign.html",
        text_lang=text_lang,
        fallbacks=fallbacks,
        view=view,
        document=document,
        token=token,
        csrf_token=csrf_for(token),
        sent_to=request.args.get("sent"),
        answers=request.form if request.method == "POST" else {},
        **chrome,
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
        # the signed record (its PDF) holds the text in the language this page showed it in
        document = service.open_invitation(db.session, token).document
        service.sign_invitation(
            db.session, token, typed_name=request.form.get("typed_name", ""),
            code=request.form.get("code", "")[:20], answers=answers,
            read_in=_text_language(document, _lang(document.language))[0],
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
