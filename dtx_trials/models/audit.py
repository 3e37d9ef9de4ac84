"""The audit trail: append-only, hash-chained per trial (plus one global chain)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.db import Base, UTCDateTime, intpk


class AuditChainHead(Base):
    """The last (seq, hash) of one chain; locked FOR UPDATE by every append to that chain."""

    __tablename__ = "audit_chain_head"

    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(default=0)
    hash: Mapped[str] = mapped_column(String(64))


class AuditEvent(Base):
    __tablename__ = "audit_event"
    __table_args__ = (
        UniqueConstraint("chain", "seq"),
        # the audit page's filter choices: a skip scan over this index, one seek per value
        # (``services.audit.filter_choices``), not a DISTINCT over the whole chain
        Index("ix_audit_event_chain_entity_type_action", "chain", "entity_type", "action"),
    )

    id: Mapped[intpk]
    chain: Mapped[str] = mapped_column(String(40))
    seq: Mapped[int]
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    trial_id: Mapped[int | None] = mapped_column(index=True)
    site_id: Mapped[int | None]
    actor_id: Mapped[int | None]
    actor_name: Mapped[str] = mapped_column(String(200))
    actor_role: Mapped[str | None] = mapped_column(String(30))
    op: Mapped[str] = mapped_column(String(10))  # create|update|delete|event
    action: Mapped[str] = mapped_column(String(60))
    entity_type: Mapped[str] = mapped_column(String(40))
    entity_id: Mapped[int | None]
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(80))
    # how the actor was authenticated: token:<id> | session:<id> (API token, browser or ePRO
    # session) | cli | system; covered by the hash, checked against the session tables
    auth_ref: Mapped[str | None] = mapped_column(String(40))
    # the field key whose chain key computed `hash` (None: a plain SHA-256 from before key ids)
    key_id: Mapped[str | None] = mapped_column(String(16))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class KeyCheck(Base):
    """A field key's id and key-check value: a wrong DTX_FIELD_KEY is refused at start-up.

    One row is ``active`` (the key data are written under); rows of earlier keys are
    ``retired`` by ``dtx keys rotate``. The key itself is never stored.
    """

    __tablename__ = "key_check"

    kid: Mapped[str] = mapped_column(String(16), primary_key=True)
    kcv: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))  # active|retired
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
