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
    ExportError,
    XptDataset,
    XptError,
    XptVariable,
    build_xpt_exports,
    write_xpt,
)
from analysis.exports.data import DeviceValue
from analysis.exports.sdtm import build_sdtm_datasets, check_sdtm, study_day

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
    assert set(read_back) == {"ts.xpt", "dm.xpt", "ds.xpt", "sv.xpt", "ae.xpt", "ex.xpt",
                              "vs.xpt", "qs.xpt"}
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
    assert list(dm["AGE"]) == [72.0, 93.0, 68.0]  # the real age (capping is de-identification)
    assert list(dm["SEX"]) == ["F", "M", "F"]
    assert list(dm["RFXSTDTC"]) == ["2026-01-21"] * 3  # first day with app use
    assert list(dm["RFXENDTC"]) == ["2026-01-23"] * 3  # 2026-01-22 had 0 minutes
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
    assert list(frame["AESEV"]) == ["MILD", "MODERATE", "SEVERE"]
    assert list(frame["AEREL"]) == ["NOT RELATED", "POSSIBLY RELATED", "NOT RELATED"]
    assert list(frame["AESTDTC"]) == ["2026-02-01", "2026-02-09", "2026-03"]  # partial kept
    assert list(frame["AEENDTC"]) == ["", "2026-02-12", "2026-03-20"]  # unknown -> null
    assert list(frame["AESTDY"])[:2] == [12.0, 20.0] and math.isnan(frame["AESTDY"][2])
    # never the verbatim upper-cased pretending to be coded
    assert list(frame["AEDECOD"]) == ["", "", ""] and list(frame["AEBODSYS"]) == ["", "", ""]


def test_sdtm_01_to_05_on_generated_datasets(read_back: dict[str, tuple]) -> None:
    dm, _ = read_back["dm.xpt"]
    subjects = set(dm["USUBJID"])
    for name, (frame, _) in read_back.items():
        domain = Path(name).stem.upper()
        assert set(frame["DOMAIN"]) <= {domain}  # SDTM-04
        if domain == "TS":
            continue  # trial-level: no subjects
        assert set(frame["USUBJID"]) <= subjects  # SDTM-02
        if domain not in ("DM", "SV"):
            seq = frame[f"{domain}SEQ"]
            assert not pd.DataFrame({"u": frame["USUBJID"], "s": seq}).duplicated().any()
        for column in frame.columns:
            if column.endswith("DTC"):
                assert all(v == "" or re.match(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2})?)?)?$", v)
                           for v in frame[column])  # SDTM-05, partial dates as collected


def test_sdtm_01_mapped_value_missing_from_the_data_is_refused_naming_it() -> None:
    data = make_export_data()
    values = tuple(v for v in data.values
                   if not (v.form_id == "adverse_events" and v.field_id == "ae_severity"
                           and v.subject_code == "S002"))
    with pytest.raises(ExportError, match=r"participant S002, form adverse_events at visit "
                                          r"week12: field ae_severity has no value, and "
                                          r"AE\.AESEV needs one"):
        build_xpt_exports(replace(data, values=values))


def test_sdtm_mapping_is_required_no_defaults() -> None:
    with pytest.raises(ExportError, match="declares no 'cdisc' mapping"):
        build_xpt_exports(replace(make_export_data(), cdisc=None))


def test_sdtm_ds_disposition_from_the_end_of_study_form() -> None:
    frame = pd.read_sas(io.BytesIO(build_xpt_exports(make_export_data())["ds.xpt"]),
                        format="xport", encoding="ascii")
    events = frame[frame["DSCAT"] == "DISPOSITION EVENT"]
    assert list(zip(events["USUBJID"], events["DSDECOD"], events["DSSTDTC"])) == [
        ("COG-DTX-01-S002", "COMPLETED", "2026-07-01"),
        ("COG-DTX-01-S003", "WITHDRAWAL BY SUBJECT", "2026-03-02"),
    ]
    assert "2026-11-23" not in set(frame["DSSTDTC"])  # never the day the export ran


def test_sdtm_withdrawn_without_disposition_form_is_refused() -> None:
    data = make_export_data()
    values = tuple(v for v in data.values
                   if not (v.form_id == "end_of_study" and v.subject_code == "S003"))
    with pytest.raises(ExportError, match="participant S003 is withdrawn but has no "
                                          "end_of_study form"):
        build_xpt_exports(replace(data, values=values))


@pytest.mark.parametrize(("dtc", "ref", "day"), [
    ("2026-01-21", "2026-01-21", 1), ("2026-01-20", "2026-01-21", -1),
    ("2026-02-01T10:00", "2026-01-21", 12), ("2026-02", "2026-01-21", None),
    ("2026-02-01", None, None),
])
def test_sdtm_study_day_has_no_day_zero_and_no_partial_dates(dtc: str, ref: str | None,
                                                             day: int | None) -> None:
    assert study_day(dtc, ref) == day


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


def test_a_randomized_participant_without_use_has_no_actual_arm(tmp_path: Path) -> None:
    """CORE-000223/224: randomized but no day of DTx use in EX: ARM as assigned, ACTARM null
    with ARMNRS "ASSIGNED, NOT TREATED" (before: the planned arm, as if treated)."""
    data = unblinded()
    data = replace(data, device_values=tuple(
        v for v in data.device_values if v.subject_code != "S002"))
    path = tmp_path / "dm.xpt"
    path.write_bytes(build_xpt_exports(data)["dm.xpt"])
    frame, _ = pyreadstat.read_xport(str(path))
    rows = frame.set_index("SUBJID")
    assert rows.loc["S002", "ARMCD"] == "SHAM" and rows.loc["S002", "RFXSTDTC"] == ""
    assert (rows.loc["S002", "ACTARMCD"], rows.loc["S002", "ARMNRS"]) == (
        "", "ASSIGNED, NOT TREATED")
    assert (rows.loc["S001", "ACTARMCD"], rows.loc["S001", "ARMNRS"]) == ("ACTIVE", "")


def test_rfpendtc_is_the_latest_date_of_the_participant_in_any_dataset() -> None:
    """CORE-000720: no --DTC of a participant after DM.RFPENDTC, the last contact of any
    kind. A day of app use after the last visit moves it (before: visits, consent, withdrawal
    and disposition only, so RFXENDTC and EXSTDTC fell after RFPENDTC)."""
    data = make_export_data()
    late = DeviceValue("S001", "app_minutes", datetime(2026, 5, 10, 21, 0, tzinfo=UTC), 30.0,
                       "min")
    data = replace(data, device_values=(*data.device_values, late))
    datasets = {d.name: d for d in build_sdtm_datasets(data)}
    dm = datasets["DM"]
    names = [v.name for v in dm.variables]
    last = {row[names.index("USUBJID")]: row[names.index("RFPENDTC")] for row in dm.rows}
    assert last["STDY-S001".replace("STDY", data.trial.code)] == "2026-05-10"
    checked = 0
    for dataset in datasets.values():
        columns = [v.name for v in dataset.variables]
        if dataset.name in ("DM", "TS") or "USUBJID" not in columns:
            continue
        for row in dataset.rows:
            for i, name in enumerate(columns):
                if name.endswith("DTC") and isinstance(row[i], str) and row[i]:
                    assert row[i][:10] <= last[row[columns.index("USUBJID")]], (
                        dataset.name, name, row[i])
                    checked += 1
    assert checked > 20


def test_ex_treatment_masked_when_blinded(xpt_files: dict[str, bytes]) -> None:
    frame = pd.read_sas(io.BytesIO(xpt_files["ex.xpt"]), format="xport", encoding="ascii")
    assert set(frame["EXTRT"]) == {"BLINDED TREATMENT"}


def test_define_csv_lists_every_variable(xpt_files: dict[str, bytes],
                                         read_back: dict[str, tuple]) -> None:
    rows = list(csv.DictReader(io.StringIO(xpt_files["define.csv"].decode("utf-8-sig"))))
    assert list(rows[0]) == ["dataset", "variable", "label", "type", "length", "origin",
                             "codelist", "source"]
    aesev = next(r for r in rows if (r["dataset"], r["variable"]) == ("AE", "AESEV"))
    assert (aesev["codelist"], aesev["source"]) == ("C66769 (CDISC CT 2025-09-26)",
                                                    "adverse_events.ae_severity")
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


def test_xpt_07_adam_numeric_dates_carry_their_sas_format(tmp_path: Path) -> None:
    """A numeric ADaM date, time or datetime names its SAS format in the file, so SAS and its
    readers show a date (before: no format, a bare day count such as 24180)."""
    start = date(2026, 3, 15)
    days = (start - date(1960, 1, 1)).days
    adsl = XptDataset("ADSL", "Subject-Level Analysis Dataset", (
        XptVariable("USUBJID", "Unique Subject Identifier", "char"),
        XptVariable("TRTSDT", "Date of First Exposure to Treatment", "num"),
        XptVariable("TRTSTM", "Time of First Exposure to Treatment", "num"),
        XptVariable("TRTSDTM", "Datetime of First Exposure to Treatment", "num"),
        XptVariable("AGE", "Age", "num"),
    ), (("S-1", days, 9 * 3600, days * 86400 + 9 * 3600, 72),))
    path = tmp_path / "adsl.xpt"
    path.write_bytes(write_xpt(adsl, CREATED_AT))
    frame, meta = pyreadstat.read_xport(str(path))
    assert {name: meta.original_variable_types[name] for name in frame.columns} == {
        "USUBJID": None, "TRTSDT": "DATE9.", "TRTSTM": "TIME8.", "TRTSDTM": "DATETIME20.",
        "AGE": None}
    assert frame["TRTSDT"][0] == start
    assert frame["TRTSDTM"][0] == datetime(2026, 3, 15, 9, 0)
    assert frame["AGE"][0] == 72


def test_xpt_empty_dataset_reads_back(tmp_path: Path) -> None:
    data = make_export_data()
    data = replace(data, values=tuple(v for v in data.values if v.form_id != "adverse_events"))
    path = tmp_path / "ae.xpt"
    path.write_bytes(build_xpt_exports(data)["ae.xpt"])
    frame, meta = pyreadstat.read_xport(str(path))
    assert len(frame) == 0
    assert meta.table_name == "AE"
    assert "AETERM" in frame.columns
