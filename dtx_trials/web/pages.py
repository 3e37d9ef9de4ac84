"""Sign-in, sign-out and the home page (the role pages build on these)."""

from __future__ import annotations

import secrets

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from dtx_trials.api.context import account_policy
from dtx_trials.db import transaction, utcnow
from dtx_trials.edge import same_origin_path
from dtx_trials.extensions import db
from dtx_trials.models.users import Role
from dtx_trials.services import accounts, trials
from dtx_trials.services.errors import AccountLocked, AuthenticationError, DomainError
from dtx_trials.web.i18n import LANGUAGES, translate

bp = Blueprint(
    "pages",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static/web",
)


def _cookie_args() -> dict[str, object]:
    c = current_app.config
    return {
        "httponly": True,
        "samesite": c["SESSION_COOKIE_SAMESITE"],
        "secure": c["SESSION_COOKIE_SECURE"],
        "path": "/",
    }


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | tuple[str, int] | str:
    """Show the sign-in form; on POST check the password and start a new session."""
    if request.method == "GET":
        token = secrets.token_urlsafe(32)
        response = current_app.make_response(render_template("login.html", csrf_token=token))
        response.set_cookie("dtx_login_csrf", token, max_age=3600, **_cookie_args())  # type: ignore[arg-type]
        return response
    try:
        user = accounts.authenticate(
            db.session,
            request.form.get("username", ""),
            request.form.get("password", ""),
            policy=account_policy(),
            request_id=g.get("request_id"),
        )
    except AccountLocked:
        message = translate("locked", g.get("lang", "en"))
        return render_template(
            "login.html", error=message, csrf_token=request.cookies.get("dtx_login_csrf", "")
        ), 429
    except AuthenticationError:
        return render_template(
            "login.html",
            error=translate("invalid_login", g.get("lang", "en")),
            csrf_token=request.cookies.get("dtx_login_csrf", ""),
        ), 401
    with transaction(db.session):
        previous = g.get("web_session")
        if previous is not None:
            previous.revoked_at = utcnow()  # a new session on every sign-in: no fixation
        _, cookie = accounts.open_session(db.session, user, policy=account_policy())
    response = redirect(url_for("pages.home"))
    response.set_cookie(current_app.config["SESSION_COOKIE_NAME"], cookie, **_cookie_args())  # type: ignore[arg-type]
    response.delete_cookie("dtx_login_csrf", path="/")
    return response


def activation_link(token: str) -> str:
    """The absolute URL of an account activation link (e-mailed, never shown to an admin)."""
    return url_for("pages.activate", token=token, _external=True)


@bp.route("/activate/<token>", methods=["GET", "POST"])
def activate(token: str) -> Response | tuple[str, int] | str:
    """The owner of a new account chooses its password with the one-time e-mailed link."""
    lang = g.get("lang", "en")
    if request.method == "GET":
        csrf = secrets.token_urlsafe(32)
        response = current_app.make_response(
            render_template("activate.html", token=token, csrf_token=csrf)
        )
        response.set_cookie("dtx_login_csrf", csrf, max_age=3600, **_cookie_args())  # type: ignore[arg-type]
        return response
    password = request.form.get("password", "")
    csrf = request.cookies.get("dtx_login_csrf", "")
    if password != request.form.get("password_again", ""):
        return render_template(
            "activate.html", token=token, csrf_token=csrf,
            errors={"password_again": [translate("passwords_differ", lang)]},
        ), 422
    try:
        accounts.activate_account(db.session, token, password, policy=account_policy())
    except DomainError as exc:
        return render_template(
            "activate.html", token=token, csrf_token=csrf, error=exc.message,
            errors=exc.errors,
        ), exc.status
    response = redirect(url_for("pages.login", msg="activated"))
    response.delete_cookie("dtx_login_csrf", path="/")
    return response


@bp.post("/logout")
def logout() -> Response:
    """End the session on the server, not only in the browser."""
    session_row = g.get("web_session")
    if session_row is not None:
        with transaction(db.session):
            session_row.revoked_at = utcnow()
    response = redirect(url_for("pages.login"))
    response.delete_cookie(current_app.config["SESSION_COOKIE_NAME"], path="/")
    return response


@bp.get("/")
def home() -> Response | str:
    """List my trials, or send me to sign in."""
    actor = g.get("actor")
    if actor is None:
        return redirect(url_for("pages.login"))
    return render_template(
        "home.html",
        trials=trials.list_trials(db.session, actor),
        csrf_token=g.web_session.csrf_token,
        may_create_trials=actor.is_superuser
        or any(grant.role == Role.SPONSOR_ADMIN for grant in actor.grants),
    )


@bp.get("/api/v1/docs")
def api_docs() -> str:
    """Browsable API reference rendered from the OpenAPI document (no external scripts)."""
    from dtx_trials.extensions import api

    spec = api.spec.to_dict()
    operations = [
        (path, method.upper(), op)
        for path, item in sorted(spec.get("paths", {}).items())
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    return render_template("api_docs.html", spec=spec, operations=operations)


@bp.route("/account/password", methods=["GET", "POST"])
def change_password() -> Response | tuple[str, int] | str:
    """Let the signed-in user change their password (the current one is checked again)."""
    actor = g.get("actor")
    if actor is None:
        return redirect(url_for("pages.login"))
    if request.method == "GET":
        return render_template("password.html")
    try:
        accounts.set_password(
            db.session,
            actor,
            actor.user_id,
            request.form.get("new_password", ""),
            current_password=request.form.get("current_password", ""),
            policy=account_policy(),
            keep_web_session_id=g.web_session.id if g.get("web_session") else None,
        )
    except DomainError as exc:
        return render_template("password.html", error=exc.message, errors=exc.errors), (
            422 if exc.status == 403 else exc.status
        )
    return render_template("password.html", done=True)


@bp.get("/lang/<code>")
def switch_language(code: str) -> Response:
    """Remember the page language in a cookie and go back to the page the user was on."""
    response = redirect(same_origin_path(request.args.get("next")))
    if code in LANGUAGES:
        response.set_cookie(
            "lang", code, max_age=365 * 24 * 3600, samesite="Lax", path="/", httponly=True
        )
    return response
