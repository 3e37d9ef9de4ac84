"""Analysis runs: a job with the provenance needed to reproduce it exactly."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Date, ForeignKey, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.db import Base, UTCDateTime, intpk, utcnow


class AnalysisRun(Base):
    __tablename__ = "analysis_run"
    __audited__ = (
        "trial_id",
        "protocol_version_id",
        "status",
        "is_unblinded",
        "cutoff_on",
        "requested_by_id",
        "requested_at",
        "started_at",
        "finished_at",
        "data_sha256",
        "provenance",
        "results",
        "report_sha256",
        "report_pdf",
        "report_name",
        "error",
    )
    # hashed, not copied: results of an unblinded run and error texts stay out of the trail
    __digested__ = ("provenance", "results", "report_pdf", "error")
    __unaudited__: ClassVar[dict[str, str]] = {
        "progress": "a progress bar for pollers while the run is running"
    }

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    protocol_version_id: Mapped[int | None] = mapped_column(ForeignKey("protocol_version.id"))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    is_unblinded: Mapped[bool] = mapped_column(default=False)
    cutoff_on: Mapped[date | None] = mapped_column(Date)
    progress: Mapped[float] = mapped_column(default=0.0)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    data_sha256: Mapped[str | None] = mapped_column(String(64))
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    report_sha256: Mapped[str | None] = mapped_column(String(64))
    report_pdf: Mapped[bytes | None] = mapped_column(LargeBinary)
    report_name: Mapped[str | None] = mapped_column(String(80))
    error: Mapped[str | None] = mapped_column(Text)
