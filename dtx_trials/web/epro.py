"""The participant's ePRO pages: open a personal link, enter the one-time code, answer, submit.

Phone-first, in English, Simplified or Traditional Chinese (``?lang=zh``, ``?lang=zh-Hant`` or
Accept-Language; labels from the gettext catalogs), no inline script (CSP): a protocol text with
no translation in the page's language shows in the language it falls back to, marked as such;
branching runs live in ``/static/ecrf/expressions.js`` + ``/static/web/epro.js``, and the server
re-validates everything through `services.forms.save_form`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    current_app,
    g,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from werkzeug.wrappers import Response

import ecrf
from dtx_trials.api.context import account_policy
from dtx_trials.extensions import db
from dtx_trials.services import epro as service
from dtx_trials.services.errors import Conflict, ValidationError
from dtx_trials.web import i18n
from ecrf.model import FormDef, Label
from ecrf.render import form_to_json

bp = Blueprint("epro", __name__, template_folder="templates")

ECRF_STATIC = Path(ecrf.__file__).resolve().parent / "static"
# Field types a participant can answer on the page (files and signatures are site-only).
ANSWERABLE = frozenset(
    {
        "integer",
        "decimal",
        "text",
        "date",
        "datetime",
        "time",
        "yesno",
        "single_choice",
        "multiple_choice",
        "slider",
    }
)

# the ePRO pages' languages (the page languages of ``i18n``): the participant picks one with
# ?lang=, else the browser's Accept-Language decides
LANGUAGES = i18n.LANGUAGES


def texts(lang: str) -> dict[str, str]:
    """The ePRO pages' labels in ``lang``, from the gettext catalogs."""
    translate = i18n.translate
    return {
        "title": translate("epro_title", lang),
        "save": translate("epro_save", lang),
        "submit": translate("epro_submit", lang),
        "saved": translate("epro_saved", lang),
        "errors": translate("epro_errors", lang),
        "warnings": translate("epro_warnings", lang),
        "confirm": translate("epro_confirm", lang),
        "yes": translate("epro_yes", lang),
        "no": translate("epro_no", lang),
        "code_title": translate("epro_code_title", lang),
        "code_help": translate("epro_code_help", lang),
        "code_label": translate("epro_code_label", lang),
        "code_button": translate("epro_code_button", lang),
        "code_wrong": translate("epro_code_wrong", lang),
        "done_title": translate("epro_done_title", lang),
        "done_text": translate("epro_done_text", lang),
        "gone_title": translate("epro_gone_title", lang),
        "gone_text": translate("epro_gone_text", lang),
        "invalid_title": translate("epro_invalid_title", lang),
        "invalid_text": translate("epro_invalid_text", lang),
        "conflict": translate("epro_conflict", lang),
        "not_supported": translate("epro_not_supported", lang),
        "untranslated": translate("epro_untranslated", lang),
        "language": translate("epro_language", lang),
    }


def init_app(app: Flask) -> None:
    """Register the pages and install the development code sender unless one is installed."""
    app.register_blueprint(bp)
    app.extensions.setdefault(
        "dtx_epro_sender",
        service.LogSender(reveal_codes=app.config.get("ENV_NAME") != "production"),
    )


def _lang() -> str:
    asked = request.args.get("lang", "")
    if asked in LANGUAGES:
        return asked
    return i18n.pick_language(None, request.headers.get("Accept-Language"))


def _page(lang: str) -> dict[str, Any]:
    """What every ePRO page shows around its content: labels, the html lang, the switch."""
    return {
        "lang": lang,
        "html_lang": i18n.HTML_LANG[lang],
        "t": texts(lang),
        "other_languages": [(code, i18n.LANGUAGE_NAMES[code], i18n.HTML_LANG[code])
                            for code in LANGUAGES if code != lang],
    }


def shown_in(label: Label | None, lang: str) -> str | None:
    """The language a protocol text is shown in when it lacks ``lang`` (its fallback, as
    ``Label.get`` picks it), or None when it is written in ``lang``."""
    tag = i18n.HTML_LANG[lang]
    if label is None or label.text_in(tag) is not None:
        return None
    shown = label.get(tag)
    for other in ("zh-Hant", "zh-Hans", "en"):
        if label.text_in(other) == shown:
            return other
    return "en"


def fallbacks(form: FormDef, lang: str) -> dict[str, str]:
    """Which texts of a form show in another language than the page's: ``title``, a field's
    id, ``<field>.help`` and ``<field>:<choice code>``, each mapped to the language shown."""
    found: dict[str, str | None] = {"title": shown_in(form.title, lang)}
    for field in form.fields:
        found[field.id] = shown_in(field.label, lang)
        found[f"{field.id}.help"] = shown_in(field.help, lang)
        for choice in field.choices:
            found[f"{field.id}:{choice.code}"] = shown_in(choice.label, lang)
    return {key: shown for key, shown in found.items() if shown is not None}


def _url(endpoint: str, lang: str) -> str:
    return url_for(endpoint, lang=lang) if request.args.get("lang") else url_for(endpoint)


def _message(kind: str, status: int, lang: str) -> tuple[str, int]:
    page = _page(lang)
    return render_template(
        "epro/message.html",
        heading=page["t"][f"{kind}_title"],
        body=page["t"][f"{kind}_text"],
        **page,
    ), status


def _cookie_args() -> dict[str, Any]:
    c = current_app.config
    return {
        "httponly": True,
        "samesite": c["SESSION_COOKIE_SAMESITE"],
        "secure": c["SESSION_COOKIE_SECURE"],
        "path": "/",
    }


@bp.get("/static/ecrf/expressions.js")
def expressions_js() -> Response:
    """The browser build of the expression language (shared with the server's semantics)."""
    return send_from_directory(ECRF_STATIC, "expressions.js", mimetype="text/javascript")


@bp.get("/epro/<token>")
def open_link(token: str) -> Response | tuple[str, int]:
    """Swap the link token for an ePRO session cookie, then go to a URL without the token."""
    lang = _lang()
    try:
        _, cookie = service.open_link(
            db.session,
            token,
            policy=account_policy(),
            allow_reopen=bool(current_app.config.get("EPRO_ALLOW_REOPEN", False)),
            request_id=g.get("request_id"),
        )
    except service.LinkNotFoundError:
        return _message("invalid", 404, lang)
    except service.LinkGoneError:
        return _message("gone", 410, lang)
    response = redirect(_url("epro.form", lang), code=303)
    response.set_cookie(current_app.config["SESSION_COOKIE_NAME"], cookie, **_cookie_args())
    return response


def _posted_values(fields: list[dict[str, Any]]) -> dict[str, object]:
    values: dict[str, object] = {}
    for field in fields:
        if field["type"] not in ANSWERABLE:
            continue
        if field["type"] == "multiple_choice":
            values[field["id"]] = [v for v in request.form.getlist(field["id"]) if v]
        else:
            values[field["id"]] = request.form.get(field["id"], "")
    return values


def _shown(value: object) -> object:
    """Turn a stored value back into what the inputs show (codes and numbers as text)."""
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, dict):
        return ""
    return "" if value is None else str(value)


@bp.route("/epro/form", methods=["GET", "POST"])
def form() -> Response | tuple[str, int]:
    """Show the participant's form (or the code prompt); save a draft or submit it."""
    lang = _lang()
    try:
        ctx = service.context_for(db.session, g.get("web_session"), request_id=g.get("request_id"))
    except service.LinkNotFoundError:
        return _message("invalid", 404, lang)
    except service.LinkGoneError:
        return _message("gone", 410, lang)
    if ctx.needs_code:
        if request.method == "POST":
            return redirect(_url("epro.form", lang), code=303)
        return _render_code(lang, None, 200)
    description = form_to_json(ctx.form, i18n.HTML_LANG[lang])
    description["fallbacks"] = fallbacks(ctx.form, lang)
    if request.method == "GET":
        data = ctx.record.data if ctx.record is not None else {}
        return _render_form(
            lang,
            description,
            {k: _shown(v) for k, v in (data or {}).items()},
            version=ctx.record.version if ctx.record is not None else None,
            saved=request.args.get("saved") == "1",
        )
    action = request.form.get("action", "")
    values = _posted_values(description["fields"])
    version_text = request.form.get("version", "")
    version = int(version_text) if version_text.isdigit() and len(version_text) < 10 else None
    try:
        service.save_response(
            db.session,
            g.web_session,
            values,
            submit=action == "submit",
            device_time=request.form.get("device_time"),
            expected_version=version,
            acknowledged=request.form.getlist("acknowledged"),
            request_id=g.get("request_id"),
        )
    except service.LinkGoneError:
        return _message("gone", 410, lang)
    except service.OtpRejectedError:
        return redirect(_url("epro.form", lang), code=303)
    except ValidationError as exc:
        field_errors = exc.errors.get("values") if isinstance(exc.errors, dict) else None
        return _render_form(
            lang,
            description,
            {k: _shown(v) for k, v in values.items()},
            version=version,
            errors=field_errors if isinstance(field_errors, dict) else {},
            warnings=exc.extra.get("warnings") or [],
            problem=None if field_errors else exc.message,
            status=422,
        )
    except Conflict as exc:
        return _render_form(
            lang,
            description,
            {k: _shown(v) for k, v in values.items()},
            version=None,
            problem=texts(lang)["conflict"].format(message=exc.message),
            status=409,
        )
    if action == "submit":
        response = redirect(_url("epro.done", lang), code=303)
        response.delete_cookie(current_app.config["SESSION_COOKIE_NAME"], path="/")
        return response
    target = url_for("epro.form", saved="1")
    if request.args.get("lang"):
        target = url_for("epro.form", saved="1", lang=lang)
    return redirect(target, code=303)


def _render_form(
    lang: str,
    description: dict[str, Any],
    values: dict[str, object],
    *,
    version: int | None,
    errors: dict[str, Any] | None = None,
    warnings: list[dict[str, Any]] | None = None,
    problem: str | None = None,
    saved: bool = False,
    status: int = 200,
) -> tuple[str, int]:
    return render_template(
        "epro/form.html",
        form=description,
        values=values,
        version=version,
        errors=errors or {},
        warnings=warnings or [],
        problem=problem,
        saved=saved,
        answerable=ANSWERABLE,
        csrf_token=g.web_session.csrf_token,
        action_url=_url("epro.form", lang),
        **_page(lang),
    ), status


def _render_code(lang: str, attempts_left: int | None, status: int) -> tuple[str, int]:
    return render_template(
        "epro/code.html",
        attempts_left=attempts_left,
        csrf_token=g.web_session.csrf_token,
        action_url=_url("epro.code", lang),
        **_page(lang),
    ), status


@bp.post("/epro/code")
def code() -> Response | tuple[str, int]:
    """Check the one-time code; three wrong codes revoke the link."""
    lang = _lang()
    try:
        service.context_for(db.session, g.get("web_session"), request_id=g.get("request_id"))
        service.verify_code(
            db.session,
            g.web_session,
            request.form.get("code", "")[:20],
            request_id=g.get("request_id"),
        )
    except service.LinkNotFoundError:
        return _message("invalid", 404, lang)
    except service.LinkGoneError:
        return _message("gone", 410, lang)
    except service.OtpRejectedError as exc:
        return _render_code(lang, int(exc.extra.get("attempts_left", 0)), 403)
    return redirect(_url("epro.form", lang), code=303)


@bp.get("/epro/done")
def done() -> tuple[str, int]:
    """Confirm the submission (shows no data: the session has already ended)."""
    return _message("done", 200, _lang())
