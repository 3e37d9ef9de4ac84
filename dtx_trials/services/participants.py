"""Participant lifecycle: screening → consent → eligibility → enrollment (→ randomization),
withdrawal, visits. One function per use case, one transaction each, audit inside."""

from __future__ import annotations

import datetime
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from typing import Protocol as Structural

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.orm import Session

from dtx_trials.db import insert_many, loaded, lock_row, transaction, utcnow
from dtx_trials.models import (
    Consent,
    FormRecord,
    Participant,
    ProtocolVersion,
    Site,
    Trial,
    Visit,
)
from dtx_trials.models.participants import IDENTIFIER_COLUMNS
from dtx_trials.services import audit
from dtx_trials.services.access import Actor, require, visible_sites
from dtx_trials.services.errors import Conflict, NotFound, ValidationError
from dtx_trials.services.protocols import (
    active_protocol,
    active_protocol_model,
    note_version_ref,
    note_version_sha,
    protocol_by_version_id,
    protocol_of,
)
from ecrf.checks import EligibilityResult, evaluate_eligibility
from ecrf.model import UNSCHEDULED_VISIT
from ecrf.schedule import PlannedVisit, days_outside_window, plan_visits, replan_after
from protocols.model import Protocol


class ParticipantRow(Structural):
    """What a participant's protocol and visit plan are found from: a `Participant`, or the
    columns of its row a hot path read without an ORM object (the randomization's)."""

    @property
    def id(self) -> int: ...
    @property
    def trial_id(self) -> int: ...
    @property
    def site_id(self) -> int: ...
    @property
    def protocol_version_id(self) -> int | None: ...
    @property
    def screened_at(self) -> datetime.datetime: ...
    @property
    def enrolled_at(self) -> datetime.datetime | None: ...
    @property
    def randomized_at(self) -> datetime.datetime | None: ...


# status -> statuses it may move to
TRANSITIONS: dict[str, frozenset[str]] = {
    "screening": frozenset({"consented", "screen_failed", "withdrawn"}),
    "consented": frozenset({"eligible", "screen_failed", "withdrawn"}),
    "eligible": frozenset({"enrolled", "screen_failed", "withdrawn"}),
    "enrolled": frozenset({"randomized", "withdrawn", "completed"}),
    "randomized": frozenset({"withdrawn", "completed"}),
    "screen_failed": frozenset(),
    "withdrawn": frozenset(),
    "completed": frozenset(),
}
ACTIVE_STATUSES = frozenset({"screening", "consented", "eligible", "enrolled", "randomized"})


def _move(participant: Participant, status: str) -> None:
    if status not in TRANSITIONS[participant.status]:
        raise Conflict(
            f"participant is {participant.status}; cannot become {status}",
            status=participant.status,
        )
    participant.status = status


def protocol_for(session: Session, participant: ParticipantRow) -> Protocol:
    if participant.protocol_version_id is not None:
        return protocol_by_version_id(session, participant.protocol_version_id)
    trial = session.get(Trial, participant.trial_id)
    assert trial is not None
    return active_protocol_model(session, trial)


def version_protocol(session: Session, version_id: int) -> Protocol:
    """The protocol of a stored version (a record's own version)."""
    return protocol_by_version_id(session, version_id)


def current_protocol(session: Session, participant: Participant) -> Protocol:
    """The trial's active protocol: consent documents always follow the current version."""
    trial = session.get(Trial, participant.trial_id)
    assert trial is not None
    return active_protocol_model(session, trial)


def get_participant(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    action: str = "participant.read",
    *,
    lock: bool = False,
) -> Participant:
    """Return a participant of the trial visible to the actor (404 across sites)."""
    stmt = (
        select(Participant, ProtocolVersion.sha256)
        .outerjoin(ProtocolVersion, ProtocolVersion.id == Participant.protocol_version_id)
        .where(Participant.trial_id == trial.id, Participant.subject_code == subject_code)
    )
    if lock:
        # read and lock in one statement (a 403 after it rolls back and releases the lock)
        stmt = stmt.with_for_update(of=Participant).execution_options(populate_existing=True)
    row = session.execute(stmt).first()
    if row is None:
        raise NotFound("participant not found")
    participant, sha256 = row
    require(actor, action, trial.id, participant.site_id)
    note_version_sha(session, participant.protocol_version_id, sha256)
    return participant  # type: ignore[no-any-return]


def list_participants(
    session: Session, actor: Actor, trial: Trial, site_code: str | None = None
) -> list[Participant]:
    sites = visible_sites(actor, "participant.read", trial.id)
    stmt = select(Participant).where(Participant.trial_id == trial.id)
    if sites is not None:
        stmt = stmt.where(Participant.site_id.in_(sites))
    if site_code:
        stmt = stmt.join(Site, Site.id == Participant.site_id).where(Site.code == site_code)
    return list(session.scalars(stmt.order_by(Participant.subject_code)))


def screen_participant(
    session: Session,
    actor: Actor,
    trial: Trial,
    site_code: str,
    identifiers: Mapping[str, str | None] | None = None,
) -> Participant:
    """Register a person at a site; they get the next subject code of that site."""
    site = session.scalars(
        select(Site).where(Site.trial_id == trial.id, Site.code == site_code)
    ).first()
    if site is None:
        raise NotFound("site not found", {"site": [f"no site {site_code} in {trial.code}"]})
    require(actor, "participant.write", trial.id, site.id)
    if not site.is_active:
        raise Conflict(f"site {site_code} is not active")
    unknown = set(identifiers or {}) - set(IDENTIFIER_COLUMNS)
    if unknown:
        raise ValidationError(
            "unknown identifier", {k: ["not an identifier field"] for k in unknown}
        )
    with transaction(session):
        lock_row(session, Site, site.id)  # serialises subject-code numbering per site
        version, _ = active_protocol(session, trial)
        n = (
            session.scalar(
                select(func.count()).select_from(Participant).where(Participant.site_id == site.id)
            )
            or 0
        )
        participant = Participant(
            trial_id=trial.id,
            site_id=site.id,
            subject_code=f"{site.code}-{n + 1:04d}",
            status="screening",
            protocol_version_id=version.id,
            **{k: (v or None) for k, v in (identifiers or {}).items()},
        )
        session.add(participant)
        audit.record_create(session, actor, "participant.screen", participant)
    return participant


def record_consent(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    *,
    document_id: str,
    version: str,
    language: str,
    signer_role: str,
    signer_name: str | None = None,
    signer_phone: str | None = None,
    signed_at: datetime.datetime | None = None,
) -> Consent:
    """Record a signed consent of a protocol consent document (re-consent when it changes).

    The signer must be the one the document names (``consents[].signer``): a guardian consent
    recorded as signed by the participant is refused (422), and so is an assent signed by a
    guardian. The signer's name and phone are direct identifiers, encrypted at rest.
    """
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "participant.write", lock=True
        )
        protocol = current_protocol(session, participant)
        documents = {(d.id, d.version, d.language): d for d in protocol.consents}
        if protocol.consents and (document_id, version, language) not in documents:
            known = sorted(f"{d.id} v{d.version} ({d.language})" for d in protocol.consents)
            raise ValidationError(
                "unknown consent document", {"document_id": [f"one of: {', '.join(known)}"]}
            )
        document = documents.get((document_id, version, language))
        if document is not None and signer_role != document.signer:
            raise ValidationError(
                f"{document_id} v{version} is signed by the {document.signer}",
                {"signer_role": [f"must be {document.signer} for {document_id}"]},
            )
        if participant.status not in ACTIVE_STATUSES:
            raise Conflict(f"participant is {participant.status}")
        consent = Consent(
            participant_id=participant.id,
            document_id=document_id,
            consent_version=version,
            language=language,
            signer_role=signer_role,
            signer_name=signer_name,
            signer_phone=signer_phone,
            signed_at=signed_at or utcnow(),
            recorded_by_id=actor.user_id,
        )
        session.add(consent)
        audit.record_create(
            session, actor, "consent.sign", consent, trial_id=trial.id, site_id=participant.site_id
        )
        if participant.status == "screening" and not missing_consents(
            session, participant, protocol
        ):
            before = audit.snapshot(participant)
            _move(participant, "consented")
            participant.consented_at = consent.signed_at
            audit.record_update(session, actor, "participant.consented", participant, before)
        move_if_due(session, actor, participant, "consent")
    return consent


def list_consents(
    session: Session, actor: Actor, trial: Trial, subject_code: str
) -> list[Consent]:
    participant = get_participant(session, actor, trial, subject_code, "participant.read")
    return list(session.scalars(
        select(Consent).where(Consent.participant_id == participant.id).order_by(Consent.id)
    ))


def _standing_consent(participant_id: Any) -> Any:
    """The condition of a consent that counts: not withdrawn, and a remote consent only once
    an investigator has countersigned it."""
    return (
        (Consent.participant_id == participant_id)
        & Consent.withdrawn_at.is_(None)
        & ((Consent.method != "remote") | Consent.countersigned_at.is_not(None))
    )


_SEP_PAIR, _SEP_ITEM = "\x1e", "\x1f"  # record and unit separators (never in ids or versions)


# Built once per process with bound parameters: constructing this statement (and its cache
# key) at every request cost more CPU than executing it (a data entry's hottest statement).
# The participant's identifiers are not selected: a data entry does not read them, so it does
# not decrypt them (`db.loaded` leaves them to load if something reads them).
_ENTRY_COLUMNS = tuple(
    c for c in Participant.__table__.columns if c.name not in IDENTIFIER_COLUMNS
)
_LOCK_FOR_ENTRY = (
    select(
        *_ENTRY_COLUMNS,
        ProtocolVersion.sha256,
        ProtocolVersion.version_no,
        ProtocolVersion.content["version"].as_string(),
        select(
            func.aggregate_strings(
                Consent.document_id + _SEP_PAIR + Consent.consent_version, _SEP_ITEM
            )
        )
        .where(_standing_consent(Participant.id))
        .correlate(Participant)
        .scalar_subquery(),
    )
    .outerjoin(ProtocolVersion, ProtocolVersion.id == Participant.protocol_version_id)
    .where(
        Participant.trial_id == bindparam("trial_id"),
        Participant.subject_code == bindparam("subject_code"),
    )
    .with_for_update(of=Participant)
)


def lock_for_entry(
    session: Session, actor: Actor, trial: Trial, subject_code: str, action: str
) -> tuple[Participant, set[tuple[str, str]]]:
    """Lock a participant for data entry and return it with its standing consents
    (document id, version), read in the same statement (see `missing_consents`); the row
    becomes the session's object by `db.loaded` (the ORM's loading costs more than the
    statement's round trip), a participant the session held taking the locked row's values."""
    session.flush()  # as a query's autoflush
    row = session.connection().execute(
        _LOCK_FOR_ENTRY, {"trial_id": trial.id, "subject_code": subject_code}
    ).first()
    if row is None:
        raise NotFound("participant not found")
    participant = loaded(session, Participant, row._mapping, refresh=True)
    sha256, version_no, version, text = row[-4:]  # the columns after the participant's
    require(actor, action, trial.id, participant.site_id)
    note_version_sha(session, participant.protocol_version_id, sha256)
    note_version_ref(session, participant.protocol_version_id, version_no, version)
    signed = {
        (doc, version)
        for doc, _, version in (p.partition(_SEP_PAIR) for p in (text or "").split(_SEP_ITEM) if p)
    }
    return participant, signed


def missing_consents(
    session: Session,
    participant: Participant,
    protocol: Protocol,
    signed: set[tuple[str, str]] | None = None,
) -> list[str]:
    """Return the consent documents (id vN) still to be signed in their current version
    (``signed``: the standing consents when the caller read them already)."""
    if signed is None:
        signed = {
            (c.document_id, c.consent_version)
            for c in session.scalars(select(Consent).where(_standing_consent(participant.id)))
        }
    required = {(d.id, d.version) for d in protocol.consents}
    if not protocol.consents:
        return [] if signed else ["consent"]
    return sorted(f"{doc} v{ver}" for doc, ver in required - signed)


def missing_consents_of(
    session: Session, participants: Sequence[Participant], protocol: Protocol
) -> dict[int, list[str]]:
    """`missing_consents` of many participants in one query (a list page)."""
    signed: dict[int, set[tuple[str, str]]] = {p.id: set() for p in participants}
    if signed:
        for participant_id, document_id, version in session.execute(
            select(Consent.participant_id, Consent.document_id, Consent.consent_version).where(
                Consent.participant_id.in_(list(signed)),
                Consent.withdrawn_at.is_(None),
                (Consent.method != "remote") | Consent.countersigned_at.is_not(None),
            )
        ):
            signed[participant_id].add((document_id, version))
    return {p.id: missing_consents(session, p, protocol, signed[p.id]) for p in participants}


# A record as `submitted_values` reads it: (visit code or None, form code, repeat index,
# status, data); a row of nulls (an outer join that found no record) is no record.
RecordValues = tuple[
    str | None, str | None, int | None, str | None, Mapping[str, object] | None
]


@dataclass(frozen=True)
class SubmittedValues:
    """A participant's values from their submitted records (`submitted_values`)."""

    merged: dict[str, object]  # over every record
    unattached: dict[str, object]  # over the records at no visit (a bulk import)
    by_visit: dict[str, dict[str, object]]  # over each visit's records


def log_forms(protocol: Protocol) -> frozenset[str]:
    """The protocol's logs: the forms with any number of entries (AEs, con-meds)."""
    return frozenset(form.id for form in protocol.forms if form.repeating)


def submitted_values(records: Iterable[RecordValues], logs: Collection[str]) -> SubmittedValues:
    """The values of a participant's records, given in record order (a later record's value
    of a field replaces an earlier one's): what eligibility, stratification and cross-visit
    checks read, one rule for all of them. A draft is no value; nor is a later occurrence of
    a questionnaire's repeating window (``repeat_index`` > 1 of a form that is not a log, e.g.
    the weekly PHQ-A from baseline): the visit's value is its first occurrence, as in the
    analysis datasets. Every entry of a log (``logs``, `log_forms`) is a value."""
    merged: dict[str, object] = {}
    unattached: dict[str, object] = {}
    by_visit: dict[str, dict[str, object]] = {}
    for visit_code, form_code, repeat_index, status, data in records:
        if status is None or status == "draft":
            continue
        if repeat_index != 1 and form_code not in logs:
            continue
        merged.update(data or {})
        own = unattached if visit_code is None else by_visit.setdefault(visit_code, {})
        own.update(data or {})
    return SubmittedValues(merged, unattached, by_visit)


# the columns of a record's `RecordValues`, its visit's code first
RECORD_VALUE_COLUMNS = (
    Visit.visit_code,
    FormRecord.form_code,
    FormRecord.repeat_index,
    FormRecord.status,
    FormRecord.data,
)
# a participant's records with their visits' codes, in record order (`clinical_values`)
_RECORDS_WITH_VISITS = (
    select(*RECORD_VALUE_COLUMNS)
    .select_from(FormRecord)
    .outerjoin(Visit, Visit.id == FormRecord.visit_id)
    .where(FormRecord.participant_id == bindparam("participant_id"))
    .order_by(FormRecord.id)
)


def clinical_values(
    session: Session, participant: Participant
) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    """Return the participant's values merged across forms, and per visit
    (`submitted_values`)."""
    rows = session.execute(_RECORDS_WITH_VISITS, {"participant_id": participant.id}).all()
    values = submitted_values(
        cast(list[RecordValues], rows), log_forms(protocol_for(session, participant))
    )
    return values.merged, values.by_visit


def assess_eligibility(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    today: datetime.date | None = None,
) -> EligibilityResult:
    """Evaluate the protocol's criteria over the submitted screening data.

    Eligible → status `eligible`; a failed criterion → `screen_failed` (shown by id and text);
    undetermined criteria (blank inputs) change nothing. The assessment is audited.
    """
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "participant.write", lock=True
        )
        if participant.status not in ("consented", "eligible", "screening"):
            raise Conflict(
                f"participant is {participant.status}; eligibility is assessed "
                "after consent and before enrollment"
            )
        if participant.status == "screening":
            raise Conflict("consent must be recorded before eligibility is assessed")
        protocol = protocol_for(session, participant)
        values, by_visit = clinical_values(session, participant)
        result = evaluate_eligibility(
            protocol.eligibility, values, visits=by_visit, today=today or datetime.date.today()
        )
        before = audit.snapshot(participant)
        if result.failed:
            _move(participant, "screen_failed")
        elif result.is_eligible and participant.status == "consented":
            _move(participant, "eligible")
        audit.record_update(session, actor, "participant.eligibility", participant, before)
        audit.record_event(
            session,
            actor,
            "eligibility.assessed",
            entity_type="participant",
            entity_id=participant.id,
            trial_id=trial.id,
            site_id=participant.site_id,
            details={
                "eligible": result.is_eligible,
                "failed": [c.id for c in result.failed],
                "undetermined": [c.id for c in result.undetermined],
            },
        )
    return result


def enroll_participant(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    today: datetime.date | None = None,
) -> Participant:
    """Enroll an eligible, consented participant and plan the visits anchored so far."""
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "participant.write", lock=True
        )
        protocol = protocol_for(session, participant)
        missing = missing_consents(session, participant, current_protocol(session, participant))
        if missing:
            raise Conflict("consent missing", {"consent": missing})
        if participant.status != "eligible":
            raise Conflict(
                f"participant is {participant.status}; only eligible participants are enrolled",
                status=participant.status,
            )
        before = audit.snapshot(participant)
        _move(participant, "enrolled")
        participant.enrolled_at = utcnow()
        audit.record_update(session, actor, "participant.enroll", participant, before)
        plan_participant_visits(session, actor, participant, protocol, today=today)
    return participant


def anchors_of(participant: ParticipantRow, zone: datetime.tzinfo) -> dict[str, datetime.date]:
    """The schedule's anchor days: the site's calendar day of screening, enrolment and
    randomization (stored in UTC; randomized at 00:30 in Beijing is that day, not the UTC
    day before)."""

    def day(moment: datetime.datetime) -> datetime.date:
        aware = moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)
        return aware.astimezone(zone).date()

    anchors = {"screening": day(participant.screened_at)}
    if participant.enrolled_at:
        anchors["enrollment"] = day(participant.enrolled_at)
    if participant.randomized_at:
        anchors["randomization"] = day(participant.randomized_at)
    return anchors


_SCHEDULED_VISIT_CODES = select(Visit.visit_code).where(
    Visit.participant_id == bindparam("participant_id"), Visit.is_unscheduled.is_(False)
)


def plan_participant_visits(
    session: Session,
    actor: Actor,
    participant: ParticipantRow,
    protocol: Protocol,
    today: datetime.date | None = None,
    zone: datetime.tzinfo | None = None,
    existing: Collection[str] | None = None,
) -> None:
    """Create the planned visits whose anchor is now known (inside the caller's txn);
    ``zone``: the site's time zone, and ``existing``: the codes of the participant's scheduled
    visits, when the caller read them already (under the participant's lock)."""
    if zone is None:
        from dtx_trials.services.deviations import site_zone

        zone = site_zone(session.get(Site, participant.site_id))
    if existing is None:
        existing = set(
            session.scalars(_SCHEDULED_VISIT_CODES, {"participant_id": participant.id})
        )
    rows = [
        {
            "participant_id": participant.id,
            "visit_code": planned.visit_id,
            "occurrence": 1,
            "is_unscheduled": False,
            "planned_on": planned.planned_on,
            "window_start_on": planned.window_start_on,
            "window_end_on": planned.window_end_on,
            "actual_on": None,
            "actual_at": None,
            "status": "planned",
            "missed_reason": None,
        }
        for planned in plan_visits(protocol.schedule, anchors_of(participant, zone))
        if planned.visit_id not in existing
    ]
    if not rows:
        return
    # one multi-row insert of every column, no ORM object (none is read in the transaction)
    ids = insert_many(session.connection(), _VISIT, rows)
    for visit_id, row in zip(ids, rows, strict=True):
        audit.record_create_row(
            session, actor, "visit.plan", Visit, visit_id, row,
            trial_id=participant.trial_id, site_id=participant.site_id,
        )  # fmt: skip


_VISIT = cast(Table, Visit.__table__)


def withdraw_participant(
    session: Session, actor: Actor, trial: Trial, subject_code: str, reason: str
) -> Participant:
    """Withdraw a participant: no new data afterwards; stored data and trail are kept."""
    if not reason or not reason.strip():
        raise ValidationError("a reason is required", {"reason": ["must not be blank"]})
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "participant.write", lock=True
        )
        before = audit.snapshot(participant)
        _move(participant, "withdrawn")
        participant.withdrawn_at = utcnow()
        participant.withdrawal_reason = reason.strip()
        audit.record_update(
            session, actor, "participant.withdraw", participant, before, reason=reason.strip()
        )
    return participant


def reveal_identifiers(
    session: Session, actor: Actor, trial: Trial, subject_code: str
) -> dict[str, Any]:
    """Return a participant's direct identifiers to site staff; the access is audited."""
    with transaction(session):
        participant = get_participant(session, actor, trial, subject_code, "participant.identify")
        audit.record_event(
            session,
            actor,
            "participant.identifiers_viewed",
            entity_type="participant",
            entity_id=participant.id,
            trial_id=trial.id,
            site_id=participant.site_id,
        )
        return {k: getattr(participant, k) for k in IDENTIFIER_COLUMNS}


def change_identifiers(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    changes: Mapping[str, str | None],
    reason: str,
) -> Participant:
    """Correct or update a participant's direct identifiers (a new phone, say), with a reason:
    the audit event holds the old and new values sealed, as at screening. A blank value
    clears one; identifiers not named keep theirs."""
    unknown = set(changes) - set(IDENTIFIER_COLUMNS)
    if unknown:
        raise ValidationError(
            "unknown identifier", {k: ["not an identifier field"] for k in unknown}
        )
    if not changes:
        raise ValidationError("nothing to change", {"identifiers": ["name one at least"]})
    if not reason.strip():
        raise ValidationError("a reason is required", {"reason": ["required"]})
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "participant.identify", lock=True
        )
        write_identifiers(session, actor, participant, changes, reason.strip())
    return participant


def write_identifiers(
    session: Session, actor: Actor, participant: Participant,
    changes: Mapping[str, str | None], reason: str,
) -> None:
    """Set the named identifiers of a participant locked by the caller (a blank clears one),
    audited as ``participant.identifiers_changed`` with the reason, the values sealed."""
    before = audit.snapshot(participant)
    for name, value in changes.items():
        setattr(participant, name, (value or "").strip() or None)
    audit.record_update(
        session, actor, "participant.identifiers_changed", participant, before, reason=reason
    )


def _site_now(session: Session, participant: Participant, now: datetime.datetime) -> Any:
    from dtx_trials.services.deviations import site_zone

    zone = site_zone(session.get(Site, participant.site_id))
    return zone, now.astimezone(zone)


# No visit of a trial run on this platform took place before this date: an earlier one is a
# typing error (year 1 overflowed the time-zone conversion).
EARLIEST_VISIT_DATE = datetime.date(1990, 1, 1)


def record_visit_date(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    visit_code: str,
    actual_on: datetime.date,
    *,
    time: datetime.time | None = None,
    reason: str | None = None,
    reanchor: bool | None = None,
    now: datetime.datetime | None = None,
) -> Visit:
    """Record the date (and optionally the local time) a scheduled visit took place.

    The date and time are the site's local calendar and clock (its IANA time zone); a visit in
    the site's future is refused. The visit becomes `completed`; outside its window it raises an
    `out_of_window` protocol deviation. A visit the protocol declares ``reanchor`` (or
    ``reanchor=True``, as the simulator asks) re-plans the later visits sharing its anchor from
    its actual date. Correcting a recorded date needs a reason. Every change is audited.
    """
    from dtx_trials.services import deviations

    now = now or utcnow()
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "participant.write", lock=True
        )
        if participant.status not in ACTIVE_STATUSES:
            raise Conflict(f"participant is {participant.status}; no new data may be entered")
        protocol = protocol_for(session, participant)
        definition = next((v for v in protocol.schedule.visits if v.id == visit_code), None)
        if definition is None:
            raise ValidationError(
                f"visit {visit_code} is not in the schedule",
                {"visit": [f"one of: {', '.join(v.id for v in protocol.schedule.visits)}"]},
            )
        if actual_on < EARLIEST_VISIT_DATE:  # (before: year 1 with a time was a 500)
            raise ValidationError(
                "the visit date is not a date of this trial",
                {"date": [f"on or after {EARLIEST_VISIT_DATE.isoformat()}"]},
            )
        zone, local_now = _site_now(session, participant, now)
        actual_at = (
            datetime.datetime.combine(actual_on, time, tzinfo=zone).astimezone(datetime.UTC)
            if time is not None
            else None
        )
        if actual_on > local_now.date() or (actual_at is not None and actual_at > now):
            raise ValidationError(
                "the visit date lies in the future",
                {"date": [f"after the site's current local time {local_now:%Y-%m-%d %H:%M}"]},
            )
        visits = {
            v.visit_code: v
            for v in session.scalars(
                select(Visit).where(
                    Visit.participant_id == participant.id, Visit.is_unscheduled.is_(False)
                )
            )
        }
        visit = visits.get(visit_code)
        if visit is not None and visit.status == "missed":
            raise Conflict(f"visit {visit_code} was recorded as missed")
        if visit is not None and session.scalars(
            select(FormRecord.id).where(
                FormRecord.visit_id == visit.id, FormRecord.status.in_(("frozen", "locked"))
            )
        ).first() is not None:
            # the date is the collection date of the visit's locked values in every export
            # (before: changed under them)
            raise Conflict(f"visit {visit_code} holds frozen or locked forms; unlock them first")
        is_correction = (
            visit is not None
            and visit.actual_on is not None
            and (visit.actual_on, visit.actual_at) != (actual_on, actual_at)
        )
        if is_correction and not (reason and reason.strip()):
            raise ValidationError(
                "changing a recorded visit date needs a reason", {"reason": ["required"]}
            )
        if reanchor:
            # the caller fixes day 0 from this visit (the simulator, replaying a site's past):
            # every visit sharing the anchor, this one included, is re-planned first
            anchor_on = actual_on - datetime.timedelta(days=definition.day)
            _apply_plan(
                session, actor, participant, visits,
                plan_visits(protocol.schedule, {definition.anchor: anchor_on}),
                f"{visit_code} took place on {actual_on.isoformat()}", only_planned=False,
            )
        if visit is None:
            visit = Visit(participant_id=participant.id, visit_code=visit_code, status="open")
            session.add(visit)
            audit.record_create(
                session, actor, "visit.open", visit, trial_id=trial.id, site_id=participant.site_id
            )
        before = audit.snapshot(visit)
        visit.actual_on = actual_on
        visit.actual_at = actual_at
        visit.status = "completed"
        audit.record_update(
            session,
            actor,
            "visit.date",
            visit,
            before,
            trial_id=trial.id,
            site_id=participant.site_id,
            reason=reason.strip() if is_correction and reason else None,
        )
        if is_correction:
            deviations.supersede_open(
                session, actor, participant, visit, "out_of_window", "visit date corrected"
            )
        if (
            visit.planned_on is not None
            and visit.window_start_on is not None
            and visit.window_end_on is not None
        ):
            planned = PlannedVisit(
                visit_code, visit.planned_on, visit.window_start_on, visit.window_end_on
            )
            off = days_outside_window(planned, actual_on)
            if off:
                deviations.raise_deviation(
                    session,
                    actor,
                    participant,
                    visit,
                    "out_of_window",
                    f"visit {visit_code} on {actual_on.isoformat()}, "
                    f"{abs(off)} day(s) {'before' if off < 0 else 'after'} its window "
                    f"{visit.window_start_on.isoformat()} – {visit.window_end_on.isoformat()}",
                    days_outside=off,
                )
        if reanchor is None:
            # the protocol decides (schedule.visits[].reanchor): later visits not yet done
            _apply_plan(
                session, actor, participant, visits,
                replan_after(protocol.schedule, visit_code, actual_on),
                f"{visit_code} took place on {actual_on.isoformat()}", only_planned=True,
            )
        if not is_correction:
            move_if_due(session, actor, participant, "visit")
    return visit


def _apply_plan(
    session: Session,
    actor: Actor,
    participant: Participant,
    visits: Mapping[str, Visit],
    plan: Sequence[PlannedVisit],
    reason: str,
    *,
    only_planned: bool,
) -> None:
    for item in plan:
        row = visits.get(item.visit_id)
        if row is None or row.planned_on == item.planned_on:
            continue
        if only_planned and row.status != "planned":
            continue
        before = audit.snapshot(row)
        row.planned_on = item.planned_on
        row.window_start_on = item.window_start_on
        row.window_end_on = item.window_end_on
        audit.record_update(
            session,
            actor,
            "visit.replan",
            row,
            before,
            trial_id=participant.trial_id,
            site_id=participant.site_id,
            reason=reason,
        )


def record_visit_missed(
    session: Session, actor: Actor, trial: Trial, subject_code: str, visit_code: str, reason: str
) -> Visit:
    """Record that a scheduled visit will not take place; a `missed_visit` deviation is raised."""
    from dtx_trials.services import deviations

    if not reason or not reason.strip():
        raise ValidationError("a reason is required", {"reason": ["must not be blank"]})
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "participant.write", lock=True
        )
        if participant.status not in ACTIVE_STATUSES:
            raise Conflict(f"participant is {participant.status}; no new data may be entered")
        protocol = protocol_for(session, participant)
        if visit_code not in {v.id for v in protocol.schedule.visits}:
            raise ValidationError(
                f"visit {visit_code} is not in the schedule",
                {"visit": [f"one of: {', '.join(v.id for v in protocol.schedule.visits)}"]},
            )
        visit = session.scalars(
            select(Visit).where(
                Visit.participant_id == participant.id,
                Visit.visit_code == visit_code,
                Visit.is_unscheduled.is_(False),
            )
        ).first()
        if visit is None:
            raise Conflict(f"visit {visit_code} is not planned yet")
        if visit.status in ("completed", "missed"):
            raise Conflict(f"visit {visit_code} is {visit.status}")
        before = audit.snapshot(visit)
        visit.status = "missed"
        visit.missed_reason = reason.strip()
        audit.record_update(
            session, actor, "visit.missed", visit, before, trial_id=trial.id,
            site_id=participant.site_id,
        )
        deviations.raise_deviation(
            session, actor, participant, visit, "missed_visit",
            f"visit {visit_code} missed: {reason.strip()}",
        )
    return visit


# ------------------------------------------------------------------ amendments


def amendment_transition(protocol: Protocol) -> str:
    """How participants move to this version when it is activated as an amendment
    (``amendment.transition``; a version that declares none moves them immediately)."""
    return protocol.amendment.transition if protocol.amendment is not None else "immediately"


def pending_version(
    session: Session, participant: Participant
) -> tuple[Any, Protocol, str] | None:
    """The trial's active version when this participant still follows an earlier one:
    (version row, its protocol, the transition rule); None when they are on it already or no
    longer take part."""
    trial = session.get(Trial, participant.trial_id)
    assert trial is not None
    if (
        trial.active_protocol_version_id is None
        or participant.protocol_version_id in (None, trial.active_protocol_version_id)
        or participant.status not in ACTIVE_STATUSES
    ):
        return None
    version, protocol = active_protocol(session, trial)
    return version, protocol, amendment_transition(protocol)


def waiting_for(session: Session, participant: Participant) -> dict[str, Any] | None:
    """What moving this participant to the active version waits for (None: nothing pending)."""
    pending = pending_version(session, participant)
    if pending is None:
        return None
    version, protocol, rule = pending
    return {
        "version_no": version.version_no,
        "version": protocol.version,
        "transition": rule,
        "missing_consents": missing_consents(session, participant, protocol)
        if rule == "after_reconsent"
        else [],
    }


def move_to_version(
    session: Session, actor: Actor, participant: Participant, version: Any, why: str
) -> None:
    """Move a participant to a protocol version (inside the caller's transaction, audited):
    their new forms follow it; records captured before keep the version they were captured
    under. Visits the new version adds are planned from the anchors known so far."""
    # only the version changes: nothing else is snapshot (the identifiers are neither read,
    # decrypted nor sealed again; a form save that moves the participant never reads them)
    changed = ("protocol_version_id",)
    before = audit.snapshot(participant, changed)
    participant.protocol_version_id = version.id
    audit.record_update(
        session, actor, "participant.protocol_version", participant, before,
        reason=f"amendment v{version.version_no}: {why}", fields=changed,
    )  # fmt: skip
    if participant.status in ("enrolled", "randomized"):
        plan_participant_visits(session, actor, participant, protocol_of(version))


def move_if_due(session: Session, actor: Actor, participant: Participant, event: str) -> bool:
    """Apply the active version's transition rule after ``event`` (``activation``, ``visit``:
    a visit date recorded or a visit's first data, ``consent``: a consent now counts); return
    whether the participant moved. Inside the caller's transaction."""
    pending = pending_version(session, participant)
    if pending is None:
        return False
    version, protocol, rule = pending
    if rule == "immediately":
        why = "moved on activation"
    elif rule == "next_visit" and event == "visit":
        why = "moved at the next visit"
    elif rule == "after_reconsent" and not missing_consents(session, participant, protocol):
        why = "moved after re-consent" if event != "activation" else "no consent to re-sign"
    else:
        return False
    move_to_version(session, actor, participant, version, why)
    return True


def _moves_at_visit(
    session: Session, participant: Participant, visit_code: str, form_code: str
) -> bool:
    """Whether entering this form at this visit is the participant's next visit taking place
    under a pending ``next_visit`` amendment: a scheduled visit holding no data yet (a log
    form — adverse events, medications — entered at any visit is not a visit taking place)."""
    pending = pending_version(session, participant)
    if pending is None or pending[2] != "next_visit" or visit_code == UNSCHEDULED_VISIT:
        return False
    form = None
    for protocol in (pending[1], protocol_for(session, participant)):
        try:
            form = protocol.form(form_code)
            break
        except KeyError:
            continue
    if form is None or form.repeating:
        return False
    has_data = session.scalar(
        select(FormRecord.id)
        .join(Visit, Visit.id == FormRecord.visit_id)
        .where(FormRecord.participant_id == participant.id, Visit.visit_code == visit_code)
        .limit(1)
    )
    return has_data is None


def move_at_new_visit(
    session: Session, actor: Actor, participant: Participant, visit_code: str, form_code: str
) -> bool:
    """Under a ``next_visit`` amendment, the first data of a scheduled visit moves the
    participant before that data is validated (inside the caller's transaction)."""
    if not _moves_at_visit(session, participant, visit_code, form_code):
        return False
    return move_if_due(session, actor, participant, "visit")


def form_protocol(
    session: Session, participant: Participant, visit_code: str, form_code: str,
    record: FormRecord | None,
) -> Protocol:
    """The protocol a form entry follows: a stored record its own version (data captured under
    an earlier version is kept as is); a new entry the participant's version, or the
    amendment's when this entry is the visit that moves them."""
    if record is not None and record.protocol_version_id is not None:
        return version_protocol(session, record.protocol_version_id)
    if _moves_at_visit(session, participant, visit_code, form_code):
        pending = pending_version(session, participant)
        assert pending is not None
        return pending[1]
    return protocol_for(session, participant)


def apply_amendment(session: Session, actor: Actor, trial: Trial) -> dict[str, int]:
    """On activation of an amendment: move the participants the rule moves now (inside the
    activation's transaction); return how many moved and how many wait."""
    moved = waiting = 0
    for participant in session.scalars(
        select(Participant)
        .where(Participant.trial_id == trial.id, Participant.status.in_(ACTIVE_STATUSES))
        .order_by(Participant.id)
        .with_for_update()
    ):
        if participant.protocol_version_id == trial.active_protocol_version_id:
            continue
        if move_if_due(session, actor, participant, "activation"):
            moved += 1
        else:
            waiting += 1
    return {"moved": moved, "waiting": waiting}
