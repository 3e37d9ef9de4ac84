"""Form records (optimistic version column), data queries and electronic signatures."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.db import Base, UTCDateTime, intpk, utcnow


class FormRecord(Base):
    __tablename__ = "form_record"
    __table_args__ = (UniqueConstraint("participant_id", "visit_id", "form_code", "repeat_index"),)
    __audited__ = (
        "participant_id",
        "visit_id",
        "form_code",
        "repeat_index",
        "status",
        "data",
        "protocol_version_id",
        "version",
        "created_at",
        "updated_at",
        "submitted_at",
        "device_time",
    )

    id: Mapped[intpk]
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("visit.id"))
    form_code: Mapped[str] = mapped_column(String(60))
    repeat_index: Mapped[int] = mapped_column(default=1)
    protocol_version_id: Mapped[int | None] = mapped_column(ForeignKey("protocol_version.id"))
    status: Mapped[str] = mapped_column(String(20), default="draft")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    device_time: Mapped[str | None] = mapped_column(String(40))

    __mapper_args__: ClassVar[dict[str, Any]] = {"version_id_col": version}


class DataQuery(Base):
    __tablename__ = "data_query"
    # the query inbox's first page in its default order: an index walk that stops after a
    # page, not a sort of every query of the trial
    __table_args__ = (Index("ix_data_query_raised_at_id", "raised_at", "id"),)
    __audited__ = (
        "form_record_id",
        "field",
        "status",
        "text",
        "answer",
        "origin",
        "raised_by_id",
        "raised_at",
        "answered_by_id",
        "answered_at",
        "closed_at",
    )

    id: Mapped[intpk]
    form_record_id: Mapped[int] = mapped_column(ForeignKey("form_record.id"), index=True)
    field: Mapped[str] = mapped_column(String(120))
    status: Mapped[str] = mapped_column(String(20), default="open")  # open|answered|closed
    origin: Mapped[str] = mapped_column(String(20), default="manual")  # manual|edit_check
    text: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    raised_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    answered_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Signature(Base):
    """An e-signature bound to a record version and the SHA-256 of its canonical content."""

    __tablename__ = "signature"
    __table_args__ = (UniqueConstraint("form_record_id", "record_version", "user_id", "meaning"),)
    __audited__ = (
        "form_record_id",
        "user_id",
        "meaning",
        "content_sha256",
        "record_version",
        "status",
        "printed_name",
        "signed_at",
        "invalidated_at",
        "invalidated_reason",
    )

    id: Mapped[intpk]
    form_record_id: Mapped[int] = mapped_column(ForeignKey("form_record.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    printed_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(String(40))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    record_version: Mapped[int]
    content_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="valid")  # valid|invalidated
    invalidated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    invalidated_reason: Mapped[str | None] = mapped_column(Text)
