"""CDISC Dataset-JSON v1.1 (cdisc-package.md §6): every SDTM and ADaM dataset validates against
the official JSON schema (tests/analysis/exports/fixtures), UTF-8 text travels intact, and the
file says what the Define says (OIDs, names, types, lengths, key sequence)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from cdisc_samples import STUDY, adam_unblinded, sdtm
from export_samples import make_export_data

from analysis.exports.dataset_json import (
    DatasetJsonContext,
    read_dataset_json,
    write_dataset_json,
)
from analysis.exports.metadata import date_of_sas
from analysis.exports.sdtm import build_sdtm_datasets
from analysis.exports.xport import XptDataset, XptVariable

SCHEMA = json.loads(
    (Path(__file__).parent / "fixtures" / "dataset-json-1-1.schema.json").read_text("utf-8")
)
CONTEXT = DatasetJsonContext(
    created_at=datetime(2026, 12, 5, 9, 0, tzinfo=UTC), study_oid=f"STDY.{STUDY}",
    metadata_version_oid="MDV.SDTM", metadata_ref="../../sdtm/define.xml",
)


def validate(content: bytes) -> dict[str, object]:
    document = json.loads(content.decode("utf-8"))
    errors = sorted(jsonschema.Draft201909Validator(SCHEMA).iter_errors(document), key=str)
    assert not errors, [e.message for e in errors]
    columns = document["columns"]
    assert document["records"] == len(document["rows"])
    assert all(len(row) == len(columns) for row in document["rows"])
    return document  # type: ignore[no-any-return]


def all_datasets() -> list[XptDataset]:
    return [*sdtm(), *build_sdtm_datasets(make_export_data()), *adam_unblinded()]


def test_dsj_01_every_sdtm_and_adam_dataset_validates_against_the_schema() -> None:
    names = []
    for dataset in all_datasets():
        document = validate(write_dataset_json(dataset, CONTEXT))
        assert document["itemGroupOID"] == f"IG.{dataset.name}"
        assert document["name"] == dataset.name and document["label"] == dataset.label
        assert [c["itemOID"] for c in document["columns"]] == [  # type: ignore[attr-defined]
            f"IT.{dataset.name}.{v.name}" for v in dataset.variables]
        names.append(dataset.name)
    assert {"DM", "AE", "VS", "SUPPAE", "ADSL", "ADHBA1CC", "ADTTE", "ADAE"} <= set(names)


def test_dsj_02_utf8_chinese_text_travels_intact() -> None:
    ae = next(d for d in sdtm() if d.name == "AE")
    content = write_dataset_json(ae, CONTEXT)
    assert "头晕".encode() in content  # raw UTF-8, not \\u escapes
    names, rows = read_dataset_json(content)
    assert rows[0][names.index("AETERM")] == "头晕"
    adae = next(d for d in adam_unblinded() if d.name == "ADAE")
    names, rows = read_dataset_json(write_dataset_json(adae, CONTEXT))
    assert rows[0][names.index("AETERM")] == "头晕"


def test_dsj_03_types_lengths_and_nulls_come_from_the_data() -> None:
    ae = next(d for d in sdtm() if d.name == "AE")
    document = validate(write_dataset_json(ae, CONTEXT))
    columns = {c["name"]: c for c in document["columns"]}  # type: ignore[attr-defined]
    assert columns["AESEQ"]["dataType"] == "integer"
    assert columns["AETERM"] == {"itemOID": "IT.AE.AETERM", "name": "AETERM",
                                 "label": "Reported Term for the Adverse Event",
                                 "dataType": "string", "length": 8}
    # partial dates: text, never a date type
    assert columns["AESTDTC"]["dataType"] == "string"
    assert columns["AEENDTC"]["dataType"] == "date"
    assert [c.get("keySequence") for c in document["columns"]][:4] == [  # type: ignore[attr-defined]
        1, None, 2, 3]
    rows = document["rows"]
    assert rows[1][6] is None  # type: ignore[index]  # null severity stays null
    assert rows[1][3] == 2 and isinstance(rows[1][3], int)  # type: ignore[index]


def test_dsj_04_adam_numeric_dates_travel_as_iso_text_with_integer_target() -> None:
    adsl = next(d for d in adam_unblinded() if d.name == "ADSL")
    document = validate(write_dataset_json(adsl, CONTEXT))
    columns = {c["name"]: (i, c) for i, c in enumerate(document["columns"])}  # type: ignore[arg-type]
    index, column = columns["TRTSDT"]
    assert column["dataType"] == "date" and column["targetDataType"] == "integer"
    assert column["displayFormat"] == "DATE9."
    source = adsl.variables.index(next(v for v in adsl.variables if v.name == "TRTSDT"))
    for row, original in zip(document["rows"], adsl.rows, strict=True):  # type: ignore[arg-type]
        expected = original[source]
        assert row[index] == (None if expected is None
                              else date_of_sas(float(expected)).isoformat())
    bds = next(d for d in adam_unblinded() if d.name == "ADHBA1CC")
    document = validate(write_dataset_json(bds, CONTEXT))
    kinds = {c["name"]: c["dataType"] for c in document["columns"]}  # type: ignore[attr-defined]
    assert kinds["AVAL"] == "double" and kinds["AVISITN"] == "integer"


def test_dsj_05_empty_dataset_is_a_metadata_only_file() -> None:
    empty = XptDataset("EX", "Exposure", (XptVariable("STUDYID", "Study Identifier", "char"),
                                          XptVariable("EXDOSE", "Dose", "num")), ())
    document = validate(write_dataset_json(empty, CONTEXT))
    assert document["records"] == 0 and document["rows"] == []


def test_dsj_06_schema_rejects_what_the_writer_must_never_produce() -> None:
    """The fixture is the real schema: a missing itemGroupOID or a bad version is refused."""
    document = json.loads(write_dataset_json(sdtm()[0], CONTEXT))
    validator = jsonschema.Draft201909Validator(SCHEMA)
    for key, value in (("itemGroupOID", None), ("datasetJSONVersion", "1.0"),
                       ("records", -1)):
        broken = dict(document)
        if value is None:
            del broken[key]
        else:
            broken[key] = value
        assert list(validator.iter_errors(broken)), key


@pytest.mark.parametrize("name", ["DM", "AE", "VS"])
def test_dsj_07_rows_round_trip_to_the_dataset_values(name: str) -> None:
    dataset = next(d for d in sdtm() if d.name == name)
    names, rows = read_dataset_json(write_dataset_json(dataset, CONTEXT))
    assert names == [v.name for v in dataset.variables]
    assert [tuple(r) for r in rows] == [
        tuple(int(c) if isinstance(c, float) and c.is_integer() and v.type == "num"
              and all(float(x).is_integer() for x in [row[i] for row in dataset.rows]
                      if x is not None) else c
              for i, (v, c) in enumerate(zip(dataset.variables, original, strict=True)))
        for original in dataset.rows
    ]
