"""ePRO links: issue (token shown once), list (never the tokens), revoke."""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from dtx_trials.api.context import current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.schemas import Blueprint, StrictSchema
from dtx_trials.extensions import db
from dtx_trials.models import EproLink
from dtx_trials.services import epro as service
from dtx_trials.services import epro_schedule, trials

blp = Blueprint(
    "epro_links",
    __name__,
    url_prefix="/api/v1/trials",
    description="ePRO links: personal links through which participants answer their forms",
)


class EproLinkIssueSchema(StrictSchema):
    visit = fields.String(required=True, validate=validate.Length(min=1, max=40))
    form = fields.String(required=True, validate=validate.Length(min=1, max=60))
    expires_in_hours = fields.Integer(
        load_default=service.DEFAULT_HOURS, validate=validate.Range(min=1, max=service.MAX_HOURS)
    )
    channel = fields.String(load_default="none", validate=validate.OneOf(service.CHANNELS))
    repeat_index = fields.Integer(
        load_default=1, validate=validate.Range(min=1, max=1000),
        metadata={"description": "the occurrence of a repeating questionnaire window "
                  "(schedule.epro every_days/times: week n is n); 1 otherwise"},
    )


class EproLinkSchema(Schema):
    id = fields.Integer()
    visit = fields.Function(lambda link: (link.meta or {}).get("visit_code"))
    form = fields.String(attribute="form_code")
    repeat_index = fields.Function(service.repeat_index_of)
    channel = fields.String(allow_none=True)
    otp_required = fields.Function(lambda link: link.otp_hash is not None)
    status = fields.Function(lambda link: service.link_status(link))
    created_at = fields.DateTime()
    expires_at = fields.DateTime()
    opened_at = fields.DateTime(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)


class IssuedEproLinkSchema(EproLinkSchema):
    url = fields.String(metadata={"description": "the personal link; shown once, never stored"})
    delivered_to = fields.String(
        allow_none=True, metadata={"description": "masked address the one-time code went to"}
    )


class _IssuedView:
    """The issued link as the response shows it: the row's fields plus the one-time URL."""

    def __init__(self, issued: service.IssuedLink, url: str) -> None:
        self._link = issued.link
        self.url = url
        self.delivered_to = issued.delivered_to

    def __getattr__(self, name: str) -> Any:
        return getattr(self._link, name)


def sender() -> service.Sender:
    """The one-time-code sender installed on the app (see `dtx_trials.web.epro.init_app`)."""
    installed: service.Sender = current_app.extensions["dtx_epro_sender"]
    return installed


@blp.route("/<code>/participants/<subject>/epro-links")
class EproLinks(MethodView):
    @idempotent
    @blp.arguments(EproLinkIssueSchema)
    @blp.response(201, IssuedEproLinkSchema)
    def post(self, body: dict[str, Any], code: str, subject: str) -> _IssuedView:
        """Issue a personal link for a participant-respondent form at a visit (site staff)."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        issued = service.issue_link(db.session, actor, trial, subject, sender=sender(), **body)
        return _IssuedView(issued, url_for("epro.open_link", token=issued.token, _external=True))

    @blp.response(200, EproLinkSchema(many=True))
    def get(self, code: str, subject: str) -> list[EproLink]:
        """The participant's links and their status (the tokens are never stored)."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        return service.list_links(db.session, actor, trial, subject)


@blp.route("/<code>/participants/<subject>/epro-links/<int:link_id>")
class EproLinkItem(MethodView):
    @blp.response(204)
    def delete(self, code: str, subject: str, link_id: int) -> None:
        """Revoke a link (its open sessions end at once)."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        service.revoke_link(db.session, actor, trial, subject, link_id)


class ComplianceSchema(Schema):
    subject_code = fields.String()
    site_code = fields.String()
    n_due = fields.Integer()
    n_answered = fields.Integer()
    n_missed = fields.Integer()
    rate = fields.Float(allow_none=True)


class SiteComplianceSchema(Schema):
    site_code = fields.String()
    n_participants = fields.Integer()
    n_due = fields.Integer()
    n_answered = fields.Integer()
    n_missed = fields.Integer()
    rate = fields.Float(allow_none=True)


class ComplianceReportSchema(Schema):
    participants = fields.List(fields.Nested(ComplianceSchema))
    sites = fields.List(fields.Nested(SiteComplianceSchema))


@blp.route("/<code>/epro-compliance")
class Compliance(MethodView):
    @blp.response(200, ComplianceReportSchema)
    def get(self, code: str) -> dict[str, Any]:
        """Scheduled questionnaires due, answered and missed, per participant and per site
        (the sites I may read)."""
        trial = trials.get_trial(db.session, current_actor(), code)
        rows = epro_schedule.compliance(db.session, current_actor(), trial)
        sites: dict[str, dict[str, Any]] = {}
        for row in rows:
            site = sites.setdefault(row.site_code, {
                "site_code": row.site_code, "n_participants": 0, "n_due": 0,
                "n_answered": 0, "n_missed": 0,
            })
            site["n_participants"] += 1
            site["n_due"] += row.n_due
            site["n_answered"] += row.n_answered
            site["n_missed"] += row.n_missed
        for site in sites.values():
            site["rate"] = site["n_answered"] / site["n_due"] if site["n_due"] else None
        return {"participants": rows, "sites": list(sites.values())}
