"""Define-XML 2.1 (cdisc-package.md §5; §9 finding 27): SDTM and ADaM defines validate against
the official Define-XML 2.1 XSD (shipped in the odmlib dev dependency, read offline), every OID
reference resolves (odmlib's OID checker), and the metadata equals the datasets."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import odmlib.define_loader as define_loader
import odmlib.loader as odm_loader
import pytest
import xmlschema
from cdisc_samples import STUDY, adam_unblinded, sdtm, trial_data
from odmlib import schema_manager
from odmlib.oid_generator import create_oid_checker

from analysis.adam import adam_methods, build_adam
from analysis.exports.define_xml import DefineContext, DefineError, build_define
from analysis.exports.xport import XptDataset, XptVariable

NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3", "def": "http://www.cdisc.org/ns/def/v2.1",
      "xlink": "http://www.w3.org/1999/xlink"}
SCHEMA = xmlschema.XMLSchema(schema_manager.get_schema_path("define", "2.1"))
CREATED = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def context(methods: dict[str, str] | None = None) -> DefineContext:
    return DefineContext(f"STDY.{STUDY}", STUDY, "Coaching app in type 2 diabetes", STUDY,
                         CREATED, methods or {})


def written(tmp_path: Path, datasets: list[XptDataset], methods: dict[str, str] | None = None,
            name: str = "define.xml") -> Path:
    target = tmp_path / name
    target.write_bytes(build_define(datasets, context(methods)))
    return target


def assert_valid(path: Path) -> ET.Element:
    errors = [f"{e.path}: {e.reason}" for e in SCHEMA.iter_errors(str(path))]
    assert not errors, errors[:5]
    loader = odm_loader.ODMLoader(define_loader.XMLDefineLoader(
        model_package="define_2_1", ns_uri=NS["def"]))
    loader.open_odm_document(str(path))
    assert loader.load_odm().verify_oids(create_oid_checker("define_2_1"))
    return ET.parse(path).getroot()  # noqa: S314 - a file this test just generated


def test_define_01_sdtm_define_is_xsd_valid_and_every_oid_resolves(tmp_path: Path) -> None:
    root = assert_valid(written(tmp_path, sdtm()))
    groups = root.findall(".//odm:ItemGroupDef", NS)
    assert [g.get("Name") for g in groups] == ["DM", "AE", "VS", "SUPPAE"]
    assert {g.get("Purpose") for g in groups} == {"Tabulation"}
    classes = [g.find("def:Class", NS).get("Name") for g in groups]  # type: ignore[union-attr]
    assert classes == ["SPECIAL PURPOSE", "EVENTS", "FINDINGS", "RELATIONSHIP"]


def test_define_02_adam_define_is_xsd_valid_with_classes_and_methods(tmp_path: Path) -> None:
    datasets = list(adam_unblinded())
    root = assert_valid(written(tmp_path, datasets, adam_methods(trial_data())))
    groups = {g.get("Name"): g for g in root.findall(".//odm:ItemGroupDef", NS)}
    assert list(groups) == [d.name for d in datasets]
    assert {g.get("Purpose") for g in groups.values()} == {"Analysis"}
    tte = groups["ADTTE"].find("def:Class", NS)
    assert tte is not None and tte.get("Name") == "BASIC DATA STRUCTURE"
    assert tte.find("def:SubClass", NS).get("Name") == "TIME-TO-EVENT"  # type: ignore[union-attr]
    adae = groups["ADAE"].find("def:Class", NS)
    assert adae is not None and adae.get("Name") == "OCCURRENCE DATA STRUCTURE"
    methods = {m.get("OID") for m in root.findall(".//odm:MethodDef", NS)}
    for dataset in datasets:  # every derived ADaM variable has its algorithm
        for variable in dataset.variables:
            if variable.origin == "Derived":
                assert f"MT.{dataset.name}.{variable.name}" in methods, (dataset.name,
                                                                          variable.name)
    ittfl = root.find(".//odm:MethodDef[@OID='MT.ADSL.ITTFL']/odm:Description/"
                      "odm:TranslatedText", NS)
    assert ittfl is not None and "randomized" in (ittfl.text or "")


def test_define_03_items_equal_the_dataset_columns(tmp_path: Path) -> None:
    """ItemRef order and names = column order, Length = longest value, leaf = the xpt file,
    predecessors named for ADaM copies."""
    datasets = [*sdtm(), *adam_unblinded()]
    for standard, group in (("sdtm", sdtm()), ("adam", list(adam_unblinded()))):
        root = assert_valid(written(tmp_path, group, adam_methods(trial_data()),
                                    f"{standard}.xml"))
        items = {i.get("OID"): i for i in root.findall(".//odm:ItemDef", NS)}
        for dataset in group:
            ig = root.find(f".//odm:ItemGroupDef[@OID='IG.{dataset.name}']", NS)
            assert ig is not None
            refs = ig.findall("odm:ItemRef", NS)
            assert [r.get("ItemOID") for r in refs] == [
                f"IT.{dataset.name}.{v.name}" for v in dataset.variables]
            leaf = ig.find("def:leaf", NS)
            assert leaf is not None
            assert leaf.get(f"{{{NS['xlink']}}}href") == f"{dataset.name.lower()}.xpt"
            assert ig.get(f"{{{NS['def']}}}ArchiveLocationID") == leaf.get("ID")
            for index, variable in enumerate(dataset.variables):
                item = items[f"IT.{dataset.name}.{variable.name}"]
                assert item.get("Name") == variable.name
                if variable.type == "char" and item.get("DataType") == "text":
                    assert item.get("Length") == str(dataset.char_length(index))
                origin = item.find("def:Origin", NS)
                assert origin is not None and origin.get("Type") == variable.origin
    assert datasets


def test_define_04_value_level_metadata_for_findings_and_parameters(tmp_path: Path) -> None:
    root = assert_valid(written(tmp_path, sdtm()))
    value_list = root.find(".//def:ValueListDef[@OID='VL.VS.VSORRES']", NS)
    assert value_list is not None
    refs = value_list.findall("odm:ItemRef", NS)
    assert [r.get("ItemOID") for r in refs] == ["IT.VS.VSORRES.SYSBP", "IT.VS.VSORRES.WEIGHT"]
    clause = root.find(".//def:WhereClauseDef[@OID='WC.VS.VSTESTCD.WEIGHT']/odm:RangeCheck", NS)
    assert clause is not None and clause.get(f"{{{NS['def']}}}ItemOID") == "IT.VS.VSTESTCD"
    assert clause.find("odm:CheckValue", NS).text == "WEIGHT"  # type: ignore[union-attr]
    weight = root.find(".//odm:ItemDef[@OID='IT.VS.VSSTRESN.WEIGHT']", NS)
    assert weight is not None and weight.get("DataType") == "float"
    assert weight.get("SignificantDigits") == "1"
    qval = root.find(".//def:ValueListDef[@OID='VL.SUPPAE.QVAL']", NS)
    assert qval is not None
    adam = assert_valid(written(tmp_path, list(adam_unblinded()), adam_methods(trial_data()),
                                "adam.xml"))
    aval = adam.find(".//def:ValueListDef[@OID='VL.ADHBA1CC.AVAL']", NS)
    assert aval is not None and [r.get("ItemOID") for r in aval.findall("odm:ItemRef", NS)] == [
        "IT.ADHBA1CC.AVAL.HBA1CPCT"]
    param = adam.find(".//odm:CodeList[@OID='CL.ADHBA1CC.PARAMCD']/odm:CodeListItem", NS)
    assert param is not None and param.get("CodedValue") == "HBA1CPCT"


def test_define_05_codelists_list_the_values_in_the_data_with_nci_codes(tmp_path: Path) -> None:
    root = assert_valid(written(tmp_path, sdtm()))
    sex = root.find(".//odm:CodeList[@OID='CL.SEX']", NS)
    assert sex is not None
    assert [i.get("CodedValue") for i in sex.findall("odm:EnumeratedItem", NS)] == ["F", "M"]
    assert sex.find("odm:Alias", NS).get("Name") == "C66731"  # type: ignore[union-attr]
    severity = root.find(".//odm:CodeList[@OID='CL.AESEV']", NS)
    assert severity is not None
    assert [i.get("CodedValue") for i in severity.findall("odm:EnumeratedItem", NS)] == [
        "MODERATE", "SEVERE"]
    ref = root.find(".//odm:ItemDef[@OID='IT.AE.AESEV']/odm:CodeListRef", NS)
    assert ref is not None and ref.get("CodeListOID") == "CL.AESEV"
    standards = root.findall(".//def:Standard", NS)
    assert {(s.get("Name"), s.get("Type")) for s in standards} == {("SDTMIG", "IG"),
                                                                  ("CDISC/NCI", "CT")}


def test_define_06_schema_rejects_a_broken_define(tmp_path: Path) -> None:
    """The XSD is the real one: a bogus def:Class or a missing def:Structure is refused."""
    text = build_define(sdtm(), context()).decode()
    for broken in (text.replace('Name="SPECIAL PURPOSE"', 'Name="SPECIAL-PURPOSE"'),
                   text.replace('def:Structure="One record per subject"', "")):
        path = tmp_path / "broken.xml"
        path.write_text(broken, encoding="utf-8")
        assert list(SCHEMA.iter_errors(str(path)))


def test_define_07_refuses_mixed_standards_and_unknown_origins() -> None:
    with pytest.raises(DefineError, match="separate"):
        build_define([*sdtm(), adam_unblinded()[0]], context())
    dm = sdtm()[0]
    bad = XptDataset(dm.name, dm.label, (dm.variables[0].__class__(
        "STUDYID", "Study Identifier", "char", "CRF"),), (("X",),))
    with pytest.raises(ValueError, match="origin"):
        build_define([bad], context())


def test_define_08_blinded_adam_define_has_no_treatment_items(tmp_path: Path) -> None:
    datasets = build_adam(trial_data(), blinded=True, sdtm=sdtm(), studyid=STUDY)
    root = assert_valid(written(tmp_path, datasets, adam_methods(trial_data())))
    names = {i.get("Name") for i in root.findall(".//odm:ItemDef", NS)}
    assert not names & {"ARM", "TRT01P", "TRT01A", "TRTP", "TRTA", "TRT01PN"}


def test_define_09_optional_sdtm_role_metadata_reaches_the_item_refs(tmp_path: Path) -> None:
    """A mapping may attach a role to a variable (an optional attribute on the shared
    dataset interface); the Define carries it, still XSD-valid."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class RoledVariable(XptVariable):
        role: str | None = None

    dm = sdtm()[0]
    roles = {"STUDYID": "Identifier", "SEX": "Record Qualifier"}
    roled = dataclasses.replace(dm, variables=tuple(
        RoledVariable(v.name, v.label, v.type, v.origin, role=roles.get(v.name))
        for v in dm.variables))
    root = assert_valid(written(tmp_path, [roled]))
    refs = {r.get("ItemOID"): r.get("Role") for r in root.findall(".//odm:ItemRef", NS)}
    assert refs["IT.DM.STUDYID"] == "Identifier" and refs["IT.DM.SEX"] == "Record Qualifier"
    assert refs["IT.DM.AGE"] is None


def test_define_05_the_protocol_validator_accepts_every_term_define_lists() -> None:
    """One controlled terminology: each term define.xml may list for a codelist is one the
    protocol loader accepts in a mapping (before: SEX's C45908 was UNDIFFERENTIATED for the
    loader and INTERSEX, its submission value since CT 2022, for define.xml)."""
    from analysis.exports.metadata import CODELISTS as DEFINED
    from protocols.cdisc import CODELISTS as VALIDATED

    shared = [c for c in DEFINED.values() if c.code in VALIDATED]
    assert {c.code for c in shared} >= {"C66731", "C66742", "C66769", "C66768", "C66781"}
    for codelist in shared:
        terms = {term for term, _ in codelist.terms}
        assert terms <= set(VALIDATED[codelist.code].values), codelist.code
