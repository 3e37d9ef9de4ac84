"""The participant's ePRO pages: open a personal link, enter the one-time code, answer, submit.

Phone-first, English or Chinese (``?lang=zh`` or Accept-Language), no inline script (CSP):
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

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Questionnaire",
        "save": "Save and continue later",
        "submit": "Submit my answers",
        "saved": "Your answers are saved. You can come back to finish them.",
        "errors": "Please check the answers marked below.",
        "warnings": "Please confirm these answers before submitting:",
        "confirm": "I confirm this answer is correct",
        "yes": "Yes",
        "no": "No",
        "code_title": "Enter your code",
        "code_help": "We sent a 6-digit code to your phone or e-mail. Enter it to continue.",
        "code_label": "6-digit code",
        "code_button": "Continue",
        "code_wrong": "That code is not correct. Attempts left: {n}.",
        "done_title": "Thank you",
        "done_text": "Your answers were submitted. You can close this page.",
        "gone_title": "This link can no longer be used",
        "gone_text": "It has expired, was withdrawn or was already used. "
        "Please contact your study team for a new link.",
        "invalid_title": "This link is not valid",
        "invalid_text": "Please check the link you received, or contact your study team.",
        "conflict": "Your answers could not be saved: {message}",
        "not_supported": "This question is answered at the study site.",
        "language": "中文",
    },
    "zh": {
        "title": "问卷",
        "save": "保存，稍后继续",
        "submit": "提交我的回答",
        "saved": "您的回答已保存，可以稍后回来完成。",
        "errors": "请检查下面标出的回答。",
        "warnings": "提交前请确认以下回答：",
        "confirm": "我确认此回答无误",
        "yes": "是",
        "no": "否",
        "code_title": "请输入验证码",
        "code_help": "我们已向您的手机或邮箱发送了6位验证码，请输入以继续。",
        "code_label": "6位验证码",
        "code_button": "继续",
        "code_wrong": "验证码不正确。剩余尝试次数：{n}。",
        "done_title": "谢谢",
        "done_text": "您的回答已提交，可以关闭此页面。",
        "gone_title": "此链接已无法使用",
        "gone_text": "链接已过期、已被撤回或已被使用。请联系研究团队获取新链接。",
        "invalid_title": "此链接无效",
        "invalid_text": "请核对您收到的链接，或联系研究团队。",
        "conflict": "您的回答未能保存：{message}",
        "not_supported": "此问题由研究中心填写。",
        "language": "English",
    },
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
    if asked in TEXT:
        return asked
    return request.accept_languages.best_match(["en", "zh"], default="en") or "en"


def _url(endpoint: str, lang: str) -> str:
    return url_for(endpoint, lang=lang) if request.args.get("lang") else url_for(endpoint)


def _message(kind: str, status: int, lang: str) -> tuple[str, int]:
    text = TEXT[lang]
    return render_template(
        "epro/message.html",
        lang=lang,
        t=text,
        heading=text[f"{kind}_title"],
        body=text[f"{kind}_text"],
        other_lang="en" if lang == "zh" else "zh",
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
    description = form_to_json(ctx.form, lang)
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
            problem=TEXT[lang]["conflict"].format(message=exc.message),
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
        lang=lang,
        t=TEXT[lang],
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
        other_lang="en" if lang == "zh" else "zh",
    ), status


def _render_code(lang: str, attempts_left: int | None, status: int) -> tuple[str, int]:
    return render_template(
        "epro/code.html",
        lang=lang,
        t=TEXT[lang],
        attempts_left=attempts_left,
        csrf_token=g.web_session.csrf_token,
        action_url=_url("epro.code", lang),
        other_lang="en" if lang == "zh" else "zh",
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
