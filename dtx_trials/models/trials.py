"""Trial, its protocol versions and its sites."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.db import Base, UTCDateTime, intpk, utcnow


class Trial(Base):
    __tablename__ = "trial"
    __audited__ = (
        "code",
        "title",
        "status",
        "blinding",
        "active_protocol_version_id",
        "created_at",
    )

    id: Mapped[intpk]
    code: Mapped[str] = mapped_column(String(40), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="draft")  # draft|active|closed
    blinding: Mapped[str] = mapped_column(String(10), default="open")  # open|single|double
    active_protocol_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("protocol_version.id", use_alter=True)
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    @property
    def is_blinded(self) -> bool:
        return self.blinding != "open"


class ProtocolVersion(Base):
    __tablename__ = "protocol_version"
    __table_args__ = (
        UniqueConstraint("trial_id", "version_no"),
        UniqueConstraint("trial_id", "sha256"),
    )
    __audited__ = (
        "trial_id",
        "version_no",
        "sha256",
        "status",
        "source_name",
        "source_text",
        "content",
        "accepted_migrations",
        "created_at",
        "created_by_id",
        "activated_at",
    )
    # the documents themselves are hashed into the trail; verify also recomputes `sha256`
    __digested__ = ("source_text", "content")

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    version_no: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="draft")  # draft|active|superseded
    source_name: Mapped[str] = mapped_column(String(300), default="protocol.yaml")
    source_text: Mapped[str] = mapped_column(Text)
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    accepted_migrations: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Site(Base):
    __tablename__ = "site"
    __table_args__ = (UniqueConstraint("trial_id", "code"),)
    __audited__ = (
        "trial_id",
        "code",
        "name",
        "name_zh",
        "country",
        "timezone",
        "is_active",
        "created_at",
    )

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    code: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(200))
    name_zh: Mapped[str | None] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2))
    timezone: Mapped[str] = mapped_column(String(60), default="UTC")
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
