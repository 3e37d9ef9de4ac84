"""The randomization state (row-locked counter) and the unblinded allocation store.

Only code reached through an unblinded permission reads `Allocation.arm_code`; blinded roles see
`randomization_number` / `activation_code` only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.crypto import EncryptedText
from dtx_trials.db import Base, UTCDateTime, intpk, utcnow

# Why the caps' counters are not in the trail (``__unaudited__``).
_DERIVED = (
    "derived from the allocations, which the trail holds (each allocation's event with its "
    "site, each void's); `audit verify` counts the active allocations by trial and site and "
    "names a counter that differs (randomization.replay_problems)"
)


class RandomizationState(Base):
    """One row per trial, locked FOR UPDATE by every allocation: the gap-free sequence counter.

    `state` holds the trial-level part of the design state (last sequence number, number of
    allocations, voided sequence numbers); each stratum's part is a `RandomizationStratum` row.
    (A trial from before the stratum rows keeps its strata here until each is next allocated
    in or voided: that moves it to its row.)"""

    __tablename__ = "randomization_state"
    __audited__ = (
        "trial_id",
        "next_seq",
        "rng_algorithm",
        "secret",
        "model_version",
        "state",
        "list_table",
        "list_numbers",
        "updated_at",
    )
    # the secret, the design state and an uploaded list (and its numbers, in slot order) all
    # reveal arms: sealed
    __sealed__ = ("secret", "state", "list_table", "list_numbers")
    __unaudited__: ClassVar[dict[str, str]] = {
        "active_allocations": _DERIVED,
    }

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), unique=True)
    next_seq: Mapped[int] = mapped_column(default=1)
    # The draw version (randomization.draws) the model started with; kept for life, so that
    # every allocation replays bit-for-bit (set explicitly when the row is created).
    rng_algorithm: Mapped[str] = mapped_column(String(30))
    secret: Mapped[str] = mapped_column(EncryptedText("randomization_state.secret"))
    model_version: Mapped[int | None] = mapped_column(ForeignKey("protocol_version.id"))
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # randomization/ state
    list_table: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # uploaded list (method list)
    # randomization numbers of the uploaded list, stratum -> one per slot (None: none uploaded,
    # numbers are then R00001...)
    list_numbers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # the trial's active allocations, for its cap (a site's are its `RandomizationSiteCount`
    # row's, a stratum's its row's counts): kept by every allocation and void under this row's
    # lock. Not in the trail (derived): verify recounts.
    active_allocations: Mapped[int] = mapped_column(default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Allocation(Base):
    __tablename__ = "allocation"
    __table_args__ = (
        UniqueConstraint("trial_id", "seq_no"),
        UniqueConstraint("trial_id", "participant_id"),
        UniqueConstraint("trial_id", "randomization_number"),
        UniqueConstraint("trial_id", "request_id"),
    )
    __audited__ = (
        "trial_id",
        "participant_id",
        "seq_no",
        "stratum_key",
        "arm_code",
        "randomization_number",
        "status",
        "protocol_version_id",
        "factors",
        "method",
        "activation_code",
        "evidence",
        "request_id",
        "void_reason",
        "allocated_at",
        "allocated_by_id",
    )
    __sealed__ = ("arm_code", "evidence")

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"))
    protocol_version_id: Mapped[int] = mapped_column(ForeignKey("protocol_version.id"))
    seq_no: Mapped[int]
    stratum_key: Mapped[str] = mapped_column(String(300))
    factors: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    method: Mapped[str] = mapped_column(String(30))
    arm_code: Mapped[str] = mapped_column(String(40))
    randomization_number: Mapped[str] = mapped_column(String(40))
    activation_code: Mapped[str | None] = mapped_column(String(40))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(20), default="allocated")  # allocated|voided
    void_reason: Mapped[str | None] = mapped_column(Text)
    allocated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    allocated_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))


class RandomizationStratum(Base):
    """One stratum's design state (counts, permuted-block position, minimization marginals):
    a row per stratum allocated in, written under the trial's lock (`RandomizationState`) by
    the allocations and voids in that stratum only, so an allocation reads and writes its own
    stratum, not the trial's every stratum."""

    __tablename__ = "randomization_stratum"
    __table_args__ = (UniqueConstraint("trial_id", "stratum_key"),)
    __audited__ = ("trial_id", "stratum_key", "state", "updated_at")
    # counts and block position reveal arms: sealed
    __sealed__ = ("state",)

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"))
    stratum_key: Mapped[str] = mapped_column(String(300))
    state: Mapped[dict[str, Any]] = mapped_column(JSON)  # randomization.state.StratumState
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RandomizationSiteCount(Base):
    """A site's active allocations, for the protocol's per-site cap: a row per site allocated
    at, written under the trial's lock (`RandomizationState`) by the allocations and voids at
    that site only, so an allocation reads and writes its own site's counter, not one counter
    per site of the trial (which grew the locked row, and every allocation's read and write of
    it, with the trial's sites). Derived data, not in the trail: verify recounts."""

    __tablename__ = "randomization_site_count"
    __unaudited__: ClassVar[dict[str, str]] = dict.fromkeys(
        ("id", "trial_id", "site_id", "active_allocations"), _DERIVED
    )

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), unique=True)
    active_allocations: Mapped[int]
