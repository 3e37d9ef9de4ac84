"""Append-only, hash-chained audit trail, written in the same transaction as each change.

Chains. Every trial has its own chain (``trial:<id>``); account-level events use ``global``.
An event's hash is SHA-256 over the canonical JSON of all its fields, ``prev_hash`` included, so
editing, deleting, inserting or reordering a row breaks the chain at that row.

Concurrent writers. The first append of a transaction takes the chain's head row
(``audit_chain_head``) with ``SELECT ... FOR UPDATE`` (later appends of the same transaction
reuse the locked row) (on SQLite the whole database is already write-locked by
``BEGIN IMMEDIATE``), reads (seq, hash), inserts seq+1 with prev_hash = hash, and updates the head,
all inside the caller's transaction. The lock is held until that transaction commits or rolls
back, so two transactions of the same trial cannot both read the same head: the second waits,
then sees the first one's committed head (READ COMMITTED re-reads the locked row). A rolled-back
transaction leaves neither an event nor a moved head, so seq numbers stay gap-free and the chain
order is the commit order. Different trials never wait on each other. Services append their
events after taking their other row locks, so the head is always the last lock taken (no lock
cycles).

Coverage. Models list the columns the trail covers in ``__audited__``; columns in ``__sealed__``
(direct identifiers, arm codes) are written as keyed HMAC fingerprints, never as values, so the
trail can be read by blinded roles and still proves the data. `verify` replays the trail into
the expected state of every covered row and compares it with the database.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, SessionTransaction

from dtx_trials.crypto import cipher
from dtx_trials.db import Base, utcnow
from dtx_trials.models.audit import AuditChainHead, AuditEvent
from dtx_trials.services.access import Actor

GENESIS = "0" * 64
GLOBAL_CHAIN = "global"


def chain_for(trial_id: int | None) -> str:
    return GLOBAL_CHAIN if trial_id is None else f"trial:{trial_id}"


def to_jsonable(value: Any) -> Any:
    """Return the canonical JSON form of a column value (UTC datetimes end in Z)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot audit value of type {type(value).__name__}")


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def snapshot(obj: Base) -> dict[str, Any]:
    """Return the audited columns of a row as canonical JSON values (sealed where required)."""
    sealed = set(getattr(obj, "__sealed__", ()))
    table = obj.__tablename__
    out: dict[str, Any] = {}
    for name in obj.__audited__:  # type: ignore[attr-defined]
        value = getattr(obj, name)
        if name in sealed and value is not None:
            out[name] = cipher().seal(str(value), f"{table}.{name}")
        else:
            out[name] = to_jsonable(value)
    return out


def _trial_of(obj: Base, trial_id: int | None) -> int | None:
    if trial_id is not None:
        return trial_id
    if obj.__tablename__ == "trial":
        return obj.id  # type: ignore[attr-defined, no-any-return]
    return getattr(obj, "trial_id", None)


def _lock_head(session: Session, chain: str) -> AuditChainHead:
    """Lock the chain's head row once per transaction (later appends reuse the locked row)."""
    heads: dict[str, AuditChainHead] = session.info.setdefault(_HEADS, {})
    if chain in heads:
        return heads[chain]
    stmt_insert = (
        pg_insert(AuditChainHead)
        if session.get_bind().dialect.name == "postgresql"
        else sqlite_insert(AuditChainHead)
    )
    session.execute(
        stmt_insert.values(chain=chain, seq=0, hash=GENESIS).on_conflict_do_nothing(
            index_elements=["chain"]
        )
    )
    head = session.scalars(
        select(AuditChainHead)
        .where(AuditChainHead.chain == chain)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    heads[chain] = head
    return head


_HEADS = "dtx_audit_heads"


@sa_event.listens_for(Session, "after_transaction_end")
def _forget_heads(session: Session, transaction: SessionTransaction) -> None:
    """The head lock ends with the outermost transaction; so does the cached row."""
    if transaction.parent is None:
        session.info.pop(_HEADS, None)


def event_hash(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()


HASHED_FIELDS = (
    "chain",
    "seq",
    "op",
    "at",
    "trial_id",
    "site_id",
    "actor_id",
    "actor_name",
    "actor_role",
    "action",
    "entity_type",
    "entity_id",
    "changes",
    "reason",
    "request_id",
    "prev_hash",
)


def hashed_fields(event: AuditEvent) -> dict[str, Any]:
    return {name: to_jsonable(getattr(event, name)) for name in HASHED_FIELDS}


def append(
    session: Session,
    actor: Actor,
    *,
    op: str,
    action: str,
    entity_type: str,
    entity_id: int | None,
    changes: list[dict[str, Any]],
    trial_id: int | None,
    site_id: int | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """Append one event to the trial's chain inside the caller's transaction."""
    chain = chain_for(trial_id)
    head = _lock_head(session, chain)
    event = AuditEvent(
        chain=chain,
        seq=head.seq + 1,
        op=op,
        at=utcnow(),
        trial_id=trial_id,
        site_id=site_id,
        actor_id=actor.user_id,
        actor_name=actor.printed_name,
        actor_role=actor.primary_role(trial_id),
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        changes=changes,
        reason=reason,
        request_id=actor.request_id,
        prev_hash=head.hash,
    )
    event.hash = event_hash(hashed_fields(event))
    session.add(event)
    head.seq = event.seq
    head.hash = event.hash
    session.flush()
    return event


def record_create(
    session: Session,
    actor: Actor,
    action: str,
    obj: Base,
    *,
    trial_id: int | None = None,
    site_id: int | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """Audit a new row: every covered column from None to its value."""
    session.flush()
    changes = [{"field": k, "old": None, "new": v} for k, v in snapshot(obj).items()]
    return append(
        session,
        actor,
        op="create",
        action=action,
        entity_type=obj.__tablename__,
        entity_id=obj.id,
        changes=changes,
        trial_id=_trial_of(obj, trial_id),  # type: ignore[attr-defined]
        site_id=site_id if site_id is not None else getattr(obj, "site_id", None),
        reason=reason,
    )


def record_update(
    session: Session,
    actor: Actor,
    action: str,
    obj: Base,
    before: Mapping[str, Any],
    *,
    trial_id: int | None = None,
    site_id: int | None = None,
    reason: str | None = None,
) -> AuditEvent | None:
    """Audit the covered columns that changed since `before` (a `snapshot`); None if none did."""
    session.flush()
    after = snapshot(obj)
    changes = [
        {"field": k, "old": before.get(k), "new": v} for k, v in after.items() if before.get(k) != v
    ]
    if not changes:
        return None
    return append(
        session,
        actor,
        op="update",
        action=action,
        entity_type=obj.__tablename__,
        entity_id=obj.id,
        changes=changes,
        trial_id=_trial_of(obj, trial_id),  # type: ignore[attr-defined]
        site_id=site_id if site_id is not None else getattr(obj, "site_id", None),
        reason=reason,
    )


def record_event(
    session: Session,
    actor: Actor,
    action: str,
    *,
    entity_type: str,
    entity_id: int | None,
    trial_id: int | None,
    site_id: int | None = None,
    details: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """Audit something that happened without changing a covered row (login, export, unblinding)."""
    changes = [{"field": k, "new": to_jsonable(v)} for k, v in sorted((details or {}).items())]
    return append(
        session,
        actor,
        op="event",
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        changes=changes,
        trial_id=trial_id,
        site_id=site_id,
        reason=reason,
    )


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Problem:
    kind: str  # edited|deleted|inserted (trail); data_changed|data_inserted|data_deleted (rows)
    where: str
    message: str


@dataclass(frozen=True)
class VerifyReport:
    chains: int
    events: int
    rows_checked: int
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def audited_models() -> list[type[Base]]:
    return sorted(
        (m.class_ for m in Base.registry.mappers if hasattr(m.class_, "__audited__")),
        key=lambda cls: cls.__tablename__,
    )


def _verify_chain(
    chain: str, events: list[AuditEvent], head: AuditChainHead | None
) -> list[Problem]:
    problems: list[Problem] = []
    prev_hash = GENESIS
    expected_seq = 1
    for event in events:
        where = f"audit_event id={event.id} ({chain} seq {event.seq})"
        if event.seq != expected_seq:
            missing = (
                f"seq {expected_seq}"
                if event.seq == expected_seq + 1
                else f"seq {expected_seq}..{event.seq - 1}"
            )
            problems.append(
                Problem(
                    "deleted",
                    f"{chain} {missing}",
                    f"{chain}: {missing} missing before {where} (row deleted)",
                )
            )
        recomputed = event_hash(hashed_fields(event))
        if recomputed != event.hash:
            problems.append(
                Problem("edited", where, f"{where}: content does not match its hash (row edited)")
            )
        elif event.prev_hash != prev_hash:
            problems.append(
                Problem(
                    "inserted",
                    where,
                    f"{where}: prev_hash does not match the preceding event "
                    "(row inserted or reordered)",
                )
            )
        prev_hash = event.hash
        expected_seq = event.seq + 1
    last_seq = expected_seq - 1
    if head is not None and last_seq > head.seq:
        for event in events:
            if event.seq > head.seq:
                where = f"audit_event id={event.id} ({chain} seq {event.seq})"
                problems.append(
                    Problem(
                        "inserted",
                        where,
                        f"{where}: lies beyond the chain head at seq {head.seq} (row inserted)",
                    )
                )
    elif head is not None and (last_seq < head.seq or head.hash != prev_hash):
        problems.append(
            Problem(
                "deleted",
                f"{chain} head",
                f"{chain}: chain head is at seq {head.seq} but the last event is seq "
                f"{last_seq} (trailing rows deleted or head altered)",
            )
        )
    return problems


def _expected_state(events: Iterable[AuditEvent]) -> dict[tuple[str, int], dict[str, Any] | None]:
    state: dict[tuple[str, int], dict[str, Any] | None] = {}
    for event in events:
        if event.op not in ("create", "update", "delete") or event.entity_id is None:
            continue
        key = (event.entity_type, event.entity_id)
        if event.op == "delete":
            state[key] = None
            continue
        current = dict(state.get(key) or {})
        for change in event.changes:
            current[change["field"]] = change.get("new")
        state[key] = current
    return state


def _rows_in_scope(session: Session, model: type[Base], trial_id: int | None) -> list[Base]:
    from dtx_trials.models import FormRecord, Participant

    stmt = select(model)
    if trial_id is not None:
        if model.__tablename__ == "trial":
            stmt = stmt.where(model.id == trial_id)  # type: ignore[attr-defined]
        elif hasattr(model, "trial_id"):
            stmt = stmt.where(model.trial_id == trial_id)  # type: ignore[attr-defined]
        elif hasattr(model, "participant_id"):
            stmt = stmt.join(Participant, Participant.id == model.participant_id).where(  # type: ignore[attr-defined]
                Participant.trial_id == trial_id
            )
        elif hasattr(model, "form_record_id"):
            stmt = (
                stmt.join(FormRecord, FormRecord.id == model.form_record_id)  # type: ignore[attr-defined]
                .join(Participant, Participant.id == FormRecord.participant_id)
                .where(Participant.trial_id == trial_id)
            )
        else:
            return []
    return list(session.scalars(stmt))


def verify(session: Session, trial_id: int | None = None) -> VerifyReport:
    """Recompute the chain(s) and compare every covered row with the trail's last values.

    With a trial, checks that trial's chain and rows; without, every chain and every row.
    """
    head_stmt = select(AuditChainHead)
    event_stmt = select(AuditEvent).order_by(AuditEvent.chain, AuditEvent.seq)
    if trial_id is not None:
        chain = chain_for(trial_id)
        head_stmt = head_stmt.where(AuditChainHead.chain == chain)
        event_stmt = event_stmt.where(AuditEvent.chain == chain)
    heads = {h.chain: h for h in session.scalars(head_stmt)}
    by_chain: dict[str, list[AuditEvent]] = defaultdict(list)
    for event in session.scalars(event_stmt):
        by_chain[event.chain].append(event)

    problems: list[Problem] = []
    for chain in sorted(set(heads) | set(by_chain)):
        problems.extend(_verify_chain(chain, by_chain.get(chain, []), heads.get(chain)))

    expected = _expected_state(e for events in by_chain.values() for e in events)
    rows_checked = 0
    seen: set[tuple[str, int]] = set()
    for model in audited_models():
        if trial_id is not None and model.__tablename__ == "user":
            continue
        for row in _rows_in_scope(session, model, trial_id):
            rows_checked += 1
            key = (model.__tablename__, row.id)  # type: ignore[attr-defined]
            seen.add(key)
            where = f"{key[0]} id={key[1]}"
            want = expected.get(key)
            if want is None:
                problems.append(
                    Problem(
                        "data_inserted",
                        where,
                        f"{where}: row has no audit trail (inserted behind the app)",
                    )
                )
                continue
            have = snapshot(row)
            for name, value in have.items():
                if want.get(name) != value:
                    problems.append(
                        Problem(
                            "data_changed",
                            f"{where}.{name}",
                            f"{where}: {name} is {_show(value)} "
                            f"but the trail says {_show(want.get(name))}",
                        )
                    )
    for key, want in expected.items():
        if want is not None and key not in seen and not (trial_id is not None and key[0] == "user"):
            where = f"{key[0]} id={key[1]}"
            problems.append(
                Problem(
                    "data_deleted",
                    where,
                    f"{where}: row is in the trail but missing from the database",
                )
            )
    n_events = sum(len(v) for v in by_chain.values())
    return VerifyReport(len(set(heads) | set(by_chain)), n_events, rows_checked, tuple(problems))


def _show(value: Any) -> str:
    text = canonical_json(value)
    return text if len(text) <= 80 else text[:77] + "..."
