"""Safety events: SAEs with their expedited-report clock, alerts on answers."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from dtx_trials.api.context import current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.schemas import Blueprint, StrictSchema
from dtx_trials.extensions import db
from dtx_trials.models import Participant, SafetyEvent
from dtx_trials.services import safety, trials

blp = Blueprint(
    "safety",
    __name__,
    url_prefix="/api/v1/trials",
    description="Safety: SAE reporting clock, alerts on answers",
)


class SafetyArgs(StrictSchema):
    status = fields.String(
        load_default=None,
        validate=validate.OneOf(["open", "acknowledged", "reported", "downgraded", "closed"]),
    )


class FollowUpSchema(Schema):
    number = fields.Integer()
    reported_at = fields.DateTime()
    causality = fields.String()
    expectedness = fields.String()
    outcome = fields.String()
    narrative = fields.String()
    is_final = fields.Boolean()


class FollowUpRequestSchema(StrictSchema):
    causality = fields.String(required=True, validate=validate.OneOf(safety.CAUSALITY))
    expectedness = fields.String(required=True, validate=validate.OneOf(safety.EXPECTEDNESS))
    outcome = fields.String(required=True, validate=validate.OneOf(safety.OUTCOMES))
    narrative = fields.String(required=True, validate=validate.Length(min=1, max=10000))
    is_final = fields.Boolean(load_default=False)


class SafetyEventSchema(Schema):
    id = fields.Integer()
    subject_code = fields.String()
    kind = fields.String()
    rule_id = fields.String()
    message = fields.String()
    detected_at = fields.DateTime()
    due_at = fields.DateTime(allow_none=True)
    status = fields.String()
    acknowledged_at = fields.DateTime(allow_none=True)
    reported_at = fields.DateTime(allow_none=True)
    is_within_clock = fields.Boolean(allow_none=True)
    causality = fields.String(allow_none=True)
    expectedness = fields.String(allow_none=True)
    escalated_at = fields.DateTime(allow_none=True)
    follow_ups = fields.List(
        fields.Nested(FollowUpSchema),
        metadata={"description": "SAE follow-up reports, oldest first; the last one holds the "
                  "current causality, expectedness and outcome"},
    )


class ReportSchema(StrictSchema):
    causality = fields.String(required=True, validate=validate.OneOf(safety.CAUSALITY))
    expectedness = fields.String(required=True, validate=validate.OneOf(safety.EXPECTEDNESS))
    narrative = fields.String(required=True, validate=validate.Length(min=1, max=10000))


def _trial(code: str) -> Any:
    return trials.get_trial(db.session, current_actor(), code)


def _out(event: SafetyEvent, subject: str) -> dict[str, Any]:
    names = ("id", "kind", "rule_id", "message", "detected_at", "due_at", "status",
             "acknowledged_at", "reported_at", "causality", "expectedness", "escalated_at")
    within = None
    if event.kind == "sae" and event.reported_at is not None and event.due_at is not None:
        within = event.reported_at <= event.due_at
    return {**{n: getattr(event, n) for n in names}, "subject_code": subject,
            "is_within_clock": within,
            "follow_ups": safety.follow_ups(db.session, event.id) if event.kind == "sae" else []}


def _subject(event: SafetyEvent) -> str:
    participant = db.session.get(Participant, event.participant_id)
    return participant.subject_code if participant else ""


@blp.route("/<code>/safety-events")
class SafetyEvents(MethodView):
    @blp.arguments(SafetyArgs, location="query")
    @blp.response(200, SafetyEventSchema(many=True))
    def get(self, args: dict[str, Any], code: str) -> list[dict[str, Any]]:
        """SAEs and alerts at the sites I may read, newest first."""
        rows = safety.list_events(db.session, current_actor(), _trial(code),
                                  status=args["status"])
        return [_out(e, p.subject_code) for e, p in rows]


@blp.route("/<code>/safety-events/<int:event_id>/acknowledge")
class Acknowledge(MethodView):
    @idempotent
    @blp.response(200, SafetyEventSchema)
    def post(self, code: str, event_id: int) -> dict[str, Any]:
        """Acknowledge an alert (site staff): stops its escalation clock."""
        event = safety.acknowledge(db.session, current_actor(), _trial(code), event_id)
        return _out(event, _subject(event))


@blp.route("/<code>/safety-events/<int:event_id>/report")
class Report(MethodView):
    @idempotent
    @blp.arguments(ReportSchema)
    @blp.response(200, SafetyEventSchema)
    def post(self, body: dict[str, Any], code: str, event_id: int) -> dict[str, Any]:
        """File the SAE's expedited initial report with causality and expectedness
        (investigator); `is_within_clock` says whether it met the deadline."""
        event = safety.report_sae(db.session, current_actor(), _trial(code), event_id, **body)
        return _out(event, _subject(event))


@blp.route("/<code>/safety-events/<int:event_id>/follow-ups")
class FollowUps(MethodView):
    @idempotent
    @blp.arguments(FollowUpRequestSchema)
    @blp.response(201, SafetyEventSchema)
    def post(self, body: dict[str, Any], code: str, event_id: int) -> dict[str, Any]:
        """File a follow-up of a reported SAE (investigator): current causality and
        expectedness, outcome, new information; `is_final` closes the case."""
        trial = _trial(code)
        safety.report_follow_up(db.session, current_actor(), trial, event_id, **body)
        event = db.session.get(SafetyEvent, event_id)
        assert event is not None
        return _out(event, _subject(event))
