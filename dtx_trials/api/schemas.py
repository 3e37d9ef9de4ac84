"""Marshmallow schemas for the REST API (request bodies in, response shapes out)."""

from __future__ import annotations

from typing import Any, ClassVar

import flask_smorest
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from webargs.flaskparser import FlaskParser

from dtx_trials.models.users import Role
from protocols.countries import alpha3
from protocols.validation import is_iana_timezone

# Every integer column of ours is a 32-bit INTEGER (ids, versions, counts): a request integer
# outside that range can name no row and fit no column, so it is refused where it is read.
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class StrictSchema(Schema):
    """A request body or query: unknown keys are an error (422 with the field path), and every
    integer field fits the 32-bit columns it is compared with or stored in."""

    @validates_schema
    def _integers_fit_their_columns(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors = {
            name: [f"must be between {INT32_MIN} and {INT32_MAX}"]
            for name, field in self.load_fields.items()
            if isinstance(field, fields.Integer)
            and isinstance(data.get(field.attribute or name), int)
            and not INT32_MIN <= data[field.attribute or name] <= INT32_MAX
        }
        if errors:
            raise ValidationError(errors)


class StrictParser(FlaskParser):  # type: ignore[misc]
    """Arguments as `StrictSchema` says: an unknown query parameter is a 422 naming it, as an
    unknown body key is (webargs leaves query parameters it does not know out), so a
    misspelt filter or page size is refused, not silently ignored."""

    DEFAULT_UNKNOWN_BY_LOCATION: ClassVar[dict[str, str | None]] = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": RAISE,
        "querystring": RAISE,
    }


class Blueprint(flask_smorest.Blueprint):  # type: ignore[misc]
    """The API's blueprints: their arguments parsed by `StrictParser`."""

    ARGUMENTS_PARSER = StrictParser()


class TokenRequestSchema(StrictSchema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=80))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=128))
    name = fields.String(load_default="api", validate=validate.Length(max=100))
    hours = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1, max=24 * 90)
    )


class TokenSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    created_at = fields.DateTime()
    expires_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)


class IssuedTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "shown once; store it safely"})


class GrantSchema(Schema):
    trial_id = fields.Integer()
    site_id = fields.Integer(allow_none=True)
    role = fields.String()


class MeSchema(Schema):
    id = fields.Integer(attribute="user_id")
    username = fields.String()
    printed_name = fields.String()
    is_superuser = fields.Boolean()
    grants = fields.List(fields.Nested(GrantSchema))


class TrialCreateSchema(StrictSchema):
    code = fields.String(
        required=True, validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
    )
    title = fields.String(required=True, validate=validate.Length(min=1, max=300))


class TrialSchema(Schema):
    id = fields.Integer()
    code = fields.String()
    title = fields.String()
    status = fields.String()
    blinding = fields.String()
    active_protocol_version_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()


def _iana_timezone(value: str) -> None:
    if not is_iana_timezone(value):
        raise ValidationError("not an IANA time zone name (e.g. Asia/Shanghai)")


def _iso_country(value: str) -> None:
    if alpha3(value) is None:
        raise ValidationError("not an ISO 3166-1 alpha-2 country code (e.g. CN, HK, US)")


class SiteCreateSchema(StrictSchema):
    code = fields.String(
        required=True, validate=validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
    )
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    name_zh = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    country = fields.String(load_default=None, allow_none=True, validate=_iso_country)
    timezone = fields.String(
        load_default="UTC",
        validate=[validate.Length(max=60), _iana_timezone],
        metadata={"description": "IANA time zone name, e.g. Asia/Shanghai"},
    )


class SiteUpdateSchema(StrictSchema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    name_zh = fields.String(allow_none=True, validate=validate.Length(max=200))
    country = fields.String(allow_none=True, validate=_iso_country)
    timezone = fields.String(validate=[validate.Length(max=60), _iana_timezone])
    is_active = fields.Boolean()
    reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))


class SiteSchema(Schema):
    id = fields.Integer()
    code = fields.String()
    name = fields.String()
    name_zh = fields.String(allow_none=True)
    country = fields.String(allow_none=True)
    timezone = fields.String()
    is_active = fields.Boolean()


class UserCreateSchema(StrictSchema):
    username = fields.String(required=True, validate=validate.Length(min=2, max=80))
    printed_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(
        required=True,
        validate=validate.Length(max=200),
        metadata={"description": "the one-time activation link goes here; the user chooses "
                  "the password (administrators never know it)"},
    )


class AccountActivationSchema(StrictSchema):
    token = fields.String(required=True, load_only=True, validate=validate.Length(max=200))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=128))


class UserSchema(Schema):
    id = fields.Integer()
    username = fields.String()
    printed_name = fields.String()
    email = fields.String(allow_none=True)
    is_active = fields.Boolean()
    created_at = fields.DateTime()


class MembershipCreateSchema(StrictSchema):
    user_id = fields.Integer(required=True)
    role = fields.String(required=True, validate=validate.OneOf([r.value for r in Role]))
    site = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "site code; required for site-bound roles"},
    )


class MembershipSchema(Schema):
    id = fields.Integer()
    user_id = fields.Integer()
    site_id = fields.Integer(allow_none=True)
    role = fields.String()
    is_active = fields.Boolean()
    is_pending_approval = fields.Function(
        lambda m: m.pending_since is not None,
        metadata={"description": "waiting for a second administrator (two-person rule)"},
    )
    requested_by_id = fields.Integer(allow_none=True)
    approved_by_id = fields.Integer(allow_none=True)
    approved_at = fields.DateTime(allow_none=True)


class PageArgsSchema(StrictSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class AuditExportQuerySchema(Schema):
    subject = fields.String(validate=validate.Length(min=1, max=32))
    record_id = fields.Integer(validate=validate.Range(min=1, max=2**63 - 1))


class AuditQuerySchema(PageArgsSchema):
    entity_type = fields.String(load_default=None)
    entity_id = fields.Integer(load_default=None)
    action = fields.String(load_default=None)
    actor_id = fields.Integer(load_default=None)
    since = fields.DateTime(load_default=None)
    until = fields.DateTime(load_default=None)


class AuditChangeSchema(Schema):
    field = fields.String()
    old = fields.Raw(allow_none=True)
    new = fields.Raw(allow_none=True)


class AuditEventSchema(Schema):
    id = fields.Integer()
    seq = fields.Integer()
    at = fields.DateTime()
    op = fields.String()
    actor_id = fields.Integer(allow_none=True)
    actor_name = fields.String()
    actor_role = fields.String(allow_none=True)
    action = fields.String()
    entity_type = fields.String()
    entity_id = fields.Integer(allow_none=True)
    site_id = fields.Integer(allow_none=True)
    changes = fields.List(fields.Nested(AuditChangeSchema))
    reason = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    prev_hash = fields.String()
    hash = fields.String()


class AuditPageSchema(Schema):
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()
    items = fields.List(fields.Nested(AuditEventSchema))


class ProblemSchema(Schema):
    kind = fields.String()
    where = fields.String()
    message = fields.String()


class VerifyReportSchema(Schema):
    ok = fields.Boolean()
    chains = fields.Integer()
    events = fields.Integer()
    rows_checked = fields.Integer()
    problems = fields.List(fields.Nested(ProblemSchema))


def version_ref(version_id: int | None) -> dict[str, Any] | None:
    """A protocol version as responses show it: its number and the document's label."""
    if version_id is None:
        return None
    return version_refs({version_id}).get(version_id)


def version_refs(version_ids: set[int | None]) -> dict[int | None, dict[str, Any] | None]:
    """`version_ref` of several versions: those the request's session learnt already, the rest
    in one small query (the version number and the document's ``version`` key, not the
    document). Never cached across requests: a database restored or edited under a running
    process must not be answered from memory."""
    from sqlalchemy import select

    from dtx_trials.extensions import db
    from dtx_trials.models import ProtocolVersion
    from dtx_trials.services.protocols import VERSION_REFS, note_version_ref

    known: dict[int, dict[str, Any]] = db.session.info.get(VERSION_REFS, {})
    found: dict[int | None, dict[str, Any] | None] = {
        v: known.get(v) if v is not None else None for v in version_ids
    }
    wanted = [v for v, ref in found.items() if v is not None and ref is None]
    if wanted:
        for version_id, version_no, version in db.session.execute(
            select(ProtocolVersion.id, ProtocolVersion.version_no,
                   ProtocolVersion.content["version"].as_string())
            .where(ProtocolVersion.id.in_(wanted))
        ):  # fmt: skip
            note_version_ref(db.session, version_id, version_no, version)
            found[version_id] = {"version_no": version_no, "version": version}
    return found
