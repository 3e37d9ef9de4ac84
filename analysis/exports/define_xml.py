"""Define-XML 2.1 for a set of SDTM or ADaM datasets (cdisc-package.md §5).

Built from the datasets themselves (the same ``XptDataset`` objects the XPT and Dataset-JSON
files are written from) and ``analysis.exports.metadata``, so the Define cannot drift from the
data: item order = column order, Length = longest value, DataType from the values, codelists
list the values that occur, value-level metadata is generated for every findings result by
--TESTCD (and QVAL by QNAM, ADaM AVAL by PARAMCD), each derived variable with a method text
gets a MethodDef, and each dataset a def:leaf to its ``.xpt`` file.

The XSD of Define-XML 2.1 (shipped in odmlib) fixes the element order written here; the tests
validate every generated file against it and check that every OID reference resolves.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from analysis.exports.metadata import (
    CODELISTS,
    CT_VERSION,
    Codelist,
    ColumnType,
    Standard,
    codelist_of,
    column_type,
    dataset_class,
    dataset_keys,
    dataset_structure,
    item_group_oid,
    item_oid,
    origin_of,
    standard_of,
)
from analysis.exports.xport import XptDataset, XptVariable

ODM_NS = "http://www.cdisc.org/ns/odm/v1.3"
DEF_NS = "http://www.cdisc.org/ns/def/v2.1"
XLINK_NS = "http://www.w3.org/1999/xlink"
XML_NS = "http://www.w3.org/XML/1998/namespace"
ET.register_namespace("", ODM_NS)
ET.register_namespace("def", DEF_NS)
ET.register_namespace("xlink", XLINK_NS)

#: Required (Req) variables by dataset; ``--`` stands for the domain prefix.
REQUIRED: dict[str, tuple[str, ...]] = {
    "DM": ("STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID", "SEX", "COUNTRY"),
    "AE": ("STUDYID", "DOMAIN", "USUBJID", "AESEQ", "AETERM", "AEDECOD"),
    "DS": ("STUDYID", "DOMAIN", "USUBJID", "DSSEQ", "DSTERM", "DSDECOD"),
    "EX": ("STUDYID", "DOMAIN", "USUBJID", "EXSEQ", "EXTRT"),
    "CM": ("STUDYID", "DOMAIN", "USUBJID", "CMSEQ", "CMTRT"),
    "SV": ("STUDYID", "DOMAIN", "USUBJID", "VISITNUM"),
    "TS": ("STUDYID", "DOMAIN", "TSSEQ", "TSPARMCD", "TSPARM"),
    "SUPP": ("STUDYID", "RDOMAIN", "USUBJID", "QNAM", "QLABEL", "QVAL", "QORIG"),
    "FINDINGS": ("STUDYID", "DOMAIN", "USUBJID", "--SEQ", "--TESTCD", "--TEST"),
    "QS": ("STUDYID", "DOMAIN", "USUBJID", "QSSEQ", "QSTESTCD", "QSTEST", "QSCAT"),
    "ADSL": ("STUDYID", "USUBJID", "SUBJID", "SITEID", "AGE", "AGEU", "SEX", "RACE", "ARM",
             "TRT01P"),
    "BDS": ("STUDYID", "USUBJID", "PARAM", "PARAMCD"),
    "ADTTE": ("STUDYID", "USUBJID", "PARAM", "PARAMCD", "AVAL", "STARTDT", "CNSR"),
    "ADAE": ("STUDYID", "USUBJID", "AESEQ", "AETERM", "AEDECOD"),
}
#: Method texts for common SDTM derived variables (a suffix after the domain prefix).
SDTM_METHODS = {
    "USUBJID": "STUDYID and the pseudonymous subject code joined by a hyphen.",
    "SEQ": "Sequence number of the record within the subject, in the dataset's sort order.",
    "DY": "Study day: date - RFSTDTC + 1 on or after RFSTDTC, else date - RFSTDTC (no day 0); "
    "null when either date is partial.",
    "STDY": "Study day of the start date relative to RFSTDTC (no day 0).",
    "ENDY": "Study day of the end date relative to RFSTDTC (no day 0).",
    "STRESC": "Original result in standard format (coded score or number as text).",
    "STRESN": "Numeric form of the standardized result.",
}


#: SDTM variable roles (SDTM v2.0 §2.1) an ItemRef may carry.
ROLES = frozenset({"Identifier", "Topic", "Timing", "Grouping Qualifier", "Result Qualifier",
                   "Synonym Qualifier", "Record Qualifier", "Variable Qualifier", "Rule"})


class DefineError(ValueError):
    """Datasets that cannot be described in one Define-XML document."""


@dataclass(frozen=True)
class DefineContext:
    """Study-level facts of one Define-XML file."""

    study_oid: str
    study_name: str
    study_description: str
    protocol_name: str
    created_at: datetime
    methods: Mapping[str, str] = field(default_factory=dict)  # "DS.VAR" or "VAR" -> text
    originator: str = "dtx-trials"
    source_system_version: str = "0.1.0"
    file_suffix: str = ".xpt"


def required_variables(dataset: XptDataset) -> tuple[str, ...]:
    """Return the dataset's Req variables (by SDTMIG 3.4 / ADaMIG 1.3 class)."""
    name = dataset.name
    if name in REQUIRED:
        return REQUIRED[name]
    if name.startswith("SUPP"):
        return REQUIRED["SUPP"]
    cls, _ = dataset_class(dataset)
    if cls == "FINDINGS":
        prefix = name[:2]
        return tuple(v.replace("--", prefix) for v in REQUIRED["FINDINGS"])
    if cls == "BASIC DATA STRUCTURE":
        return REQUIRED["BDS"]
    if cls in ("EVENTS", "INTERVENTIONS"):
        topic = "TERM" if cls == "EVENTS" else "TRT"
        return ("STUDYID", "DOMAIN", "USUBJID", f"{name[:2]}SEQ", f"{name[:2]}{topic}")
    return ("STUDYID", "USUBJID")


def method_text(dataset: XptDataset, variable: XptVariable,
                methods: Mapping[str, str]) -> str | None:
    """Return the derivation text of a derived variable, or None when none is known."""
    found = methods.get(f"{dataset.name}.{variable.name}") or methods.get(variable.name)
    if found:
        return found
    if standard_of(dataset) == "SDTM":
        if variable.name in SDTM_METHODS:
            return SDTM_METHODS[variable.name]
        suffix = variable.name[2:]
        if variable.name.startswith(dataset.name[:2]) and suffix in SDTM_METHODS:
            return SDTM_METHODS[suffix]
    return None


def predecessor(dataset: XptDataset, variable: XptVariable) -> str:
    """Return the source ``DATASET.VARIABLE`` of a Predecessor column."""
    if dataset.name == "ADSL":
        return f"DM.{variable.name}"
    if dataset.name == "ADAE":
        return f"ADSL.{variable.name}" if variable.name in ("TRTA",) else f"AE.{variable.name}"
    return f"ADSL.{variable.name}"


def value_list_spec(dataset: XptDataset) -> tuple[str, tuple[str, ...], str | None] | None:
    """Return (test-code variable, result variables, test-name variable) for value-level
    metadata of this dataset, or None."""
    names = [v.name for v in dataset.variables]
    prefix = dataset.name[:2]
    if f"{prefix}TESTCD" in names:
        results = tuple(n for n in (f"{prefix}ORRES", f"{prefix}STRESC", f"{prefix}STRESN")
                        if n in names)
        return f"{prefix}TESTCD", results, f"{prefix}TEST" if f"{prefix}TEST" in names else None
    if "QNAM" in names and "QVAL" in names:
        return "QNAM", ("QVAL",), "QLABEL" if "QLABEL" in names else None
    if "PARAMCD" in names and "AVAL" in names:
        return "PARAMCD", ("AVAL",), "PARAM" if "PARAM" in names else None
    return None


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    translated = ET.SubElement(element, f"{{{ODM_NS}}}TranslatedText",
                               {f"{{{XML_NS}}}lang": "en"})
    translated.text = text
    return element


def _o(tag: str) -> str:
    return f"{{{ODM_NS}}}{tag}"


def _d(tag: str) -> str:
    return f"{{{DEF_NS}}}{tag}"


def _item_def(parent: ET.Element, oid: str, name: str, kind: ColumnType, description: str,
              origin: str, *, predecessor_of: str | None = None,
              codelist_oid: str | None = None, value_list_oid: str | None = None) -> None:
    attrs = {"OID": oid, "Name": name, "DataType": kind.define_type, "SASFieldName": name}
    if kind.length is not None and kind.define_type in ("text", "integer", "float"):
        attrs["Length"] = str(max(kind.length, 1))
    if kind.significant_digits is not None and kind.define_type == "float":
        attrs["SignificantDigits"] = str(kind.significant_digits)
    if kind.display_format:
        attrs[_d("DisplayFormat")] = kind.display_format
    item = ET.SubElement(parent, _o("ItemDef"), attrs)
    _text(item, _o("Description"), description)
    if codelist_oid:
        ET.SubElement(item, _o("CodeListRef"), {"CodeListOID": codelist_oid})
    origin_element = ET.SubElement(item, _d("Origin"), {"Type": origin})
    if origin == "Predecessor" and predecessor_of:
        _text(origin_element, _o("Description"), predecessor_of)
    if value_list_oid:
        ET.SubElement(item, _d("ValueListRef"), {"ValueListOID": value_list_oid})


def _subset(dataset: XptDataset, index: int, value: str) -> XptDataset:
    return XptDataset(dataset.name, dataset.label, dataset.variables,
                      tuple(r for r in dataset.rows if r[index] == value))


def build_define(datasets: Sequence[XptDataset], context: DefineContext) -> bytes:
    """Return the Define-XML 2.1 document describing ``datasets`` (all SDTM or all ADaM).

    Raises DefineError for a mix of standards, duplicate dataset names or an unknown origin.
    """
    if not datasets:
        raise DefineError("a Define-XML file needs at least one dataset")
    standards = {standard_of(d) for d in datasets}
    if len(standards) != 1:
        raise DefineError("SDTM and ADaM datasets go into separate Define-XML files")
    standard: Standard = standards.pop()
    if len({d.name for d in datasets}) != len(datasets):
        raise DefineError("duplicate dataset names")
    created = context.created_at.astimezone(UTC).replace(microsecond=0, tzinfo=None)
    odm = ET.Element(_o("ODM"), {
        "ODMVersion": "1.3.2", "FileType": "Snapshot",
        "FileOID": f"DEF.{context.study_oid}.{standard}",
        "CreationDateTime": created.isoformat(), "Originator": context.originator,
        "SourceSystem": "dtx-trials", "SourceSystemVersion": context.source_system_version,
        _d("Context"): "Submission",
    })
    study = ET.SubElement(odm, _o("Study"), {"OID": context.study_oid})
    globals_ = ET.SubElement(study, _o("GlobalVariables"))
    ET.SubElement(globals_, _o("StudyName")).text = context.study_name
    ET.SubElement(globals_, _o("StudyDescription")).text = context.study_description
    ET.SubElement(globals_, _o("ProtocolName")).text = context.protocol_name
    mdv = ET.SubElement(study, _o("MetaDataVersion"), {
        "OID": f"MDV.{context.study_oid}.{standard}",
        "Name": f"{context.study_name} {standard} metadata",
        "Description": f"{standard} datasets of {context.study_name}",
        _d("DefineVersion"): "2.1.0",
    })
    standards_element = ET.SubElement(mdv, _d("Standards"))
    ig_oid = "STD.SDTMIG.3.4" if standard == "SDTM" else "STD.ADAMIG.1.3"
    ET.SubElement(standards_element, _d("Standard"), {
        "OID": ig_oid, "Name": "SDTMIG" if standard == "SDTM" else "ADaMIG",
        "Type": "IG", "Version": "3.4" if standard == "SDTM" else "1.3", "Status": "Final"})
    if standard == "ADaM" and any(d.name == "ADAE" for d in datasets):
        ET.SubElement(standards_element, _d("Standard"), {
            "OID": "STD.ADAM-OCCDSIG.1.1", "Name": "ADaM-OCCDSIG", "Type": "IG",
            "Version": "1.1", "Status": "Final"})
    ct_oids = {"SDTM": f"STD.CT.SDTM.{CT_VERSION}", "ADaM": f"STD.CT.ADAM.{CT_VERSION}"}
    ET.SubElement(standards_element, _d("Standard"), {
        "OID": ct_oids["SDTM"], "Name": "CDISC/NCI", "Type": "CT", "PublishingSet": "SDTM",
        "Version": CT_VERSION, "Status": "Final"})
    if standard == "ADaM":
        ET.SubElement(standards_element, _d("Standard"), {
            "OID": ct_oids["ADaM"], "Name": "CDISC/NCI", "Type": "CT", "PublishingSet": "ADaM",
            "Version": CT_VERSION, "Status": "Final"})

    kinds = {d.name: [column_type(d, i) for i in range(len(d.variables))] for d in datasets}
    # value-level metadata
    value_lists: dict[tuple[str, str], str] = {}
    vlm_items: list[tuple[str, str, ColumnType, str, str]] = []  # oid, name, kind, desc, origin
    where_clauses: list[tuple[str, str, str]] = []  # oid, item oid of the test code, value
    for dataset in datasets:
        spec = value_list_spec(dataset)
        if spec is None or not dataset.rows:
            continue
        code_var, results, name_var = spec
        names = [v.name for v in dataset.variables]
        code_index = names.index(code_var)
        codes = sorted({str(r[code_index]) for r in dataset.rows if r[code_index] is not None})
        if not codes:
            continue
        descriptions: dict[str, str] = {}
        if name_var:
            name_index = names.index(name_var)
            for row in dataset.rows:
                if row[code_index] is not None and row[name_index] is not None:
                    descriptions.setdefault(str(row[code_index]), str(row[name_index]))
        for code in codes:
            where_clauses.append((f"WC.{dataset.name}.{code_var}.{code}",
                                  item_oid(dataset, dataset.variables[code_index]), code))
        for result in results:
            index = names.index(result)
            variable = dataset.variables[index]
            list_oid = f"VL.{dataset.name}.{result}"
            value_lists[(dataset.name, result)] = list_oid
            refs = ET.SubElement(mdv, _d("ValueListDef"), {"OID": list_oid})
            for order, code in enumerate(codes, start=1):
                oid = f"IT.{dataset.name}.{result}.{code}"
                ref = ET.SubElement(refs, _o("ItemRef"), {
                    "ItemOID": oid, "OrderNumber": str(order), "Mandatory": "No"})
                ET.SubElement(ref, _d("WhereClauseRef"), {
                    "WhereClauseOID": f"WC.{dataset.name}.{code_var}.{code}"})
                kind = column_type(_subset(dataset, code_index, code), index)
                vlm_items.append((oid, result, kind,
                                  f"{variable.label}: {descriptions.get(code, code)}",
                                  origin_of(dataset, variable)))
    for oid, item, code in where_clauses:
        clause = ET.SubElement(mdv, _d("WhereClauseDef"), {"OID": oid})
        check = ET.SubElement(clause, _o("RangeCheck"), {
            "Comparator": "EQ", "SoftHard": "Soft", _d("ItemOID"): item})
        ET.SubElement(check, _o("CheckValue")).text = code

    # codelists: CDISC ones by the variables that use them, sponsor ones for test/param codes
    used: dict[str, set[str]] = {}
    codelist_refs: dict[tuple[str, str], str] = {}
    sponsor_lists: list[tuple[str, str, dict[str, str]]] = []  # oid, name, code -> decode
    for dataset in datasets:
        names = [v.name for v in dataset.variables]
        for index, variable in enumerate(dataset.variables):
            codelist = codelist_of(dataset, variable)
            if codelist is None or variable.type != "char":
                continue
            key = next(k for k, c in CODELISTS.items() if c is codelist)
            used.setdefault(key, set()).update(
                str(r[index]) for r in dataset.rows if r[index] is not None)
            codelist_refs[(dataset.name, variable.name)] = f"CL.{key}"
        spec = value_list_spec(dataset)
        if spec and spec[2]:
            code_var, _, name_var = spec
            code_index, name_index = names.index(code_var), names.index(name_var)  # type: ignore[arg-type]
            decodes = {str(r[code_index]): str(r[name_index]) for r in dataset.rows
                       if r[code_index] is not None and r[name_index] is not None}
            if decodes and code_var != "QNAM":
                oid = f"CL.{dataset.name}.{code_var}"
                sponsor_lists.append((oid, f"{dataset.name} {code_var}", decodes))
                codelist_refs[(dataset.name, code_var)] = oid

    empty = {key for key, values in used.items() if not values}
    codelist_refs = {k: v for k, v in codelist_refs.items() if v[3:] not in empty}
    used = {key: values for key, values in used.items() if values}

    # datasets
    for dataset in datasets:
        cls, sub = dataset_class(dataset)
        keys = dataset_keys(dataset)
        required = set(required_variables(dataset))
        group_attrs = {
            "OID": item_group_oid(dataset), "Name": dataset.name, "SASDatasetName": dataset.name,
            "Repeating": "No" if dataset.name in ("DM", "ADSL") else "Yes",
            "IsReferenceData": "Yes" if dataset.name in ("TS", "TA", "TE", "TV", "TI") else "No",
            "Purpose": "Tabulation" if standard == "SDTM" else "Analysis",
            _d("Structure"): dataset_structure(dataset),
            _d("StandardOID"): ig_oid if dataset.name != "ADAE" else "STD.ADAM-OCCDSIG.1.1",
            _d("ArchiveLocationID"): f"LF.{dataset.name}",
        }
        if standard == "SDTM" and not dataset.name.startswith("SUPP"):
            group_attrs["Domain"] = dataset.name[:2]
        elif dataset.name.startswith("SUPP"):
            group_attrs["Domain"] = dataset.name
        if not dataset.rows:
            group_attrs[_d("HasNoData")] = "Yes"
        group = ET.SubElement(mdv, _o("ItemGroupDef"), group_attrs)
        _text(group, _o("Description"), dataset.label)
        for order, variable in enumerate(dataset.variables, start=1):
            attrs = {"ItemOID": item_oid(dataset, variable), "OrderNumber": str(order),
                     "Mandatory": "Yes" if variable.name in required else "No"}
            if variable.name in keys:
                attrs["KeySequence"] = str(keys.index(variable.name) + 1)
            if variable.origin == "Derived" and method_text(dataset, variable, context.methods):
                attrs["MethodOID"] = f"MT.{dataset.name}.{variable.name}"
            role = getattr(variable, "role", None)  # optional SDTM variable role from the map
            if standard == "SDTM" and isinstance(role, str) and role in ROLES:
                attrs["Role"] = role
            ET.SubElement(group, _o("ItemRef"), attrs)
        class_element = ET.SubElement(group, _d("Class"), {"Name": cls})
        if sub:
            ET.SubElement(class_element, _d("SubClass"), {"Name": sub})
        leaf = ET.SubElement(group, _d("leaf"), {
            "ID": f"LF.{dataset.name}",
            f"{{{XLINK_NS}}}href": f"{dataset.name.lower()}{context.file_suffix}"})
        ET.SubElement(leaf, _d("title")).text = f"{dataset.name.lower()}{context.file_suffix}"
    for dataset in datasets:
        for variable, kind in zip(dataset.variables, kinds[dataset.name], strict=True):
            origin = origin_of(dataset, variable)
            _item_def(mdv, item_oid(dataset, variable), variable.name, kind, variable.label,
                      origin,
                      predecessor_of=predecessor(dataset, variable)
                      if origin == "Predecessor" else None,
                      codelist_oid=codelist_refs.get((dataset.name, variable.name)),
                      value_list_oid=value_lists.get((dataset.name, variable.name)))
    for oid, name, kind, description, origin in vlm_items:
        _item_def(mdv, oid, name, kind, description, origin)
    for key in sorted(used):
        _codelist(mdv, key, CODELISTS[key], used[key], ct_oids)
    for oid, name, decodes in sponsor_lists:
        codelist_element = ET.SubElement(mdv, _o("CodeList"), {
            "OID": oid, "Name": name, "DataType": "text"})
        for code in sorted(decodes):
            term = ET.SubElement(codelist_element, _o("CodeListItem"), {"CodedValue": code})
            _text(term, _o("Decode"), decodes[code])
    for dataset in datasets:
        for variable in dataset.variables:
            text = method_text(dataset, variable, context.methods)
            if variable.origin == "Derived" and text:
                method = ET.SubElement(mdv, _o("MethodDef"), {
                    "OID": f"MT.{dataset.name}.{variable.name}",
                    "Name": f"Algorithm to derive {dataset.name}.{variable.name}",
                    "Type": "Computation"})
                _text(method, _o("Description"), text)
    ET.indent(odm, space="  ")
    body = ET.tostring(odm, encoding="unicode", xml_declaration=False)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8")


def _codelist(parent: ET.Element, key: str, codelist: Codelist, values: set[str],
              ct_oids: Mapping[str, str]) -> None:
    publishing = "ADaM" if key == "DTYPE" else "SDTM"
    element = ET.SubElement(parent, _o("CodeList"), {
        "OID": f"CL.{key}", "Name": codelist.name, "DataType": "text",
        _d("StandardOID"): ct_oids[publishing]})
    for value in sorted(values):
        attrs = {"CodedValue": value}
        if not codelist.has(value) and codelist.extensible:
            attrs[_d("ExtendedValue")] = "Yes"
        item = ET.SubElement(element, _o("EnumeratedItem"), attrs)
        code = codelist.term_code(value)
        if code:
            ET.SubElement(item, _o("Alias"), {"Context": "nci:ExtCodeID", "Name": code})
    ET.SubElement(element, _o("Alias"), {"Context": "nci:ExtCodeID", "Name": codelist.code})
