"""Remote eConsent (site side): send a signer a personal link, countersign, read the PDF."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from dtx_trials.api.context import current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.schemas import Blueprint, StrictSchema
from dtx_trials.extensions import db
from dtx_trials.models import Consent
from dtx_trials.services import econsent, trials

blp = Blueprint(
    "econsent_api",
    __name__,
    url_prefix="/api/v1/trials",
    description="Remote eConsent: links, countersignature, signed PDFs",
)


class InviteSchema(StrictSchema):
    document_id = fields.String(required=True, validate=validate.Length(min=1, max=60))
    version = fields.String(required=True, validate=validate.Length(min=1, max=40))
    language = fields.String(required=True, validate=validate.Length(min=2, max=10))
    channel = fields.String(required=True, validate=validate.OneOf(econsent.CHANNELS))
    address = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(min=3, max=200),
        metadata={"description": "the signer's phone or e-mail: the one on the participant's "
                  "record (the participant's, or the representative's), recorded when none is; "
                  "another is a 422"},
    )
    expires_in_hours = fields.Integer(
        load_default=econsent.DEFAULT_HOURS,
        validate=validate.Range(min=1, max=econsent.MAX_HOURS),
    )


class InvitationSchema(Schema):
    id = fields.Integer(attribute="invitation.id")
    url = fields.String(metadata={"description": "shown once; the signer's personal link"})
    delivered_to = fields.String()
    signer_role = fields.String(attribute="invitation.signer_role")
    expires_at = fields.DateTime(attribute="invitation.expires_at")


class CountersignSchema(StrictSchema):
    password = fields.String(required=True, load_only=True)


class ConsentDetailSchema(Schema):
    id = fields.Integer()
    document_id = fields.String()
    consent_version = fields.String()
    language = fields.String()
    signer_role = fields.String()
    method = fields.String()
    signed_at = fields.DateTime()
    pdf_sha256 = fields.String(allow_none=True)
    countersigned_at = fields.DateTime(allow_none=True)


def _trial(code: str) -> Any:
    return trials.get_trial(db.session, current_actor(), code)


@blp.route("/<code>/participants/<subject>/econsent")
class Invite(MethodView):
    @idempotent
    @blp.arguments(InviteSchema)
    @blp.response(201, InvitationSchema)
    def post(self, body: dict[str, Any], code: str, subject: str) -> dict[str, Any]:
        """Send the signer (participant, guardian or representative, as the document says) a
        personal link to read and sign a consent document; the link goes through the outbox."""
        base = request.host_url.rstrip("/") + "/econsent"
        issued = econsent.issue_invitation(
            db.session, current_actor(), _trial(code), subject, link_base=base, **body
        )
        return {
            "invitation": issued.invitation,
            "url": f"{base}/{issued.token}",
            "delivered_to": issued.delivered_to,
        }


@blp.route("/<code>/participants/<subject>/consents/<int:consent_id>/countersign")
class Countersign(MethodView):
    @idempotent
    @blp.arguments(CountersignSchema)
    @blp.response(200, ConsentDetailSchema)
    def post(self, body: dict[str, Any], code: str, subject: str, consent_id: int) -> Consent:
        """Countersign a remote consent (investigator; password re-entered); it then counts."""
        return econsent.countersign_consent(
            db.session, current_actor(), _trial(code), subject, consent_id, body["password"]
        )


@blp.route("/<code>/participants/<subject>/consents/<int:consent_id>/consent.pdf")
class ConsentPdf(MethodView):
    @blp.response(200, description="The signed consent (PDF); its SHA-256 in X-Content-SHA256")
    def get(self, code: str, subject: str, consent_id: int) -> Response:
        """The PDF of a remotely signed consent (site staff; audited)."""
        pdf, sha = econsent.consent_pdf(
            db.session, current_actor(), _trial(code), subject, consent_id
        )
        response = Response(pdf, mimetype="application/pdf")
        response.headers["Content-Disposition"] = f'attachment; filename="consent-{consent_id}.pdf"'
        response.headers["X-Content-SHA256"] = sha
        return response
