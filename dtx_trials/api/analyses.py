"""Analysis runs (jobs): request (202 + status URL), status and results, report PDF."""

from __future__ import annotations

from typing import Any

from flask import Response, url_for
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from dtx_trials.api.context import current_actor
from dtx_trials.api.schemas import Blueprint, StrictSchema
from dtx_trials.extensions import db
from dtx_trials.jobs import enqueue_analysis
from dtx_trials.models import AnalysisRun
from dtx_trials.services import analyses, trials
from dtx_trials.services.errors import NotFound

blp = Blueprint(
    "analyses",
    __name__,
    url_prefix="/api/v1/trials",
    description="Statistical analysis runs and reports",
)


class RequestSchema(StrictSchema):
    cutoff_on = fields.Date(load_default=None, allow_none=True)
    unblinded = fields.Boolean(load_default=False)
    review = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(["pooled", "comparative"]),
        metadata={"description": "blinded runs: pooled (default) or comparative (dummy labels, "
                  "roles named in the protocol's blinding.comparative_review)"},
    )
    language = fields.String(
        load_default="en", validate=validate.OneOf(["en", "zh"]),
        metadata={"description": "report language: en, or zh (Simplified Chinese)"},
    )
    paper = fields.String(
        load_default="letter", validate=validate.OneOf(["letter", "a4"]),
        metadata={"description": "report paper size"},
    )


class LabelsSchema(Schema):
    run_id = fields.Integer()
    labels = fields.Dict(keys=fields.String(), values=fields.String())
    nonce = fields.String()
    commitment = fields.String()
    matches = fields.Boolean()


class RunSchema(Schema):
    id = fields.Integer()
    status = fields.String()
    progress = fields.Float()
    is_unblinded = fields.Boolean()
    cutoff_on = fields.Date(allow_none=True)
    requested_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    data_sha256 = fields.String(allow_none=True)
    report_sha256 = fields.String(allow_none=True)
    report_name = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    provenance = fields.Dict()


class RunDetailSchema(RunSchema):
    results = fields.Dict(allow_none=True)


def _trial(code: str) -> Any:
    return trials.get_trial(db.session, current_actor(), code)


@blp.route("/<code>/analyses")
class Analyses(MethodView):
    @blp.response(200, RunSchema(many=True))
    def get(self, code: str) -> list[AnalysisRun]:
        """Analysis runs of the trial (blinded roles see blinded runs only)."""
        return analyses.list_runs(db.session, current_actor(), _trial(code))

    @blp.arguments(RequestSchema)
    @blp.response(202, RunSchema)
    def post(self, body: dict[str, Any], code: str) -> Response:
        """Run the statistical analysis plan as a job; poll the Location URL for its status."""
        trial = _trial(code)
        run = analyses.request_analysis(db.session, current_actor(), trial, **body)
        enqueue_analysis(run.id)
        db.session.expire_all()
        run = db.session.get(AnalysisRun, run.id)
        response = Response(RunSchema().dumps(run), status=202, mimetype="application/json")
        response.headers["Location"] = url_for(
            "analyses.AnalysisItem", code=code, run_id=run.id if run else 0
        )
        return response


@blp.route("/<code>/analyses/<int:run_id>")
class AnalysisItem(MethodView):
    @blp.response(200, RunDetailSchema)
    def get(self, code: str, run_id: int) -> AnalysisRun:
        """Status, provenance and (when finished) the results JSON."""
        return analyses.get_run(db.session, current_actor(), _trial(code), run_id)


@blp.route("/<code>/analyses/<int:run_id>/report.pdf")
class Report(MethodView):
    @blp.response(200, description="The statistical analysis report (PDF)")
    def get(self, code: str, run_id: int) -> Response:
        """Download the report PDF of a finished run."""
        run = analyses.get_run(db.session, current_actor(), _trial(code), run_id)
        if run.report_pdf is None:
            raise NotFound("no report for this run (not finished or failed)")
        response = Response(run.report_pdf, mimetype="application/pdf")
        response.headers["Content-Disposition"] = f'attachment; filename="{run.report_name}"'
        return response


@blp.route("/<code>/analyses/<int:run_id>/labels")
class Labels(MethodView):
    @blp.response(200, LabelsSchema)
    def get(self, code: str, run_id: int) -> dict[str, Any]:
        """Open a comparative blinded run's dummy labels (roles that see the arms): dummy label
        -> arm, with the nonce that reproduces the commitment recorded when it was requested."""
        return analyses.open_labels(db.session, current_actor(), _trial(code), run_id)
