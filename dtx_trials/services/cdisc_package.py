"""The CDISC submission package of a trial (SDTM + ADaM as XPT, Dataset-JSON, Define-XML 2.1,
conformance report): role-checked, blinded unless the caller may see arms, audited with the
SHA-256 of every file. SDTM comes from the export data, ADaM from the same `TrialData` the
analysis runs read, so the package's ADaM rows are the rows the report's numbers come from."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy.orm import Session

from analysis.adam import AdamError, adam_methods, build_adam
from analysis.exports.conformance import ConformanceReport
from analysis.exports.data import ExportError
from analysis.exports.define_xml import DefineError
from analysis.exports.metadata import MetadataError
from analysis.exports.package import PackageMeta, build_package
from analysis.exports.sdtm import build_sdtm_datasets
from analysis.exports.xport import XptError
from dtx_trials.db import transaction
from dtx_trials.models import Trial
from dtx_trials.services import audit
from dtx_trials.services.access import Actor, require, sees_arms
from dtx_trials.services.analyses import build_trial_data
from dtx_trials.services.errors import ValidationError
from dtx_trials.services.exports import export_data
from dtx_trials.services.protocols import blinded_roles


def build_cdisc_package(
    session: Session, actor: Actor, trial: Trial, profile: str = "limited"
) -> tuple[dict[str, bytes], ConformanceReport, bool]:
    """Return (files, conformance report, blinded) for the actor; audited with file hashes.

    Raises ValidationError (422) naming the dataset, variable and row when the data cannot be
    packaged (e.g. a non-ASCII value XPT v5 cannot hold, or a missing required input), and
    for any profile but ``limited``: the package's ADaM and --DTC dates are a limited data
    set (DEID-02)."""
    require(actor, "export.run", trial.id)
    if profile != "limited":
        raise ValidationError(
            "the CDISC package is a limited data set (real --DTC dates, ADaM from the analysis "
            "data); use profile limited, or the xpt/csv/odm/fhir exports with safe_harbor",
            {"profile": [f"the cdisc package takes only limited, not {profile}"]})
    blinded = not sees_arms(actor, trial.id, blinded_roles(session, trial))
    data = export_data(session, trial, blinded=blinded)
    try:
        sdtm = build_sdtm_datasets(data)
        trial_data = build_trial_data(session, trial)
        adam = build_adam(trial_data, blinded=blinded, sdtm=sdtm, studyid=data.trial.code)
        meta = PackageMeta(study=data.trial.code, title=data.trial.title,
                           description=data.trial.description, created_at=data.exported_at,
                           methods=adam_methods(trial_data, blinded=blinded))
        files, report = build_package(sdtm, adam, meta)
    except XptError as exc:
        raise ValidationError(
            "the data cannot be written as SAS XPORT v5, which holds printable ASCII only "
            "(FDA); correct the value or supply an English verbatim, or use the Dataset-JSON "
            "copies of a CSV/ODM/FHIR export (UTF-8)", {"cdisc": [str(exc)]}) from exc
    except (ExportError, AdamError, DefineError, MetadataError) as exc:
        raise ValidationError("the CDISC package cannot be built", {"cdisc": [str(exc)]}) \
            from exc
    with transaction(session):
        audit.record_event(
            session, actor, "export.created", entity_type="trial", entity_id=trial.id,
            trial_id=trial.id,
            details={
                "formats": ["cdisc"],
                "blinded": blinded,
                "profile": "limited",
                "conformance_findings": len(report.findings),
                "files": {k: hashlib.sha256(v).hexdigest() for k, v in sorted(files.items())},
            },
        )
    return files, report, blinded


def export_cdisc_package(
    session: Session, actor: Actor, trial: Trial, out_dir: Path, profile: str = "limited"
) -> tuple[list[Path], ConformanceReport]:
    """Write the package under ``out_dir``; return the paths written and the report."""
    files, report, _ = build_cdisc_package(session, actor, trial, profile)
    written = []
    for name, content in sorted(files.items()):
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written.append(target)
    return written, report


__all__ = ["build_cdisc_package", "export_cdisc_package"]
