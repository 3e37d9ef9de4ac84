"""Safety events: serious adverse events (with their expedited-report clock) and alerts raised
by the protocol's rules on answers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.db import Base, UTCDateTime, intpk, utcnow


class SafetyEvent(Base):
    """One SAE or one alert, from the form record that raised it to its report or
    acknowledgement; escalation when its clock runs out."""

    __tablename__ = "safety_event"
    __audited__ = (
        "trial_id",
        "site_id",
        "participant_id",
        "form_record_id",
        "kind",
        "rule_id",
        "message",
        "detected_at",
        "due_at",
        "status",
        "acknowledged_at",
        "acknowledged_by_id",
        "reported_at",
        "reported_by_id",
        "causality",
        "expectedness",
        "narrative",
        "escalated_at",
    )

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    form_record_id: Mapped[int] = mapped_column(ForeignKey("form_record.id"))
    kind: Mapped[str] = mapped_column(String(10))  # sae | alert
    rule_id: Mapped[str] = mapped_column(String(60))  # "sae" or the alert rule's id
    message: Mapped[str] = mapped_column(Text)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # SAE: the expedited initial report is due; alert: escalation if not acknowledged
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # open|acknowledged|reported|downgraded; an SAE is closed by its final follow-up
    status: Mapped[str] = mapped_column(String(20), default="open")
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reported_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    causality: Mapped[str | None] = mapped_column(String(20))
    expectedness: Mapped[str | None] = mapped_column(String(20))
    narrative: Mapped[str | None] = mapped_column(Text)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SafetyFollowUp(Base):
    """A follow-up report of an SAE after its initial report: new information, the current
    causality and expectedness assessment, the outcome; a final follow-up closes the case."""

    __tablename__ = "safety_follow_up"
    __table_args__ = (UniqueConstraint("safety_event_id", "number"),)
    __audited__ = (
        "safety_event_id",
        "number",
        "reported_at",
        "reported_by_id",
        "causality",
        "expectedness",
        "outcome",
        "narrative",
        "is_final",
    )

    id: Mapped[intpk]
    safety_event_id: Mapped[int] = mapped_column(ForeignKey("safety_event.id"), index=True)
    number: Mapped[int]  # 1, 2, ... per SAE
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reported_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    causality: Mapped[str] = mapped_column(String(20))
    expectedness: Mapped[str] = mapped_column(String(20))
    outcome: Mapped[str] = mapped_column(String(30))
    narrative: Mapped[str] = mapped_column(Text)
    is_final: Mapped[bool] = mapped_column(default=False)
