"""Wiring of the trust layer into the app: key ring, key check at start-up, anchoring.

A wrong ``DTX_FIELD_KEY`` stops the factory when the database answers (`KeyMismatchError`).
When the database cannot be asked yet (not reachable, not migrated), the check runs again
before each request until it succeeds; until then every request except ``/healthz`` gets a
503 and ``/readyz`` says why, so nothing is ever written under an unchecked key.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from dtx_trials import crypto
from dtx_trials.extensions import db

_STATE = "dtx_key_state"
_RINGS = "dtx_key_rings"  # (the process's ring the app replaced, the app's own)


class KeyState:
    """The outcome of the key check: ok, refused (with why) or not yet possible."""

    def __init__(self) -> None:
        self.ok = False
        self.error: str | None = None
        self.pending: str | None = "not checked yet"
        self.lock = threading.Lock()


def configure_keys(app: Flask) -> None:
    """Install the key ring from FIELD_KEY and the retired keys."""
    retired = crypto.split_keys(app.config.get("FIELD_KEYS_RETIRED"))
    retired_file = Path(app.instance_path) / "field-retired.keys"
    if not retired and not app.config.get("TESTING") and retired_file.exists():
        retired = crypto.split_keys(retired_file.read_text())
    replaced = crypto.configure(app.config["FIELD_KEY"], retired)
    app.extensions[_RINGS] = (replaced, crypto.cipher())


def check_keys(app: Flask) -> KeyState:
    """Run the key check now if it has not succeeded yet; return the state."""
    state: KeyState = app.extensions[_STATE]
    if state.ok or state.error:
        return state
    from dtx_trials.services.keys import KeyMismatchError, check_field_key

    with state.lock:
        if state.ok or state.error:
            return state
        try:
            check_field_key(db.session)  # one committed transaction of its own
        except KeyMismatchError as exc:
            state.error = str(exc)
            # the refused key leaves the process (at start-up, or at a later first check:
            # the app then refuses every request, and no other app of the process, nor this
            # one's background work, writes under it)
            crypto.restore(*app.extensions[_RINGS])
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            # unreachable, or the key_check table does not exist yet (before `dtx db upgrade`)
            state.pending = f"key check not possible yet: {type(exc).__name__}"
        else:
            state.ok, state.pending = True, None
            db.session.rollback()
    return state


def init_app(app: Flask) -> None:
    """Key check at start-up (raising on a wrong key), the request guard, anchoring."""
    state = KeyState()
    app.extensions[_STATE] = state
    if app.config.get("KEY_CHECK_AT_START", True):
        with app.app_context():
            try:
                check_keys(app)
            except SQLAlchemyError as exc:  # pragma: no cover - driver-specific failures
                state.pending = f"key check not possible yet: {type(exc).__name__}"
            # close what the check opened: a server that forks workers after building the app
            # (gunicorn --preload) must not hand one pooled connection to several processes
            db.engine.dispose()
        if state.error:
            from dtx_trials.services.keys import KeyMismatchError

            raise KeyMismatchError(state.error)  # (the key ring as it was: `check_keys`)
    # else (`dtx keys rotate`, `dtx keys status`): checked before the first request, if any

    from dtx_trials.services import checkpoints

    checkpoints.configure(app)

    @app.before_request
    def _key_guard() -> Any:
        if request.path in ("/healthz", "/readyz"):
            return None
        current = check_keys(app)
        if current.ok:
            return None
        why = current.error or current.pending
        response = jsonify(
            {"code": 503, "status": "Service Unavailable", "message": why, "errors": {}}
        )
        response.status_code = 503
        return response


def readiness(app: Flask) -> tuple[bool, dict[str, Any]]:
    """What /readyz adds: whether the field key is the database's key, and the anchors."""
    from dtx_trials.services import checkpoints

    state = check_keys(app)
    body: dict[str, Any] = {"keys": "ok" if state.ok else (state.error or state.pending)}
    body.update(checkpoints.anchor_store_status(app.extensions.get("dtx_anchoring")))
    return state.ok, body
