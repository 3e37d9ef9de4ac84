"""REST API under /api/v1 (flask-smorest): HTTP <-> services only."""

from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, request

from dtx_trials.api import (
    analyses,
    apps,
    audit,
    auth,
    coding,
    devices,
    econsent,
    epro,
    exports,
    forms,
    participants,
    protocols,
    safety,
    trials,
    users,
    visits,
)
from dtx_trials.api.errors import register_error_handlers
from dtx_trials.extensions import api, db
from dtx_trials.services import accounts
from dtx_trials.services import apps as app_service
from dtx_trials.services.errors import AuthenticationError

# Deny by default (ASVS V4.1.3): every API route needs a bearer token except these
# (endpoint, method) pairs. Checked before the request body or query is parsed, so an anonymous
# caller learns nothing from validation errors.
PUBLIC_API_ENDPOINTS = frozenset(
    {
        ("auth.Tokens", "POST"),
        ("auth.Activation", "POST"),
        ("dtx_app.Activation", "POST"),
        ("dtx_app.ServiceToken", "POST"),
        ("api-docs.openapi_json", "GET"),
        ("pages.api_docs", "GET"),
    }
)
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,80}$")

BLUEPRINTS = [
    auth.blp,
    trials.blp,
    users.blp,
    protocols.blp,
    participants.blp,
    visits.blp,
    forms.blp,
    epro.blp,
    econsent.blp,
    safety.blp,
    coding.blp,
    devices.blp,
    apps.blp,
    apps.staff_blp,
    analyses.blp,
    exports.blp,
    audit.blp,
]


def register_api(app: Flask) -> None:
    api.init_app(app)
    converter = app.url_map.converters["int"]
    api.register_converter(
        converter, lambda c: {"type": "integer", "minimum": c.min or 0, "maximum": c.max}
    )
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    register_error_handlers(app)

    @app.before_request
    def _request_id() -> None:
        g.actor = None  # never inherit an identity (tests may reuse one app context)
        g.web_session = None
        supplied = request.headers.get("X-Request-ID", "")
        g.request_id = supplied if _REQUEST_ID_RE.match(supplied) else uuid.uuid4().hex

    @app.before_request
    def _bearer_actor() -> None:
        if not request.path.startswith("/api/"):
            return
        header = request.headers.get("Authorization", "")
        g.app_principal = None
        if header.startswith("Bearer ") and request.blueprint == apps.blp.name:
            # the app API knows app tokens only, and app tokens open nothing else
            principal = app_service.principal_for(db.session, header[7:].strip(), g.request_id)
            if principal is not None:
                g.app_principal = principal
                g.actor = principal.actor
        elif header.startswith("Bearer "):
            g.actor = accounts.actor_for_token(
                db.session, header[7:].strip(), request_id=g.request_id
            )
        db.session.rollback()  # end the read transaction before the view opens its own
        method = "GET" if request.method == "HEAD" else request.method
        if (
            g.actor is None
            and request.url_rule is not None  # unknown paths stay 404
            and (request.endpoint, method) not in PUBLIC_API_ENDPOINTS
        ):
            raise AuthenticationError("authentication required (Authorization: Bearer <token>)")

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response
