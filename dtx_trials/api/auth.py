"""Bearer tokens: issue (username + password), list, revoke; and who am I."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView
from sqlalchemy import select

from dtx_trials.api.context import account_policy, current_actor
from dtx_trials.api.schemas import (
    AccountActivationSchema,
    Blueprint,
    IssuedTokenSchema,
    MeSchema,
    TokenRequestSchema,
    TokenSchema,
)
from dtx_trials.extensions import db
from dtx_trials.models import ApiToken
from dtx_trials.services import accounts
from dtx_trials.services.access import Actor

blp = Blueprint("auth", __name__, url_prefix="/api/v1", description="Authentication")


@blp.route("/auth/tokens")
class Tokens(MethodView):
    @blp.arguments(TokenRequestSchema)
    @blp.response(201, IssuedTokenSchema)
    @blp.doc(security=[])
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Exchange a username and password for a bearer token (shown once)."""
        policy = account_policy()
        user = accounts.authenticate(
            db.session, body["username"], body["password"], policy=policy, request_id=g.request_id
        )
        token, text = accounts.issue_token(
            db.session,
            user,
            name=body["name"],
            hours=body["hours"],
            policy=policy,
            request_id=g.request_id,
        )
        fields = ("id", "name", "created_at", "expires_at", "revoked_at")
        return {**{name: getattr(token, name) for name in fields}, "token": text}

    @blp.response(200, TokenSchema(many=True))
    def get(self) -> list[ApiToken]:
        """List my tokens (never their values)."""
        actor = current_actor()
        return list(
            db.session.scalars(
                select(ApiToken).where(ApiToken.user_id == actor.user_id).order_by(ApiToken.id)
            )
        )


@blp.route("/auth/activation")
class Activation(MethodView):
    @blp.arguments(AccountActivationSchema)
    @blp.response(204)
    @blp.doc(security=[])
    def post(self, body: dict[str, Any]) -> None:
        """Choose the password of a new account with the token of its e-mailed activation link
        (once; 404 when unknown, used or expired). Then sign in with POST /auth/tokens."""
        accounts.activate_account(
            db.session, body["token"], body["password"], policy=account_policy()
        )


@blp.route("/auth/tokens/<int:token_id>")
class TokenItem(MethodView):
    @blp.response(204)
    def delete(self, token_id: int) -> None:
        """Revoke one of my tokens."""
        accounts.revoke_token(db.session, current_actor(), token_id)


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, MeSchema)
    def get(self) -> Actor:
        """Return the authenticated user and their role grants."""
        return current_actor()
