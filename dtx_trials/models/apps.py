"""Credentials of the DTx app: participant tokens redeemed once from an activation code, and
service credentials (client id + secret) of an app vendor's backend. Authentication state, like
`api_token`: only SHA-256 digests are stored; each issue and revocation is an audit event."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.db import Base, UTCDateTime, intpk, utcnow

#: The one scope a service credential carries: writing device data of its trial.
DEVICE_DATA_WRITE = "device_data.write"


class ServiceCredential(Base):
    """Client credentials for an app vendor's backend, scoped to one trial and to device-data
    write; created by a sponsor admin, the secret shown once, live once a second administrator
    approved it (``approved_at``)."""

    __tablename__ = "service_credential"

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    client_id: Mapped[str] = mapped_column(String(40), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(40), default=DEVICE_DATA_WRITE)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the approving user's id, as the trail's actor ids: a plain integer (SQLite adds a foreign
    # key only by rebuilding the table, which the app tokens referring to it forbid)
    approved_by_id: Mapped[int | None]


class AppToken(Base):
    """A bearer token of the app API: a participant's (``participant``: redeemed once from the
    activation code of their allocation) or a service credential's (``service``)."""

    __tablename__ = "app_token"

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # participant | service
    participant_id: Mapped[int | None] = mapped_column(ForeignKey("participant.id"), index=True)
    # an activation code is redeemed once: one token per allocation, ever
    allocation_id: Mapped[int | None] = mapped_column(ForeignKey("allocation.id"), unique=True)
    credential_id: Mapped[int | None] = mapped_column(ForeignKey("service_credential.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
