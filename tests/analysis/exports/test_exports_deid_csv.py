"""De-identification (DEID-01/03, blinding) across every export, and the CSV layouts."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace

import pytest
from export_samples import (
    ARM_CODES,
    ARM_NAMES,
    NATIONAL_ID,
    PATIENT_NAME,
    PATIENT_PHONE,
    make_export_data,
    unblinded,
)

from analysis.exports import ExportError, FormValue, build_all_exports, build_csv_exports
from analysis.exports.csv import neutralised


@pytest.fixture(scope="module")
def blinded_files() -> dict[str, bytes]:
    return build_all_exports(make_export_data())


@pytest.fixture(scope="module")
def unblinded_files() -> dict[str, bytes]:
    return build_all_exports(unblinded())


def _rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


def _decoded(body: bytes) -> str:
    # XPT is ASCII, the rest UTF-8; JSON may escape, so compare on parsed text too.
    text = body.decode("utf-8", errors="replace")
    try:
        return text + json.dumps(json.loads(text), ensure_ascii=False)
    except ValueError:
        return text


@pytest.mark.parametrize("secret", [PATIENT_NAME, "Zhang Wei", "张伟", PATIENT_PHONE, NATIONAL_ID,
                                    "file:abc123", "full_name", "national_id"])
def test_deid_01_no_identifier_in_any_export(blinded_files: dict[str, bytes],
                                             unblinded_files: dict[str, bytes],
                                             secret: str) -> None:
    for files in (blinded_files, unblinded_files):
        for name, body in files.items():
            assert secret not in _decoded(body), f"{secret!r} leaked into {name}"


def test_deid_01_subject_columns_are_an_allow_list(blinded_files: dict[str, bytes]) -> None:
    header = _rows(blinded_files["csv/subjects.csv"])[0].keys()
    assert list(header) == ["subject_code", "site_code", "status", "sex", "age", "consented_on",
                            "randomized_on", "completed_on", "withdrawn_on", "withdrawal_reason"]


def test_deid_03_age_90_and_over_is_90_plus(blinded_files: dict[str, bytes]) -> None:
    ages = {r["subject_code"]: r["age"] for r in _rows(blinded_files["csv/subjects.csv"])}
    assert ages == {"S001": "72", "S002": "90+", "S003": "68"}


@pytest.mark.parametrize("term", [*ARM_NAMES, *ARM_CODES, "ARMCD", "assignedArm"])
def test_rpt_14_blinded_exports_carry_no_arm(blinded_files: dict[str, bytes], term: str) -> None:
    # a whole word: TS's TSPARMCD (trial summary parameter code) is not an arm variable
    pattern = re.compile(rf"(?<![A-Za-z]){re.escape(term)}(?![a-z])")
    for name, body in blinded_files.items():
        assert not pattern.search(_decoded(body)), f"{term!r} in blinded {name}"


def test_unblinded_exports_carry_the_arm(unblinded_files: dict[str, bytes]) -> None:
    arms = {r["subject_code"]: r["arm_code"] for r in _rows(unblinded_files["csv/subjects.csv"])}
    assert arms == {"S001": "ACTIVE", "S002": "SHAM", "S003": "ACTIVE"}


def test_csv_one_long_and_wide_file_per_form_plus_codebook(blinded_files: dict[str, bytes]) -> None:
    csv_files = {n for n in blinded_files if n.startswith("csv/")}
    assert csv_files == {
        "csv/subjects.csv", "csv/codebook.csv",
        *(f"csv/{form}_{layout}.csv" for form in ("contact", "vitals", "adas_cog", "demographics",
                                                  "adverse_events", "end_of_study")
          for layout in ("long", "wide")),
    }


def test_csv_missing_codes_are_explicit_never_blank(blinded_files: dict[str, bytes]) -> None:
    long_rows = _rows(blinded_files["csv/vitals_long.csv"])
    week12 = [r for r in long_rows if r["visit"] == "week12" and r["field"] == "sbp"]
    assert [r["value"] for r in week12] == ["not_done"] * 3
    wide = {(r["subject_code"], r["visit"]): r for r in _rows(blinded_files["csv/vitals_wide.csv"])}
    assert wide[("S001", "week12")]["sbp"] == "not_done"
    assert wide[("S001", "week12")]["weight"] == ""  # not asked stays blank
    assert wide[("S001", "screening")]["sbp"] == "120"


def test_csv_wide_has_one_column_per_exported_field(blinded_files: dict[str, bytes]) -> None:
    rows = _rows(blinded_files["csv/adas_cog_wide.csv"])
    assert list(rows[0]) == ["subject_code", "site_code", "visit", "repeat", "status", "total",
                             "symptoms", "comment"]
    assert rows[0]["symptoms"] == "fatigue;headache"
    assert rows[0]["status"] == "draft"  # one draft value makes the instance a draft


def test_csv_codebook_is_bilingual_with_choices_and_units(blinded_files: dict[str, bytes]) -> None:
    book = {(r["form"], r["field"]): r for r in _rows(blinded_files["csv/codebook.csv"])}
    assert ("contact", "phone") not in book
    assert ("vitals", "consent_scan") not in book
    sbp = book[("vitals", "sbp")]
    assert (sbp["label_en"], sbp["label_zh"], sbp["type"], sbp["unit"]) == (
        "Systolic blood pressure", "收缩压", "integer", "mmHg")
    assert sbp["missing_codes"] == "not_done=Not done"
    assert book[("adas_cog", "symptoms")]["choices"] == (
        "fatigue=Fatigue / 疲劳; headache=Headache / 头痛; none=None / 无")


def test_csv_is_utf8_with_bom_and_crlf(blinded_files: dict[str, bytes]) -> None:
    body = blinded_files["csv/codebook.csv"]
    assert body.startswith("\ufeff".encode())
    assert b"\r\n" in body


def test_value_of_undefined_field_is_refused() -> None:
    data = make_export_data()
    data = replace(data, values=(*data.values,
                                 FormValue("S001", "screening", "vitals", "home_address", "x")))
    with pytest.raises(ExportError, match=r"undefined field vitals\.home_address"):
        build_csv_exports(data)


def test_value_of_unknown_subject_is_refused() -> None:
    data = make_export_data()
    data = replace(data, values=(FormValue("S999", "screening", "vitals", "sbp", 1),))
    with pytest.raises(ExportError, match="unknown subject"):
        build_csv_exports(data)


def test_unknown_missing_code_is_refused() -> None:
    data = make_export_data()
    data = replace(data, values=(FormValue("S001", "screening", "vitals", "sbp",
                                           {"missing": "lost"}),))
    with pytest.raises(ExportError, match="unknown missing-data value"):
        build_csv_exports(data)


@pytest.mark.parametrize("term", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)",
                                  "\tcmd", "\rcmd"])
def test_csv_formula_injection_is_neutralised(term: str) -> None:
    data = make_export_data()
    values = tuple(replace(v, value=term) if v.field_id == "ae_term" else v
                   for v in data.values)
    files = build_csv_exports(replace(data, values=values))
    rows = _rows(files["adverse_events_long.csv"])
    cells = [r["value"] for r in rows if r["field"] == "ae_term"]
    assert cells and all(c == "'" + term for c in cells)
    # numbers keep their sign: a negative spherical equivalent is not a formula
    assert neutralised("-1.25") == "-1.25" and neutralised("+3") == "+3"
