"""The DTx app's API (``/api/v1/app``): a participant's token, redeemed once from the activation
code, and service tokens from client credentials; and the staff side: service credentials
(sponsor admin), a participant's device data (paged) and ending a participant's app tokens."""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from dtx_trials.api.context import current_actor
from dtx_trials.api.devices import DeviceIngestResultSchema, _records_from_body
from dtx_trials.api.forms import SaveResultSchema
from dtx_trials.api.paging import page_headers
from dtx_trials.api.schemas import Blueprint, StrictSchema
from dtx_trials.extensions import db
from dtx_trials.models import Trial
from dtx_trials.services import apps as service
from dtx_trials.services import devices, trials
from dtx_trials.services.errors import AuthenticationError
from dtx_trials.services.participants import get_participant

blp = Blueprint(
    "dtx_app",
    __name__,
    url_prefix="/api/v1/app",
    description="The DTx app: participant tokens, questionnaires, usage data; service tokens",
)
staff_blp = Blueprint(
    "app_admin",
    __name__,
    url_prefix="/api/v1/trials",
    description="Service credentials of app backends; participants' device data",
)


def principal() -> service.AppPrincipal:
    """The participant or service whose app token authenticated this request."""
    found: service.AppPrincipal | None = g.get("app_principal")
    if found is None:
        raise AuthenticationError("an app token is required (Authorization: Bearer dtxp_… or "
                                  "dtxs_…)")
    return found


# ------------------------------------------------------------------ schemas


class AppActivationSchema(StrictSchema):
    trial = fields.String(required=True, validate=validate.Length(min=1, max=40))
    activation_code = fields.String(required=True, validate=validate.Length(min=1, max=40))


class AppTokenSchema(Schema):
    token = fields.String(metadata={"description": "shown once; send as Authorization: Bearer"})
    token_type = fields.Constant("Bearer")
    expires_at = fields.DateTime()
    subject_code = fields.String()


class AppClientCredentialsSchema(StrictSchema):
    grant_type = fields.String(required=True,
                               validate=validate.OneOf(["client_credentials"]))
    client_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    client_secret = fields.String(required=True, validate=validate.Length(min=1, max=200))
    scope = fields.String(load_default=None, validate=validate.Length(max=40))


class AppServiceTokenSchema(Schema):
    access_token = fields.String()
    token_type = fields.Constant("Bearer")
    expires_in = fields.Integer()
    scope = fields.String()
    trial = fields.String()


class AppArmSchema(Schema):
    code = fields.String()
    name = fields.String()
    name_zh = fields.String()


class AppProfileSchema(Schema):
    trial = fields.String()
    subject_code = fields.String()
    status = fields.String()
    site_timezone = fields.String(allow_none=True)
    protocol_version = fields.String()
    arm = fields.Nested(AppArmSchema, metadata={"description": "open-label trials only"})


class AppLangArgs(StrictSchema):
    lang = fields.String(load_default="en", validate=validate.OneOf(["en", "zh"]))


class AppWindowSchema(Schema):
    visit = fields.String()
    form = fields.String()
    occurrence = fields.Integer(metadata={"description": "the n-th window of a repeating "
                                          "questionnaire (weekly, ...); 1 otherwise"})
    opens_on = fields.Date()
    closes_on = fields.Date()
    status = fields.String(metadata={"description": "upcoming, open, answered or closed"})


class AppQuestionnaireSchema(AppWindowSchema):
    definition = fields.Dict(metadata={"description": "the form as GET /forms/{form} gives it"})


class AppVisitSchema(Schema):
    visit = fields.String()
    label = fields.String()
    label_zh = fields.String(allow_none=True)
    planned_on = fields.Date(allow_none=True)
    window_start_on = fields.Date(allow_none=True)
    window_end_on = fields.Date(allow_none=True)
    actual_on = fields.Date(allow_none=True)
    status = fields.String()


class AppScheduleSchema(Schema):
    today = fields.Date(metadata={"description": "today in the site's calendar"})
    visits = fields.List(fields.Nested(AppVisitSchema))
    questionnaires = fields.List(fields.Nested(AppWindowSchema))


class AppAnswerSchema(StrictSchema):
    values = fields.Dict(keys=fields.String(), required=True)
    submit = fields.Boolean(load_default=False)
    expected_version = fields.Integer(load_default=None, allow_none=True)
    device_time = fields.String(load_default=None, allow_none=True,
                                validate=validate.Length(max=40))


class AppCredentialCreateSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))


class AppCredentialSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    client_id = fields.String()
    scope = fields.String()
    created_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)
    approved_at = fields.DateTime(
        allow_none=True, metadata={"description": "null: waits for a second administrator"})
    approved_by_id = fields.Integer(allow_none=True)


class AppIssuedCredentialSchema(AppCredentialSchema):
    client_secret = fields.String(metadata={"description": "shown once"})


class AppDeviceArgs(StrictSchema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    stream = fields.String(load_default=None, validate=validate.Length(min=1, max=60))


class AppObservationSchema(Schema):
    stream = fields.String()
    time = fields.DateTime(attribute="observed_at")
    value = fields.Float()
    unit = fields.String()
    source = fields.String()
    received_at = fields.DateTime()


class AppRevokedSchema(Schema):
    revoked = fields.Integer()


# ------------------------------------------------------------------ the app


@blp.route("/activation")
class Activation(MethodView):
    @blp.arguments(AppActivationSchema)
    @blp.response(201, AppTokenSchema)
    @blp.doc(security=[])
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Redeem the participant's activation code for an app token (once; 404 for an
        unknown code, 409 once redeemed)."""
        token, text, participant = service.redeem_activation_code(
            db.session, body["trial"], body["activation_code"],
            days=current_app.config["APP_TOKEN_DAYS"], request_id=g.request_id,
        )
        return {"token": text, "expires_at": token.expires_at,
                "subject_code": participant.subject_code}


@blp.route("/token")
class ServiceToken(MethodView):
    @blp.arguments(AppClientCredentialsSchema)
    @blp.response(201, AppServiceTokenSchema)
    @blp.doc(security=[])
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """OAuth 2.0 client-credentials grant for an app vendor's backend: a short-lived token
        scoped to one trial and to device-data write (401 for a wrong id or secret)."""
        minutes = current_app.config["SERVICE_TOKEN_MINUTES"]
        _, text, credential = service.issue_service_token(
            db.session, body["client_id"], body["client_secret"], minutes=minutes,
            scope=body["scope"], request_id=g.request_id,
        )
        trial = db.session.get(Trial, credential.trial_id)
        return {"access_token": text, "expires_in": minutes * 60, "scope": credential.scope,
                "trial": trial.code if trial else None}


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, AppProfileSchema)
    def get(self) -> dict[str, Any]:
        """The participant's own facts (the arm only in an open-label trial)."""
        return service.profile(db.session, principal())


@blp.route("/questionnaires")
class Questionnaires(MethodView):
    @blp.arguments(AppLangArgs, location="query")
    @blp.response(200, AppQuestionnaireSchema(many=True))
    def get(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Today's questionnaires (open in the site's calendar, not answered yet), each with
        its definition for native rendering."""
        return service.today_questionnaires(db.session, principal(), language=args["lang"])


@blp.route("/questionnaires/<visit>/<form_code>")
class Answer(MethodView):
    @blp.arguments(AppAnswerSchema)
    @blp.response(200, SaveResultSchema)
    def put(self, body: dict[str, Any], visit: str, form_code: str) -> Any:
        """Save (draft) or submit answers to a questionnaire open today; a blank submission
        is 422, one outside its window 409."""
        return service.submit_answers(db.session, principal(), visit, form_code, **body)


@blp.route("/schedule")
class Schedule(MethodView):
    @blp.response(200, AppScheduleSchema)
    def get(self) -> dict[str, Any]:
        """The participant's visits and questionnaire windows."""
        return service.own_schedule(db.session, principal())


@blp.route("/device-data")
class AppDeviceData(MethodView):
    @blp.doc(requestBody={"required": True, "content": {
        "application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
        "description": "records {stream, time, value, unit, source} (a participant's token: "
        "its own subject; a service token: each record names its subject)"})
    @blp.response(200, DeviceIngestResultSchema)
    def post(self) -> Any:
        """Upload usage / device observations (idempotent per participant, stream, time and
        source)."""
        return service.upload_usage(db.session, principal(), _records_from_body())


# ------------------------------------------------------------------ staff side


@staff_blp.route("/<code>/service-credentials")
class Credentials(MethodView):
    @staff_blp.response(200, AppCredentialSchema(many=True))
    def get(self, code: str) -> list[Any]:
        """The trial's service credentials (never their secrets)."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        return service.list_credentials(db.session, actor, trial)

    @staff_blp.arguments(AppCredentialCreateSchema)
    @staff_blp.response(201, AppIssuedCredentialSchema)
    def post(self, body: dict[str, Any], code: str) -> dict[str, Any]:
        """Create client credentials for an app vendor's backend (sponsor admin); the secret
        is shown once."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        credential, secret = service.create_credential(db.session, actor, trial, body["name"])
        names = ("id", "name", "client_id", "scope", "created_at", "revoked_at", "approved_at",
                 "approved_by_id")
        return {**{n: getattr(credential, n) for n in names}, "client_secret": secret}


@staff_blp.route("/<code>/service-credentials/<int:credential_id>/approval")
class CredentialApproval(MethodView):
    @staff_blp.response(200, AppCredentialSchema)
    def post(self, code: str, credential_id: int) -> Any:
        """Approve a credential another administrator created (not its creator, nor one
        appointed by them or who appointed them); until then it gets no token."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        return service.approve_credential(db.session, actor, trial, credential_id)


@staff_blp.route("/<code>/service-credentials/<int:credential_id>")
class CredentialItem(MethodView):
    @staff_blp.response(200, AppCredentialSchema)
    def delete(self, code: str, credential_id: int) -> Any:
        """Revoke a credential and its tokens."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        return service.revoke_credential(db.session, actor, trial, credential_id)


@staff_blp.route("/<code>/participants/<subject>/app-tokens")
class ParticipantAppTokens(MethodView):
    @staff_blp.response(200, AppRevokedSchema)
    def delete(self, code: str, subject: str) -> dict[str, int]:
        """End the participant's app tokens (a lost phone); the activation code stays spent."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        return {"revoked": service.revoke_participant_tokens(db.session, actor, trial, subject)}


@staff_blp.route("/<code>/participants/<subject>/device-data")
class ParticipantDeviceData(MethodView):
    @staff_blp.arguments(AppDeviceArgs, location="query")
    @staff_blp.response(200, AppObservationSchema(many=True))
    def get(self, args: dict[str, Any], code: str, subject: str) -> Any:
        """The participant's device observations, oldest first, a page at a time (monitor,
        data manager, site staff of the participant's site)."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code)
        participant = get_participant(db.session, actor, trial, subject, "device.read")
        result = devices.observations_page(
            db.session, participant, page=args["page"], per_page=args["per_page"],
            stream=args["stream"],
        )
        return result.items, 200, page_headers(result)
