"""`dtx audit verify`: the audit chain, the data against the trail, and every allocation
replayed from the trial secret (randomization-methods.md §6.5)."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.models import Trial
from dtx_trials.services import audit, randomization


def check_integrity(session: Session, trial_id: int | None = None) -> audit.VerifyReport:
    """Return the audit verification report extended with allocation replay problems."""
    report = audit.verify(session, trial_id)
    stmt = select(Trial) if trial_id is None else select(Trial).where(Trial.id == trial_id)
    extra = [
        audit.Problem("allocation", f"trial {trial.code}", f"{trial.code}: {message}")
        for trial in session.scalars(stmt)
        if trial.active_protocol_version_id is not None
        for message in randomization.replay_problems(session, trial)
    ]
    return replace(report, problems=report.problems + tuple(extra))
