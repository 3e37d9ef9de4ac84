"""CDISC ODM 1.3.2 checks (ODM-01..05) against the official XSD shipped in the odmlib wheel."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
import xmlschema
from export_samples import make_export_data
from odmlib import schema_manager

from analysis.exports import ExportError, build_odm

NS = {"odm": "http://www.cdisc.org/ns/odm/v1.3"}
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(schema_manager.get_schema_path("odm", "1.3.2"))


@pytest.fixture(scope="module")
def transactional() -> bytes:
    return build_odm(make_export_data())


@pytest.fixture(scope="module")
def root(transactional: bytes) -> ET.Element:
    return ET.fromstring(transactional)  # noqa: S314 (our own output, not untrusted input)


def test_odm_01_transactional_file_is_xsd_valid(schema: xmlschema.XMLSchema,
                                                transactional: bytes) -> None:
    errors = list(schema.iter_errors(transactional.decode("utf-8")))
    assert errors == [], [f"{e.path}: {e.reason}" for e in errors[:3]]


def test_odm_01_snapshot_file_is_xsd_valid(schema: xmlschema.XMLSchema) -> None:
    snapshot = build_odm(make_export_data(), file_type="Snapshot")
    assert schema.is_valid(snapshot.decode("utf-8"))
    assert b"AuditRecord" not in snapshot


def test_odm_01_schema_rejects_a_broken_file(schema: xmlschema.XMLSchema,
                                             transactional: bytes) -> None:
    broken = transactional.replace(b'FileType="Transactional"', b'FileType="Bogus"')
    assert not schema.is_valid(broken.decode("utf-8"))


def test_odm_02_every_oid_reference_resolves(root: ET.Element) -> None:
    defined: set[str] = set()
    for element in root.iter():
        if "OID" in element.attrib:
            defined.add(element.attrib["OID"])
    references = [
        value for element in root.iter() for name, value in element.attrib.items()
        if name.endswith("OID") and name not in ("OID", "StudyOID", "FileOID")
    ]
    assert references
    assert set(references) <= defined
    study_oids = {e.attrib["StudyOID"] for e in root.iter() if "StudyOID" in e.attrib}
    assert study_oids == {root.find("odm:Study", NS).attrib["OID"]}  # type: ignore[union-attr]


def test_odm_03_values_match_data_type_and_code_list(root: ET.Element) -> None:
    items = {i.attrib["OID"]: i for i in root.iterfind(".//odm:ItemDef", NS)}
    codelists = {
        c.attrib["OID"]: {i.attrib["CodedValue"] for i in c.iterfind("odm:CodeListItem", NS)}
        for c in root.iterfind(".//odm:CodeList", NS)
    }
    checked = 0
    for data in root.iterfind(".//odm:ItemData", NS):
        item = items[data.attrib["ItemOID"]]
        if data.attrib.get("IsNull") == "Yes":
            assert "Value" not in data.attrib
            continue
        value = data.attrib["Value"]
        kind = item.attrib["DataType"]
        if kind == "integer":
            int(value)
        elif kind == "float":
            float(value)
        elif kind == "boolean":
            assert value in ("0", "1")
        reference = item.find("odm:CodeListRef", NS)
        if reference is not None:
            assert value in codelists[reference.attrib["CodeListOID"]]
        checked += 1
    assert checked > 20


def test_odm_03_code_lists_are_bilingual(root: ET.Element) -> None:
    decode = root.find(".//odm:CodeList[@OID='CL.contact.preferred_language']/odm:CodeListItem"
                       "/odm:Decode", NS)
    assert decode is not None
    texts = {t.attrib[XML_LANG]: t.text for t in decode.iterfind("odm:TranslatedText", NS)}
    assert texts == {"en": "Chinese", "zh": "中文"}


def test_odm_04_subject_key_is_the_pseudonymous_code(root: ET.Element) -> None:
    keys = [s.attrib["SubjectKey"] for s in root.iterfind(".//odm:SubjectData", NS)]
    assert keys == ["S001", "S002", "S003"]


def test_odm_05_one_audit_record_per_change(root: ET.Element) -> None:
    subject = root.find(".//odm:SubjectData[@SubjectKey='S001']", NS)
    assert subject is not None
    sbp = [d for d in subject.iterfind(".//odm:ItemData[@ItemOID='I.vitals.sbp']", NS)
           if d.find("odm:AuditRecord", NS) is not None]
    assert [(d.attrib["TransactionType"], d.attrib["Value"]) for d in sbp] == [
        ("Insert", "118"), ("Update", "120")]
    audit = sbp[1].find("odm:AuditRecord", NS)
    assert audit is not None
    assert audit.find("odm:UserRef", NS).attrib["UserOID"] == "U.u-inv1"  # type: ignore[union-attr]
    assert audit.findtext("odm:DateTimeStamp", namespaces=NS) == "2026-01-06T09:00:00Z"
    assert audit.findtext("odm:ReasonForChange", namespaces=NS) == "Transcription error"


def test_odm_05_one_signature_per_signing(root: ET.Element) -> None:
    signatures = root.findall(".//odm:SubjectData[@SubjectKey='S001']//odm:Signature", NS)
    meanings = [s.find("odm:SignatureRef", NS).attrib["SignatureOID"]  # type: ignore[union-attr]
                for s in signatures]
    assert meanings == ["SD.authorship", "SD.approval"]
    definitions = {d.attrib["OID"]: d.findtext("odm:Meaning", namespaces=NS)
                   for d in root.iterfind(".//odm:SignatureDef", NS)}
    assert definitions == {"SD.approval": "approval", "SD.authorship": "authorship"}
    names = {u.findtext("odm:FullName", namespaces=NS) for u in root.iterfind(".//odm:User", NS)}
    assert names == {"Dr Li Na", "Prof Wang Min"}  # SIG-01: printed name of the signer


def test_odm_missing_code_is_null_with_annotation(root: ET.Element) -> None:
    event = root.find(".//odm:SubjectData[@SubjectKey='S002']/odm:StudyEventData"
                      "[@StudyEventOID='SE.week12']", NS)
    assert event is not None
    sbp = event.find(".//odm:ItemData[@ItemOID='I.vitals.sbp']", NS)
    assert sbp is not None and sbp.attrib["IsNull"] == "Yes"
    assert sbp.findtext("odm:Annotation/odm:Comment", namespaces=NS) == "missing: not_done"


def test_odm_multiple_choice_is_one_boolean_item_per_choice(root: ET.Element) -> None:
    values = {
        d.attrib["ItemOID"]: d.attrib["Value"]
        for d in root.iterfind(".//odm:SubjectData[@SubjectKey='S002']//odm:ItemData", NS)
        if d.attrib["ItemOID"].startswith("I.adas_cog.symptoms")
    }
    assert values == {"I.adas_cog.symptoms.fatigue": "1", "I.adas_cog.symptoms.headache": "1",
                      "I.adas_cog.symptoms.none": "0"}


def test_odm_identifier_audit_entries_are_dropped(transactional: bytes) -> None:
    assert b"I.contact.phone" not in transactional
    assert b"13812345678" not in transactional


def test_odm_naive_time_stamp_is_refused() -> None:
    data = make_export_data()
    naive = replace(data.audit[0], changed_at=data.audit[0].changed_at.replace(tzinfo=None))
    with pytest.raises(ExportError, match="no time zone"):
        build_odm(replace(data, audit=(naive,)))
