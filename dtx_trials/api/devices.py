"""Device and DTx-app data (bulk, idempotent) and adherence to the protocol's stream rules."""

from __future__ import annotations

from typing import Any

from flask import g, request
from flask.views import MethodView
from marshmallow import Schema, fields

from dtx_trials.api.context import current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.paging import PageArgs, page_headers
from dtx_trials.api.schemas import Blueprint
from dtx_trials.edge import NDJSON, parse_json
from dtx_trials.extensions import db
from dtx_trials.services import devices as service
from dtx_trials.services import trials
from dtx_trials.services.errors import DomainError, ValidationError

blp = Blueprint(
    "devices",
    __name__,
    url_prefix="/api/v1/trials",
    description="Device and DTx-app observations; adherence",
)


class UnsupportedMediaTypeError(DomainError):
    status = 415
    code = "unsupported_media_type"


class DeviceRecordErrorSchema(Schema):
    index = fields.Integer()
    subject = fields.String(allow_none=True)
    field = fields.String()
    message = fields.String()


class DeviceIngestResultSchema(Schema):
    accepted = fields.Integer(attribute="n_accepted")
    duplicates = fields.Integer(attribute="n_duplicates")
    rejected = fields.Integer(attribute="n_rejected")
    errors = fields.List(fields.Nested(DeviceRecordErrorSchema))


class StreamAdherenceSchema(Schema):
    stream = fields.String()
    metric = fields.String()
    value = fields.Float(allow_none=True)
    threshold = fields.Float()
    adherent = fields.Boolean(attribute="is_adherent")
    window_start_on = fields.Date()
    window_end_on = fields.Date()
    n_days = fields.Integer()
    n_days_meeting_minimum = fields.Integer(allow_none=True)
    condition_met = fields.Boolean(allow_none=True)
    defines_per_protocol = fields.Boolean()


class AdherenceSchema(Schema):
    subject_code = fields.String()
    adherent = fields.Boolean(attribute="is_adherent")
    per_protocol = fields.Boolean(attribute="meets_per_protocol")
    streams = fields.List(fields.Nested(StreamAdherenceSchema))


def _records_from_body() -> list[object]:
    """The batch: a JSON array, or NDJSON (one object per line, blank lines ignored), as parsed
    and checked by the request edge (``edge.py``)."""
    if request.mimetype == NDJSON:
        records: list[object] = g.get("ndjson_records", [])
        return records
    if request.mimetype not in ("application/json", ""):
        raise UnsupportedMediaTypeError(
            f"send application/json (an array) or {NDJSON}",
            {"Content-Type": [f"unsupported: {request.mimetype}"]},
        )
    raw = request.get_data(cache=True)
    body = g.get("json_body") if request.mimetype else (parse_json(raw) if raw else None)
    if not isinstance(body, list):
        raise ValidationError("expected a JSON array of records", {"body": ["must be an array"]})
    return body


@blp.route("/<code>/device-data")
class DeviceData(MethodView):
    @idempotent
    @blp.doc(
        requestBody={
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                NDJSON: {"schema": {"type": "string"}},
            },
            "description": "records {subject, stream, time, value, unit, source}; at most "
            f"{service.MAX_RECORDS}",
        }
    )
    @blp.response(200, DeviceIngestResultSchema)
    def post(self, code: str) -> service.IngestResult:
        """Store a batch of observations; bad records are reported one by one."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        return service.ingest_observations(db.session, actor, trial, _records_from_body())


@blp.route("/<code>/adherence")
class Adherence(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, AdherenceSchema(many=True))
    def get(self, args: dict[str, Any], code: str) -> Any:
        """Each participant's adherence to the stream rules of the active protocol (no arms),
        by subject code, a page at a time (``X-Total-Count`` and ``Link`` headers): the
        participants at the sites I may see with a window start (randomized, or the rule's
        start visit dated)."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        result = service.adherence_page(
            db.session, actor, trial, page=args["page"], per_page=args["per_page"]
        )
        return result.items, page_headers(result)
