"""Visits: actual dates and times (site time zone), missed visits; protocol deviations for the
monitor."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from dtx_trials.api.context import current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.participants import VisitSchema
from dtx_trials.api.schemas import Blueprint, StrictSchema
from dtx_trials.extensions import db
from dtx_trials.models import Participant, ProtocolDeviation, Visit
from dtx_trials.services import deviations, trials
from dtx_trials.services import participants as service

blp = Blueprint(
    "visits",
    __name__,
    url_prefix="/api/v1/trials",
    description="Visit dates, missed visits and protocol deviations",
)


class VisitDateSchema(StrictSchema):
    date = fields.Date(
        required=True, metadata={"description": "the site's local calendar date (YYYY-MM-DD)"}
    )
    time = fields.Time(
        load_default=None,
        allow_none=True,
        metadata={"description": "the site's local clock time (HH:MM), optional"},
    )
    reason = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=2000),
        metadata={"description": "required when a recorded date is corrected"},
    )


class MissedSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class DeviationArgs(StrictSchema):
    status = fields.String(load_default=None, validate=validate.OneOf(deviations.STATUSES))
    site = fields.String(load_default=None, validate=validate.Length(max=40))


class DeviationSchema(Schema):
    id = fields.Integer()
    subject_code = fields.String()
    visit_code = fields.String(allow_none=True)
    kind = fields.String()
    description = fields.String()
    days_outside = fields.Integer(allow_none=True)
    detected_at = fields.DateTime()
    status = fields.String()
    reviewed_at = fields.DateTime(allow_none=True)
    review_note = fields.String(allow_none=True)


class ReviewSchema(StrictSchema):
    note = fields.String(required=True, validate=validate.Length(min=1, max=2000))


def _trial(code: str) -> Any:
    return trials.get_trial(db.session, current_actor(), code)


def _deviation_out(deviation: ProtocolDeviation, subject: str, visit: Visit | None) -> Any:
    names = ("id", "kind", "description", "days_outside", "detected_at", "status",
             "reviewed_at", "review_note")
    return {
        **{n: getattr(deviation, n) for n in names},
        "subject_code": subject,
        "visit_code": visit.visit_code if visit else None,
    }


@blp.route("/<code>/participants/<subject>/visits/<visit>/date")
class VisitDate(MethodView):
    @idempotent
    @blp.arguments(VisitDateSchema)
    @blp.response(200, VisitSchema)
    def post(self, body: dict[str, Any], code: str, subject: str, visit: str) -> Visit:
        """Record when a visit took place (site-local date and optional time); out of its
        window it raises a protocol deviation; a future date is 422."""
        return service.record_visit_date(
            db.session,
            current_actor(),
            _trial(code),
            subject,
            visit,
            body["date"],
            time=body["time"],
            reason=body["reason"],
        )


@blp.route("/<code>/participants/<subject>/visits/<visit>/missed")
class VisitMissed(MethodView):
    @idempotent
    @blp.arguments(MissedSchema)
    @blp.response(200, VisitSchema)
    def post(self, body: dict[str, Any], code: str, subject: str, visit: str) -> Visit:
        """Record that a planned visit will not take place (a reason; raises a deviation)."""
        return service.record_visit_missed(
            db.session, current_actor(), _trial(code), subject, visit, body["reason"]
        )


@blp.route("/<code>/deviations")
class Deviations(MethodView):
    @blp.arguments(DeviationArgs, location="query")
    @blp.response(200, DeviationSchema(many=True))
    def get(self, args: dict[str, Any], code: str) -> list[dict[str, Any]]:
        """Protocol deviations at the sites I may read, newest first."""
        rows = deviations.list_deviations(
            db.session, current_actor(), _trial(code), status=args["status"],
            site_code=args["site"],
        )
        return [_deviation_out(d, p.subject_code, v) for d, p, v in rows]


@blp.route("/<code>/deviations/<int:deviation_id>/review")
class ReviewDeviation(MethodView):
    @idempotent
    @blp.arguments(ReviewSchema)
    @blp.response(200, DeviationSchema)
    def post(self, body: dict[str, Any], code: str, deviation_id: int) -> dict[str, Any]:
        """Review an open deviation with a note (monitor)."""
        deviation = deviations.review_deviation(
            db.session, current_actor(), _trial(code), deviation_id, body["note"]
        )
        participant = db.session.get(Participant, deviation.participant_id)
        visit = db.session.get(Visit, deviation.visit_id) if deviation.visit_id else None
        assert participant is not None
        return _deviation_out(deviation, participant.subject_code, visit)
