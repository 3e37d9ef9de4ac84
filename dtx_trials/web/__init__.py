"""Server-rendered pages, health probes, browser sessions, CSRF and security headers."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from flask import Flask, Response, abort, g, request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from dtx_trials import trust
from dtx_trials.api.context import account_policy
from dtx_trials.api.errors import rollback_quietly
from dtx_trials.extensions import db
from dtx_trials.models import User
from dtx_trials.services import accounts
from dtx_trials.web import analysis_pages, builder_pages, econsent, epro, i18n, pages, trial_pages

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def register_web(app: Flask) -> None:
    app.register_blueprint(pages.bp)
    epro.init_app(app)
    app.register_blueprint(econsent.bp)
    app.register_blueprint(trial_pages.bp)
    app.register_blueprint(builder_pages.bp)
    app.register_blueprint(analysis_pages.bp)

    @app.context_processor
    def _page_context() -> dict[str, Any]:
        lang = g.get("lang") or "en"
        web_session = g.get("web_session")

        def t(key: str, **values: object) -> str:
            return i18n.translate(key, lang, **values)

        def tn(key: str, n: int, **values: object) -> str:
            return i18n.translate_plural(key, n, lang, **values)

        return {
            "t": t,
            "tn": tn,
            "lang": lang,
            "html_lang": i18n.HTML_LANG[lang],
            "html_langs": i18n.HTML_LANG,
            "languages": i18n.LANGUAGE_NAMES,
            "day": lambda value: i18n.format_day(value, lang),
            "number": lambda value: i18n.format_number(value, lang),
            "csrf_token": web_session.csrf_token if web_session is not None else "",
            # a fresh idempotency key per form: a double click or a resubmission replays
            "new_request_id": lambda: uuid.uuid4().hex,
            "has_analyses": "analysis_pages" in app.blueprints,
        }

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> tuple[dict[str, Any], int]:
        """The database answers and holds data written under this instance's field key."""
        try:
            db.session.execute(text("SELECT 1"))
            db.session.rollback()
        except SQLAlchemyError:
            rollback_quietly()
            return {"status": "unavailable", "database": "unreachable"}, 503
        keys_ok, trust_status = trust.readiness(app)
        if not keys_ok:
            return {"status": "unavailable", "database": "ok", **trust_status}, 503
        return {"status": "ready", "database": "ok", **trust_status}, 200

    @app.before_request
    def _browser_session() -> None:
        if request.path.startswith(("/api/", "/static/")) or request.path in (
            "/healthz",
            "/readyz",
        ):
            return
        g.lang = i18n.pick_language(
            request.cookies.get("lang"), request.headers.get("Accept-Language")
        )
        cookie = request.cookies.get(app.config["SESSION_COOKIE_NAME"])
        g.web_session = None
        if cookie:
            row = accounts.session_for_cookie(db.session, cookie, policy=account_policy())
            if row is not None:
                g.web_session = row
                if row.user_id is not None:
                    user = db.session.get(User, row.user_id)
                    if user is not None and user.is_active:
                        g.actor = accounts.actor_for(
                            db.session,
                            user,
                            via="web",
                            request_id=g.get("request_id"),
                            auth_ref=f"session:{row.id}",
                        )
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            _check_csrf()

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        if app.config["SESSION_COOKIE_SECURE"]:
            response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
        if not request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _check_csrf() -> None:
    """Every state-changing page request carries the session's CSRF token (form or header)."""
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token", "")
    expected = [g.web_session.csrf_token] if g.get("web_session") is not None else []
    if request.endpoint in ("pages.login", "pages.activate"):
        expected.append(request.cookies.get("dtx_login_csrf", ""))
    if (request.endpoint or "").startswith("econsent.") and request.view_args:
        from dtx_trials.web.econsent import csrf_for

        expected.append(csrf_for(str(request.view_args.get("token", ""))))
    if not sent or not any(e and secrets.compare_digest(sent, e) for e in expected):
        abort(400, description="missing or invalid CSRF token; reload the page and try again")
