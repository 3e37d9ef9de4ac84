"""Device and DTx-app observations, idempotent on (participant, stream, time, source).

Observations are immutable and covered by batch: each ingest writes one audit event holding the
batch id, the ids stored and the Merkle root of the stored rows (``services/integrity.py``), and
each row carries short keyed tags of its columns (``seal``) so `verify` can name the column of a
changed reading.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.db import Base, UTCDateTime, intpk, utcnow


class DeviceObservation(Base):
    __tablename__ = "device_observation"
    __table_args__ = (UniqueConstraint("participant_id", "stream", "observed_at", "source"),)

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"))
    stream: Mapped[str] = mapped_column(String(60))
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    value: Mapped[float]
    unit: Mapped[str] = mapped_column(String(30))
    source: Mapped[str] = mapped_column(String(60))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    batch_id: Mapped[str | None] = mapped_column(String(32), index=True)
    seal: Mapped[str | None] = mapped_column(String(80))
