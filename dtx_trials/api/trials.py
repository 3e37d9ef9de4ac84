"""Trials, sites and role memberships."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from dtx_trials.api.context import current_actor
from dtx_trials.api.idempotency import idempotent
from dtx_trials.api.schemas import (
    Blueprint,
    MembershipCreateSchema,
    MembershipSchema,
    SiteCreateSchema,
    SiteSchema,
    SiteUpdateSchema,
    TrialCreateSchema,
    TrialSchema,
)
from dtx_trials.extensions import db
from dtx_trials.models import Membership, Site, Trial
from dtx_trials.services import accounts, trials

blp = Blueprint("trials", __name__, url_prefix="/api/v1/trials", description="Trials and sites")


@blp.route("")
class Trials(MethodView):
    @blp.response(200, TrialSchema(many=True))
    def get(self) -> list[Trial]:
        """List the trials I hold a role in."""
        return trials.list_trials(db.session, current_actor())

    @idempotent
    @blp.arguments(TrialCreateSchema)
    @blp.response(201, TrialSchema)
    def post(self, body: dict[str, Any]) -> Trial:
        """Create a draft trial (sponsor admins); the creator becomes its sponsor admin."""
        return trials.create_trial(db.session, current_actor(), **body)


@blp.route("/<code>")
class TrialItem(MethodView):
    @blp.response(200, TrialSchema)
    def get(self, code: str) -> Trial:
        """Get one trial."""
        return trials.get_trial(db.session, current_actor(), code)


@blp.route("/<code>/sites")
class Sites(MethodView):
    @blp.response(200, SiteSchema(many=True))
    def get(self, code: str) -> list[Site]:
        """List the trial's sites."""
        actor = current_actor()
        return trials.list_sites(db.session, actor, trials.get_trial(db.session, actor, code))

    @idempotent
    @blp.arguments(SiteCreateSchema)
    @blp.response(201, SiteSchema)
    def post(self, body: dict[str, Any], code: str) -> Site:
        """Add a site (sponsor admin)."""
        actor = current_actor()
        return trials.create_site(
            db.session, actor, trials.get_trial(db.session, actor, code), body
        )


@blp.route("/<code>/sites/<site_code>")
class SiteItem(MethodView):
    @blp.response(200, SiteSchema)
    def get(self, code: str, site_code: str) -> Site:
        """Get one site."""
        actor = current_actor()
        return trials.get_site(
            db.session, actor, trials.get_trial(db.session, actor, code), site_code
        )

    @blp.arguments(SiteUpdateSchema)
    @blp.response(200, SiteSchema)
    def patch(self, body: dict[str, Any], code: str, site_code: str) -> Site:
        """Change a site's name, country, time zone or active flag (sponsor admin)."""
        actor = current_actor()
        reason = body.pop("reason", None)
        return trials.update_site(
            db.session, actor, trials.get_trial(db.session, actor, code), site_code, body, reason
        )


@blp.route("/<code>/memberships")
class Memberships(MethodView):
    @blp.response(200, MembershipSchema(many=True))
    def get(self, code: str) -> list[Membership]:
        """List role memberships in the trial (sponsor admin)."""
        actor = current_actor()
        return trials.list_memberships(db.session, actor, trials.get_trial(db.session, actor, code))

    @idempotent
    @blp.arguments(MembershipCreateSchema)
    @blp.response(201, MembershipSchema)
    def post(self, body: dict[str, Any], code: str) -> Membership:
        """Grant a user a role in the trial, at a site for site-bound roles (sponsor admin)."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code, "membership.manage")
        site_id = None
        if body["site"]:
            site_id = trials.get_site(db.session, actor, trial, body["site"]).id
        return accounts.grant_role(
            db.session,
            actor,
            trial_id=trial.id,
            user_id=body["user_id"],
            role=body["role"],
            site_id=site_id,
        )


@blp.route("/<code>/memberships/<int:membership_id>/approval")
class MembershipApproval(MethodView):
    @idempotent
    @blp.response(200, MembershipSchema)
    def post(self, code: str, membership_id: int) -> Membership:
        """Approve a grant waiting under the two-person rule (a second sponsor admin: neither
        the one who asked nor the grantee)."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code, "membership.manage")
        return accounts.approve_grant(
            db.session, actor, trial_id=trial.id, membership_id=membership_id
        )


@blp.route("/<code>/memberships/<int:membership_id>")
class MembershipItem(MethodView):
    @blp.response(204)
    def delete(self, code: str, membership_id: int) -> None:
        """Revoke a membership (kept in the trail, marked inactive)."""
        actor = current_actor()
        trial = trials.get_trial(db.session, actor, code, "membership.manage")
        accounts.revoke_role(db.session, actor, trial_id=trial.id, membership_id=membership_id)
