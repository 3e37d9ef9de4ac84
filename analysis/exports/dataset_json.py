"""CDISC Dataset-JSON v1.1 files: one UTF-8 JSON document per dataset.

Dataset-JSON carries what SAS XPORT v5 cannot: UTF-8 text, so a Chinese AE term travels intact
(the FDA package stays XPT; this is the parallel copy CDISC and NMPA-style packages use).
Columns are described from the same metadata as the Define-XML (``analysis.exports.metadata``):
``itemGroupOID``/``itemOID`` equal the Define OIDs, types and lengths are computed from the data,
ADaM numeric dates travel as ISO 8601 text with ``targetDataType: "integer"``. Attribute order
follows the specification's recommended order so streaming readers see metadata first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from analysis.exports.metadata import (
    column_type,
    dataset_keys,
    item_group_oid,
    item_oid,
    json_value,
)
from analysis.exports.xport import XptDataset

DATASET_JSON_VERSION = "1.1.0"


@dataclass(frozen=True)
class DatasetJsonContext:
    """File-level attributes shared by every dataset of one package."""

    created_at: datetime  # UTC
    study_oid: str
    metadata_version_oid: str
    metadata_ref: str | None = None  # e.g. "../sdtm/define.xml"
    originator: str = "dtx-trials"
    source_system: str = "dtx-trials"
    source_system_version: str = "0.1.0"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def dataset_json(dataset: XptDataset, context: DatasetJsonContext) -> dict[str, object]:
    """Return the Dataset-JSON v1.1 document of ``dataset`` as a JSON-ready dict."""
    keys = dataset_keys(dataset)
    kinds = [column_type(dataset, i) for i in range(len(dataset.variables))]
    columns: list[dict[str, object]] = []
    for variable, kind in zip(dataset.variables, kinds, strict=True):
        column: dict[str, object] = {
            "itemOID": item_oid(dataset, variable),
            "name": variable.name,
            "label": variable.label,
            "dataType": kind.json_type,
        }
        if kind.target_type:
            column["targetDataType"] = kind.target_type
        if kind.json_type == "string" and kind.length:
            column["length"] = kind.length
        if kind.display_format:
            column["displayFormat"] = kind.display_format
        if variable.name in keys:
            column["keySequence"] = keys.index(variable.name) + 1
        columns.append(column)
    rows = [
        [json_value(v, k, cell) for v, k, cell in zip(dataset.variables, kinds, row, strict=True)]
        for row in dataset.rows
    ]
    document: dict[str, object] = {
        "datasetJSONCreationDateTime": _stamp(context.created_at),
        "datasetJSONVersion": DATASET_JSON_VERSION,
        "fileOID": f"{context.study_oid}.{dataset.name}",
        "originator": context.originator,
        "sourceSystem": {"name": context.source_system,
                         "version": context.source_system_version},
        "studyOID": context.study_oid,
        "metaDataVersionOID": context.metadata_version_oid,
    }
    if context.metadata_ref:
        document["metaDataRef"] = context.metadata_ref
    document.update({
        "itemGroupOID": item_group_oid(dataset),
        "records": len(rows),
        "name": dataset.name,
        "label": dataset.label,
        "columns": columns,
        "rows": rows,
    })
    return document


def write_dataset_json(dataset: XptDataset, context: DatasetJsonContext) -> bytes:
    """Return ``dataset`` as a Dataset-JSON v1.1 file (UTF-8, non-ASCII text kept as is)."""
    return json.dumps(dataset_json(dataset, context), ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def read_dataset_json(content: bytes) -> tuple[list[str], list[list[object]]]:
    """Return (column names, rows) of a Dataset-JSON file (for round-trip checks)."""
    document = json.loads(content.decode("utf-8"))
    return [str(c["name"]) for c in document["columns"]], list(document.get("rows", []))
