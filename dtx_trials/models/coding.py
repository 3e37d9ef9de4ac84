"""Medical coding: the sponsor's coding dictionary (loaded per trial) and the coded verbatim
terms (AE terms, concomitant medications) the SDTM export reads."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.db import Base, UTCDateTime, intpk, utcnow


class DictionaryTerm(Base):
    """One entry of a sponsor-supplied dictionary: a term (lowest level) with its preferred
    term and body system (MedDRA-like: LLT → PT → SOC)."""

    __tablename__ = "coding_dictionary_term"
    __table_args__ = (UniqueConstraint("trial_id", "dictionary", "version", "term_key"),)
    __audited__ = ("trial_id", "dictionary", "version", "term", "term_key", "preferred_term",
                   "body_system")

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    dictionary: Mapped[str] = mapped_column(String(60))
    version: Mapped[str] = mapped_column(String(30))
    term: Mapped[str] = mapped_column(String(200))
    term_key: Mapped[str] = mapped_column(String(200))
    preferred_term: Mapped[str] = mapped_column(String(200))
    body_system: Mapped[str] = mapped_column(String(200))


class CodedTerm(Base):
    """A verbatim term (normalised key) coded to a preferred term, automatically (exact match)
    or by the data manager."""

    __tablename__ = "coded_term"
    __table_args__ = (UniqueConstraint("trial_id", "kind", "term_key"),)
    __audited__ = ("trial_id", "kind", "term_key", "verbatim", "preferred_term", "body_system",
                   "dictionary", "version", "method", "coded_by_id", "coded_at")

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # ae | cm
    term_key: Mapped[str] = mapped_column(String(200))
    verbatim: Mapped[str] = mapped_column(String(200))
    preferred_term: Mapped[str] = mapped_column(String(200))
    body_system: Mapped[str] = mapped_column(String(200))
    dictionary: Mapped[str] = mapped_column(String(60))
    version: Mapped[str] = mapped_column(String(30))
    method: Mapped[str] = mapped_column(String(10))  # auto | manual
    coded_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    coded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
