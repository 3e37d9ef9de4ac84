"""Form records: save draft, submit (with reasons for change), optimistic concurrency,
e-signatures bound to a content hash, source-data verification, freeze/lock; data queries."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from dtx_trials.db import insert_row, loaded, lock_row, transaction, utcnow
from dtx_trials.models import DataQuery, FormRecord, Participant, Signature, Site, Trial, Visit
from dtx_trials.models.users import Role
from dtx_trials.services import accounts, audit, safety
from dtx_trials.services.access import Actor, require
from dtx_trials.services.errors import (
    Conflict,
    NotFound,
    PermissionDenied,
    StaleWriteError,
    ValidationError,
)
from dtx_trials.services.participants import (
    current_protocol,
    get_participant,
    lock_for_entry,
    log_forms,
    missing_consents,
    move_at_new_visit,
    protocol_for,
    submitted_values,
    version_protocol,
)
from ecrf.checks import FormEvaluation, evaluate_form
from ecrf.model import UNSCHEDULED_VISIT, FormDef
from ecrf.schedule import epro_windows

EDITABLE = frozenset({"draft", "submitted", "verified", "signed"})
SIGNATURE_MEANINGS = ("authorship", "review", "approval", "responsibility")
OPEN_PARTICIPANT_STATUSES = frozenset(
    {"screening", "consented", "eligible", "enrolled", "randomized"}
)


def content_sha256(record: FormRecord) -> str:
    """SHA-256 over the canonical JSON of what a signature covers: the record's identity and
    data. Not its version, which every status change moves (signing, SDV, a lock): the
    signature's hash stays the record's until the data change (before: no signed record's
    hash ever matched its signature's, the version having moved at the signing itself)."""
    body = {
        "record_id": record.id,
        "form": record.form_code,
        "visit_id": record.visit_id,
        "repeat_index": record.repeat_index,
        "data": record.data or {},
    }
    return hashlib.sha256(audit.canonical_json(body).encode()).hexdigest()


def _form(protocol: Any, form_code: str) -> FormDef:
    try:
        return protocol.form(form_code)  # type: ignore[no-any-return]
    except KeyError as exc:
        raise NotFound(f"form {form_code} is not part of the protocol") from exc


def _check_respondent(actor: Actor, trial: Trial, site_id: int, form: FormDef) -> None:
    """Outcome-assessor forms are entered by outcome assessors only, and assessors enter
    nothing else: a blinded assessment stays blinded (issue #14)."""
    if actor.via == "epro":
        return  # an ePRO link session is pinned to its own participant form (services/epro.py)
    if actor.via == "app":
        # the app's token is pinned to its participant (services/apps.py); it answers only
        # what the participant answers
        if form.respondent != "participant":
            raise PermissionDenied(f"{form.id} is not answered by the participant")
        return
    roles = actor.roles_at(trial.id, site_id)
    if form.respondent == "outcome_assessor":
        if Role.OUTCOME_ASSESSOR not in roles:
            raise PermissionDenied(f"only an outcome assessor enters {form.id}")
    elif not roles & {Role.INVESTIGATOR, Role.COORDINATOR}:
        raise PermissionDenied(
            f"an outcome assessor enters only outcome-assessor forms, not {form.id}"
        )


def _has_answer(form: FormDef, values: Mapping[str, object]) -> bool:
    """Whether any field the respondent answers holds a value (not blank, not an empty list)."""
    for field in form.fields:
        if field.type in ("calculated", "descriptive"):
            continue
        value = values.get(field.id)
        if value is not None and value != "" and value != []:
            return True
    return False


def _check_consented(
    session: Session, participant: Participant, form: FormDef, signed: set[tuple[str, str]]
) -> None:
    """No data before the required consents (409 naming what is missing). A participant who
    consented to an earlier version and owes a re-consent may still have log forms (adverse
    events, medications) entered: safety reporting does not wait for the re-consent."""
    missing = missing_consents(session, participant, current_protocol(session, participant), signed)
    if not missing:
        return
    if participant.consented_at is not None and form.repeating:
        return
    what = "re-consent" if participant.consented_at is not None else "consent"
    raise Conflict(
        f"{what} required before data entry: {', '.join(missing)}", {"consent": missing}
    )


def _visit(
    session: Session,
    actor: Actor,
    participant: Participant,
    protocol: Any,
    visit_code: str,
    form: FormDef,
    visit: Visit | None,
) -> Visit:
    """The visit the form is entered at (``visit``: the participant's row of that code, if
    any), opened on first data entry when the schedule has it."""
    scheduled = visit_code in protocol.visits_of_form(form.id) or (
        visit_code == UNSCHEDULED_VISIT and form.id in protocol.schedule.unscheduled_forms
    )
    if not scheduled and not form.repeating:
        raise ValidationError(
            f"form {form.id} is not scheduled at visit {visit_code}",
            {"visit": [f"scheduled at: {', '.join(protocol.visits_of_form(form.id)) or 'none'}"]},
        )
    known = [v.id for v in protocol.schedule.visits]
    if not scheduled and visit_code not in known and visit_code != UNSCHEDULED_VISIT:
        # a log form (adverse events, medications) is entered at any visit of the schedule,
        # never at a visit the schedule does not have
        raise ValidationError(
            f"visit {visit_code} is not in the schedule",
            {"visit": [f"one of: {', '.join([*known, UNSCHEDULED_VISIT])}"]},
        )
    if visit is not None and visit.status == "missed":
        # (before: data went into a visit recorded as not done, whose date then could never
        # be recorded)
        raise Conflict(
            f"visit {visit_code} was recorded as missed ({visit.missed_reason}); its forms take "
            "no data"
        )
    if visit is None:
        # screening visits and visits not planned yet are opened on first data entry
        visit = insert_row(
            session,
            Visit(
                participant_id=participant.id,
                visit_code=visit_code,
                occurrence=1,
                is_unscheduled=visit_code == UNSCHEDULED_VISIT,
                planned_on=None,
                window_start_on=None,
                window_end_on=None,
                actual_on=None,
                actual_at=None,
                status="open",
                missed_reason=None,
            ),
        )
        audit.record_create(
            session,
            actor,
            "visit.open",
            visit,
            trial_id=participant.trial_id,
            site_id=participant.site_id,
        )
    return visit


def check_window(
    session: Session, participant: Participant, protocol: Any, visit_code: str,
    visit: Visit | None, form_code: str, repeat_index: int, now: datetime.datetime,
) -> None:
    """The n-th entry of a form at a visit is the n-th window of its repeating questionnaire
    (``schedule.epro``): refused beyond the windows' ``times`` (422), and before that window
    opens on the site's calendar (409 with ``opens_on``), whoever enters it (a staff link, the
    site's own data entry): an early answer would stand for a week not reached yet."""
    from dtx_trials.services.deviations import site_zone

    occurrences = max((w.times or 1 for w in protocol.schedule.epro
                       if w.form == form_code and w.visit == visit_code), default=1)
    if not 1 <= repeat_index <= occurrences:
        raise ValidationError(
            f"form {form_code} at visit {visit_code} has {occurrences} window(s)",
            {"repeat_index": [f"between 1 and {occurrences}"]},
        )
    if repeat_index == 1:
        return
    on = (visit.actual_on or visit.planned_on) if visit is not None else None
    if on is None:
        raise Conflict(f"visit {visit_code} has no date yet: window {repeat_index} of form "
                       f"{form_code} has not opened")
    window = next(w for w in epro_windows(protocol.schedule.epro, {visit_code: on})
                  if w.form == form_code and w.occurrence == repeat_index)
    today = now.astimezone(site_zone(session.get(Site, participant.site_id))).date()
    if today < window.opens_on:
        raise Conflict(
            f"window {repeat_index} of form {form_code} at visit {visit_code} opens on "
            f"{window.opens_on.isoformat()}",
            opens_on=window.opens_on.isoformat(),
        )


@dataclass(frozen=True)
class SaveResult:
    record: FormRecord
    evaluation: FormEvaluation
    queries: tuple[DataQuery, ...] = ()
    visit: Visit | None = None  # held so the response reads its code from the session


def get_record(
    session: Session,
    actor: Actor,
    trial: Trial,
    record_id: int,
    action: str = "form.read",
    *,
    lock: bool = False,
) -> tuple[FormRecord, Participant]:
    record = session.get(FormRecord, record_id)
    participant = session.get(Participant, record.participant_id) if record else None
    if record is None or participant is None or participant.trial_id != trial.id:
        raise NotFound("form record not found")
    require(actor, action, trial.id, participant.site_id)
    if lock:
        locked = lock_row(session, FormRecord, record_id)
        assert locked is not None
        return locked, participant
    return record, participant


# built once per process: the participant's visits with their records (see save_form)
_VISITS_WITH_RECORDS = (
    select(Visit, FormRecord)
    .outerjoin(FormRecord, FormRecord.visit_id == Visit.id)
    .where(Visit.participant_id == bindparam("participant_id"))
    .order_by(Visit.id, FormRecord.id)
)
# the columns save_form reads of its rows
_VISIT_CODE = Visit.__table__.c.visit_code
_RECORD = FormRecord.__table__.c
_RECORD_ID, _RECORD_VISIT_ID, _RECORD_FORM_CODE = _RECORD.id, _RECORD.visit_id, _RECORD.form_code
_RECORD_REPEAT_INDEX, _RECORD_STATUS = _RECORD.repeat_index, _RECORD.status
_RECORD_DATA = _RECORD.data


def save_form(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    visit_code: str,
    form_code: str,
    values: Mapping[str, object],
    *,
    submit: bool,
    expected_version: int | None = None,
    reason: str | None = None,
    acknowledged: Collection[str] = (),
    repeat_index: int = 1,
    device_time: str | None = None,
    today: datetime.date | None = None,
) -> SaveResult:
    """Save a draft or submit a form; nothing is written unless the whole request is valid.

    Stale `expected_version` → 409 with the current version. Changing submitted data needs a
    reason and voids any signature. On submit, warnings must be acknowledged (by check id);
    each acknowledged warning raises a query for the monitor.
    """
    if not isinstance(values, Mapping):
        raise ValidationError("values must be an object", {"values": ["expected an object"]})
    today = today or datetime.date.today()
    with transaction(session):
        participant, signed = lock_for_entry(session, actor, trial, subject_code, "form.write")
        if participant.status not in OPEN_PARTICIPANT_STATUSES:
            raise Conflict(f"participant is {participant.status}; no new data may be entered")
        move_at_new_visit(session, actor, participant, visit_code, form_code)
        protocol = protocol_for(session, participant)
        form = _form(protocol, form_code)
        _check_respondent(actor, trial, participant.site_id, form)
        _check_consented(session, participant, form, signed)
        # the participant's visits with their records, in one query: the visit, the record
        # and the values of other visits that cross-visit checks read. The rows stay rows (the
        # ORM's loading costs more than the round trip); only the visit written to becomes the
        # session's object (`db.loaded`), and a record changed is read again under its lock.
        session.flush()  # as a query's autoflush (a visit the move above planned is found)
        rows = (
            session.connection()
            .execute(_VISITS_WITH_RECORDS, {"participant_id": participant.id})
            .mappings()
            .all()
        )
        found = next((row for row in rows if row[_VISIT_CODE] == visit_code), None)
        visit = _visit(
            session, actor, participant, protocol, visit_code, form,
            loaded(session, Visit, found) if found is not None else None,
        )  # fmt: skip
        if not form.repeating and visit_code != UNSCHEDULED_VISIT and actor.via not in (
            "epro", "app"
        ):
            # (an ePRO link and the app answer only a window open at the time)
            check_window(session, participant, protocol, visit_code, visit, form.id,
                         repeat_index, utcnow())
        record_id = next(
            (
                row[_RECORD_ID]
                for row in rows
                if row[_RECORD_ID] is not None
                and row[_RECORD_VISIT_ID] == visit.id
                and row[_RECORD_FORM_CODE] == form.id
                and row[_RECORD_REPEAT_INDEX] == repeat_index
            ),
            None,
        )
        # only a change takes the record's lock (a new record is guarded by the participant's
        # lock and the unique key); signing and SDV lock the record alone
        record = lock_row(session, FormRecord, record_id) if record_id is not None else None
        if (
            record is not None
            and expected_version is not None
            and record.version != expected_version
        ):
            raise StaleWriteError(
                "the form was changed by someone else; reload it",
                current_version=record.version,
                expected_version=expected_version,
            )
        if record is not None and record.status not in EDITABLE:
            raise Conflict(f"the form is {record.status}; it cannot change")
        if record is not None and record.status != "draft" and not submit:
            # a draft save skips the required fields and the warnings: a submitted form is
            # corrected as a submission, checked as one (before: emptied by a draft save)
            raise Conflict(
                f"the form is {record.status}: a correction is saved as a submission "
                "(submit: true, with a reason)"
            )
        if record is not None and record.protocol_version_id not in (
            None,
            participant.protocol_version_id,
        ):
            # data captured under an earlier version is kept as is: its record follows the
            # version it was captured under, not the one the participant moved to
            form = _form(version_protocol(session, record.protocol_version_id), form_code)
        previous = dict(record.data or {}) if record else {}
        # the visits' values the checks read (`submitted_values`: the rows in record order)
        by_visit = submitted_values(
            [
                (row[_VISIT_CODE], row[_RECORD_FORM_CODE], row[_RECORD_REPEAT_INDEX],
                 row[_RECORD_STATUS], row[_RECORD_DATA])
                for row in sorted(rows, key=lambda row: row[_RECORD_ID] or 0)
            ],
            log_forms(protocol),
        ).by_visit  # fmt: skip
        evaluation = evaluate_form(
            form, values, previous=previous, visits=by_visit, today=today, submit=submit
        )
        if not evaluation.is_valid:
            raise ValidationError(
                "the form has errors", {"values": evaluation.errors}, warnings=_warnings(evaluation)
            )
        if submit and form.respondent == "participant" and not _has_answer(form, evaluation.values):
            # a questionnaire with no answer at all is not a submission (the ePRO page and the
            # app can post an untouched form); a missing-data code counts as an answer
            raise ValidationError(
                "an empty questionnaire cannot be submitted",
                {"values": {"_form": ["answer at least one question"]}},
            )
        unacknowledged = [w for w in evaluation.warnings if w.check_id not in set(acknowledged)]
        if submit and unacknowledged:
            raise ValidationError(
                "warnings must be acknowledged (or corrected) before submission",
                {"warnings": [f"{w.check_id}: {w.message.en}" for w in unacknowledged]},
                warnings=_warnings(evaluation),
            )
        was_submitted = record is not None and record.status != "draft"
        new_data = {**evaluation.values}
        if (
            record is not None
            and was_submitted
            and new_data != previous
            and not (reason or "").strip()
        ):
            raise ValidationError(
                "a reason for change is required once a form is submitted",
                {"reason": ["required when changing submitted data"]},
            )
        now = utcnow()
        if record is None:
            # one INSERT, no unit-of-work flush (db.insert_row): every column set here
            record = insert_row(
                session,
                FormRecord(
                    participant_id=participant.id,
                    visit_id=visit.id,
                    form_code=form.id,
                    repeat_index=repeat_index,
                    protocol_version_id=participant.protocol_version_id,
                    status="submitted" if submit else "draft",
                    data=new_data,
                    version=1,
                    created_at=now,
                    updated_at=now,
                    device_time=device_time,
                    submitted_at=now if submit else None,
                ),
            )
            audit.record_create(
                session,
                actor,
                "form.submit" if submit else "form.draft",
                record,
                trial_id=trial.id,
                site_id=participant.site_id,
                reason=reason,
            )
        else:
            before = audit.snapshot(record)
            changed = new_data != previous
            record.data = new_data
            record.updated_at = now
            record.device_time = device_time or record.device_time
            if submit and record.status == "draft":
                record.status = "submitted"
                record.submitted_at = now
            elif changed and record.status in ("verified", "signed"):
                record.status = "submitted"
            cleared_note = (
                f"; cleared by branching: {', '.join(evaluation.cleared)}"
                if evaluation.cleared
                else ""
            )
            audit.record_update(
                session,
                actor,
                "form.submit" if submit else "form.draft",
                record,
                before,
                trial_id=trial.id,
                site_id=participant.site_id,
                reason=((reason or "").strip() + cleared_note).strip("; ") or None,
            )
            if changed:
                _void_signatures(session, actor, record, participant, "data changed after signing")
        queries = tuple(
            _open_query(
                session,
                actor,
                record,
                participant,
                w.field or form.id,
                f"{w.check_id}: {w.message.en}",
                origin="edit_check",
            )
            for w in evaluation.warnings
            if submit and w.check_id in set(acknowledged)
        )
        session.flush()
        # a serious adverse event or a risky answer raises its safety event with the data
        safety.evaluate_record(session, actor, trial, participant, protocol, record)
    return SaveResult(record, evaluation, queries, visit)


def _warnings(evaluation: FormEvaluation) -> list[dict[str, Any]]:
    return [
        {"check": w.check_id, "field": w.field, "message": w.message.en, "message_zh": w.message.zh}
        for w in evaluation.warnings
    ]


def _void_signatures(
    session: Session, actor: Actor, record: FormRecord, participant: Participant, why: str
) -> None:
    for signature in session.scalars(
        select(Signature).where(Signature.form_record_id == record.id, Signature.status == "valid")
    ):
        before = audit.snapshot(signature)
        signature.status = "invalidated"
        signature.invalidated_at = utcnow()
        signature.invalidated_reason = why
        audit.record_update(
            session,
            actor,
            "signature.invalidate",
            signature,
            before,
            trial_id=participant.trial_id,
            site_id=participant.site_id,
            reason=why,
        )


def sign_form(
    session: Session,
    actor: Actor,
    trial: Trial,
    record_id: int,
    *,
    password: str,
    expected_version: int,
    content_sha256_seen: str | None = None,
    meaning: str = "responsibility",
) -> Signature:
    """Sign a submitted record: re-enter the password; bound to the record's content hash.

    The signer names the version they saw (and may name its content hash, as shown to them):
    a record saved by someone else in between is a 409, never a signature on unseen content.
    """
    if meaning not in SIGNATURE_MEANINGS:
        raise ValidationError("unknown meaning", {"meaning": list(SIGNATURE_MEANINGS)})
    record, participant = get_record(session, actor, trial, record_id, "form.sign")
    user = accounts.reauthenticate(session, actor, password, purpose="signature")
    with transaction(session):
        record, participant = get_record(session, actor, trial, record_id, "form.sign", lock=True)
        if record.status not in ("submitted", "verified", "signed"):
            raise Conflict(f"a {record.status} form cannot be signed; submit it first")
        if record.version != expected_version:
            raise StaleWriteError(
                "the form was changed since you viewed it; review it again before signing",
                current_version=record.version,
                expected_version=expected_version,
            )
        if content_sha256_seen is not None and content_sha256_seen != content_sha256(record):
            raise StaleWriteError(
                "the content you viewed is not the content of this record; review it again",
                {"content_sha256": ["does not match the record's current content"]},
                current_version=record.version,
            )
        existing = session.scalars(
            select(Signature).where(
                Signature.form_record_id == record.id,
                Signature.user_id == user.id,
                Signature.meaning == meaning,
                Signature.status == "valid",
            )
        ).first()
        if existing is not None:
            raise Conflict("you have already signed this version of the form")
        signature = Signature(
            form_record_id=record.id,
            user_id=user.id,
            printed_name=user.printed_name,
            meaning=meaning,
            signed_at=utcnow(),
            record_version=record.version,
            content_sha256=content_sha256(record),
        )
        session.add(signature)
        audit.record_create(
            session, actor, "form.sign", signature, trial_id=trial.id, site_id=participant.site_id
        )
        before = audit.snapshot(record)
        record.status = "signed"
        audit.record_update(
            session,
            actor,
            "form.signed",
            record,
            before,
            trial_id=trial.id,
            site_id=participant.site_id,
        )
    return signature


def signature_is_valid(record: FormRecord, signature: Signature) -> bool:
    """A signature holds only for the exact content it was made on (SIG-02); a data change
    also voids it (`_void_signatures`)."""
    return (
        signature.status == "valid"
        and signature.form_record_id == record.id
        and signature.content_sha256 == content_sha256(record)
    )


def set_record_status(
    session: Session,
    actor: Actor,
    trial: Trial,
    record_id: int,
    target: str,
    reason: str | None = None,
) -> FormRecord:
    """Source-data verify (monitor), or freeze/lock/unlock (data manager)."""
    action, allowed_from = {
        "verified": ("form.verify", {"submitted", "signed"}),
        "locked": ("form.lock", {"submitted", "verified", "signed", "frozen"}),
        "frozen": ("form.lock", {"submitted", "verified", "signed"}),
        "submitted": ("form.lock", {"locked", "frozen"}),
    }[target]
    if target == "submitted" and not (reason or "").strip():
        raise ValidationError("a reason is required to unlock", {"reason": ["required"]})
    with transaction(session):
        record, participant = get_record(session, actor, trial, record_id, action, lock=True)
        if record.status not in allowed_from:
            raise Conflict(f"a {record.status} form cannot become {target}")
        if target == "locked":
            _refuse_unresolved_queries(session, [record.id])
        before = audit.snapshot(record)
        keep_signed = (target == "verified" and record.status == "signed") or (
            # unlocked while its valid signature stands: signed again (before: "submitted")
            target == "submitted" and _signed(session, record)
        )
        record.status = "signed" if keep_signed else target
        audit.record_update(
            session,
            actor,
            f"form.{target}",
            record,
            before,
            trial_id=trial.id,
            site_id=participant.site_id,
            reason=reason,
        )
        if keep_signed and target == "verified":
            audit.record_event(
                session,
                actor,
                "form.verified",
                entity_type="form_record",
                entity_id=record.id,
                trial_id=trial.id,
                site_id=participant.site_id,
            )
    return record


def _refuse_unresolved_queries(session: Session, record_ids: list[int]) -> None:
    """A record with an open or answered query is not locked (409 naming the queries):
    locked, it could no longer be corrected to resolve them (before: locked, and the status
    grid showed "locked" and hid the query)."""
    unresolved = list(session.scalars(
        select(DataQuery.id).where(
            DataQuery.form_record_id.in_(record_ids),
            DataQuery.status.in_(("open", "answered")),
        ).order_by(DataQuery.id)
    )) if record_ids else []
    if unresolved:
        raise Conflict(
            f"{len(unresolved)} unresolved quer{'y' if len(unresolved) == 1 else 'ies'}: close "
            "them before locking", queries=unresolved,
        )


def _signed(session: Session, record: FormRecord) -> bool:
    """Whether a valid signature of the record's current content stands."""
    return any(
        signature_is_valid(record, s)
        for s in session.scalars(
            select(Signature).where(
                Signature.form_record_id == record.id, Signature.status == "valid"
            )
        )
    )


def lock_participant(session: Session, actor: Actor, trial: Trial, subject_code: str) -> int:
    """Lock every non-draft record of a participant (data manager); return how many. None is
    locked while one has an unresolved query."""
    with transaction(session):
        participant = get_participant(session, actor, trial, subject_code, "form.lock", lock=True)
        n = 0
        records = list(session.scalars(
            select(FormRecord).where(
                FormRecord.participant_id == participant.id,
                FormRecord.status.in_(("submitted", "verified", "signed", "frozen")),
            )
        ))
        _refuse_unresolved_queries(session, [r.id for r in records])
        for record in records:
            before = audit.snapshot(record)
            record.status = "locked"
            audit.record_update(
                session,
                actor,
                "form.locked",
                record,
                before,
                trial_id=trial.id,
                site_id=participant.site_id,
            )
            n += 1
    return n


# ---------------------------------------------------------------- queries


def _open_query(
    session: Session,
    actor: Actor,
    record: FormRecord,
    participant: Participant,
    field: str,
    text: str,
    origin: str = "manual",
) -> DataQuery:
    query = DataQuery(
        form_record_id=record.id,
        field=field,
        status="open",
        origin=origin,
        text=text,
        raised_by_id=actor.user_id,
    )
    session.add(query)
    audit.record_create(
        session,
        actor,
        "query.raise",
        query,
        trial_id=participant.trial_id,
        site_id=participant.site_id,
    )
    return query


def raise_query(
    session: Session, actor: Actor, trial: Trial, record_id: int, field: str, text: str
) -> DataQuery:
    if not text.strip():
        raise ValidationError("query text is required", {"text": ["must not be blank"]})
    with transaction(session):
        record, participant = get_record(session, actor, trial, record_id, "query.raise")
        protocol = protocol_for(session, participant)
        form = _form(protocol, record.form_code)
        if field not in {f.id for f in form.fields} and field != form.id:
            raise ValidationError("unknown field", {"field": [f"not a field of {form.id}"]})
        return _open_query(session, actor, record, participant, field, text.strip())


def _query(
    session: Session, actor: Actor, trial: Trial, query_id: int, action: str
) -> tuple[DataQuery, Participant]:
    query = session.get(DataQuery, query_id)
    if query is None:
        raise NotFound("query not found")
    _, participant = get_record(session, actor, trial, query.form_record_id, action)
    locked = lock_row(session, DataQuery, query_id)
    assert locked is not None
    return locked, participant


def answer_query(
    session: Session, actor: Actor, trial: Trial, query_id: int, answer: str
) -> DataQuery:
    if not answer.strip():
        raise ValidationError("an answer is required", {"answer": ["must not be blank"]})
    with transaction(session):
        query, participant = _query(session, actor, trial, query_id, "query.answer")
        if query.status != "open":
            raise Conflict(f"the query is {query.status}")
        before = audit.snapshot(query)
        query.status, query.answer = "answered", answer.strip()
        query.answered_by_id, query.answered_at = actor.user_id, utcnow()
        audit.record_update(
            session,
            actor,
            "query.answer",
            query,
            before,
            trial_id=trial.id,
            site_id=participant.site_id,
        )
    return query


def close_query(
    session: Session,
    actor: Actor,
    trial: Trial,
    query_id: int,
    reopen: bool = False,
    note: str | None = None,
) -> DataQuery:
    with transaction(session):
        query, participant = _query(session, actor, trial, query_id, "query.close")
        if reopen:
            if query.status == "open":
                raise Conflict("the query is already open")
            target, action = "open", "query.reopen"
        else:
            if query.status == "closed":
                raise Conflict("the query is already closed")
            target, action = "closed", "query.close"
        before = audit.snapshot(query)
        query.status = target
        query.closed_at = utcnow() if target == "closed" else None
        audit.record_update(
            session,
            actor,
            action,
            query,
            before,
            trial_id=trial.id,
            site_id=participant.site_id,
            reason=note,
        )
    return query
