"""Field-key custody in the database: the key-check value, and rotation.

The database stores, for every field key it has seen, the key id and key-check value (KCV),
never the key. At start-up the app compares its current key with the row marked ``active``: a
different key stops it before anything is written under that key (`KeyMismatchError`), and
``/readyz`` says why. ``dtx keys rotate`` moves the data to a new key: it verifies the trail,
re-encrypts every identifier under the new key, appends a ``key.reseal`` event per row whose
sealed values the trail holds under an older key (so the trail's current state names the new
key), retires the old KCV row and records ``keys.rotated``. Events keep the key id they were
hashed under, so the chain is never rewritten: the retired key stays in the ring
(``DTX_FIELD_KEYS_RETIRED``) to verify them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import LargeBinary, select, type_coerce, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dtx_trials.crypto import EncryptedText, FieldKeyError, KeyRing, cipher
from dtx_trials.db import Base, transaction, utcnow
from dtx_trials.models import AuditEvent, KeyCheck
from dtx_trials.services import audit
from dtx_trials.services.access import Actor
from dtx_trials.services.errors import Conflict


class KeyMismatchError(FieldKeyError):
    """The configured field key is not the key the database's data are written under."""


def check_field_key(session: Session) -> str:
    """Compare the configured key with the stored key-check value; register it on first use.

    Returns the active key id; raises KeyMismatchError with the reason otherwise.
    """
    ring = cipher()
    current = ring.current
    with transaction(session):
        rows = list(session.scalars(select(KeyCheck).with_for_update()))
        active = [r for r in rows if r.status == "active"]
        if not rows:
            _refuse_unregistered(session, ring)
            # several processes may start at once: the first registration wins, the others
            # compare with it below
            insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
            session.execute(
                insert(KeyCheck)
                .values(kid=current.kid, kcv=current.kcv, status="active", created_at=utcnow())
                .on_conflict_do_nothing()
            )
            rows = list(session.scalars(select(KeyCheck).execution_options(populate_existing=True)))
            active = [r for r in rows if r.status == "active"]
        if len(active) != 1:
            raise KeyMismatchError(
                f"the database lists {len(active)} active field keys (expected one); "
                "its key-check table was altered"
            )
        stored = active[0]
        if stored.kid != current.kid:
            if ring.has(stored.kid):
                raise KeyMismatchError(
                    f"key rotation pending: the data are under key {stored.kid}, DTX_FIELD_KEY is "
                    f"key {current.kid}; run `dtx keys rotate` before starting the app"
                )
            raise KeyMismatchError(
                f"DTX_FIELD_KEY is key {current.kid} but the data are written under key "
                f"{stored.kid}: wrong key (nothing was written under it)"
            )
        if stored.kcv != current.kcv:
            raise KeyMismatchError(
                f"the key-check value of key {stored.kid} does not match DTX_FIELD_KEY"
            )
        return current.kid


def _refuse_unregistered(session: Session, ring: KeyRing) -> None:
    """No key-check row yet: accept the key only if no keyed event names another key."""
    last = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.key_id.is_not(None))
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).first()
    if last is None:
        return
    if not ring.has(str(last.key_id)) or audit.event_hash(audit.hashed_fields(last)) != last.hash:
        raise KeyMismatchError(
            f"the key-check table is empty and the trail is written under key {last.key_id}, "
            f"which DTX_FIELD_KEY (key {ring.current.kid}) does not reproduce: wrong key"
        )


@dataclass(frozen=True)
class RotationResult:
    from_kids: tuple[str, ...]
    to_kid: str
    n_reencrypted: int
    n_resealed: int


def _encrypted_models() -> list[tuple[type[Base], list[Any]]]:
    out = []
    for mapper in Base.registry.mappers:
        table = mapper.local_table
        columns = [c for c in table.columns if isinstance(c.type, EncryptedText)]
        if columns:
            out.append((mapper.class_, columns))
    return sorted(out, key=lambda item: item[0].__tablename__)


def rotate_keys(session: Session, actor: Actor) -> RotationResult:
    """Move every identifier and sealed value to the current key (see the module docstring).

    Run with the new key as DTX_FIELD_KEY and the old one in DTX_FIELD_KEYS_RETIRED, app servers
    stopped. Refuses when `verify` finds a problem: rotating would launder a tampered value.
    """
    from dtx_trials.services.integrity import check_integrity

    ring = cipher()
    new = ring.current
    report = check_integrity(session)
    session.rollback()
    blocking = [p for p in report.problems if p.kind != "anchor"]
    if blocking:
        raise Conflict(
            f"verify reports {len(blocking)} problem(s); resolve them before rotating "
            f"(first: {blocking[0].message})"
        )
    n_reencrypted = 0
    n_resealed = 0
    with transaction(session):
        rows = list(session.scalars(select(KeyCheck).with_for_update()))
        old_kids = tuple(sorted(r.kid for r in rows if r.status == "active" and r.kid != new.kid))
        # 1. identifiers: rewrite every ciphertext not under the current key
        for model, columns in _encrypted_models():
            table = model.__table__  # type: ignore[attr-defined]
            raw = session.execute(
                select(table.c.id, *(type_coerce(c, LargeBinary) for c in columns))
            ).all()
            for row_id, *blobs in raw:
                values = {}
                for column, blob in zip(columns, blobs, strict=True):
                    if blob is None or ring.key_id_of(bytes(blob)) == new.kid:
                        continue
                    values[column.name] = ring.decrypt(bytes(blob), column.type.column)
                if values:
                    session.execute(update(table).where(table.c.id == row_id).values(**values))
                    n_reencrypted += 1
        # 2. the trail's sealed values: re-seal what the trail holds under an older key
        events = list(
            session.scalars(select(AuditEvent).order_by(AuditEvent.chain, AuditEvent.seq))
        )
        expected = audit._expected_state(events)
        trial_of: dict[tuple[str, int], int | None] = defaultdict(lambda: None)
        for event in events:
            if event.entity_id is not None:
                trial_of[(event.entity_type, event.entity_id)] = event.trial_id
        for model in audit.audited_models():
            sealed = tuple(getattr(model, "__sealed__", ()))
            if not sealed:
                continue
            for obj in session.scalars(select(model)):
                key = (model.__tablename__, obj.id)  # type: ignore[attr-defined]
                recorded = expected.get(key) or {}
                now = audit.snapshot(obj)
                changes = [
                    {"field": name, "old": recorded.get(name), "new": now[name]}
                    for name in sealed
                    if recorded.get(name) is not None
                    and ring.sealed_key_id(recorded.get(name)) != new.kid
                ]
                if changes:
                    audit.append(
                        session,
                        actor,
                        op="update",
                        action="key.reseal",
                        entity_type=model.__tablename__,
                        entity_id=obj.id,  # type: ignore[attr-defined]
                        changes=changes,
                        trial_id=trial_of[key],
                        site_id=getattr(obj, "site_id", None),
                        reason=f"field key rotated to {new.kid}",
                    )
                    n_resealed += 1
        # 3. the key-check table
        now_at = utcnow()
        for row in rows:
            if row.status == "active" and row.kid != new.kid:
                row.status, row.retired_at = "retired", now_at
        if not any(r.kid == new.kid for r in rows):
            session.add(KeyCheck(kid=new.kid, kcv=new.kcv, status="active", created_at=now_at))
        else:
            for row in rows:
                if row.kid == new.kid:
                    row.status, row.retired_at = "active", None
        audit.record_event(
            session,
            actor,
            "keys.rotated",
            entity_type="key_check",
            entity_id=None,
            trial_id=None,
            details={
                "from": list(old_kids),
                "to": new.kid,
                "n_reencrypted": n_reencrypted,
                "n_resealed": n_resealed,
            },
        )
    from dtx_trials.services import checkpoints

    checkpoints.request(session, "key_rotation")
    return RotationResult(old_kids, new.kid, n_reencrypted, n_resealed)
