"""Analysis runs: freeze the trial's data into `TrialData`, run the SAP, build the PDF, and
record everything needed to reproduce the run (data hash, protocol version, package
versions, seed). Jobs run in-process, or on RQ workers when `DTX_QUEUE_URL` is set."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import importlib.metadata
import platform
import secrets
from collections import defaultdict
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from analysis.datasets import SubjectData, TrialData
from analysis.report import build_report, report_file_name
from analysis.report.lint import check_report
from analysis.report_builder import (
    ReportMeta,
    build_report_spec,
    lint_vocabulary,
    protocol_identity,
)
from analysis.sap import (
    arm_labels,
    arm_terms,
    label_commitment,
    pooled_labels,
    redact_protocol,
    run_sap,
)
from dtx_trials.db import lock_row, transaction, utcnow
from dtx_trials.models import (
    Allocation,
    AnalysisRun,
    AuditEvent,
    FormRecord,
    Participant,
    ProtocolDeviation,
    ProtocolVersion,
    RandomizationState,
    Site,
    Trial,
    Visit,
)
from dtx_trials.report_signing import ReportSigner, SignedReport, configured_signer, sign_report
from dtx_trials.services import audit
from dtx_trials.services.access import SYSTEM, Actor, require, sees_arms
from dtx_trials.services.devices import adherence as device_adherence
from dtx_trials.services.devices import device_daily_totals
from dtx_trials.services.errors import NotFound, PermissionDenied, ValidationError
from dtx_trials.services.protocols import (
    active_protocol,
    blinded_roles,
    comparative_review_roles,
    protocol_of,
)
from protocols.model import USE_STREAM_KINDS, Protocol

PACKAGES = (
    "dtx-trials",
    "numpy",
    "scipy",
    "pandas",
    "statsmodels",
    "lifelines",
    "reportlab",
    "pikepdf",
)
LANGUAGES = ("en", "zh")
PAPER_SIZES = ("letter", "a4")


def data_facts(
    session: Session, trial: Trial, cutoff_on: datetime.date | None
) -> dict[str, Any]:
    """What the report may state about the data: study period and database lock state.

    First consent and last visit are the earliest consent and latest actual visit date
    recorded (up to the cut-off); the lock state counts non-draft form records and those
    locked, with the date of the latest lock in the audit trail.
    """
    participants = select(Participant.id).where(Participant.trial_id == trial.id)
    first_consent = session.scalar(
        select(func.min(Participant.consented_at)).where(Participant.trial_id == trial.id)
    )
    last_visit_query = select(func.max(Visit.actual_on)).where(
        Visit.participant_id.in_(participants)
    )
    if cutoff_on is not None:
        last_visit_query = last_visit_query.where(Visit.actual_on <= cutoff_on)
    last_visit = session.scalar(last_visit_query)
    records = select(func.count(FormRecord.id)).where(
        FormRecord.participant_id.in_(participants), FormRecord.status != "draft"
    )
    n_records = int(session.scalar(records) or 0)
    n_locked = int(session.scalar(records.where(FormRecord.status == "locked")) or 0)
    last_locked = session.scalar(
        select(func.max(AuditEvent.at)).where(
            AuditEvent.chain == audit.chain_for(trial.id), AuditEvent.action == "form.locked"
        )
    )
    return {
        "first_consent_on": first_consent.date() if first_consent else None,
        "last_visit_on": last_visit,
        "n_records": n_records,
        "n_locked": n_locked,
        "last_locked_on": last_locked.date() if last_locked and n_locked else None,
    }


def build_trial_data(
    session: Session, trial: Trial, cutoff_on: datetime.date | None = None
) -> TrialData:
    """Read the trial's captured data into plain `TrialData` (real arms: unblinded store)."""
    _, protocol = active_protocol(session, trial)
    sites = dict(session.execute(select(Site.id, Site.code).where(Site.trial_id == trial.id)).all())
    allocations = {
        a.participant_id: a
        for a in session.scalars(
            select(Allocation).where(
                Allocation.trial_id == trial.id, Allocation.status == "allocated"
            )
        )
    }
    failed: dict[int, tuple[str, ...]] = {}
    for event in session.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.chain == audit.chain_for(trial.id),
            AuditEvent.action == "eligibility.assessed",
        )
        .order_by(AuditEvent.seq)
    ):
        details = {c["field"]: c.get("new") for c in event.changes}
        if event.entity_id is not None:
            failed[event.entity_id] = tuple(details.get("failed") or ())
    visits_by_id: dict[int, Visit] = {}
    for visit in session.scalars(
        select(Visit).join(Participant).where(Participant.trial_id == trial.id)
    ):
        visits_by_id[visit.id] = visit
    values: dict[int, dict[str, dict[str, object]]] = defaultdict(dict)
    dates: dict[int, dict[str, datetime.date]] = defaultdict(dict)
    repeats: dict[int, dict[str, list[dict[str, object]]]] = defaultdict(lambda: defaultdict(list))
    repeating = {f.id for f in protocol.forms if f.repeating}
    records = session.scalars(
        select(FormRecord)
        .join(Participant)
        .where(Participant.trial_id == trial.id, FormRecord.status != "draft")
        .order_by(FormRecord.id)
    )
    for record in records:
        visit = visits_by_id.get(record.visit_id or -1)
        if record.form_code in repeating:
            repeats[record.participant_id][record.form_code].append(dict(record.data or {}))
            continue
        if visit is None or record.repeat_index != 1:
            # later windows of a repeating questionnaire (weekly, ...) are entries of their
            # own (exported with their repeat number), not the visit's value
            continue
        values[record.participant_id].setdefault(visit.visit_code, {}).update(record.data or {})
        on = (
            visit.actual_on
            or visit.planned_on
            or (record.submitted_at.date() if record.submitted_at else None)
        )
        if on is not None:
            dates[record.participant_id][visit.visit_code] = on
    # The clinical clock starts at the actual date of the day-0 visit anchored at randomization
    # (the date treatment starts); the allocation's own timestamp is the fallback.
    day_zero = {
        v.id for v in protocol.schedule.visits if v.anchor == "randomization" and v.day == 0
    }
    started_on = {
        v.participant_id: v.actual_on
        for v in visits_by_id.values()
        if v.visit_code in day_zero and v.actual_on is not None
    }
    adherence = _adherence(session, trial, protocol)
    # the streams device-inactivity events are judged on, and those recording use of the DTx
    # (whether each participant received it: disposition and CONSORT)
    device_days = device_daily_totals(
        session,
        trial,
        sorted(
            {
                e.stream
                for e in protocol.intercurrent_events
                if e.detected_by == "device_inactivity" and e.stream
            }
            | {s.id for s in protocol.device_streams if s.kind in USE_STREAM_KINDS}
        ),
    )
    deviations: dict[int, list[str]] = defaultdict(list)
    for deviation in session.scalars(
        select(ProtocolDeviation)
        .where(ProtocolDeviation.trial_id == trial.id, ProtocolDeviation.status != "superseded")
        .order_by(ProtocolDeviation.detected_at, ProtocolDeviation.id)
    ):
        if cutoff_on is None or deviation.detected_at.date() <= cutoff_on:
            deviations[deviation.participant_id].append(deviation.description)
    subjects = []
    for p in session.scalars(
        select(Participant)
        .where(Participant.trial_id == trial.id)
        .order_by(Participant.subject_code)
    ):
        allocation = allocations.get(p.id)
        subjects.append(
            SubjectData(
                subject=p.subject_code,
                site=sites.get(p.site_id, ""),
                status=p.status,
                arm=allocation.arm_code if allocation else None,
                randomized_on=(started_on.get(p.id) or allocation.allocated_at.date())
                if allocation
                else None,
                withdrawn_on=p.withdrawn_at.date() if p.withdrawn_at else None,
                withdrawal_reason=p.withdrawal_reason,
                strata=dict(allocation.factors) if allocation else {},
                visits=values.get(p.id, {}),
                visit_dates=dates.get(p.id, {}),
                repeats={k: tuple(v) for k, v in repeats.get(p.id, {}).items()},
                adherent=adherence.get(p.subject_code),
                failed_criteria=failed.get(p.id, ()),
                device_days=device_days.get(p.id, {}),
                deviations=tuple(deviations.get(p.id, ())),
            )
        )
    return TrialData(protocol=protocol, subjects=tuple(subjects), cutoff_on=cutoff_on)


def _adherence(session: Session, trial: Trial, protocol: Protocol) -> dict[str, bool]:
    """Per-protocol adherence from device data (the protocol's rules that define the PP set)."""
    if not any(stream.adherence for stream in protocol.device_streams):
        return {}
    return {
        code: result.meets_per_protocol
        for code, result in device_adherence(session, trial, protocol).items()
        if result.streams
    }


def blinding_terms(protocol: Protocol) -> list[str]:
    """Terms a blinded report must not contain: every arm code and name, except a code that is
    part of the trial's own code (e.g. `cogtrain` in MCI-COGTRAIN-01), which every page
    carries and which says nothing about any participant's allocation."""
    code = protocol.code.lower()
    return [term for term in arm_terms(protocol) if term.lower() not in code]


def data_sha256(data: TrialData) -> str:
    """SHA-256 of the canonical JSON of the frozen analysis data (identifies the snapshot)."""
    rows = [
        {
            "subject": s.subject,
            "site": s.site,
            "status": s.status,
            "arm": s.arm,
            "randomized_on": s.randomized_on,
            "withdrawn_on": s.withdrawn_on,
            "strata": s.strata,
            "visits": s.visits,
            "visit_dates": s.visit_dates,
            "repeats": s.repeats,
            "adherent": s.adherent,
            "deviations": s.deviations,
            "device_days": {
                stream: {day.isoformat(): value for day, value in sorted(days.items())}
                for stream, days in sorted(s.device_days.items())
            },
        }
        for s in data.subjects
    ]
    text = audit.canonical_json(
        audit.to_jsonable(
            {"protocol": data.protocol.code, "cutoff": data.cutoff_on, "subjects": rows}
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def request_analysis(
    session: Session,
    actor: Actor,
    trial: Trial,
    *,
    cutoff_on: datetime.date | None = None,
    unblinded: bool = False,
    review: str | None = None,
    language: str = "en",
    paper: str = "letter",
) -> AnalysisRun:
    """Create a queued run (statisticians; unblinded runs only for roles that may see arms).

    ``language`` (en, zh) and ``paper`` (letter, a4) choose the report's edition.

    A run is unblinded when asked for by a role that may see the allocation, or when the trial
    blinds nobody. Otherwise it is a blinded data review: `pooled` (the default; all arms as one
    group, no comparison) or `comparative` (arms under keyed dummy labels; only for the roles
    the protocol names in ``blinding.comparative_review``). A comparative run records a
    commitment to its label mapping before it runs (`open_labels` opens it)."""
    require(actor, "analysis.run", trial.id)
    blinded = blinded_roles(session, trial)
    knows = sees_arms(actor, trial.id, blinded)
    if unblinded and not knows:
        raise PermissionDenied("your role does not allow 'analysis.unblinded' here")
    if review not in (None, "pooled", "comparative"):
        raise ValidationError("unknown review", {"review": ["must be pooled or comparative"]})
    if language not in LANGUAGES:
        raise ValidationError("unknown language", {"language": ["must be en or zh"]})
    if paper not in PAPER_SIZES:
        raise ValidationError("unknown paper size", {"paper": ["must be letter or a4"]})
    if cutoff_on is not None and cutoff_on > datetime.date.today():
        raise ValidationError("cut-off in the future", {"cutoff_on": ["must not be after today"]})
    is_unblinded = knows and (unblinded or not blinded)
    if is_unblinded and review is not None:
        raise ValidationError(
            "review applies to blinded runs",
            {"review": ["this run is unblinded (your role sees the arms); leave review out"]},
        )
    review = "unblinded" if is_unblinded else review or "pooled"
    if review == "comparative" and not actor.roles_in(trial.id) & comparative_review_roles(
        session, trial
    ):
        raise PermissionDenied(
            "the protocol does not allow your role a comparative blinded analysis "
            "(blinding.comparative_review); a blinded run pools all arms"
        )
    version, protocol = active_protocol(session, trial)
    with transaction(session):
        run = AnalysisRun(
            trial_id=trial.id,
            protocol_version_id=version.id,
            status="queued",
            is_unblinded=is_unblinded,
            cutoff_on=cutoff_on,
            requested_by_id=actor.user_id,
            provenance={"seed": secrets.randbelow(2**31), "review": review,
                        "language": language, "paper": paper},
        )
        session.add(run)
        session.flush()
        if review == "comparative":
            labels, nonce = _dummy_labels(session, trial, run.id, protocol)
            run.provenance = {**run.provenance,
                              "label_commitment": label_commitment(labels, nonce)}
        audit.record_create(session, actor, "analysis.requested", run)
    return run


def _label_key(session: Session, trial: Trial, run_id: int) -> bytes:
    """The key of a comparative run's dummy labels: derived from the trial's randomization
    secret (encrypted at rest, never returned) and the run id; never stored, printed or logged."""
    state = session.scalars(
        select(RandomizationState).where(RandomizationState.trial_id == trial.id)
    ).first()
    if state is None:
        raise ValidationError("no randomization", {"review": ["the trial has no allocation yet"]})
    message = f"dtx-blind-labels\x00{trial.id}\x00{run_id}".encode()
    return hmac.new(bytes.fromhex(state.secret), message, hashlib.sha256).digest()


def _dummy_labels(
    session: Session, trial: Trial, run_id: int, protocol: Protocol
) -> tuple[dict[str, str], bytes]:
    key = _label_key(session, trial, run_id)
    return arm_labels(protocol, key), hmac.new(key, b"commitment-nonce", hashlib.sha256).digest()


def _run_labels(
    session: Session, trial: Trial, run: AnalysisRun, protocol: Protocol
) -> dict[str, str] | None:
    review = run.provenance.get("review", "comparative" if not run.is_unblinded else "unblinded")
    if run.is_unblinded:
        return None
    if review == "pooled":
        return pooled_labels(protocol)
    labels, nonce = _dummy_labels(session, trial, run.id, protocol)
    if run.provenance.get("label_commitment") != label_commitment(labels, nonce):
        raise RuntimeError("the dummy labels do not open the run's commitment")
    return labels


def open_labels(session: Session, actor: Actor, trial: Trial, run_id: int) -> dict[str, Any]:
    """Open a comparative blinded run's label commitment (roles that see the arms only): the
    mapping, the nonce and whether they reproduce the commitment recorded at the request."""
    run = get_run(session, actor, trial, run_id)
    if not sees_arms(actor, trial.id, blinded_roles(session, trial)):
        raise PermissionDenied("only a role that sees the arms may open the dummy labels")
    committed = run.provenance.get("label_commitment")
    if committed is None:
        raise NotFound("this run has no dummy labels (pooled or unblinded)")
    version = session.get(ProtocolVersion, run.protocol_version_id)
    assert version is not None
    labels, nonce = _dummy_labels(session, trial, run.id, protocol_of(version))
    with transaction(session):
        audit.record_event(session, actor, "analysis.labels_opened", entity_type="analysis_run",
                           entity_id=run.id, trial_id=trial.id)
    return {
        "run_id": run.id,
        "labels": {label: code for code, label in sorted(labels.items())},
        "nonce": nonce.hex(),
        "commitment": committed,
        "matches": label_commitment(labels, nonce) == committed,
    }


def report_signer() -> ReportSigner | None:
    """The instance's report-signing key (REPORT_SIGNING_KEY/_CERT), or None."""
    if not has_app_context():
        return None
    return configured_signer(dict(current_app.config), current_app.instance_path)


def execute_analysis(session: Session, run_id: int) -> AnalysisRun:
    """Run a queued analysis to completion; failures are recorded on the run, not raised.

    The final report (unblinded, every record locked) is signed with the instance's
    report-signing key (`dtx_trials.report_signing`); the stored PDF is the signed one and the
    ``report.signed`` event (hashes of the signed PDF, of the signature and of the certificate)
    is written in the transaction that stores it.
    """
    with transaction(session):
        run = lock_row(session, AnalysisRun, run_id)
        if run is None:
            raise NotFound("analysis run not found")
        if run.status not in ("queued", "failed"):
            return run
        before = audit.snapshot(run)
        run.status, run.started_at, run.progress = "running", utcnow(), 0.05
        audit.record_update(session, SYSTEM, "analysis.started", run, before)
    trial = session.get(Trial, run.trial_id)
    assert trial is not None
    version = session.get(ProtocolVersion, run.protocol_version_id)
    try:
        data = build_trial_data(session, trial, run.cutoff_on)
        sha = data_sha256(data)
        seed = int(run.provenance.get("seed", 0))
        blinded = not run.is_unblinded
        results = run_sap(
            data,
            blinded=blinded,
            labels=_run_labels(session, trial, run, data.protocol),
            seed=seed,
            progress=lambda done, total, _step: _set_progress(
                session, run_id, 0.1 + 0.7 * done / total
            ),
            protocol_version=f"v{version.version_no}" if version else "",
        )
        protocol = protocol_of(version) if version else data.protocol
        generated = utcnow()
        language = str(run.provenance.get("language", "en"))
        shown = redact_protocol(protocol) if blinded else protocol
        signer = report_signer()
        meta = ReportMeta(
            generated_at=generated,
            data_sha256=sha,
            software_versions=_versions(),
            cutoff_on=run.cutoff_on,
            source=f"dtx-trials analysis run {run.id}",
            language="zh" if language == "zh" else "en",
            page_size="a4" if run.provenance.get("paper") == "a4" else "letter",
            protocol=shown,
            **protocol_identity(shown, "zh" if language == "zh" else "en"),
            **data_facts(session, trial, run.cutoff_on),
            signer=signer.describe() if signer else None,
        )
        spec = build_report_spec(results, meta)
        pdf = build_report(spec, forbidden_terms=blinding_terms(protocol) if blinded else ())
        check_report(pdf, spec, *lint_vocabulary(protocol))
        signed: SignedReport | None = None
        if signer is not None and not spec.blinded and not spec.is_draft:
            signed = sign_report(pdf, signer, signed_at=generated,
                                 reason=f"Final statistical report, analysis run {run.id}")
            pdf = signed.pdf
        with transaction(session):
            run = lock_row(session, AnalysisRun, run_id)
            assert run is not None
            before = audit.snapshot(run)
            run.results = results.to_dict()
            run.data_sha256 = sha
            run.report_pdf = pdf
            run.report_sha256 = hashlib.sha256(pdf).hexdigest()
            run.report_name = report_file_name(spec)
            run.provenance = {
                **run.provenance,
                "packages": _versions(),
                "protocol_sha256": version.sha256 if version else None,
                "data_sha256": sha,
                "blinded": blinded,
                # the ADaM dataset each endpoint's analysis reads (report footnotes name it)
                "adam_datasets": {e.id: e.source_dataset for e in results.endpoints},
                "signature": _signature_facts(signed),
            }
            run.status, run.progress, run.finished_at = "succeeded", 1.0, utcnow()
            # results, provenance and the PDF are hashed into the trail (sha256:...)
            audit.record_update(session, SYSTEM, "analysis.completed", run, before)
            if signed is not None:
                audit.record_event(
                    session, SYSTEM, "report.signed", entity_type="analysis_run",
                    entity_id=run.id, trial_id=run.trial_id,
                    details={**(_signature_facts(signed) or {}), "report_name": run.report_name},
                )
    except Exception as exc:
        session.rollback()
        with transaction(session):
            run = lock_row(session, AnalysisRun, run_id)
            assert run is not None
            before = audit.snapshot(run)
            run.status, run.error, run.finished_at = (
                "failed",
                f"{type(exc).__name__}: {exc}",
                utcnow(),
            )
            audit.record_update(session, SYSTEM, "analysis.failed", run, before)
    return run


def _signature_facts(signed: SignedReport | None) -> dict[str, Any] | None:
    if signed is None:
        return None
    return {
        "pdf_sha256": signed.pdf_sha256,
        "signature_sha256": signed.signature_sha256,
        "certificate_sha256": signed.certificate_sha256,
        "timestamped_at": signed.timestamped_at.isoformat() if signed.timestamped_at else None,
    }


def _set_progress(session: Session, run_id: int, fraction: float) -> None:
    """Record job progress in its own short transaction (pollers see it at once)."""
    with transaction(session):
        run = session.get(AnalysisRun, run_id)
        if run is not None:
            run.progress = round(fraction, 3)


def run_analysis(
    session: Session,
    actor: Actor,
    trial: Trial,
    *,
    cutoff_on: datetime.date | None = None,
    unblinded: bool = False,
    review: str | None = None,
    language: str = "en",
    paper: str = "letter",
) -> AnalysisRun:
    """Request and execute an analysis synchronously (CLI, demo)."""
    run = request_analysis(
        session, actor, trial, cutoff_on=cutoff_on, unblinded=unblinded, review=review,
        language=language, paper=paper,
    )
    return execute_analysis(session, run.id)


def get_run(session: Session, actor: Actor, trial: Trial, run_id: int) -> AnalysisRun:
    run = session.get(AnalysisRun, run_id)
    if run is None or run.trial_id != trial.id:
        raise NotFound("analysis run not found")
    require(actor, "analysis.run", trial.id)
    if not _may_read(session, actor, trial, run):
        raise PermissionDenied("your role does not allow 'analysis.unblinded' here")
    return run


def _may_read(session: Session, actor: Actor, trial: Trial, run: AnalysisRun) -> bool:
    """Unblinded runs for roles that see arms; comparative blinded runs also for the roles the
    protocol names; pooled runs for every role that runs analyses."""
    if sees_arms(actor, trial.id, blinded_roles(session, trial)):
        return True
    if run.is_unblinded:
        return False
    if run.provenance.get("review", "comparative") == "comparative":
        return bool(actor.roles_in(trial.id) & comparative_review_roles(session, trial))
    return True


def list_runs(session: Session, actor: Actor, trial: Trial) -> list[AnalysisRun]:
    require(actor, "analysis.run", trial.id)
    runs = list(
        session.scalars(
            select(AnalysisRun)
            .where(AnalysisRun.trial_id == trial.id)
            .order_by(AnalysisRun.id.desc())
        )
    )
    return [r for r in runs if _may_read(session, actor, trial, r)]


def summary(run: AnalysisRun) -> dict[str, Any]:
    return {"id": run.id, "status": run.status, "progress": run.progress}
