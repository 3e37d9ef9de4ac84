"""Medical coding: the queue of uncoded verbatim terms, coding a term, auto-coding."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from dtx_trials.api.context import current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.schemas import Blueprint, StrictSchema
from dtx_trials.extensions import db
from dtx_trials.services import coding, trials

blp = Blueprint(
    "coding", __name__, url_prefix="/api/v1/trials",
    description="Medical coding of AE terms and medications against the sponsor's dictionary",
)


class QueueItemSchema(Schema):
    kind = fields.String()
    verbatim = fields.String()
    n_records = fields.Integer()


class CodeRequestSchema(StrictSchema):
    kind = fields.String(required=True, validate=validate.OneOf(sorted(coding.KINDS)))
    verbatim = fields.String(required=True, validate=validate.Length(min=1, max=200))
    dictionary_term = fields.String(required=True, validate=validate.Length(min=1, max=200))


class CodedTermSchema(Schema):
    kind = fields.String()
    verbatim = fields.String()
    preferred_term = fields.String()
    body_system = fields.String()
    dictionary = fields.String()
    version = fields.String()
    method = fields.String()
    coded_at = fields.DateTime()


class AutoCodeSchema(Schema):
    n_coded = fields.Integer()


def _trial(code: str) -> Any:
    return trials.get_trial(db.session, current_actor(), code)


@blp.route("/<code>/coding")
class CodingQueue(MethodView):
    @blp.response(200, QueueItemSchema(many=True))
    def get(self, code: str) -> list[coding.QueueItem]:
        """The verbatim terms still uncoded, most frequent first (data manager, sponsor admin,
        monitor)."""
        return coding.coding_queue(db.session, current_actor(), _trial(code))

    @idempotent
    @blp.arguments(CodeRequestSchema)
    @blp.response(201, CodedTermSchema)
    def post(self, body: dict[str, Any], code: str) -> Any:
        """Code a verbatim term to a term of the loaded dictionary (data manager); audited."""
        return coding.code_term(db.session, current_actor(), _trial(code), **body)


@blp.route("/<code>/coding/auto")
class AutoCode(MethodView):
    @idempotent
    @blp.response(200, AutoCodeSchema)
    def post(self, code: str) -> dict[str, int]:
        """Code every verbatim term that matches a dictionary term exactly (data manager)."""
        return {"n_coded": coding.auto_code(db.session, current_actor(), _trial(code))}
