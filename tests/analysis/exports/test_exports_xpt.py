"""SAS XPORT v5 (XPT-01..07) and SDTM (SDTM-01..05) checks, read back with pyreadstat/pandas."""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest
from export_samples import make_export_data, unblinded
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.exports import (
    AdverseEvent,
    ExportError,
    XptDataset,
    XptError,
    XptVariable,
    build_xpt_exports,
    write_xpt,
)
from analysis.exports.sdtm import check_sdtm, short_test_code

CREATED_AT = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def xpt_files() -> dict[str, bytes]:
    return build_xpt_exports(make_export_data())


@pytest.fixture(scope="module")
def read_back(xpt_files: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, tuple[pd.DataFrame, object]]:
    folder = tmp_path_factory.mktemp("xpt")
    tables = {}
    for name, body in xpt_files.items():
        if name.endswith(".xpt"):
            path = folder / name
            path.write_bytes(body)
            tables[name] = pyreadstat.read_xport(str(path))
    return tables


def test_xpt_01_version_5_headers(xpt_files: dict[str, bytes]) -> None:
    for name, body in xpt_files.items():
        if name.endswith(".xpt"):
            assert body[:48] == b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!"
            assert b"LIBV8" not in body[:400]
            assert len(body) % 80 == 0


def test_xpt_02_dataset_name_is_lowercase_file_stem(read_back: dict[str, tuple]) -> None:
    assert set(read_back) == {"dm.xpt", "ds.xpt", "ae.xpt", "ex.xpt", "vs.xpt", "qs.xpt"}
    for name, (_, meta) in read_back.items():
        assert re.match(r"^[a-z][a-z0-9]{0,7}\.xpt$", name)
        assert meta.table_name == Path(name).stem.upper()


def test_xpt_03_04_names_and_labels(read_back: dict[str, tuple]) -> None:
    for _, (frame, meta) in read_back.items():
        for column, label in zip(frame.columns, meta.column_labels):
            assert re.match(r"^[A-Z][A-Z0-9]{0,7}$", column)
            assert label and len(label) <= 40 and label.isascii()
        assert meta.file_label and len(meta.file_label) <= 40


def test_xpt_05_char_length_is_longest_value(read_back: dict[str, tuple]) -> None:
    frame, meta = read_back["dm.xpt"]
    widths = meta.variable_storage_width
    assert widths["USUBJID"] == max(len(v) for v in frame["USUBJID"]) == len("COG-DTX-01-S001")
    assert all(w <= 200 for w in widths.values())


def test_xpt_06_values_are_printable_ascii(read_back: dict[str, tuple]) -> None:
    for _, (frame, _) in read_back.items():
        for column in frame.select_dtypes(include="object"):
            assert all(str(v).isascii() and str(v).isprintable() for v in frame[column])


def test_xpt_07_dtc_variables_are_iso_8601_text(read_back: dict[str, tuple]) -> None:
    frame, _ = read_back["dm.xpt"]
    assert list(frame["RFICDTC"]) == ["2026-01-03", "2026-01-04", "2026-01-06"]


def test_xpt_round_trip_values(read_back: dict[str, tuple]) -> None:
    dm, _ = read_back["dm.xpt"]
    assert list(dm["SUBJID"]) == ["S001", "S002", "S003"]
    assert list(dm["AGE"]) == [72.0, 90.0, 68.0]  # Safe Harbor: 93 -> 90
    assert "ARMCD" not in dm.columns and "ARM" not in dm.columns  # blinded
    vs, _ = read_back["vs.xpt"]
    s001 = vs[vs["USUBJID"] == "COG-DTX-01-S001"]
    assert list(s001["VSTESTCD"]) == ["SBP", "WEIGHT", "FASTING", "SBP"]
    assert list(s001["VSSTRESN"])[:2] == [120.0, 61.5]
    assert list(s001["VSORRES"])[2] == "Y"
    not_done = s001.iloc[3]
    assert (not_done["VSSTAT"], not_done["VSREASND"]) == ("NOT DONE", "Not done")
    assert math.isnan(not_done["VSSTRESN"])
    assert list(s001["VISIT"]) == ["Screening", "Screening", "Screening", "Week 12"]


def test_xpt_read_by_pandas_too(xpt_files: dict[str, bytes]) -> None:
    frame = pd.read_sas(io.BytesIO(xpt_files["ae.xpt"]), format="xport", encoding="ascii")
    assert list(frame["AETERM"]) == ["Headache", "Eye strain", "Fall"]
    assert list(frame["AESEQ"]) == [1.0, 2.0, 1.0]
    assert list(frame["AESER"]) == ["N", "N", "Y"]


def test_sdtm_01_to_05_on_generated_datasets(read_back: dict[str, tuple]) -> None:
    dm, _ = read_back["dm.xpt"]
    subjects = set(dm["USUBJID"])
    for name, (frame, _) in read_back.items():
        domain = Path(name).stem.upper()
        assert set(frame["DOMAIN"]) <= {domain}  # SDTM-04
        assert set(frame["USUBJID"]) <= subjects  # SDTM-02
        if domain != "DM":
            seq = frame[next(c for c in frame.columns if c.endswith("SEQ"))]
            assert not pd.DataFrame({"u": frame["USUBJID"], "s": seq}).duplicated().any()
        for column in frame.columns:
            if column.endswith("DTC"):
                assert all(v == "" or re.match(r"^\d{4}-\d{2}-\d{2}$", v) for v in frame[column])


def test_sdtm_01_missing_required_value_is_refused() -> None:
    data = make_export_data()
    data = replace(data, adverse_events=(AdverseEvent("S001", "", date(2026, 2, 1)),))
    with pytest.raises(ExportError, match=r"SDTM-01: AE\.AETERM"):
        build_xpt_exports(data)


def test_sdtm_02_subject_not_in_dm_is_refused() -> None:
    dm = XptDataset("DM", "Demographics", tuple(XptVariable(n, n, "char") for n in (
        "STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID", "SEX", "COUNTRY")),
        (("T", "DM", "T-1", "1", "S", "F", "CHN"),))
    ae = XptDataset("AE", "Adverse Events", (
        XptVariable("STUDYID", "s", "char"), XptVariable("DOMAIN", "d", "char"),
        XptVariable("USUBJID", "u", "char"), XptVariable("AESEQ", "q", "num"),
        XptVariable("AETERM", "t", "char"), XptVariable("AEDECOD", "d", "char")),
        (("T", "AE", "T-2", 1, "x", "X"),))
    with pytest.raises(ExportError, match="SDTM-02"):
        check_sdtm([dm, ae])
    with pytest.raises(ExportError, match="SDTM-03"):
        check_sdtm([dm, replace(ae, rows=(("T", "AE", "T-1", 1, "x", "X"),) * 2)])
    with pytest.raises(ExportError, match="SDTM-04"):
        check_sdtm([dm, replace(ae, rows=(("T", "XX", "T-1", 1, "x", "X"),))])


def test_sdtm_05_non_iso_date_is_refused() -> None:
    dm = XptDataset("DM", "Demographics", tuple(XptVariable(n, n, "char") for n in (
        "STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID", "SEX", "COUNTRY", "RFSTDTC")),
        (("T", "DM", "T-1", "1", "S", "F", "CHN", "01/02/2026"),))
    with pytest.raises(ExportError, match="SDTM-05"):
        check_sdtm([dm])


def test_unblinded_dm_has_arms(tmp_path: Path) -> None:
    path = tmp_path / "dm.xpt"
    path.write_bytes(build_xpt_exports(unblinded())["dm.xpt"])
    frame, _ = pyreadstat.read_xport(str(path))
    assert list(frame["ARMCD"]) == ["ACTIVE", "SHAM", "ACTIVE"]
    assert list(frame["ACTARM"]) == ["CogniTrain app", "Sham app", "CogniTrain app"]


def test_ex_treatment_masked_when_blinded(xpt_files: dict[str, bytes]) -> None:
    frame = pd.read_sas(io.BytesIO(xpt_files["ex.xpt"]), format="xport", encoding="ascii")
    assert set(frame["EXTRT"]) == {"BLINDED TREATMENT"}


def test_define_csv_lists_every_variable(xpt_files: dict[str, bytes],
                                         read_back: dict[str, tuple]) -> None:
    rows = list(csv.DictReader(io.StringIO(xpt_files["define.csv"].decode("utf-8-sig"))))
    assert list(rows[0]) == ["dataset", "variable", "label", "type", "length", "origin"]
    listed = {(r["dataset"], r["variable"]) for r in rows}
    for name, (frame, meta) in read_back.items():
        stem = Path(name).stem.upper()
        assert {(stem, c) for c in frame.columns} <= listed
        for r in rows:
            if r["dataset"] == stem and r["type"] == "char":
                assert int(r["length"]) == meta.variable_storage_width[r["variable"]]


def _dataset(label: str = "Label", name: str = "AB", value: object = "x") -> XptDataset:
    return XptDataset("T", "Test", (XptVariable(name, label, "char"),), ((value,),))


@pytest.mark.parametrize(("dataset", "message"), [
    (_dataset(label="L" * 41), "41 characters"),
    (_dataset(label="Höhe"), "not printable ASCII"),
    (_dataset(label="Dose (mg"), "unbalanced"),
    (_dataset(name="TOOLONGNAME"), "variable name"),
    (_dataset(name="1A"), "variable name"),
    (_dataset(value="x" * 201), "longer than 200"),
    (_dataset(value="北京"), "not printable ASCII"),
    (_dataset(value="tab\there"), "not printable ASCII"),
    (XptDataset("dm", "x", (XptVariable("A", "a", "char"),), ()), "dataset name"),
    (XptDataset("T", "x", (XptVariable("A", "a", "num"),), ((float("nan"),),)), "finite"),
])
def test_xpt_limits_are_checked_before_writing(dataset: XptDataset, message: str) -> None:
    with pytest.raises(XptError, match=message):
        write_xpt(dataset, CREATED_AT)


def test_short_test_codes_are_unique_sas_names() -> None:
    taken: set[str] = set()
    codes = [short_test_code(f, taken) for f in ("adas_cog_total", "adas_cog_total_2", "9x", "")]
    assert codes == ["ADASCOGT", "ADASCOG1", "T9X", "TEST"]
    assert all(re.match(r"^[A-Z][A-Z0-9]{0,7}$", c) for c in codes)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(
    st.none(),
    st.floats(min_value=-1e70, max_value=1e70, allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**40), max_value=2**40),
), min_size=1, max_size=5))
def test_xpt_numbers_round_trip(tmp_path_factory: pytest.TempPathFactory,
                                numbers: list[float | int | None]) -> None:
    dataset = XptDataset("N", "Numbers", (XptVariable("X", "x", "num"),
                                          XptVariable("C", "c", "char")),
                         tuple((n, "r") for n in numbers))
    path = tmp_path_factory.mktemp("num") / "n.xpt"
    path.write_bytes(write_xpt(dataset, CREATED_AT))
    frame, _ = pyreadstat.read_xport(str(path))
    assert len(frame) == len(numbers)
    for expected, got in zip(numbers, frame["X"]):
        if expected is None:
            assert math.isnan(got)
        elif abs(expected) < 5.4e-79:  # below the IBM range it underflows to zero
            assert got == 0 or math.isclose(got, expected, rel_tol=1e-15)
        else:
            assert math.isclose(got, expected, rel_tol=1e-15, abs_tol=0.0)


def test_xpt_empty_dataset_reads_back(tmp_path: Path) -> None:
    data = replace(make_export_data(), adverse_events=())
    path = tmp_path / "ae.xpt"
    path.write_bytes(build_xpt_exports(data)["ae.xpt"])
    frame, meta = pyreadstat.read_xport(str(path))
    assert len(frame) == 0
    assert meta.table_name == "AE"
    assert "AETERM" in frame.columns
