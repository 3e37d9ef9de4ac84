"""Audit trail (auditors): paginated, filterable, read-only; integrity verification."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Response
from flask.views import MethodView
from sqlalchemy import func, select

from dtx_trials.api.context import current_actor
from dtx_trials.api.schemas import (
    AuditExportQuerySchema,
    AuditPageSchema,
    AuditQuerySchema,
    Blueprint,
    VerifyReportSchema,
)
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent
from dtx_trials.services import audit, trail_export, trials
from dtx_trials.services.audit import VerifyReport
from dtx_trials.services.integrity import check_integrity

blp = Blueprint("audit", __name__, url_prefix="/api/v1/trials", description="Audit trail")


@blp.route("/<code>/audit")
class AuditTrail(MethodView):
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditPageSchema)
    def get(self, args: dict[str, Any], code: str) -> dict[str, Any]:
        """Page through the trial's audit trail in chain order (auditor)."""
        trial = trials.get_trial(db.session, current_actor(), code, "audit.read")
        chain = audit.chain_for(trial.id)
        unfiltered = select(AuditEvent).where(AuditEvent.chain == chain)
        stmt = unfiltered
        for name in ("entity_type", "entity_id", "action", "actor_id"):
            if args.get(name) is not None:
                stmt = stmt.where(getattr(AuditEvent, name) == args[name])
        if args.get("since"):
            stmt = stmt.where(AuditEvent.at >= _as_utc(args["since"]))
        if args.get("until"):
            stmt = stmt.where(AuditEvent.at < _as_utc(args["until"]))
        total = (
            audit.n_events(db.session, chain)
            if stmt is unfiltered
            else db.session.scalar(select(func.count()).select_from(stmt.subquery()))
        )
        page, per_page = args["page"], args["per_page"]
        items = db.session.scalars(
            stmt.order_by(AuditEvent.seq).offset((page - 1) * per_page).limit(per_page)
        )
        return {"page": page, "per_page": per_page, "total": total, "items": list(items)}


@blp.route("/<code>/audit/export.<fmt>")
class AuditExport(MethodView):
    @blp.arguments(AuditExportQuerySchema, location="query")
    @blp.response(200, description="CSV or PDF of the trail (who, when, what, old → new, why)")
    def get(self, args: dict[str, Any], code: str, fmt: str) -> Response:
        """Export the trail of the trial, a participant or a form record (auditor; audited)."""
        trial = trials.get_trial(db.session, current_actor(), code, "audit.read")
        name, content = trail_export.export_trail(
            db.session,
            current_actor(),
            trial,
            fmt,
            subject=args.get("subject"),
            record_id=args.get("record_id"),
        )
        mimetype = "text/csv" if fmt == "csv" else "application/pdf"
        return Response(
            content,
            mimetype=mimetype,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )


@blp.route("/<code>/audit/verify")
class AuditVerify(MethodView):
    @blp.response(200, VerifyReportSchema)
    def get(self, code: str) -> VerifyReport:
        """Recompute the trial's hash chain and compare the data with the trail (auditor)."""
        trial = trials.get_trial(db.session, current_actor(), code, "audit.read")
        return check_integrity(db.session, trial.id)


def _as_utc(moment: datetime) -> datetime:
    """Read a timestamp without an offset as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
