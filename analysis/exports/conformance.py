"""Conformance checks of a CDISC package: a documented subset of CDISC CORE-style rules, our own.

Why not CDISC CORE itself: the ``cdisc-rules-engine`` wheel on PyPI (0.17.1; 0.9.2 on Python
3.11) ships no rules cache and no CLI; its rules, CT and library metadata live only in the
GitHub repository's ``resources/cache`` (or need a CDISC Library API key), which this platform
cannot download at build or run time (cdisc-package.md §8). CORE also has no ADaM rules. So the
checks below run offline on every package; each names the CORE rule it mirrors where one exists.

| rule | checks | CORE / source |
|---|---|---|
| DTX-001 | required (Req) variable present | SDTMIG/ADaMIG core designations |
| DTX-002 | required variable never null | SDTMIG §4.1.5 |
| DTX-003 | one record per subject in DM / ADSL | CORE-000351 |
| DTX-004 | every USUBJID is in DM (SDTM) or ADSL (ADaM) | CORE-000201 |
| DTX-005 | --SEQ unique per subject | CORE-000544 |
| DTX-006 | --DTC values are ISO 8601 | SDTMIG §4.4 |
| DTX-007 | --DY equals the day from --DTC and DM.RFSTDTC, never 0 | CORE-000529 |
| DTX-008 | values of a non-extensible codelist are terms of it | CT conformance |
| DTX-009 | DOMAIN = dataset name; SUPP RDOMAIN = dataset suffix | CORE-000538 |
| DTX-010 | --TESTCD/--TEST and PARAMCD/PARAM are 1:1 | CORE-000303 |
| DTX-011 | ADSL population flags are Y or N | ADaMIG §3 |
| DTX-012 | BDS: one ABLFL per subject and parameter; BASE, CHG consistent | ADaMIG §3.3 |
| DTX-013 | ADTTE CNSR is a non-negative integer | ADaMIG ADTTE |
| DTX-014 | XPT v5 limits: names, labels, 200-byte ASCII values | XPT-02..06, CORE-000019 |
| DTX-015 | Define ↔ data: groups, item order, lengths, OID references, leaves | Define-XML 2.1 |
| DTX-016 | derived variables have a MethodDef | Define-XML 2.1 |
| DTX-017 | Dataset-JSON: row shape, record count, OIDs as in the Define | Dataset-JSON v1.1 |
| DTX-018 | expected (Exp) variables present (warning) | SDTMIG §4.1.5, cdisc-package.md §2.7 |
"""

from __future__ import annotations

import datetime
import json
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from analysis.exports.define_xml import DEF_NS, ODM_NS, XLINK_NS, required_variables
from analysis.exports.metadata import (
    ISO_8601,
    codelist_of,
    column_type,
    item_group_oid,
    item_oid,
    standard_of,
)
from analysis.exports.xport import XptDataset, XptError, validate_dataset

RULES = {
    "DTX-001": "required variable present",
    "DTX-002": "required variable never null",
    "DTX-003": "one record per subject in DM/ADSL",
    "DTX-004": "subject present in DM/ADSL",
    "DTX-005": "--SEQ unique per subject",
    "DTX-006": "--DTC is ISO 8601",
    "DTX-007": "--DY consistent with --DTC and RFSTDTC",
    "DTX-008": "value in its non-extensible codelist",
    "DTX-009": "DOMAIN/RDOMAIN matches the dataset",
    "DTX-010": "test/parameter code and name 1:1",
    "DTX-011": "ADSL population flags Y/N",
    "DTX-012": "BDS baseline and change consistent",
    "DTX-013": "ADTTE CNSR non-negative integer",
    "DTX-014": "XPT v5 limits",
    "DTX-015": "Define-XML consistent with the data",
    "DTX-016": "derived variable has a method",
    "DTX-017": "Dataset-JSON consistent with the Define",
    "DTX-018": "expected variable present",
}
#: Expected (Exp) variables of the SDTMIG 3.4 domains the platform writes (§2.7 of the
#: reference): present even when never collected (then null, with a Define comment).
EXPECTED: dict[str, tuple[str, ...]] = {
    "DM": ("RFSTDTC", "RFENDTC", "RFXSTDTC", "RFXENDTC", "RFICDTC", "RFPENDTC", "DTHDTC",
           "DTHFL", "AGE", "AGEU", "RACE", "ARMCD", "ARM", "ACTARMCD", "ACTARM", "ARMNRS",
           "ACTARMUD"),
    "AE": ("AESER", "AEACN", "AEREL", "AESTDTC", "AEENDTC", "AEBODSYS"),
    "DS": ("DSCAT", "DSSTDTC"),
    "EX": ("EXDOSE", "EXDOSU", "EXDOSFRM", "EXSTDTC", "EXENDTC"),
    "SV": ("SVSTDTC", "SVENDTC"),
    "TS": ("TSVAL", "TSVALCD", "TSVCDREF", "TSVCDVER"),
    "QS": ("QSORRES", "QSSTRESC", "QSLOBXFL", "VISITNUM", "QSDTC"),
    "VS": ("VSORRES", "VSORRESU", "VSSTRESC", "VSSTRESN", "VSSTRESU", "VSLOBXFL", "VISITNUM",
           "VSDTC"),
    "LB": ("LBORRES", "LBORRESU", "LBSTRESC", "LBSTRESN", "LBSTRESU", "LBLOBXFL", "VISITNUM",
           "LBDTC"),
    "OE": ("OEORRES", "OEORRESU", "OESTRESC", "OESTRESN", "OESTRESU", "OELOC", "OELAT",
           "OEMETHOD", "OELOBXFL", "VISITNUM", "OEDTC", "OEDY"),
}
FULL_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})")
POPULATION_FLAGS = ("RANDFL", "ITTFL", "FASFL", "SAFFL", "PPROTFL")
TREATMENT = frozenset({"ARM", "TRT01P"})


@dataclass(frozen=True)
class Finding:
    """One conformance finding: rule id, where, and what (with up to a few examples)."""

    rule: str
    severity: Literal["error", "warning"]
    dataset: str
    variable: str | None
    message: str
    count: int = 1


def _finding(rule: str, dataset: str, variable: str | None, message: str, count: int = 1,
             severity: Literal["error", "warning"] = "error") -> Finding:
    return Finding(rule, severity, dataset, variable, message, count)


def _columns(dataset: XptDataset) -> dict[str, list[object]]:
    names = [v.name for v in dataset.variables]
    return {n: [row[i] for row in dataset.rows] for i, n in enumerate(names)}


def _subject_checks(datasets: Sequence[XptDataset]) -> list[Finding]:
    findings: list[Finding] = []
    for anchor, standard in (("DM", "SDTM"), ("ADSL", "ADaM")):
        group = [d for d in datasets if standard_of(d) == standard]
        if not group:
            continue
        found = next((d for d in group if d.name == anchor), None)
        if found is None:
            findings.append(_finding("DTX-004", anchor, None, f"{anchor} is missing"))
            continue
        subjects = _columns(found).get("USUBJID", [])
        repeated = [s for s, n in Counter(subjects).items() if n > 1]
        if repeated:
            findings.append(_finding("DTX-003", anchor, "USUBJID",
                                     f"{len(repeated)} subject(s) with several records, e.g. "
                                     f"{repeated[0]}", len(repeated)))
        known = set(subjects)
        for dataset in group:
            if dataset.name == anchor or "USUBJID" not in _columns(dataset):
                continue
            unknown = {s for s in _columns(dataset)["USUBJID"] if s not in known}
            if unknown:
                findings.append(_finding("DTX-004", dataset.name, "USUBJID",
                                         f"{len(unknown)} subject(s) not in {anchor}, e.g. "
                                         f"{sorted(map(str, unknown))[0]}", len(unknown)))
    return findings


def _study_days(dataset: XptDataset, rfstdtc: Mapping[object, object]) -> list[Finding]:
    columns = _columns(dataset)
    findings = []
    for name in columns:
        if not name.endswith("DY") or len(name) < 4:
            continue
        stem = name[:-2]
        source = next((c for c in (f"{stem}DTC", f"{stem[:-2]}STDTC" if stem.endswith("ST")
                                   else "", f"{stem[:-2]}ENDTC" if stem.endswith("EN") else "")
                       if c and c in columns), None)
        if source is None:
            continue
        wrong = 0
        for subject, dtc, day in zip(columns["USUBJID"], columns[source], columns[name],
                                     strict=True):
            ref = rfstdtc.get(subject)
            expected = None
            if isinstance(dtc, str) and isinstance(ref, str):
                a, b = FULL_DATE.match(dtc), FULL_DATE.match(ref)
                if a and b and "/" not in dtc:
                    delta = (datetime.date.fromisoformat(a.group(1))
                             - datetime.date.fromisoformat(b.group(1))).days
                    expected = delta + 1 if delta >= 0 else delta
            if day is not None and (day == 0 or day != expected):
                wrong += 1
        if wrong:
            findings.append(_finding("DTX-007", dataset.name, name,
                                     f"{wrong} value(s) disagree with {source} and RFSTDTC",
                                     wrong))
    return findings


def check_datasets(datasets: Sequence[XptDataset]) -> list[Finding]:
    """Run DTX-001..014 over the datasets of one package (SDTM and/or ADaM)."""
    findings = _subject_checks(datasets)
    dm = next((d for d in datasets if d.name == "DM"), None)
    rfstdtc: dict[object, object] = {}
    if dm is not None and "RFSTDTC" in _columns(dm):
        rfstdtc = dict(zip(_columns(dm)["USUBJID"], _columns(dm)["RFSTDTC"], strict=True))
    for dataset in datasets:
        columns = _columns(dataset)
        sdtm = standard_of(dataset) == "SDTM"
        for name in required_variables(dataset):
            if name not in columns:
                findings.append(_finding("DTX-001", dataset.name, name,
                                         f"required variable {name} is missing"))
            elif dataset.rows and any(v in (None, "") for v in columns[name]):
                rows: Sequence[int] = range(len(dataset.rows))
                if dataset.name == "ADSL" and name in ("TRT01A", "TRT01AN"):
                    continue  # null for a participant never treated (DM's ARMNRS says why)
                if dataset.name == "ADSL" and name in TREATMENT and "RANDFL" in columns:
                    # never randomized: no treatment, as DM's ARM is null with ARMNRS
                    rows = [i for i in range(len(dataset.rows)) if columns["RANDFL"][i] == "Y"]
                nulls = sum(1 for i in rows if columns[name][i] in (None, ""))
                if not nulls:
                    continue
                findings.append(_finding("DTX-002", dataset.name, name,
                                         f"{nulls} null value(s)", nulls))
        absent = [n for n in EXPECTED.get(dataset.name, ()) if n not in columns]
        if sdtm and absent:
            findings.append(_finding("DTX-018", dataset.name, None,
                                     f"expected variable(s) missing: {', '.join(absent)}",
                                     len(absent), severity="warning"))
        seq = f"{dataset.name[:2]}SEQ"
        if sdtm and seq in columns and "USUBJID" in columns:
            pairs = Counter(zip(columns["USUBJID"], columns[seq], strict=True))
            repeated = sum(1 for n in pairs.values() if n > 1)
            if repeated:
                findings.append(_finding("DTX-005", dataset.name, seq,
                                         f"{repeated} repeated subject/sequence pair(s)",
                                         repeated))
        for name, values in columns.items():
            if sdtm and name.endswith("DTC"):
                bad = [v for v in values if v is not None and not ISO_8601.match(str(v))]
                if bad:
                    findings.append(_finding("DTX-006", dataset.name, name,
                                             f"{len(bad)} non-ISO 8601 value(s), e.g. "
                                             f"{bad[0]!r}", len(bad)))
        if sdtm and dataset.name != "DM" and rfstdtc:
            findings += _study_days(dataset, rfstdtc)
        for index, variable in enumerate(dataset.variables):
            codelist = codelist_of(dataset, variable)
            if codelist is None or codelist.extensible:
                continue
            outside = sorted({str(r[index]) for r in dataset.rows
                              if r[index] is not None and not codelist.has(str(r[index]))})
            if outside:
                findings.append(_finding("DTX-008", dataset.name, variable.name,
                                         f"value(s) {outside[:3]} not in {codelist.code} "
                                         f"({codelist.name})", len(outside)))
        if sdtm and "DOMAIN" in columns and any(v != dataset.name[:2] for v in columns["DOMAIN"]):
            findings.append(_finding("DTX-009", dataset.name, "DOMAIN",
                                     "DOMAIN differs from the dataset name"))
        if dataset.name.startswith("SUPP") and "RDOMAIN" in columns and any(
                v != dataset.name[4:] for v in columns["RDOMAIN"]):
            findings.append(_finding("DTX-009", dataset.name, "RDOMAIN",
                                     "RDOMAIN differs from the dataset name suffix"))
        prefix = dataset.name[:2]
        for code, label in ((f"{prefix}TESTCD", f"{prefix}TEST"), ("PARAMCD", "PARAM")):
            if code in columns and label in columns:
                pairs_ = set(zip(columns[code], columns[label], strict=True))
                if len(pairs_) != len({c for c, _ in pairs_}) or len(pairs_) != len(
                        {n for _, n in pairs_}):
                    findings.append(_finding("DTX-010", dataset.name, code,
                                             f"{code} and {label} are not 1:1"))
        if dataset.name == "ADSL":
            for flag in POPULATION_FLAGS:
                if flag in columns and any(v not in ("Y", "N") for v in columns[flag]):
                    findings.append(_finding("DTX-011", "ADSL", flag, "flag not Y/N"))
        if "ABLFL" in columns:
            findings += _bds_checks(dataset, columns)
        if "CNSR" in columns:
            bad = [v for v in columns["CNSR"] if not isinstance(v, int | float)
                   or v < 0 or not float(v).is_integer()]
            if bad:
                findings.append(_finding("DTX-013", dataset.name, "CNSR",
                                         f"{len(bad)} invalid censoring value(s)", len(bad)))
        try:
            validate_dataset(dataset)
        except XptError as exc:
            findings.append(_finding("DTX-014", dataset.name, None, str(exc)))
    return findings


def _bds_checks(dataset: XptDataset, columns: Mapping[str, list[object]]) -> list[Finding]:
    findings = []
    baseline: dict[tuple[object, object], object] = {}
    repeated = 0
    for subject, param, flag, value in zip(columns["USUBJID"], columns["PARAMCD"],
                                           columns["ABLFL"], columns["AVAL"], strict=True):
        if flag == "Y":
            if (subject, param) in baseline:
                repeated += 1
            baseline[(subject, param)] = value
    if repeated:
        findings.append(_finding("DTX-012", dataset.name, "ABLFL",
                                 f"{repeated} extra baseline record(s)", repeated))
    wrong = 0
    for i, (subject, param) in enumerate(zip(columns["USUBJID"], columns["PARAMCD"],
                                             strict=True)):
        base = columns["BASE"][i]
        if (subject, param) in baseline and base != baseline[(subject, param)]:
            wrong += 1
        change, value = columns["CHG"][i], columns["AVAL"][i]
        if columns["DTYPE"][i] is None and change is not None and (
                not isinstance(value, int | float) or not isinstance(base, int | float)
                or not isinstance(change, int | float)
                or abs(float(change) - (float(value) - float(base))) > 1e-9):
            wrong += 1
    if wrong:
        findings.append(_finding("DTX-012", dataset.name, "BASE",
                                 f"{wrong} record(s) with BASE/CHG inconsistent", wrong))
    return findings


def _attr(element: ET.Element, name: str) -> str | None:
    return element.get(name)


def check_define(define: bytes, datasets: Sequence[XptDataset],
                 files: Iterable[str] = ()) -> list[Finding]:
    """Run DTX-015/016: the Define-XML against its datasets and the files beside it."""
    root = ET.fromstring(define)  # noqa: S314 - the Define this package just generated
    ns = {"odm": ODM_NS, "def": DEF_NS}
    findings: list[Finding] = []
    oids: dict[str, set[str]] = defaultdict(set)
    for tag, kind in (("odm:ItemGroupDef", "group"), ("odm:ItemDef", "item"),
                      ("odm:CodeList", "codelist"), ("odm:MethodDef", "method"),
                      ("def:ValueListDef", "valuelist"), ("def:WhereClauseDef", "where"),
                      ("def:Standard", "standard"), ("def:CommentDef", "comment")):
        for element in root.iter(f"{{{ns[tag.split(':')[0]]}}}{tag.split(':')[1]}"):
            oids[kind].add(element.get("OID", ""))
    leaves = {leaf.get("ID"): leaf.get(f"{{{XLINK_NS}}}href")
              for leaf in root.iter(f"{{{DEF_NS}}}leaf")}
    references = (
        ("ItemOID", "item"), ("CodeListOID", "codelist"), ("MethodOID", "method"),
        ("ValueListOID", "valuelist"), ("WhereClauseOID", "where"),
        (f"{{{DEF_NS}}}ItemOID", "item"), (f"{{{DEF_NS}}}StandardOID", "standard"),
        (f"{{{DEF_NS}}}CommentOID", "comment"),
    )
    dangling = [
        f"{attr.split('}')[-1]}={element.get(attr)}"
        for element in root.iter() for attr, kind in references
        if element.get(attr) is not None and element.get(attr) not in oids[kind]
    ]
    for element in root.iter(f"{{{ODM_NS}}}ItemGroupDef"):
        location = element.get(f"{{{DEF_NS}}}ArchiveLocationID")
        if location is not None and location not in leaves:
            dangling.append(f"ArchiveLocationID={location}")
    if dangling:
        findings.append(_finding("DTX-015", "define.xml", None,
                                 f"{len(dangling)} dangling OID reference(s), e.g. "
                                 f"{dangling[0]}", len(dangling)))
    present = set(files)
    if present:
        missing = sorted(h for h in leaves.values() if h is not None and h not in present)
        if missing:
            findings.append(_finding("DTX-015", "define.xml", None,
                                     f"leaf file(s) not in the package: {missing[:3]}",
                                     len(missing)))
    groups = {g.get("OID"): g for g in root.iter(f"{{{ODM_NS}}}ItemGroupDef")}
    items = {i.get("OID"): i for i in root.iter(f"{{{ODM_NS}}}ItemDef")}
    described = set()
    for dataset in datasets:
        group = groups.get(item_group_oid(dataset))
        if group is None:
            findings.append(_finding("DTX-015", dataset.name, None, "no ItemGroupDef"))
            continue
        described.add(item_group_oid(dataset))
        refs = group.findall(f"{{{ODM_NS}}}ItemRef")
        if [r.get("ItemOID") for r in refs] != [item_oid(dataset, v) for v in dataset.variables]:
            findings.append(_finding("DTX-015", dataset.name, None,
                                     "ItemRefs differ from the dataset's columns or order"))
        for index, (variable, ref) in enumerate(zip(dataset.variables, refs, strict=False)):
            item = items.get(ref.get("ItemOID"))
            if item is None:
                continue
            typed = column_type(dataset, index)
            length = item.get("Length")
            if typed.define_type == "text" and length != str(typed.length):
                findings.append(_finding("DTX-015", dataset.name, variable.name,
                                         f"Define Length {length} but longest value "
                                         f"{typed.length}"))
            if item.get("DataType") != typed.define_type:
                findings.append(_finding("DTX-015", dataset.name, variable.name,
                                         f"Define DataType {item.get('DataType')} but data "
                                         f"{typed.define_type}"))
            if variable.origin == "Derived" and ref.get("MethodOID") is None:
                findings.append(_finding("DTX-016", dataset.name, variable.name,
                                         "derived variable without a MethodDef",
                                         severity="warning"))
    extra = set(groups) - described
    if extra:
        findings.append(_finding("DTX-015", "define.xml", None,
                                 f"ItemGroupDef(s) without a dataset: {sorted(map(str, extra))}",
                                 len(extra)))
    return findings


def check_dataset_json(content: bytes, dataset: XptDataset, define: bytes) -> list[Finding]:
    """Run DTX-017: one Dataset-JSON file against its dataset and Define."""
    document = json.loads(content.decode("utf-8"))
    findings: list[Finding] = []
    rows = document.get("rows", [])
    columns = document.get("columns", [])
    if document.get("records") != len(rows):
        findings.append(_finding("DTX-017", dataset.name, None, "records != number of rows"))
    if any(len(row) != len(columns) for row in rows):
        findings.append(_finding("DTX-017", dataset.name, None, "row length != columns"))
    root = ET.fromstring(define)  # noqa: S314 - the Define this package just generated
    groups = {g.get("OID") for g in root.iter(f"{{{ODM_NS}}}ItemGroupDef")}
    items = {i.get("OID") for i in root.iter(f"{{{ODM_NS}}}ItemDef")}
    if document.get("itemGroupOID") not in groups:
        findings.append(_finding("DTX-017", dataset.name, None,
                                 f"itemGroupOID {document.get('itemGroupOID')} not in Define"))
    unknown = [c.get("itemOID") for c in columns if c.get("itemOID") not in items]
    if unknown:
        findings.append(_finding("DTX-017", dataset.name, None,
                                 f"itemOID(s) not in Define: {unknown[:3]}", len(unknown)))
    if len(rows) != len(dataset.rows):
        findings.append(_finding("DTX-017", dataset.name, None,
                                 "row count differs from the dataset"))
    return findings


@dataclass(frozen=True)
class ConformanceReport:
    """All findings of one package, with the rules that ran."""

    findings: tuple[Finding, ...]
    rules: Mapping[str, str]
    engine: str = ("dtx-trials CORE-style checks (CDISC CORE not runnable offline: the PyPI "
                   "wheel has no rules cache)")

    @property
    def n_errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == "error")

    @property
    def n_warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == "warning")

    def to_json(self) -> bytes:
        body = {
            "engine": self.engine,
            "rules": dict(self.rules),
            "n_findings": len(self.findings),
            "n_errors": self.n_errors,
            "n_warnings": self.n_warnings,
            "by_rule": dict(Counter(f.rule for f in self.findings)),
            "findings": [asdict(f) for f in self.findings],
        }
        return (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
