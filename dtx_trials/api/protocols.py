"""Protocol versions: upload (YAML or JSON body), list, get, diff, activate; validate."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from marshmallow import Schema, fields

from dtx_trials.api.context import current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.schemas import Blueprint, StrictSchema
from dtx_trials.extensions import db
from dtx_trials.models import ProtocolVersion
from dtx_trials.services import protocols as service
from dtx_trials.services import trials
from dtx_trials.services.errors import ValidationError
from protocols.loader import load_protocol_report

blp = Blueprint(
    "protocols", __name__, url_prefix="/api/v1", description="Protocol versions and amendments"
)

RAW_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-yaml": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "object"}},
        },
        "description": "The protocol document (YAML, or the same structure as JSON).",
    }
}


class VersionSchema(Schema):
    id = fields.Integer()
    version_no = fields.Integer()
    sha256 = fields.String()
    status = fields.String()
    source_name = fields.String()
    created_at = fields.DateTime()
    activated_at = fields.DateTime(allow_none=True)
    accepted_migrations = fields.List(fields.String())


class VersionDetailSchema(VersionSchema):
    content = fields.Dict()
    source_text = fields.String()


class ChangeSchema(Schema):
    id = fields.String()
    kind = fields.String()
    path = fields.String()
    old = fields.Raw(allow_none=True)
    new = fields.Raw(allow_none=True)
    description = fields.String()
    is_breaking = fields.Boolean()
    breaking_reason = fields.String(allow_none=True)


class ActivateSchema(StrictSchema):
    accepted_migrations = fields.List(fields.String(), load_default=list)


class ActivationSchema(Schema):
    version = fields.Nested(VersionSchema)
    changes = fields.List(fields.Nested(ChangeSchema))


class IssueSchema(Schema):
    file = fields.String()
    line = fields.Integer()
    column = fields.Integer()
    path = fields.String()
    message = fields.String()
    severity = fields.String()


class ValidationResultSchema(Schema):
    valid = fields.Boolean()
    issues = fields.List(fields.Nested(IssueSchema))


def _body_text() -> str:
    raw = request.get_data(cache=False)  # capped at MAX_PROTOCOL_BYTES while read (edge.py)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("body is not UTF-8", {"body": ["must be UTF-8 text"]}) from exc
    if not text.strip():
        raise ValidationError("empty body", {"body": ["send the protocol document"]})
    return text


@blp.route("/protocols/validate")
class Validate(MethodView):
    @blp.doc(**RAW_BODY_DOC)
    @blp.response(200, ValidationResultSchema)
    def post(self) -> dict[str, Any]:
        """Validate a protocol document without storing it; every issue with its line."""
        current_actor()
        result = load_protocol_report(_body_text(), request.args.get("name", "protocol.yaml"))
        return {"valid": not result.errors, "issues": service.issues_payload(result.issues)}


@blp.route("/trials/<code>/protocol-versions")
class Versions(MethodView):
    @blp.response(200, VersionSchema(many=True))
    def get(self, code: str) -> list[ProtocolVersion]:
        """List the trial's protocol versions."""
        actor = current_actor()
        return service.list_versions(db.session, actor, trials.get_trial(db.session, actor, code))

    @idempotent
    @blp.doc(**RAW_BODY_DOC)
    @blp.response(201, VersionSchema)
    @blp.alt_response(200, schema=VersionSchema, description="identical content already stored")
    def post(self, code: str) -> tuple[ProtocolVersion, int]:
        """Upload a protocol version (draft); 422 lists every error with file:line:col."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        version, created = service.upload_version(
            db.session, actor, trial, _body_text(), request.args.get("name", "protocol.yaml")
        )
        return version, 201 if created else 200


@blp.route("/trials/<code>/protocol-versions/<int:version_no>")
class VersionItem(MethodView):
    @blp.response(200, VersionDetailSchema)
    def get(self, code: str, version_no: int) -> ProtocolVersion:
        """Get one version with its canonical content and source text."""
        actor = current_actor()
        return service.get_version(
            db.session, actor, trials.get_trial(db.session, actor, code), version_no
        )


@blp.route("/trials/<code>/protocol-versions/<int:version_no>/activate")
class Activate(MethodView):
    @idempotent
    @blp.arguments(ActivateSchema)
    @blp.response(200, ActivationSchema)
    def post(self, body: dict[str, Any], code: str, version_no: int) -> dict[str, Any]:
        """Activate a version (amendment); 409 names each breaking change not accepted."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        version, changes = service.activate_version(
            db.session, actor, trial, version_no, body["accepted_migrations"]
        )
        return {"version": version, "changes": changes}


@blp.route("/trials/<code>/protocol-versions/<int:old_no>/diff/<int:new_no>")
class Diff(MethodView):
    @blp.response(200, ChangeSchema(many=True))
    def get(self, code: str, old_no: int, new_no: int) -> list[Any]:
        """The readable change list between two versions."""
        actor = current_actor()
        return service.diff_versions(
            db.session, actor, trials.get_trial(db.session, actor, code), old_no, new_no
        )
