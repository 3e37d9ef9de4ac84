"""The CDISC submission package of one trial: SDTM and ADaM as SAS XPORT v5, a Dataset-JSON
v1.1 copy of every dataset, one Define-XML 2.1 per standard, and the conformance report.

Layout (``{file name: bytes}``; eCTD m5 keeps each define.xml beside its datasets)::

    sdtm/dm.xpt ... sdtm/define.xml
    adam/adsl.xpt ... adam/define.xml
    json/sdtm/dm.json ...  json/adam/adsl.json ...   (UTF-8; metaDataRef -> the define)
    conformance.json                                   (analysis.exports.conformance)

Pure: datasets in, files out. An XPT limit broken by a value (e.g. Chinese text) raises
XptError before anything is returned; the Dataset-JSON copies carry such text intact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from analysis.exports.conformance import (
    RULES,
    ConformanceReport,
    Finding,
    check_dataset_json,
    check_datasets,
    check_define,
)
from analysis.exports.dataset_json import DatasetJsonContext, write_dataset_json
from analysis.exports.define_xml import DefineContext, build_define
from analysis.exports.xport import XptDataset, write_xpt


@dataclass(frozen=True)
class PackageMeta:
    """Study-level facts written into the Define and Dataset-JSON files."""

    study: str  # STUDYID / protocol code
    title: str
    description: str
    created_at: datetime  # UTC
    methods: Mapping[str, str] = field(default_factory=dict)  # Define methods "DS.VAR" -> text


def build_package(
    sdtm: Sequence[XptDataset], adam: Sequence[XptDataset], meta: PackageMeta
) -> tuple[dict[str, bytes], ConformanceReport]:
    """Return the package files and its conformance report (also written as
    ``conformance.json``). Either standard may be empty (then its folder is absent)."""
    files: dict[str, bytes] = {}
    findings: list[Finding] = list(check_datasets([*sdtm, *adam]))
    study_oid = f"STDY.{meta.study}"
    for folder, datasets in (("sdtm", sdtm), ("adam", adam)):
        if not datasets:
            continue
        context = DefineContext(study_oid, meta.study, meta.description or meta.title,
                                meta.study, meta.created_at, meta.methods)
        define = build_define(datasets, context)
        files[f"{folder}/define.xml"] = define
        for dataset in datasets:
            files[f"{folder}/{dataset.name.lower()}.xpt"] = write_xpt(dataset, meta.created_at)
        findings += check_define(define, datasets, {
            name.split("/", 1)[1] for name in files if name.startswith(f"{folder}/")})
        json_context = DatasetJsonContext(
            created_at=meta.created_at, study_oid=study_oid,
            metadata_version_oid=f"MDV.{study_oid}.{'SDTM' if folder == 'sdtm' else 'ADaM'}",
            metadata_ref=f"../../{folder}/define.xml",
        )
        for dataset in datasets:
            content = write_dataset_json(dataset, json_context)
            files[f"json/{folder}/{dataset.name.lower()}.json"] = content
            findings += check_dataset_json(content, dataset, define)
    report = ConformanceReport(tuple(findings), RULES)
    files["conformance.json"] = report.to_json()
    return files, report
