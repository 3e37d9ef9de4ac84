"""Accounts, their roles per trial and site, API tokens and web sessions."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import ClassVar

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.db import Base, UTCDateTime, intpk, utcnow


class Role(enum.StrEnum):
    SPONSOR_ADMIN = "sponsor_admin"
    INVESTIGATOR = "investigator"
    COORDINATOR = "coordinator"
    MONITOR = "monitor"
    DATA_MANAGER = "data_manager"
    STATISTICIAN = "statistician"
    UNBLINDED_STATISTICIAN = "unblinded_statistician"
    AUDITOR = "auditor"
    PARTICIPANT = "participant"
    OUTCOME_ASSESSOR = "outcome_assessor"


# Roles whose memberships must name a site: they work "only at their own sites".
SITE_BOUND_ROLES = frozenset(
    {Role.INVESTIGATOR, Role.COORDINATOR, Role.PARTICIPANT, Role.OUTCOME_ASSESSOR}
)
# Roles whose memberships never name one: their work (exports, analyses, the audit trail, the
# trial's set-up) is the whole trial's, with no per-site view of it. A monitor may have either.
TRIAL_WIDE_ROLES = frozenset(
    {Role.SPONSOR_ADMIN, Role.STATISTICIAN, Role.UNBLINDED_STATISTICIAN, Role.DATA_MANAGER,
     Role.AUDITOR}
)


class User(Base):
    """A person. Usernames are unique and never reassigned, even after deactivation (SIG-04)."""

    __tablename__ = "user"
    __audited__ = (
        "username",
        "printed_name",
        "email",
        "is_active",
        "is_superuser",
        "password_hash",
        "password_changed_at",
        "created_at",
        "activation_sha256",
        "activation_expires_at",
    )
    __sealed__ = ("password_hash", "activation_sha256")
    __unaudited__: ClassVar[dict[str, str]] = {
        "language": "the user's display language, a preference",
        "failed_logins": "lockout counter; every failed sign-in is an audit event",
        "locked_until": "lockout state; every lock is recorded in the login.failed event",
    }

    id: Mapped[intpk]
    username: Mapped[str] = mapped_column(String(80), unique=True)
    printed_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(default=True)
    is_superuser: Mapped[bool] = mapped_column(default=False)
    language: Mapped[str] = mapped_column(String(5), default="en")
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # An account created by an administrator waits for its owner to choose a password through a
    # one-time link e-mailed to them (SHA-256 of the link's token; cleared once used).
    activation_sha256: Mapped[str | None] = mapped_column(String(64), unique=True, index=True)
    activation_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Membership(Base):
    """A role a user holds in a trial, optionally limited to one site."""

    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("user_id", "trial_id", "site_id", "role"),)
    __audited__ = (
        "user_id",
        "trial_id",
        "site_id",
        "role",
        "is_active",
        "created_at",
        "requested_by_id",
        "pending_since",
        "approved_by_id",
        "approved_at",
    )

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("site.id"))
    role: Mapped[str] = mapped_column(String(30))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Two-person rule: a grant that changes what the user may know of the allocation waits,
    # inactive, until a second administrator approves it (services/accounts.py); who asked and
    # who approved are audited with the row (membership.request / membership.approve).
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    pending_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_token"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="api")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebSession(Base):
    """A signed-in browser; the cookie holds a random token whose SHA-256 is stored here."""

    __tablename__ = "web_session"

    id: Mapped[intpk]
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    epro_link_id: Mapped[int | None] = mapped_column(ForeignKey("epro_link.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
