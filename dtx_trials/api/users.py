"""User accounts (administrators)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import select

from dtx_trials.api.context import account_policy, current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.schemas import Blueprint, UserCreateSchema, UserSchema
from dtx_trials.extensions import db
from dtx_trials.models import Membership, User
from dtx_trials.models.users import Role
from dtx_trials.services import accounts
from dtx_trials.services.access import Actor
from dtx_trials.services.errors import NotFound, PermissionDenied
from dtx_trials.web.pages import activation_link

blp = Blueprint("users", __name__, url_prefix="/api/v1/users", description="User accounts")


def _require_admin(actor: Actor) -> None:
    if not (actor.is_superuser or any(g.role == Role.SPONSOR_ADMIN for g in actor.grants)):
        raise PermissionDenied("only administrators manage accounts")


@blp.route("")
class Users(MethodView):
    @blp.response(200, UserSchema(many=True))
    def get(self) -> list[User]:
        """List accounts: all (superuser) or those holding roles in my trials (sponsor admin)."""
        actor = current_actor()
        _require_admin(actor)
        stmt = select(User).order_by(User.username)
        if not actor.is_superuser:
            trial_ids = {g.trial_id for g in actor.grants if g.role == Role.SPONSOR_ADMIN}
            stmt = stmt.where(
                User.id.in_(select(Membership.user_id).where(Membership.trial_id.in_(trial_ids)))
            )
        return list(db.session.scalars(stmt))

    @idempotent
    @blp.arguments(UserCreateSchema)
    @blp.response(201, UserSchema)
    def post(self, body: dict[str, Any]) -> User:
        """Create an account (superuser or sponsor admin); grant roles with memberships."""
        actor = current_actor()
        _require_admin(actor)
        return accounts.create_user(
            db.session, actor, policy=account_policy(), activation_link=activation_link, **body
        )


@blp.route("/<int:user_id>")
class UserItem(MethodView):
    @blp.response(200, UserSchema)
    def get(self, user_id: int) -> User:
        """Get one account."""
        actor = current_actor()
        if actor.user_id != user_id:
            _require_admin(actor)
        user = db.session.get(User, user_id)
        if user is None or not (actor.user_id == user_id or _administers(actor, user_id)):
            # a sponsor admin sees the accounts of their own trials only, as in the list
            raise NotFound("user not found")
        return user


def _administers(actor: Actor, user_id: int) -> bool:
    """Whether the account holds a role in a trial the actor administers (superuser: any)."""
    if actor.is_superuser:
        return True
    trial_ids = {g.trial_id for g in actor.grants if g.role == Role.SPONSOR_ADMIN}
    return (
        db.session.scalar(
            select(Membership.id)
            .where(Membership.user_id == user_id, Membership.trial_id.in_(trial_ids))
            .limit(1)
        )
        is not None
    )
