"""Protocol versions: validate, load, diff and activate (wired to protocols/)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from dtx_trials.services.access import Actor


def load_library_file(session: Session, actor: Actor, path: Path) -> str:
    """Load one example protocol file as a trial with its first version."""
    raise RuntimeError(f"protocol loading is not wired yet: {path.name}")
