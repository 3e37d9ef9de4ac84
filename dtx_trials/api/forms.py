"""Form definitions (JSON / FHIR), form records (draft, submit, sign, verify, freeze, lock)
and data queries."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from dtx_trials.api.context import current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.paging import ListArgs, page_headers
from dtx_trials.api.schemas import Blueprint, StrictSchema, version_ref
from dtx_trials.extensions import db
from dtx_trials.models import DataQuery, FormRecord, Signature, Visit
from dtx_trials.services import forms as service
from dtx_trials.services import listing, participants, trials
from dtx_trials.services.errors import NotFound
from dtx_trials.services.protocols import active_protocol
from ecrf.render import form_to_fhir_questionnaire, form_to_json

blp = Blueprint(
    "forms", __name__, url_prefix="/api/v1/trials", description="eCRF forms, records and queries"
)


class SignatureSchema(Schema):
    id = fields.Integer()
    printed_name = fields.String()
    meaning = fields.String()
    signed_at = fields.DateTime()
    record_version = fields.Integer()
    content_sha256 = fields.String()
    status = fields.String()
    invalidated_reason = fields.String(allow_none=True)


class QuerySchema(Schema):
    id = fields.Integer()
    form_record_id = fields.Integer()
    field = fields.String()
    status = fields.String()
    origin = fields.String()
    text = fields.String()
    answer = fields.String(allow_none=True)
    raised_at = fields.DateTime()
    answered_at = fields.DateTime(allow_none=True)
    closed_at = fields.DateTime(allow_none=True)


class RecordSchema(Schema):
    id = fields.Integer()
    form_code = fields.String()
    visit_code = fields.Method("_visit_code")
    repeat_index = fields.Integer()
    status = fields.String()
    version = fields.Integer()
    data = fields.Dict()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    submitted_at = fields.DateTime(allow_none=True)
    protocol_version = fields.Method(
        "_protocol_version",
        metadata={"description": "the protocol version the data was captured under: "
                  "{version_no, version}; data keeps it after an amendment"},
    )
    content_sha256 = fields.Function(
        service.content_sha256,
        metadata={"description": "what a signature of this version covers; show it to a signer"},
    )

    def _protocol_version(self, obj: FormRecord) -> dict[str, Any] | None:
        return version_ref(obj.protocol_version_id)

    def _visit_code(self, obj: FormRecord) -> str | None:
        known: dict[int, str] = g.get("visit_codes") or {}
        if obj.visit_id in known:
            return known[obj.visit_id]  # the visit the request itself saved into
        visit = db.session.get(Visit, obj.visit_id) if obj.visit_id else None
        return visit.visit_code if visit else None


class RecordDetailSchema(RecordSchema):
    signatures = fields.Method("_signatures")
    queries = fields.Method("_queries")

    def _signatures(self, obj: FormRecord) -> list[dict[str, Any]]:
        rows = db.session.scalars(select(Signature).where(Signature.form_record_id == obj.id))
        return SignatureSchema(many=True).dump(list(rows))

    def _queries(self, obj: FormRecord) -> list[dict[str, Any]]:
        rows = db.session.scalars(select(DataQuery).where(DataQuery.form_record_id == obj.id))
        return QuerySchema(many=True).dump(list(rows))


class SaveSchema(StrictSchema):
    values = fields.Dict(keys=fields.String(), required=True)
    submit = fields.Boolean(load_default=False)
    expected_version = fields.Integer(load_default=None, allow_none=True)
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))
    acknowledged = fields.List(fields.String(), load_default=list)
    repeat_index = fields.Integer(load_default=1, validate=validate.Range(min=1, max=10000))
    device_time = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(max=40)
    )


class SaveResultSchema(Schema):
    record = fields.Nested(RecordSchema)
    warnings = fields.List(fields.Dict())
    cleared = fields.List(fields.String())
    derived = fields.Dict()
    queries = fields.List(fields.Nested(QuerySchema))


class SignSchema(StrictSchema):
    password = fields.String(required=True, load_only=True)
    expected_version = fields.Integer(
        required=True,
        metadata={"description": "the record version the signer viewed (409 if it changed)"},
    )
    content_sha256 = fields.String(
        load_default=None,
        validate=validate.Regexp(r"^[0-9a-f]{64}$"),
        data_key="content_sha256",
        attribute="content_sha256_seen",
        metadata={"description": "the content hash shown to the signer (409 if it differs)"},
    )
    meaning = fields.String(
        load_default="responsibility", validate=validate.OneOf(service.SIGNATURE_MEANINGS)
    )


class ReasonSchema(StrictSchema):
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class RaiseQuerySchema(StrictSchema):
    field = fields.String(required=True, validate=validate.Length(min=1, max=120))
    text = fields.String(required=True, validate=validate.Length(min=1, max=4000))


class AnswerSchema(StrictSchema):
    answer = fields.String(required=True, validate=validate.Length(min=1, max=4000))


class NoteSchema(StrictSchema):
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class InboxArgs(ListArgs):
    status = fields.String(
        load_default=None, validate=validate.OneOf(["open", "answered", "closed"])
    )
    site = fields.String(load_default=None)
    age = fields.String(
        load_default=None, validate=validate.OneOf([b[0] for b in listing.AGE_BUCKETS])
    )
    sort = fields.String(
        load_default="raised_at", validate=validate.OneOf(list(listing.QUERY_SORTS))
    )


class InboxItemSchema(QuerySchema):
    subject_code = fields.String()
    form_code = fields.String()


class DefinitionArgs(StrictSchema):
    lang = fields.String(load_default="en", validate=validate.OneOf(["en", "zh"]))
    format = fields.String(load_default="json", validate=validate.OneOf(["json", "fhir"]))


def _trial(code: str) -> Any:
    return trials.get_trial(db.session, current_actor(), code)


@blp.route("/<code>/forms/<form_code>")
class FormDefinition(MethodView):
    @blp.arguments(DefinitionArgs, location="query")
    @blp.response(
        200,
        description="The form description (format=json) or a FHIR R4 Questionnaire (format=fhir)",
    )
    def get(self, args: dict[str, Any], code: str, form_code: str) -> dict[str, Any]:
        """The form description for pages and apps (JSON) or a FHIR R4 Questionnaire."""
        trial = _trial(code)
        version, protocol = active_protocol(db.session, trial)
        try:
            form = protocol.form(form_code)
        except KeyError as exc:
            raise NotFound(f"form {form_code} is not part of the protocol") from exc
        if args["format"] == "fhir":
            return form_to_fhir_questionnaire(
                form, url=f"urn:dtx:{trial.code}:form:{form.id}", version=str(version.version_no)
            )
        return form_to_json(form, args["lang"])


@blp.route("/<code>/participants/<subject>/forms")
class ParticipantForms(MethodView):
    @blp.response(200, RecordSchema(many=True))
    def get(self, code: str, subject: str) -> list[FormRecord]:
        """The participant's form records."""
        participant = participants.get_participant(
            db.session, current_actor(), _trial(code), subject, "form.read"
        )
        return list(
            db.session.scalars(
                select(FormRecord)
                .where(FormRecord.participant_id == participant.id)
                .order_by(FormRecord.id)
            )
        )


@blp.route("/<code>/participants/<subject>/visits/<visit>/forms/<form_code>")
class SaveForm(MethodView):
    @idempotent
    # an instance, not the class: webargs would build a new schema (a deep copy of its fields)
    # for every request of the hottest write path
    @blp.arguments(SaveSchema())
    @blp.response(200, SaveResultSchema)
    def put(
        self, body: dict[str, Any], code: str, subject: str, visit: str, form_code: str
    ) -> dict[str, Any]:
        """Save a draft or submit; 422 with field errors, 409 when `expected_version` is stale."""
        result = service.save_form(
            db.session,
            current_actor(),
            _trial(code),
            subject,
            visit,
            form_code,
            body.pop("values"),
            **body,
        )
        ev = result.evaluation
        if result.visit is not None:
            g.visit_codes = {result.visit.id: result.visit.visit_code}
        return {
            "record": result.record,
            "warnings": [
                {"check": w.check_id, "field": w.field, "message": w.message.en}
                for w in ev.warnings
            ],
            "cleared": list(ev.cleared),
            "derived": ev.derived,
            "queries": list(result.queries),
        }


@blp.route("/<code>/records/<int:record_id>")
class Record(MethodView):
    @blp.response(200, RecordDetailSchema)
    def get(self, code: str, record_id: int) -> FormRecord:
        """A form record with its signatures and queries."""
        return service.get_record(db.session, current_actor(), _trial(code), record_id)[0]


@blp.route("/<code>/records/<int:record_id>/sign")
class Sign(MethodView):
    @idempotent
    @blp.arguments(SignSchema)
    @blp.response(201, SignatureSchema)
    def post(self, body: dict[str, Any], code: str, record_id: int) -> Signature:
        """E-sign a submitted record (investigator; password re-entered)."""
        return service.sign_form(db.session, current_actor(), _trial(code), record_id, **body)


def _status_route(path: str, target: str, doc: str) -> None:
    @blp.route(f"/<code>/records/<int:record_id>/{path}", endpoint=f"record_{path}")
    class StatusChange(MethodView):
        @idempotent
        @blp.arguments(ReasonSchema)
        @blp.response(200, RecordSchema)
        def post(self, body: dict[str, Any], code: str, record_id: int) -> FormRecord:
            return service.set_record_status(
                db.session, current_actor(), _trial(code), record_id, target, body["reason"]
            )

    StatusChange.post.__doc__ = doc


_status_route("verify", "verified", "Mark source data verified (monitor).")
_status_route("freeze", "frozen", "Freeze a record (data manager).")
_status_route("lock", "locked", "Lock a record (data manager).")
_status_route("unlock", "submitted", "Unlock a record with a reason (data manager).")


@blp.route("/<code>/participants/<subject>/lock")
class LockParticipant(MethodView):
    @idempotent
    @blp.response(200, Schema.from_dict({"locked": fields.Integer()}, name="LockedCount"))
    def post(self, code: str, subject: str) -> dict[str, int]:
        """Lock every submitted record of a participant (data manager)."""
        return {
            "locked": service.lock_participant(db.session, current_actor(), _trial(code), subject)
        }


@blp.route("/<code>/records/<int:record_id>/queries")
class RecordQueries(MethodView):
    @idempotent
    @blp.arguments(RaiseQuerySchema)
    @blp.response(201, QuerySchema)
    def post(self, body: dict[str, Any], code: str, record_id: int) -> DataQuery:
        """Raise a query on a field (monitor, data manager)."""
        return service.raise_query(db.session, current_actor(), _trial(code), record_id, **body)


@blp.route("/<code>/queries")
class Inbox(MethodView):
    @blp.arguments(InboxArgs, location="query")
    @blp.response(200, InboxItemSchema(many=True))
    def get(self, args: dict[str, Any], code: str) -> Any:
        """The query inbox for the sites I may see, a page at a time (``X-Total-Count`` and
        ``Link`` headers): filter by status, site and age in days, search by subject code."""
        result = listing.queries_page(
            db.session,
            current_actor(),
            _trial(code),
            status=args["status"],
            site_code=args["site"],
            age=args["age"],
            search=args["q"],
            sort=args["sort"],
            descending=args["dir"] == "desc",
            page=args["page"],
            per_page=args["per_page"],
        )
        names = list(QuerySchema().fields)
        items = [
            {
                **{n: getattr(row.query, n) for n in names},
                "subject_code": row.participant.subject_code,
                "form_code": row.record.form_code,
            }
            for row in result.items
        ]
        return items, page_headers(result)


@blp.route("/<code>/queries/<int:query_id>/answer")
class AnswerQuery(MethodView):
    @idempotent
    @blp.arguments(AnswerSchema)
    @blp.response(200, QuerySchema)
    def post(self, body: dict[str, Any], code: str, query_id: int) -> DataQuery:
        """Answer a query (site staff)."""
        return service.answer_query(
            db.session, current_actor(), _trial(code), query_id, body["answer"]
        )


@blp.route("/<code>/queries/<int:query_id>/close")
class CloseQuery(MethodView):
    @idempotent
    @blp.arguments(NoteSchema)
    @blp.response(200, QuerySchema)
    def post(self, body: dict[str, Any], code: str, query_id: int) -> DataQuery:
        """Close a query (monitor, data manager)."""
        return service.close_query(
            db.session, current_actor(), _trial(code), query_id, note=body["note"]
        )


@blp.route("/<code>/queries/<int:query_id>/reopen")
class ReopenQuery(MethodView):
    @idempotent
    @blp.arguments(NoteSchema)
    @blp.response(200, QuerySchema)
    def post(self, body: dict[str, Any], code: str, query_id: int) -> DataQuery:
        """Reopen a query (monitor, data manager)."""
        return service.close_query(
            db.session, current_actor(), _trial(code), query_id, reopen=True, note=body["note"]
        )
