"""`dtx audit verify`: the audit chain, the data against the trail, every allocation replayed
from the trial secret (randomization-methods.md §6.5), every protocol version's content hash
recomputed, and every device batch's Merkle root."""

from __future__ import annotations

import functools
import json
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.models import ProtocolVersion, Trial
from dtx_trials.services import audit, device_batches, randomization
from protocols.canonical import from_canonical_dict, protocol_sha256
from protocols.loader import ProtocolError


@functools.lru_cache(maxsize=64)
def _content_sha256(content_json: str) -> str:
    """The protocol hash of stored content (a pure function of it, so memoised)."""
    try:
        return protocol_sha256(from_canonical_dict(json.loads(content_json)))
    except (ProtocolError, KeyError, TypeError, ValueError) as exc:
        return f"unreadable content ({type(exc).__name__})"


def protocol_hash_problems(session: Session, trial_id: int | None = None) -> list[audit.Problem]:
    """Recompute each version's SHA-256 from its stored content (as `protocol load` did)."""
    stmt = select(ProtocolVersion)
    if trial_id is not None:
        stmt = stmt.where(ProtocolVersion.trial_id == trial_id)
    problems = []
    for version in session.scalars(stmt):
        where = f"protocol_version id={version.id}"
        recomputed = _content_sha256(audit.canonical_json(version.content))
        if recomputed != version.sha256:
            problems.append(
                audit.Problem(
                    "protocol",
                    f"{where}.content",
                    f"{where}: content hashes to {recomputed[:16]}… but the version says "
                    f"{version.sha256[:16]}… (content or hash changed behind the app)",
                )
            )
    return problems


def check_integrity(session: Session, trial_id: int | None = None) -> audit.VerifyReport:
    """Return the audit verification report extended with allocation replay, protocol hash and
    device batch problems."""
    report = audit.verify(session, trial_id)
    stmt = select(Trial) if trial_id is None else select(Trial).where(Trial.id == trial_id)
    extra = []
    for trial in session.scalars(stmt):
        if trial.active_protocol_version_id is None:
            continue
        try:
            messages = randomization.replay_problems(session, trial)
        except (AssertionError, LookupError, TypeError, ValueError) as exc:
            # tampered rows can break the replay itself (a dangling id, a malformed state):
            # verify reports that instead of crashing
            messages = [f"allocations cannot be replayed ({type(exc).__name__}: {exc})"]
        extra.extend(
            audit.Problem("allocation", f"trial {trial.code}", f"{trial.code}: {message}")
            for message in messages
        )
    extra.extend(protocol_hash_problems(session, trial_id))
    n_readings, device_problems = device_batches.verify_batches(session, trial_id)
    extra.extend(device_problems)
    return replace(
        report,
        rows_checked=report.rows_checked + n_readings,
        problems=report.problems + tuple(extra),
    )
