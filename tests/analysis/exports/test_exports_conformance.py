"""Conformance checks (analysis.exports.conformance, DTX-001..017) and the whole CDISC package:
a clean package has only the findings its sample data really carry; each rule fires on the
defect it describes."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from cdisc_samples import STUDY, sdtm, trial_data

from analysis.adam import adam_methods, build_adam
from analysis.exports.conformance import (
    check_dataset_json,
    check_datasets,
    check_define,
)
from analysis.exports.dataset_json import DatasetJsonContext, write_dataset_json
from analysis.exports.define_xml import DefineContext, build_define
from analysis.exports.package import PackageMeta, build_package
from analysis.exports.xport import XptDataset, XptError

CREATED = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def ascii_sdtm() -> list[XptDataset]:
    """The sample SDTM without its Chinese verbatim term (XPT v5 carries ASCII only)."""
    datasets = sdtm()
    ae = datasets[1]
    datasets[1] = dataclasses.replace(ae, rows=ae.rows[1:])
    return datasets


def package() -> tuple[dict[str, bytes], object]:
    datasets = ascii_sdtm()
    adam = build_adam(trial_data(), blinded=False, sdtm=datasets, studyid=STUDY)
    return build_package(datasets, adam, PackageMeta(STUDY, "T2D coaching", "A trial", CREATED,
                                                     adam_methods(trial_data())))


def rules(findings: list) -> set[str]:  # type: ignore[type-arg]
    return {f.rule for f in findings}


def replace_column(dataset: XptDataset, name: str, values: list[object]) -> XptDataset:
    index = [v.name for v in dataset.variables].index(name)
    rows = tuple(tuple(values[i] if j == index else c for j, c in enumerate(row))
                 for i, row in enumerate(dataset.rows))
    return dataclasses.replace(dataset, rows=rows)


def test_package_has_every_file_and_only_the_real_findings() -> None:
    files, _ = package()
    assert {"sdtm/define.xml", "adam/define.xml", "conformance.json", "sdtm/dm.xpt",
            "adam/adsl.xpt", "adam/adhba1cc.xpt", "adam/adtte.xpt", "adam/adae.xpt",
            "json/sdtm/ae.json", "json/adam/adsl.json"} <= set(files)
    for name in files:
        if name.endswith(".xpt"):
            assert files[name].startswith(b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!")
    body = json.loads(files["conformance.json"])
    # the sample DM has no RACE (ADSL Req) and no method for its derived RFSTDTC; DM, AE and
    # VS lack expected variables (e.g. DM's arm variables, AE's AEREL, VS's VSSTRESU)
    assert {(f["rule"], f["dataset"], f["variable"]) for f in body["findings"]} == {
        ("DTX-001", "ADSL", "RACE"), ("DTX-016", "DM", "RFSTDTC"), ("DTX-018", "DM", None),
        ("DTX-018", "AE", None), ("DTX-018", "VS", None)}
    assert body["n_findings"] == 5 and body["n_errors"] == 1 and body["n_warnings"] == 4
    expected = {f["dataset"]: f["message"] for f in body["findings"] if f["rule"] == "DTX-018"}
    assert "ARMNRS" in expected["DM"] and "AEREL" in expected["AE"]
    assert "VSSTRESU" in expected["VS"] and "VSORRES," not in expected["VS"]
    assert "CORE" in body["engine"] and set(body["rules"]) >= {"DTX-001", "DTX-017"}


def test_package_refuses_non_ascii_xpt_values() -> None:
    with pytest.raises(XptError, match="not printable ASCII"):
        build_package(sdtm(), [], PackageMeta(STUDY, "t", "d", CREATED))


def test_conformance_sdtm_rules_fire_on_their_defects() -> None:
    dm, ae, vs, supp = ascii_sdtm()
    broken_ae = replace_column(ae, "AESEQ", [1, 1])
    broken_ae = replace_column(broken_ae, "USUBJID", [ae.rows[0][2]] * 2)  # same subject
    broken_ae = replace_column(broken_ae, "AESTDTC", ["2025-03", "05/02/2025"])
    broken_ae = replace_column(broken_ae, "AESEV", ["BAD", "SEVERE"])
    broken_dm = replace_column(dm, "USUBJID", [dm.rows[0][2]] * len(dm.rows))
    broken_vs = replace_column(vs, "DOMAIN", ["XX"] * len(vs.rows))
    broken_vs = replace_column(broken_vs, "VSTEST", [f"Name {i}" for i in range(len(vs.rows))])
    broken_supp = replace_column(supp, "RDOMAIN", ["DM"])
    found = check_datasets([broken_dm, broken_ae, broken_vs, broken_supp])
    assert {"DTX-003", "DTX-004", "DTX-005", "DTX-006", "DTX-008", "DTX-009",
            "DTX-010"} <= rules(found)
    missing = dataclasses.replace(dm, variables=dm.variables[1:],
                                  rows=tuple(r[1:] for r in dm.rows))
    assert "DTX-001" in rules(check_datasets([missing]))
    nulls = replace_column(dm, "SEX", [None] * len(dm.rows))
    assert "DTX-002" in rules(check_datasets([nulls]))


def test_conformance_study_day_rule() -> None:
    dm, ae, *_ = ascii_sdtm()
    variables = (*ae.variables, dataclasses.replace(ae.variables[3], name="AESTDY",
                                                    label="Study Day of Start of AE"))
    subject = ae.rows[1][2]
    rf = dict((r[2], r[9]) for r in dm.rows)[subject]
    assert rf == "2025-01-06"
    good = dataclasses.replace(ae, variables=variables, rows=(ae.rows[1] + (36,),))
    assert "DTX-007" not in rules(check_datasets([dm, good]))
    for day in (0, 35):
        bad = dataclasses.replace(ae, variables=variables, rows=(ae.rows[1] + (day,),))
        assert "DTX-007" in rules(check_datasets([dm, bad]))


def test_conformance_adam_rules_fire_on_their_defects() -> None:
    adam = build_adam(trial_data(), blinded=False, studyid=STUDY)
    named = {d.name: d for d in adam}
    adsl, bds, tte = named["ADSL"], named["ADHBA1CC"], named["ADTTE"]
    flags = [v for v in (r[[x.name for x in adsl.variables].index("ITTFL")]
                         for r in adsl.rows)]
    bad_adsl = replace_column(adsl, "ITTFL", [None, *flags[1:]])
    names = [v.name for v in bds.variables]
    base = [r[names.index("BASE")] for r in bds.rows]
    bad_bds = replace_column(bds, "BASE", [None if i == 0 else b for i, b in enumerate(base)])
    found = check_datasets([bad_adsl, bad_bds, *adam[2:]])
    assert {"DTX-011", "DTX-012"} <= rules(found)
    bad_tte = replace_column(tte, "CNSR", [-1] * len(tte.rows))
    assert "DTX-013" in rules(check_datasets([adsl, bad_tte]))
    assert not rules(check_datasets(adam)) - {"DTX-001"}


def test_conformance_define_and_dataset_json_consistency() -> None:
    datasets = ascii_sdtm()
    context = DefineContext(f"STDY.{STUDY}", STUDY, "d", STUDY, CREATED)
    define = build_define(datasets, context)
    files = {f"{d.name.lower()}.xpt" for d in datasets}
    assert not rules(check_define(define, datasets, files)) - {"DTX-016"}
    dangling = define.replace(b'CodeListOID="CL.SEX"', b'CodeListOID="CL.NOPE"')
    assert "DTX-015" in rules(check_define(dangling, datasets, files))
    assert "DTX-015" in rules(check_define(define, datasets, files - {"vs.xpt"}))
    longer = replace_column(datasets[0], "COUNTRY", ["CHINA"] * len(datasets[0].rows))
    assert "DTX-015" in rules(check_define(define, [longer, *datasets[1:]], files))
    json_context = DatasetJsonContext(CREATED, f"STDY.{STUDY}", "MDV")
    content = write_dataset_json(datasets[0], json_context)
    assert not check_dataset_json(content, datasets[0], define)
    document = json.loads(content)
    document["rows"] = document["rows"][1:]
    assert "DTX-017" in rules(check_dataset_json(json.dumps(document).encode(), datasets[0],
                                                 define))
