"""The audit trail as inspectors read it (AUD-07): a trial's, a participant's or a form
record's trail as CSV or PDF (who, when, what, old → new, why), in chain order.

Values the trail seals (identifiers, arms, arm-correlated state) stay sealed, so the export is
safe for blinded readers; every export is itself audited (``audit.exported``, with the SHA-256
of the file) and followed by a checkpoint.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from analysis.report.audit_trail import TrailRow, trail_csv, trail_pdf
from dtx_trials.db import transaction, utcnow
from dtx_trials.models import (
    AuditEvent,
    Consent,
    DataQuery,
    EproLink,
    FormRecord,
    Participant,
    Signature,
    Trial,
    Visit,
)
from dtx_trials.services import audit
from dtx_trials.services.access import Actor, require
from dtx_trials.services.errors import NotFound, ValidationError

FORMATS = ("csv", "pdf")


def _text(value: object) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else audit.canonical_json(value)


def trail_rows(
    session: Session,
    trial: Trial,
    *,
    subject: str | None = None,
    record_id: int | None = None,
) -> list[TrailRow]:
    """The trail of the trial, or of one participant (`subject`), or of one form record."""
    codes = dict(
        session.execute(
            select(Participant.id, Participant.subject_code).where(Participant.trial_id == trial.id)
        ).all()
    )
    owner: dict[tuple[str, int], int] = {}  # (entity type, id) -> participant id
    for model in (Consent, Visit, FormRecord, EproLink):
        for row_id, pid in session.execute(
            select(model.id, model.participant_id)
            .join(Participant, Participant.id == model.participant_id)
            .where(Participant.trial_id == trial.id)
        ):
            owner[(model.__tablename__, row_id)] = pid
    record_of: dict[tuple[str, int], int] = {}
    for model in (Signature, DataQuery):
        for row_id, rid in session.execute(
            select(model.id, model.form_record_id)
            .join(FormRecord, FormRecord.id == model.form_record_id)
            .join(Participant, Participant.id == FormRecord.participant_id)
            .where(Participant.trial_id == trial.id)
        ):
            record_of[(model.__tablename__, row_id)] = rid
            owner[(model.__tablename__, row_id)] = owner.get(("form_record", rid), -1)
    for row_id, pid in session.execute(
        select(Participant.id, Participant.id).where(Participant.trial_id == trial.id)
    ):
        owner[("participant", row_id)] = pid
    wanted_pid: int | None = None
    if subject is not None:
        wanted_pid = next((pid for pid, code in codes.items() if code == subject), None)
        if wanted_pid is None:
            raise NotFound("no such participant in this trial", {"subject": ["unknown"]})
    if record_id is not None and ("form_record", record_id) not in owner:
        raise NotFound("no such form record in this trial", {"record_id": ["unknown"]})
    rows: list[TrailRow] = []
    for event in session.scalars(
        select(AuditEvent)
        .where(AuditEvent.chain == audit.chain_for(trial.id))
        .order_by(AuditEvent.seq)
    ):
        key = (event.entity_type, event.entity_id or -1)
        pid = owner.get(key)
        if wanted_pid is not None and pid != wanted_pid:
            continue
        if record_id is not None and record_id not in (
            key[1] if key[0] == "form_record" else None,
            record_of.get(key),
        ):
            continue
        base = {
            "seq": event.seq,
            "at_utc": audit.to_jsonable(event.at),
            "actor": event.actor_name,
            "role": event.actor_role or "",
            "action": event.action,
            "entity": f"{event.entity_type} {event.entity_id or ''}".strip(),
            "subject": codes.get(pid or -1, ""),
            "reason": event.reason or "",
            "hash": event.hash,
        }
        changes = event.changes if isinstance(event.changes, list) else []
        if not changes:
            rows.append(TrailRow(field="", old="", new="", **base))
        for change in changes:
            rows.append(
                TrailRow(
                    field=str(change.get("field", "")),
                    old=_text(change.get("old")),
                    new=_text(change.get("new")),
                    **base,
                )
            )
    return rows


def export_trail(
    session: Session,
    actor: Actor,
    trial: Trial,
    fmt: str,
    *,
    subject: str | None = None,
    record_id: int | None = None,
    now: datetime | None = None,
) -> tuple[str, bytes]:
    """Build the trail file for an auditor; return (file name, bytes). Audited."""
    require(actor, "audit.read", trial.id)
    if fmt not in FORMATS:
        raise ValidationError("unknown format", {"format": [f"one of {', '.join(FORMATS)}"]})
    rows = trail_rows(session, trial, subject=subject, record_id=record_id)
    session.rollback()
    name, content = build_trail_file(trial, rows, fmt, subject, record_id, now or utcnow())
    with transaction(session):
        audit.record_event(
            session,
            actor,
            "audit.exported",
            entity_type="trial",
            entity_id=trial.id,
            trial_id=trial.id,
            details={
                "file": name,
                "subject": subject,
                "record_id": record_id,
                "n_rows": len(rows),
                "sha256": hashlib.sha256(content).hexdigest(),
            },
        )
    return name, content


def build_trail_file(
    trial: Trial,
    rows: list[TrailRow],
    fmt: str,
    subject: str | None,
    record_id: int | None,
    now: datetime,
) -> tuple[str, bytes]:
    scope = f"Trial {trial.code}" + (f", participant {subject}" if subject else "")
    scope += f", form record {record_id}" if record_id else ""
    stem = re.sub(r"[^a-z0-9]+", "-", f"{trial.code}-audit-trail-{subject or ''}".lower())
    stem = stem.strip("-")[:50] + (f"-record-{record_id}" if record_id else "")
    if fmt == "csv":
        return f"{stem}.csv", trail_csv(rows)
    title = f"Audit trail — {scope}"
    return f"{stem}.pdf", trail_pdf(rows, title=title, scope=scope, generated_at=now)
