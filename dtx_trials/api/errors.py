"""One error shape for every 4xx/5xx: {code, status, message, errors} (flask-smorest's own)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
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
{% if problems %}<ul>{% for field, text in problems %}<li><code>{{ field }}</code>: {{ text }}</li>
{% endfor %}</ul>{% endif %}<p><a href="/">Home</a></p></main></body></html>"""


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
        _HTML,
        code=code,
        status=HTTPStatus(code).phrase,
        message=message,
        problems=list(_flatten(errors or {})),
    ), code


def _flatten(errors: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """{"form": {"username": ["..."]}} -> ("form.username", "...") for the HTML error page."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            yield from _flatten(value, f"{path}.{key}" if path else str(key))
    elif isinstance(errors, list | tuple):
        for item in errors:
            yield from _flatten(item, path)
    else:
        yield path, str(errors)


def is_connection_lost(exc: BaseException) -> bool:
    """Whether a database error means the connection is gone or refused (a 503, not a bug):
    whatever the driver calls it (OperationalError, InterfaceError) or SQLAlchemy noticed it
    had to invalidate the connection."""
    return isinstance(exc, OperationalError | InterfaceError) or bool(
        getattr(exc, "connection_invalidated", False)
    )


def rollback_quietly() -> None:
    """End the request's transaction whatever state its connection is in; never raise.

    On a dead connection the rollback fails too: the session's connections are then
    invalidated (discarded, not returned to the pool) without another round trip, and the pool
    opens a fresh one on the next checkout (``db._discard_if_ended_by_server``)."""
    try:
        db.session.rollback()
    except SQLAlchemyError:
        log.warning("rollback failed; connection discarded request_id=%s", g.get("request_id"))
        try:
            db.session().invalidate()
        except SQLAlchemyError:
            db.session().expunge_all()  # nothing more can be done with this connection


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(DomainError)
    def _domain(exc: DomainError) -> tuple[Response | str, int]:
        rollback_quietly()
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
    def _db_error(exc: DBAPIError) -> tuple[Response | str, int] | tuple[Any, ...]:
        rollback_quietly()
        if is_connection_lost(exc):
            return _unavailable()
        return _server_error(exc)

    @app.errorhandler(500)
    def _server_error(exc: Exception) -> tuple[Response | str, int] | tuple[Any, ...]:
        original = getattr(exc, "original_exception", None) or exc
        if isinstance(original, SQLAlchemyError):
            rollback_quietly()
            if is_connection_lost(original):  # raised outside a view (a hook, a commit)
                return _unavailable()
        log.error(
            "unhandled error request_id=%s type=%s",
            g.get("request_id"),
            type(original).__name__,
        )
        return render_error(500, "server error", request_id=g.get("request_id"))

    @app.teardown_appcontext
    def _end_session(exc: BaseException | None) -> None:
        """Registered after Flask-SQLAlchemy's own teardown, so it runs first: the rollback
        that teardown would do can fail on a dead connection, and an exception raised there
        escapes Flask (the WSGI server then answers a plain-text 500 in place of the response
        already decided)."""
        rollback_quietly()


def _unavailable() -> tuple[Response | str, int, dict[str, str]]:
    """What a lost or refused database connection becomes, wherever it is noticed."""
    log.warning("database unavailable request_id=%s", g.get("request_id"))
    body, code = render_error(503, "database temporarily unavailable; retry shortly")
    return body, code, {"Retry-After": "1"}
