"""The notification outbox: one row per message to one recipient over one channel.

A service that causes a notification writes its row in the same transaction as the change, so a
notification exists if and only if its cause committed; workers deliver the rows afterwards
(`services/notifications.py`). The address and the text are encrypted at rest (an e-mail
address or a phone number is personal data); the audited columns say who was told what kind of
thing and whether it was delivered, never the text.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.crypto import EncryptedText
from dtx_trials.db import Base, UTCDateTime, intpk, utcnow


class Notification(Base):
    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_status_next_attempt_at", "status", "next_attempt_at"),)
    __audited__ = (
        "trial_id",
        "kind",
        "channel",
        "recipient_user_id",
        "recipient_role",
        "entity_type",
        "entity_id",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "provider_id",
        "created_at",
        "sent_at",
    )
    # an error text may quote the server's answer: hashed, not copied
    __digested__ = ("last_error",)

    id: Mapped[intpk]
    trial_id: Mapped[int | None] = mapped_column(ForeignKey("trial.id"), index=True)
    kind: Mapped[str] = mapped_column(String(60))  # e.g. emergency_unblinding
    channel: Mapped[str] = mapped_column(String(10))  # email | sms
    recipient_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    recipient_role: Mapped[str | None] = mapped_column(String(40))
    address: Mapped[str | None] = mapped_column(EncryptedText("notification.address"))
    subject: Mapped[str] = mapped_column(EncryptedText("notification.subject"))
    body: Mapped[str] = mapped_column(EncryptedText("notification.body"))
    entity_type: Mapped[str | None] = mapped_column(String(40))  # what caused it
    entity_id: Mapped[int | None]
    # pending -> sent | failed (attempts exhausted or refused for good) | undeliverable (no address)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_id: Mapped[str | None] = mapped_column(String(200))  # Message-ID or SMS id
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
