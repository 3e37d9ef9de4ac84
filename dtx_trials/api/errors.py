"""One error shape for every 4xx/5xx: {code, status, message, errors} (flask-smorest's own)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, g, jsonify, render_template_string, request
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException

from dtx_trials.extensions import db
from dtx_trials.services.errors import DomainError

log = logging.getLogger("dtx_trials.errors")

_HTML = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{{ code }} {{ status }}</title>
<link rel="stylesheet" href="{{ url_for('pages.static', filename='app.css') }}"></head>
<body><main class="container"><h1>{{ code }} {{ status }}</h1><p role="alert">{{ message }}</p>
<p><a href="/">Home</a></p></main></body></html>"""


def error_payload(
    code: int, message: str, errors: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors:
        payload["errors"] = errors
    payload.update(extra)
    return payload


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path in ("/healthz", "/readyz")


def render_error(
    code: int, message: str, errors: dict[str, Any] | None = None, **extra: Any
) -> tuple[Response | str, int]:
    if wants_json():
        return jsonify(error_payload(code, message, errors, **extra)), code
    return render_template_string(
        _HTML, code=code, status=HTTPStatus(code).phrase, message=message
    ), code


def rollback_quietly() -> None:
    """Roll the request's session back. On a dead connection that can fail too; the session is
    then discarded (the pool replaces the connection on the next checkout)."""
    try:
        db.session.rollback()
    except SQLAlchemyError:
        db.session.remove()


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain(exc: DomainError) -> tuple[Response | str, int]:
        db.session.rollback()
        return render_error(exc.status, exc.message, exc.errors, **exc.extra)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response | str, int]:
        data = getattr(exc, "data", {}) or {}
        errors = data.get("messages") or data.get("errors")
        code = exc.code or 500
        message = data.get("message") or (exc.description if code < 500 else "server error")
        return render_error(code, str(message), errors)

    @app.errorhandler(StaleDataError)
    def _stale(exc: StaleDataError) -> tuple[Response | str, int]:
        rollback_quietly()
        return render_error(409, "the record was changed by someone else; reload it")

    @app.errorhandler(IntegrityError)
    def _integrity(exc: IntegrityError) -> tuple[Response | str, int]:
        rollback_quietly()
        log.info("integrity conflict request_id=%s", g.get("request_id"))
        return render_error(409, "conflicting concurrent change; retry the request")

    @app.errorhandler(DBAPIError)
    def _db_error(exc: DBAPIError) -> tuple[Response | str, int]:
        """A lost or refused database connection is a 503 (the pool reconnects by itself);
        any other driver error is a server error."""
        rollback_quietly()
        if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
            log.warning("database unavailable request_id=%s", g.get("request_id"))
            return render_error(503, "database temporarily unavailable; retry shortly")
        return _server_error(exc)

    @app.errorhandler(500)
    def _server_error(exc: Exception) -> tuple[Response | str, int]:
        log.error(
            "unhandled error request_id=%s type=%s",
            g.get("request_id"),
            type(getattr(exc, "original_exception", exc)).__name__,
        )
        return render_error(500, "server error", request_id=g.get("request_id"))
