"""Standard exports (CSV, SAS XPORT, CDISC ODM, FHIR) of a trial: role-checked,
de-identified (pseudonymous codes, identifier fields dropped), blinded unless the caller may
see arms, and audited with the SHA-256 of every file written."""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import zipfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from analysis.exports import (
    build_csv_exports,
    build_fhir_exports,
    build_odm,
    build_xpt_exports,
)
from analysis.exports.data import (
    ArmInfo,
    AuditEntry,
    DeviceValue,
    ExportData,
    ExportError,
    FormValue,
    SignatureEntry,
    SiteInfo,
    SubjectRecord,
    TrialMeta,
    VisitDate,
)
from analysis.exports.deid import PROFILES, apply_profile
from analysis.exports.xport import XptError
from dtx_trials import crypto
from dtx_trials.db import transaction, utcnow
from dtx_trials.models import (
    Allocation,
    AuditEvent,
    DeviceObservation,
    FormRecord,
    Participant,
    Signature,
    Site,
    Trial,
    User,
    Visit,
)
from dtx_trials.services import audit, coding
from dtx_trials.services.access import Actor, require, sees_arms
from dtx_trials.services.errors import ValidationError
from dtx_trials.services.participants import RecordValues, log_forms, submitted_values
from dtx_trials.services.protocols import active_protocol, blinded_roles
from ecrf.model import UNSCHEDULED_VISIT
from protocols.countries import alpha3
from protocols.model import Protocol

FORMATS = ("csv", "xpt", "odm", "fhir")
STATUS = {"consented": "screening", "eligible": "screening"}
PHASES = {
    "pivotal": "phase-3",
    "phase_3": "phase-3",
    "phase_2": "phase-2",
    "phase_1": "phase-1",
    "phase_4": "phase-4",
    "pilot": "early-phase-1",
    "feasibility": "early-phase-1",
    "na": "n-a",
}


def _dm_value(protocol: Protocol, variable: str, data: dict[str, object]) -> object:
    """The participant's value of a DM variable through the protocol's cdisc mapping (None
    when the protocol maps none or the participant has no value)."""
    if protocol.cdisc is None:
        return None
    for mapping in protocol.cdisc.domain_maps("DM"):
        for var in mapping.variables:
            if var.variable == variable and var.field is not None:
                raw = data.get(var.field)
                if var.terms:
                    return next((t.value for t in var.terms if t.code == str(raw)), None)
                return raw
    return None


def export_data(
    session: Session, trial: Trial, *, blinded: bool, profile: str = "limited"
) -> ExportData:
    """Read the trial into the exporters' plain input (only allow-listed columns), as the
    de-identification ``profile`` allows (``limited`` or ``safe_harbor``)."""
    if profile not in PROFILES:
        raise ValidationError("unknown export profile", {"profile": [f"one of {PROFILES}"]})
    return apply_profile(_export_data(session, trial, blinded=blinded), profile,
                         key=_deid_key() if profile == "safe_harbor" else None)


def _deid_key() -> bytes:
    """The safe_harbor date-shift key: derived from the instance's field key (never stored)."""
    return bytes.fromhex(crypto.cipher().mac_hex("date-shift", "deid-export-v1"))


def _export_data(session: Session, trial: Trial, *, blinded: bool) -> ExportData:
    version, protocol = active_protocol(session, trial)
    sites = {s.id: s for s in session.scalars(select(Site).where(Site.trial_id == trial.id))}
    allocations = {
        a.participant_id: a
        for a in session.scalars(
            select(Allocation).where(
                Allocation.trial_id == trial.id, Allocation.status == "allocated"
            )
        )
    }
    participants = list(
        session.scalars(
            select(Participant)
            .where(Participant.trial_id == trial.id)
            .order_by(Participant.subject_code)
        )
    )
    codes = {p.id: p.subject_code for p in participants}
    visits = {
        v.id: v
        for v in session.scalars(
            select(Visit).join(Participant).where(Participant.trial_id == trial.id)
        )
    }
    known_forms = {f.id for f in protocol.forms}
    known_visits = {v.id for v in protocol.schedule.visits}
    screening_visits = {v.id for v in protocol.schedule.visits if v.day < 0}
    values: list[FormValue] = []
    # each participant's records as `participants.submitted_values` reads them (DM's values)
    records_of: dict[int, list[RecordValues]] = defaultdict(list)
    record_index: dict[int, tuple[str, str, int]] = {}
    owners: dict[int, int] = {}  # record id -> participant id
    for record in session.scalars(
        select(FormRecord)
        .join(Participant)
        .where(Participant.trial_id == trial.id, FormRecord.status != "draft")
        .order_by(FormRecord.id)
    ):
        visit = visits.get(record.visit_id or -1)
        # a record is entered at a visit of the schedule or at the participant's unscheduled
        # visit (`forms.save_form`); both are exported
        if visit is None or record.form_code not in known_forms or not (
            visit.visit_code in known_visits or visit.is_unscheduled
        ):
            continue
        visit_id = UNSCHEDULED_VISIT if visit.is_unscheduled else visit.visit_code
        record_index[record.id] = (visit_id, record.form_code, record.repeat_index)
        owners[record.id] = record.participant_id
        records_of[record.participant_id].append(
            (visit_id, record.form_code, record.repeat_index, record.status, record.data)
        )
        form = protocol.form(record.form_code)
        for f in form.fields:
            if f.id in (record.data or {}):
                values.append(
                    FormValue(
                        subject_code=codes[record.participant_id],
                        visit_id=visit_id,
                        form_id=form.id,
                        field_id=f.id,
                        value=record.data[f.id],  # type: ignore[arg-type]
                        repeat=record.repeat_index,
                        status="locked"
                        if record.status == "locked"
                        else "signed"
                        if record.status == "signed"
                        else "submitted",
                        collected_on=visit.actual_on,
                    )
                )
    visits_of: dict[int, list[Visit]] = defaultdict(list)
    for v in sorted(visits.values(), key=lambda v: (v.participant_id, v.id)):
        visits_of[v.participant_id].append(v)
    logs = log_forms(protocol)
    subjects = []
    for p in participants:
        allocation = allocations.get(p.id)
        data = submitted_values(records_of[p.id], logs).merged
        age = _dm_value(protocol, "AGE", data)
        sex = _dm_value(protocol, "SEX", data)
        screening_dates = [
            v.actual_on for v in visits_of[p.id]
            if v.actual_on is not None and v.visit_code in screening_visits
        ]
        subjects.append(
            SubjectRecord(
                subject_code=p.subject_code,
                site_code=sites[p.site_id].code,
                status=STATUS.get(p.status, p.status),  # type: ignore[arg-type]
                sex=sex if sex in ("F", "M", "U") else None,  # type: ignore[arg-type]
                age=age if isinstance(age, int) else None,
                arm_code=None if blinded or allocation is None else allocation.arm_code,
                consented_on=p.consented_at.date() if p.consented_at else None,
                randomized_on=allocation.allocated_at.date() if allocation else None,
                withdrawn_on=p.withdrawn_at.date() if p.withdrawn_at else None,
                withdrawal_reason=p.withdrawal_reason,
                screen_failed_on=(
                    max(screening_dates) if p.status == "screen_failed" and screening_dates
                    else None
                ),
            )
        )
    visit_dates = tuple(
        VisitDate(codes[p.id], v.visit_code, v.actual_on)
        for p in participants
        for v in visits_of[p.id]
        if v.actual_on is not None and v.visit_code in known_visits and not v.is_unscheduled
    )
    device_values = tuple(
        DeviceValue(codes[o.participant_id], o.stream, o.observed_at, o.value, o.unit)
        for o in session.scalars(
            select(DeviceObservation)
            .where(DeviceObservation.trial_id == trial.id)
            .order_by(DeviceObservation.participant_id, DeviceObservation.observed_at,
                      DeviceObservation.id)
        )
        if o.participant_id in codes
    )
    by_id = {p.id: p for p in participants}
    signers = {
        u.id: u
        for u in session.scalars(
            select(User).where(User.id.in_(
                select(Signature.user_id)
                .join(FormRecord, FormRecord.id == Signature.form_record_id)
                .join(Participant, Participant.id == FormRecord.participant_id)
                .where(Participant.trial_id == trial.id)
            ))
        )
    }  # fmt: skip
    signatures = []
    for signature, participant_id in session.execute(
        select(Signature, FormRecord.participant_id)
        .join(FormRecord, FormRecord.id == Signature.form_record_id)
        .join(Participant, Participant.id == FormRecord.participant_id)
        .where(Participant.trial_id == trial.id, Signature.status == "valid")
        .order_by(Signature.id)
    ):
        where = record_index.get(signature.form_record_id)
        if where is None:
            continue
        participant = by_id[participant_id]
        signatures.append(
            SignatureEntry(
                subject_code=participant.subject_code,
                visit_id=where[0],
                form_id=where[1],
                user_id=signers[signature.user_id].username,
                user_name=signature.printed_name,
                site_code=sites[participant.site_id].code,
                meaning=signature.meaning,  # type: ignore[arg-type]
                signed_at=signature.signed_at,
                repeat=where[2],
            )
        )
    trail = _audit_entries(session, trial, protocol, record_index, owners, codes, sites,
                           participants)
    return ExportData(
        trial=TrialMeta(
            code=trial.code,
            title=protocol.title.en,
            protocol_version=f"v{version.version_no} ({protocol.version})",
            # the protocol's sponsor; never a made-up name when it does not say
            sponsor=protocol.sponsor or "not stated in the protocol",
            phase=PHASES.get(protocol.phase, "n-a"),
            status="active",
            description=(protocol.description.en if protocol.description else ""),
            product_name=(protocol.product.name.en if protocol.product
                          else protocol.title.en)[:80],
            blinded=blinded,
            arms=() if blinded else tuple(ArmInfo(a.code, a.name.en) for a in protocol.arms),
            blinding_level=protocol.blinding.level,
            registry_id=protocol.registry_id,
            planned_subjects=protocol.sample_size.n if protocol.sample_size else None,
        ),
        forms=protocol.forms,
        visits=protocol.schedule.visits,
        unscheduled_forms=tuple(protocol.schedule.unscheduled_forms),
        sites=tuple(SiteInfo(s.code, s.name, alpha3(s.country)) for s in sites.values()),
        subjects=tuple(subjects),
        values=tuple(values),
        exported_at=utcnow(),
        audit=tuple(trail),
        signatures=tuple(signatures),
        cdisc=protocol.cdisc,
        visit_dates=visit_dates,
        device_values=device_values,
        coded_terms=coding.coded_terms(session, trial, "ae"),
        coded_medications=coding.coded_terms(session, trial, "cm"),
    )


def _audit_entries(
    session: Session,
    trial: Trial,
    protocol: Protocol,
    record_index: dict[int, tuple[str, str, int]],
    owners: dict[int, int],
    codes: dict[int, str],
    sites: dict[int, Site],
    participants: list[Participant],
) -> list[AuditEntry]:
    """Field-level changes of the exported form records (``record_index``, whose participants
    are ``owners``) from the audit trail (ODM AuditRecords)."""
    site_of = {p.id: sites[p.site_id].code for p in participants}
    exportable = {
        f.id
        for form in protocol.forms
        for f in form.fields
        if not f.identifier and f.type not in ("file", "signature", "descriptive")
    }
    out: list[AuditEntry] = []
    for event in session.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.chain == audit.chain_for(trial.id), AuditEvent.entity_type == "form_record"
        )
        .order_by(AuditEvent.seq)
    ):
        where = record_index.get(event.entity_id or -1)
        if where is None:
            continue
        for change in event.changes:
            if change.get("field") != "data":
                continue
            old, new = change.get("old") or {}, change.get("new") or {}
            for field_id in sorted(set(old) | set(new)):
                if field_id in exportable and old.get(field_id) != new.get(field_id):
                    pid = owners[event.entity_id or -1]
                    out.append(
                        AuditEntry(
                            subject_code=codes[pid],
                            visit_id=where[0],
                            form_id=where[1],
                            field_id=field_id,
                            old_value=old.get(field_id),
                            new_value=new.get(field_id),
                            user_id=_odm_user(event, codes[pid]),
                            user_name=event.actor_name,
                            site_code=site_of[pid],
                            changed_at=event.at,
                            reason=event.reason,
                            repeat=where[2],
                        )
                    )
    return out


def _odm_user(event: AuditEvent, subject_code: str) -> str:
    """The ODM user of a change: the staff member's account id, or the participant (by the
    pseudonymous code) for ePRO entries; ``system`` only for changes no person made."""
    if event.actor_role == "participant":
        return f"participant-{subject_code}"
    return str(event.actor_id) if event.actor_id is not None else "system"


def build_files(data: ExportData, formats: Sequence[str]) -> dict[str, bytes]:
    builders = {
        "csv": lambda: build_csv_exports(data),
        "xpt": lambda: build_xpt_exports(data),
        "odm": lambda: {"odm.xml": build_odm(data)},
        "fhir": lambda: build_fhir_exports(data),
    }
    files: dict[str, bytes] = {}
    for name in formats:
        if name not in builders:
            raise ValidationError("unknown export format", {"format": [f"one of {FORMATS}"]})
        try:
            built = builders[name]()
        except XptError as exc:
            raise ValidationError(
                "the data cannot be written as SAS XPORT v5, which holds printable ASCII only "
                "(FDA); correct or translate the value, or use a UTF-8 export (Dataset-JSON, "
                "CSV, ODM or FHIR)",
                {"xpt": [str(exc)]},
            ) from exc
        except ExportError as exc:
            raise ValidationError(f"the {name} export cannot be built", {name: [str(exc)]}) from exc
        files.update({f"{name}/{path}": content for path, content in built.items()})
    return files


def sensitive_fields(data: ExportData) -> list[str]:
    """``form.field`` of the fields classified sensitive an export carries (PIPL Art. 28)."""
    carried = {(v.form_id, v.field_id) for v in data.values}
    return sorted(f"{form.id}.{f.id}" for form in data.forms for f in form.fields
                  if f.classification == "sensitive" and (form.id, f.id) in carried)


def export_trial_files(
    session: Session, actor: Actor, trial: Trial, formats: Sequence[str],
    profile: str = "limited",
) -> tuple[dict[str, bytes], bool]:
    """Build the export files for the actor; (files, blinded). Audited with file hashes and
    the de-identification profile. A safe_harbor export leaves out the raw device file and
    the audit trail (real time stamps)."""
    require(actor, "export.run", trial.id)
    blinded = not sees_arms(actor, trial.id, blinded_roles(session, trial))
    data = export_data(session, trial, blinded=blinded, profile=profile)
    files = build_files(data, formats)
    if profile == "limited":
        if "csv" in formats:
            files["csv/device_observations.csv"] = device_observations_csv(session, trial)
        # the submission package carries the trail (arms and identifiers sealed in it)
        from dtx_trials.services import trail_export

        rows = trail_export.trail_rows(session, trial)
        for fmt in trail_export.FORMATS:
            name, content = trail_export.build_trail_file(trial, rows, fmt, None, None, utcnow())
            files[f"audit/{name}"] = content
    with transaction(session):
        audit.record_event(
            session,
            actor,
            "export.created",
            entity_type="trial",
            entity_id=trial.id,
            trial_id=trial.id,
            details={
                "formats": list(formats),
                "blinded": blinded,
                "profile": profile,
                "sensitive_fields": sensitive_fields(data),
                "files": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())},
            },
        )
    return files, blinded


DEVICE_COLUMNS = ("subject_code", "site_code", "stream", "time_utc", "value", "unit",
                  "source", "received_at_utc")


def device_observations_csv(session: Session, trial: Trial) -> bytes:
    """Every device / app observation of the trial, by subject, stream and time (UTC); no
    identifiers and nothing of the allocation."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DEVICE_COLUMNS)
    rows = session.execute(
        select(Participant.subject_code, Site.code, DeviceObservation.stream,
               DeviceObservation.observed_at, DeviceObservation.value, DeviceObservation.unit,
               DeviceObservation.source, DeviceObservation.received_at)
        .join(Participant, Participant.id == DeviceObservation.participant_id)
        .join(Site, Site.id == Participant.site_id)
        .where(DeviceObservation.trial_id == trial.id)
        .order_by(Participant.subject_code, DeviceObservation.stream,
                  DeviceObservation.observed_at, DeviceObservation.id)
        .execution_options(yield_per=5000)
    )
    for subject, site, stream, at, value, unit, source, received in rows:
        writer.writerow((subject, site, stream, at.astimezone(datetime.UTC).isoformat(),
                         repr(value), unit, source,
                         received.astimezone(datetime.UTC).isoformat()))
    return buffer.getvalue().encode("utf-8")


def export_trial(
    session: Session, actor: Actor, trial: Trial, *, formats: Sequence[str], out_dir: Path,
    profile: str = "limited",
) -> list[Path]:
    """Write the export files under `out_dir` (one folder per format)."""
    files, _ = export_trial_files(session, actor, trial, formats, profile)
    written = []
    for name, content in sorted(files.items()):
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written.append(target)
    return written


def zip_files(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in sorted(files.items()):
            archive.writestr(name, content)
    return buffer.getvalue()
