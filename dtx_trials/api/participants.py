"""Participants: screening, consent, eligibility, enrollment, withdrawal, visits,
randomization (role-shaped), emergency unblinding; allocation lists for unblinded roles."""

from __future__ import annotations

from typing import Any

from flask import Response, g, request
from flask.views import MethodView
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from dtx_trials.api.blinding import (
    AllocationReceiptSchema,
    UnblindedAllocationSchema,
    allocation_schema,
    shaped,
)
from dtx_trials.api.context import current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.paging import ListArgs, page_headers
from dtx_trials.api.schemas import Blueprint, StrictSchema, version_ref, version_refs
from dtx_trials.extensions import db
from dtx_trials.models import Participant, Site, User, Visit
from dtx_trials.services import listing, notifications, randomization, trials
from dtx_trials.services import participants as service

blp = Blueprint(
    "participants",
    __name__,
    url_prefix="/api/v1/trials",
    description="Participants, randomization and unblinding",
)


class ParticipantSchema(Schema):
    subject_code = fields.String()
    site = fields.Method("site_code")
    status = fields.String()
    screened_at = fields.DateTime()
    consented_at = fields.DateTime(allow_none=True)
    enrolled_at = fields.DateTime(allow_none=True)
    randomized_at = fields.DateTime(allow_none=True)
    withdrawn_at = fields.DateTime(allow_none=True)
    withdrawal_reason = fields.String(allow_none=True)
    is_emergency_unblinded = fields.Boolean()
    missing_consents = fields.Method(
        "consents_due",
        metadata={
            "description": "consent documents (current versions) still "
            "to be signed: non-empty after a consent amendment means "
            "re-consent is required"
        },
    )

    protocol_version = fields.Method(
        "_protocol_version",
        metadata={"description": "the version the participant's new forms follow"},
    )
    amendment_pending = fields.Method(
        "_amendment_pending",
        metadata={"description": "the active version the participant has not moved to yet: "
                  "{version_no, version, transition, missing_consents}; null when none"},
    )

    def _protocol_version(self, obj: Participant) -> dict[str, Any] | None:
        known: dict[int | None, dict[str, Any] | None] | None = g.get("version_refs")
        if known is not None and obj.protocol_version_id in known:
            return known[obj.protocol_version_id]  # read for the whole list page at once
        return version_ref(obj.protocol_version_id)

    def _amendment_pending(self, obj: Participant) -> dict[str, Any] | None:
        on_active: set[int] | None = g.get("on_active_version")
        if on_active is not None and obj.id in on_active:
            return None  # nothing to move to: no statement per row of a list page
        return service.waiting_for(db.session, obj)

    def consents_due(self, obj: Participant) -> list[str]:
        known: dict[int, list[str]] = g.get("missing_consents") or {}
        if obj.id in known:
            return known[obj.id]  # read for the whole list page at once
        return service.missing_consents(db.session, obj, service.current_protocol(db.session, obj))

    def site_code(self, obj: Participant) -> str:
        known: dict[int, str] = g.get("site_codes") or {}
        if obj.site_id in known:
            return known[obj.site_id]
        site = db.session.get(Site, obj.site_id)
        return site.code if site else ""


class IdentifiersSchema(StrictSchema):
    full_name = fields.String(allow_none=True, validate=validate.Length(max=200))
    phone = fields.String(allow_none=True, validate=validate.Length(max=40))
    email = fields.Email(allow_none=True)
    national_id = fields.String(allow_none=True, validate=validate.Length(max=40))
    address = fields.String(allow_none=True, validate=validate.Length(max=400))
    representative_phone = fields.String(
        allow_none=True, validate=validate.Length(max=40),
        metadata={"description": "the guardian's or legally authorized representative's"})
    representative_email = fields.Email(allow_none=True)


class IdentifiersChangeSchema(IdentifiersSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class ScreenSchema(StrictSchema):
    site = fields.String(required=True)
    identifiers = fields.Nested(IdentifiersSchema, load_default=dict)


class ConsentSchema(StrictSchema):
    document_id = fields.String(required=True, validate=validate.Length(min=1, max=60))
    version = fields.String(required=True, validate=validate.Length(min=1, max=40))
    language = fields.String(load_default="en", validate=validate.Length(max=10))
    signer_role = fields.String(
        load_default="participant",
        validate=validate.OneOf(
            ["participant", "guardian", "legally_authorized_representative", "witness"]
        ),
    )
    signer_name = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=200)
    )
    signer_phone = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=40),
        metadata={"description": "the guardian's or representative's phone (encrypted)"},
    )


class ConsentOutSchema(Schema):
    id = fields.Integer()
    document_id = fields.String()
    consent_version = fields.String()
    language = fields.String()
    signer_role = fields.String()
    signed_at = fields.DateTime()


class ConsentListSchema(ConsentOutSchema):
    method = fields.String()
    pdf_sha256 = fields.String(allow_none=True)
    countersigned_at = fields.DateTime(allow_none=True)
    withdrawn_at = fields.DateTime(allow_none=True)


class CriterionOutSchema(Schema):
    id = fields.String()
    kind = fields.String()
    text = fields.Function(lambda c: c.text.en)
    text_zh = fields.Function(lambda c: c.text.zh)


class EligibilitySchema(Schema):
    eligible = fields.Boolean(attribute="is_eligible")
    failed = fields.List(fields.Nested(CriterionOutSchema))
    undetermined = fields.List(fields.Nested(CriterionOutSchema))


class WithdrawSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class VisitSchema(Schema):
    id = fields.Integer()
    visit_code = fields.String()
    occurrence = fields.Integer()
    is_unscheduled = fields.Boolean()
    planned_on = fields.Date(allow_none=True)
    window_start_on = fields.Date(allow_none=True)
    window_end_on = fields.Date(allow_none=True)
    actual_on = fields.Date(allow_none=True, metadata={"description": "site-local date"})
    actual_at = fields.DateTime(allow_none=True, metadata={"description": "UTC, when timed"})
    status = fields.String()
    missed_reason = fields.String(allow_none=True)


class RandomizeSchema(StrictSchema):
    request_id = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(randomization.REQUEST_ID_PATTERN),
    )


class UnblindSchema(StrictSchema):
    password = fields.String(required=True, load_only=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    category = fields.String(
        required=True,
        validate=validate.OneOf(
            ["serious_adverse_event", "medical_emergency", "regulatory", "other"]
        ),
    )
    recipient = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class UnblindingOutSchema(Schema):
    subject_code = fields.String()
    randomization_number = fields.String()
    arm_code = fields.String()
    arm_name = fields.String()
    signed_by = fields.String()
    at = fields.DateTime()


class UnblindingEventSchema(Schema):
    at = fields.DateTime()
    actor_name = fields.String()
    subject_code = fields.String()
    reason = fields.String()
    category = fields.String()
    recipient = fields.String()


class NotificationSchema(Schema):
    """A message of the outbox and its delivery status; never its text or address."""

    id = fields.Integer()
    kind = fields.String()
    channel = fields.String()
    recipient = fields.Method("recipient_name")
    recipient_role = fields.String(allow_none=True)
    entity_type = fields.String(allow_none=True)
    entity_id = fields.Integer(allow_none=True)
    status = fields.String(metadata={"description": "pending, sent, failed or undeliverable"})
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    next_attempt_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)

    def recipient_name(self, obj: Any) -> str | None:
        user = db.session.get(User, obj.recipient_user_id) if obj.recipient_user_id else None
        return user.printed_name if user else None


class VoidSchema(StrictSchema):
    password = fields.String(required=True, load_only=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class FutureArgsSchema(StrictSchema):
    stratum = fields.String(required=True)
    n = fields.Integer(load_default=20, validate=validate.Range(min=1, max=1000))


def _trial(code: str) -> Any:
    return trials.get_trial(db.session, current_actor(), code)


class ParticipantListArgs(ListArgs):
    site = fields.String(load_default=None)
    status = fields.String(load_default=None, validate=validate.OneOf(listing.PARTICIPANT_STATUSES))
    sort = fields.String(
        load_default="subject_code", validate=validate.OneOf(list(listing.PARTICIPANT_SORTS))
    )


@blp.route("/<code>/participants")
class Participants(MethodView):
    @blp.arguments(ParticipantListArgs, location="query")
    @blp.response(200, ParticipantSchema(many=True))
    def get(self, args: dict[str, Any], code: str) -> Any:
        """List participants at the sites I may see, a page at a time (``X-Total-Count`` and
        ``Link`` headers): search by subject code (``q``), filter by site and status, sort."""
        trial = _trial(code)
        active = trial.active_protocol_version_id  # read before the listing ends its transaction
        result = listing.participants_page(
            db.session,
            current_actor(),
            trial,
            search=args["q"],
            site_code=args["site"],
            status=args["status"],
            sort=args["sort"],
            descending=args["dir"] == "desc",
            page=args["page"],
            per_page=args["per_page"],
        )
        participants = [row.participant for row in result.items]
        # what each row shows beyond its own columns, for the page in one query each
        g.site_codes = {row.participant.site_id: row.site_code for row in result.items}
        if participants:
            g.missing_consents = service.missing_consents_of(
                db.session, participants, service.current_protocol(db.session, participants[0])
            )
            g.version_refs = version_refs({p.protocol_version_id for p in participants})
            g.on_active_version = {
                p.id for p in participants
                if p.protocol_version_id in (None, active)
                or p.status not in service.ACTIVE_STATUSES
            }
        return participants, page_headers(result)

    @idempotent
    @blp.arguments(ScreenSchema)
    @blp.response(201, ParticipantSchema)
    def post(self, body: dict[str, Any], code: str) -> Participant:
        """Screen a new participant at a site (direct identifiers are encrypted at rest)."""
        return service.screen_participant(
            db.session, current_actor(), _trial(code), body["site"], body["identifiers"]
        )


@blp.route("/<code>/participants/<subject>")
class ParticipantItem(MethodView):
    @blp.response(200, ParticipantSchema)
    def get(self, code: str, subject: str) -> Participant:
        """Get one participant (pseudonymous: no identifiers)."""
        return service.get_participant(db.session, current_actor(), _trial(code), subject)


@blp.route("/<code>/participants/<subject>/identifiers")
class Identifiers(MethodView):
    @blp.response(200, IdentifiersSchema)
    def get(self, code: str, subject: str) -> dict[str, Any]:
        """Reveal the participant's direct identifiers to site staff (audited)."""
        return service.reveal_identifiers(db.session, current_actor(), _trial(code), subject)

    @blp.arguments(IdentifiersChangeSchema)
    @blp.response(200, ParticipantSchema)
    def patch(self, body: dict[str, Any], code: str, subject: str) -> Participant:
        """Change the identifiers named (a blank clears one), with a reason (audited, the
        values sealed); the answer is the participant, pseudonymous."""
        reason = body.pop("reason")
        return service.change_identifiers(
            db.session, current_actor(), _trial(code), subject, body, reason
        )


@blp.route("/<code>/participants/<subject>/consents")
class Consents(MethodView):
    @idempotent
    @blp.arguments(ConsentSchema)
    @blp.response(201, ConsentOutSchema)
    def post(self, body: dict[str, Any], code: str, subject: str) -> Any:
        """Record a signed consent document version."""
        return service.record_consent(db.session, current_actor(), _trial(code), subject, **body)

    @blp.response(200, ConsentListSchema(many=True))
    def get(self, code: str, subject: str) -> Any:
        """The participant's signed consents, oldest first (a remote one counts once
        countersigned); no signer names."""
        return service.list_consents(db.session, current_actor(), _trial(code), subject)


@blp.route("/<code>/participants/<subject>/eligibility")
class Eligibility(MethodView):
    @blp.response(200, EligibilitySchema)
    def post(self, code: str, subject: str) -> Any:
        """Assess eligibility over the submitted screening forms."""
        return service.assess_eligibility(db.session, current_actor(), _trial(code), subject)


@blp.route("/<code>/participants/<subject>/enrollment")
class Enrollment(MethodView):
    @idempotent
    @blp.response(200, ParticipantSchema)
    def post(self, code: str, subject: str) -> Participant:
        """Enroll an eligible, consented participant."""
        return service.enroll_participant(db.session, current_actor(), _trial(code), subject)


@blp.route("/<code>/participants/<subject>/withdrawal")
class Withdrawal(MethodView):
    @idempotent
    @blp.arguments(WithdrawSchema)
    @blp.response(200, ParticipantSchema)
    def post(self, body: dict[str, Any], code: str, subject: str) -> Participant:
        """Withdraw a participant (a reason is required)."""
        return service.withdraw_participant(
            db.session, current_actor(), _trial(code), subject, body["reason"]
        )


@blp.route("/<code>/participants/<subject>/visits")
class Visits(MethodView):
    @blp.response(200, VisitSchema(many=True))
    def get(self, code: str, subject: str) -> list[Visit]:
        """The participant's visits with planned dates and windows."""
        participant = service.get_participant(db.session, current_actor(), _trial(code), subject)
        return list(
            db.session.scalars(
                select(Visit)
                .where(Visit.participant_id == participant.id)
                .order_by(Visit.planned_on, Visit.id)
            )
        )


@blp.route("/<code>/participants/<subject>/randomization")
class Randomization(MethodView):
    @idempotent
    @blp.arguments(RandomizeSchema)
    @blp.response(201, AllocationReceiptSchema)
    @blp.alt_response(
        200,
        schema=AllocationReceiptSchema,
        description="retry with the same request_id: the original allocation",
    )
    @blp.alt_response(
        201,
        schema=UnblindedAllocationSchema,
        success=True,
        description="shape for roles that may see arms",
    )
    def post(self, body: dict[str, Any], code: str, subject: str) -> Response:
        """Randomize an enrolled participant (blinded roles receive no arm)."""
        actor, trial = current_actor(), _trial(code)
        # the shape is chosen before the allocation: the response is built under the trial's
        # lock (the request commits last), so nothing is left to look up there
        schema = allocation_schema(actor, trial)
        allocation, created = randomization.randomize_participant(
            db.session, actor, trial, subject, request_id=body["request_id"]
        )
        return shaped(actor, trial, allocation, 201 if created else 200, schema=schema)

    @blp.response(200, AllocationReceiptSchema)
    def get(self, code: str, subject: str) -> Response:
        """The participant's allocation, shaped by role."""
        actor, trial = current_actor(), _trial(code)
        return shaped(actor, trial, randomization.get_allocation(db.session, actor, trial, subject))


@blp.route("/<code>/participants/<subject>/unblinding")
class Unblinding(MethodView):
    @idempotent
    @blp.arguments(UnblindSchema)
    @blp.response(200, UnblindingOutSchema)
    def post(self, body: dict[str, Any], code: str, subject: str) -> dict[str, Any]:
        """Emergency unblinding of one participant (investigator; password, reason, audited)."""
        result = randomization.emergency_unblind(
            db.session, current_actor(), _trial(code), subject, **body
        )
        return {
            "subject_code": subject,
            "randomization_number": result.allocation.randomization_number,
            "arm_code": result.arm_code,
            "arm_name": result.arm_name,
            "signed_by": result.signed_by,
            "at": result.at,
        }


@blp.route("/<code>/participants/<subject>/randomization/void")
class Void(MethodView):
    @idempotent
    @blp.arguments(VoidSchema)
    @blp.response(200, AllocationReceiptSchema)
    def post(self, body: dict[str, Any], code: str, subject: str) -> Response:
        """Mark an allocation "randomized in error" (sponsor admin; the slot is never reused)."""
        actor, trial = current_actor(), _trial(code)
        allocation = randomization.void_allocation(db.session, actor, trial, subject, **body)
        return shaped(actor, trial, allocation)


@blp.route("/<code>/unblindings")
class Unblindings(MethodView):
    @blp.response(200, UnblindingEventSchema(many=True))
    def get(self, code: str) -> list[dict[str, Any]]:
        """Emergency unblinding events (who, when, why) — never the arm."""
        return randomization.list_unblindings(db.session, current_actor(), _trial(code))


@blp.route("/<code>/notifications")
class Notifications(MethodView):
    @blp.response(200, NotificationSchema(many=True))
    def get(self, code: str) -> list[Any]:
        """Notifications of the trial and their delivery status (sponsor admin, auditor)."""
        actor = current_actor()
        return notifications.list_notifications(db.session, actor, _trial(code))


@blp.route("/<code>/allocations")
class Allocations(MethodView):
    @blp.response(200, UnblindedAllocationSchema(many=True))
    def get(self, code: str) -> list[dict[str, Any]]:
        """The full allocation list with arms (unblinded statistician; audited)."""
        actor, trial = current_actor(), _trial(code)
        rows = randomization.list_allocations(db.session, actor, trial)
        codes = dict(
            db.session.execute(
                select(Participant.id, Participant.subject_code).where(
                    Participant.trial_id == trial.id
                )
            ).all()
        )
        names = [n for n in UnblindedAllocationSchema().fields if n != "subject_code"]
        return [
            {**{n: getattr(a, n) for n in names}, "subject_code": codes.get(a.participant_id)}
            for a in rows
        ]


@blp.route("/<code>/allocations/future")
class FutureSlots(MethodView):
    @blp.arguments(FutureArgsSchema, location="query")
    @blp.response(
        200,
        Schema.from_dict(
            {"stratum": fields.String(), "arms": fields.List(fields.String())}, name="FutureSlots"
        ),
    )
    def get(self, args: dict[str, Any], code: str) -> dict[str, Any]:
        """The next n arms of a stratum, without consuming them (unblinded statistician)."""
        arms = randomization.next_slots(
            db.session, current_actor(), _trial(code), args["stratum"], args["n"]
        )
        return {"stratum": args["stratum"], "arms": arms}


@blp.route("/<code>/allocation-list")
class AllocationList(MethodView):
    @idempotent
    @blp.doc(
        requestBody={
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "CSV with columns stratum,arm[,randomization_number]",
        }
    )
    @blp.response(201, Schema.from_dict({"slots": fields.Integer()}, name="ListUpload"))
    def post(self, code: str) -> dict[str, int]:
        """Upload the allocation table for method `list` (before the first allocation)."""
        text = request.get_data(as_text=True)
        return {
            "slots": randomization.upload_allocation_list(
                db.session, current_actor(), _trial(code), text
            )
        }
