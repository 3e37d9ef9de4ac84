"""Requests a client may retry: the answer each idempotency key got, replayed on a retry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.crypto import EncryptedText
from dtx_trials.db import Base, UTCDateTime, intpk, utcnow


class IdempotentRequest(Base):
    """One carried-out create, written in the same transaction as the change it made.

    ``response`` (status, headers and body as JSON) is encrypted like a direct identifier: the
    body of a participant's creation names them.
    """

    __tablename__ = "idempotent_request"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[intpk]
    scope: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(10))
    path: Mapped[str] = mapped_column(String(500))
    response: Mapped[str] = mapped_column(EncryptedText("idempotent_request.response"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
