"""Export downloads: a ZIP of CSV, SAS XPORT, CDISC ODM or FHIR files, or the CDISC package
(SDTM + ADaM XPT, Dataset-JSON, define.xml, conformance report); audited."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView
from marshmallow import fields, validate

from analysis.exports.deid import PROFILES
from dtx_trials.api.context import current_actor
from dtx_trials.api.schemas import Blueprint, StrictSchema
from dtx_trials.extensions import db
from dtx_trials.services import cdisc_package, exports, trials
from dtx_trials.services.errors import NotFound

blp = Blueprint(
    "exports", __name__, url_prefix="/api/v1/trials", description="Standard data exports"
)


class ExportArgs(StrictSchema):
    profile = fields.String(
        load_default="limited", validate=validate.OneOf(PROFILES),
        metadata={"description": "de-identification: limited (ISO dates, identifiers dropped) "
                  "or safe_harbor (dates shifted per participant, ages 90+, free text "
                  "scrubbed or dropped, quasi-identifiers dropped; not for cdisc)"},
    )


@blp.route("/<code>/exports/<fmt>.zip")
class Export(MethodView):
    @blp.arguments(ExportArgs, location="query")
    @blp.response(200, description="ZIP archive of the export files")
    def get(self, args: dict[str, Any], code: str, fmt: str) -> Response:
        """Download an export (csv, xpt, odm, fhir, or cdisc: the SDTM + ADaM package);
        de-identified by ``profile``; blinded unless you may see arms."""
        profile = args["profile"]
        formats = (*exports.FORMATS, "cdisc")
        if fmt not in formats:
            raise NotFound(f"unknown export format {fmt}; one of {', '.join(formats)}")
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        if fmt == "cdisc":
            files, _, blinded = cdisc_package.build_cdisc_package(db.session, actor, trial,
                                                                 profile)
        else:
            files, blinded = exports.export_trial_files(db.session, actor, trial, [fmt],
                                                        profile)
        response = Response(exports.zip_files(files), mimetype="application/zip")
        suffix = ("blinded" if blinded else "unblinded") + (
            "" if profile == "limited" else f"-{profile.replace('_', '-')}")
        response.headers["Content-Disposition"] = (
            f'attachment; filename="{code.lower()}-{fmt}-{suffix}.zip"'
        )
        return response
