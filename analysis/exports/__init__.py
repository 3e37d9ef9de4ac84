"""Standard data exports from plain ExportData: CSV, SAS XPORT v5 (SDTM), CDISC ODM 1.3.2
and HL7 FHIR R4. Each builder returns ``{file name: bytes}`` (the caller writes or zips them);
all share the de-identification allow-list of ``analysis.exports.data``.
"""

from analysis.exports.csv import build_csv_exports
from analysis.exports.data import (
    ArmInfo,
    AuditEntry,
    CodedTerm,
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
from analysis.exports.fhir import build_fhir_bundle, build_fhir_exports, check_fhir_bundle
from analysis.exports.odm import build_odm
from analysis.exports.sdtm import build_sdtm_datasets
from analysis.exports.xport import XptDataset, XptError, XptVariable, write_xpt
from analysis.exports.xpt import build_xpt_exports


def build_all_exports(data: ExportData) -> dict[str, bytes]:
    """Return every export under folders ``csv/``, ``sdtm/``, ``odm/`` and ``fhir/``."""
    files: dict[str, bytes] = {}
    files.update({f"csv/{name}": body for name, body in build_csv_exports(data).items()})
    files.update({f"sdtm/{name}": body for name, body in build_xpt_exports(data).items()})
    files["odm/odm.xml"] = build_odm(data)
    files.update({f"fhir/{name}": body for name, body in build_fhir_exports(data).items()})
    return files


__all__ = [
    "ArmInfo",
    "AuditEntry",
    "CodedTerm",
    "DeviceValue",
    "ExportData",
    "ExportError",
    "FormValue",
    "SignatureEntry",
    "SiteInfo",
    "SubjectRecord",
    "TrialMeta",
    "VisitDate",
    "XptDataset",
    "XptError",
    "XptVariable",
    "build_all_exports",
    "build_csv_exports",
    "build_fhir_bundle",
    "build_fhir_exports",
    "build_odm",
    "build_sdtm_datasets",
    "build_xpt_exports",
    "check_fhir_bundle",
    "write_xpt",
]
