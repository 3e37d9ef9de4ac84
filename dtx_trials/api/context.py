"""Request context: the authenticated actor and the account policy from config."""

from __future__ import annotations

from flask import current_app, g

from dtx_trials.services.access import Actor
from dtx_trials.services.accounts import Policy
from dtx_trials.services.errors import AuthenticationError


def current_actor() -> Actor:
    actor: Actor | None = g.get("actor")
    if actor is None:
        raise AuthenticationError("authentication required (Authorization: Bearer <token>)")
    return actor


def account_policy() -> Policy:
    c = current_app.config
    return Policy(
        lockout_threshold=c["LOCKOUT_THRESHOLD"],
        lockout_minutes=c["LOCKOUT_MINUTES"],
        password_min_length=c["PASSWORD_MIN_LENGTH"],
        token_hours=c["TOKEN_HOURS"],
        session_idle_minutes=c["SESSION_IDLE_MINUTES"],
        session_max_hours=c["SESSION_MAX_HOURS"],
    )
