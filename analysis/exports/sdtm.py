"""SDTM-like tabulation datasets (DM, DS, AE, EX and findings VS/QS/XF) from ExportData.

Shapes follow SDTMIG v3.4 for a simple DTx trial (regulatory-checks.md §4): required variables
present and non-null (SDTM-01), every USUBJID in DM (SDTM-02), --SEQ unique per subject
(SDTM-03), DOMAIN = dataset name (SDTM-04), --DTC as ISO 8601 text (SDTM-05).
Blinded exports omit ARMCD/ARM/ACTARMCD/ACTARM from DM and write ``BLINDED TREATMENT`` as
EXTRT. Dates stay ISO 8601 (a limited data set, not Safe Harbor); ages of 90 and over are 90.
Text goes out in English (labels' ``en``); non-ASCII values are refused by the XPT writer.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from datetime import date

from analysis.exports.data import (
    ExportData,
    ExportError,
    FieldValue,
    SubjectRecord,
    arm_of,
    exported_values,
    missing_code,
    text_of,
)
from analysis.exports.xport import Cell, XptDataset, XptVariable
from ecrf.model import MISSING_CODES, FieldDef

REQUIRED: dict[str, tuple[str, ...]] = {
    "DM": ("STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID", "SEX", "COUNTRY"),
    "DS": ("STUDYID", "DOMAIN", "USUBJID", "DSSEQ", "DSTERM", "DSDECOD"),
    "AE": ("STUDYID", "DOMAIN", "USUBJID", "AESEQ", "AETERM", "AEDECOD"),
    "EX": ("STUDYID", "DOMAIN", "USUBJID", "EXSEQ", "EXTRT"),
}
FINDINGS_LABELS = {"VS": "Vital Signs", "QS": "Questionnaires", "XF": "Endpoint Findings"}
DISPOSITION = {
    "completed": "COMPLETED",
    "withdrawn": "WITHDRAWAL BY SUBJECT",
    "screen_failed": "SCREEN FAILURE",
}


def _v(name: str, label: str, kind: str = "char", origin: str = "Collected") -> XptVariable:
    return XptVariable(name, label, "num" if kind == "num" else "char", origin)


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def usubjid(data: ExportData, subject_code: str) -> str:
    """Return the unique subject id: ``<STUDYID>-<subject code>``."""
    return f"{data.trial.code}-{subject_code}"


def _subjects(data: ExportData) -> dict[str, SubjectRecord]:
    return {s.subject_code: s for s in data.subjects}


def dm_dataset(data: ExportData) -> XptDataset:
    """Return DM: one row per subject; arm variables only in unblinded exports."""
    sites = {s.code: s for s in data.sites}
    variables = [
        _v("STUDYID", "Study Identifier"), _v("DOMAIN", "Domain Abbreviation", origin="Assigned"),
        _v("USUBJID", "Unique Subject Identifier", origin="Derived"),
        _v("SUBJID", "Subject Identifier for the Study"),
        _v("SITEID", "Study Site Identifier"), _v("SEX", "Sex"),
        _v("AGE", "Age", "num"), _v("AGEU", "Age Units", origin="Assigned"),
        _v("COUNTRY", "Country"), _v("RFICDTC", "Date/Time of Informed Consent"),
        _v("RFSTDTC", "Subject Reference Start Date/Time", origin="Derived"),
    ]
    blinded = data.trial.blinded
    if not blinded:
        variables += [
            _v("ARMCD", "Planned Arm Code", origin="Assigned"),
            _v("ARM", "Description of Planned Arm", origin="Assigned"),
            _v("ACTARMCD", "Actual Arm Code", origin="Assigned"),
            _v("ACTARM", "Description of Actual Arm", origin="Assigned"),
            _v("ARMNRS", "Reason Arm and/or Actual Arm is Null", origin="Assigned"),
        ]
    rows: list[tuple[Cell, ...]] = []
    for s in data.subjects:
        site = sites.get(s.site_code)
        if site is None:
            raise ExportError(f"subject {s.subject_code}: unknown site {s.site_code!r}")
        row: list[Cell] = [
            data.trial.code, "DM", usubjid(data, s.subject_code), s.subject_code, s.site_code,
            s.sex, None if s.age is None else min(s.age, 90),
            None if s.age is None else "YEARS",
            site.country, _iso(s.consented_on), _iso(s.randomized_on),
        ]
        if not blinded:
            arm = arm_of(data, s)
            reason = None
            if arm is None:
                reason = "SCREEN FAILURE" if s.status == "screen_failed" else "NOT ASSIGNED"
            code = arm.code if arm else None
            name = arm.name if arm else None
            row += [code, name, code, name, reason]
        rows.append(tuple(row))
    return XptDataset("DM", "Demographics", tuple(variables), tuple(rows))


def ds_dataset(data: ExportData) -> XptDataset:
    """Return DS: consent and randomization milestones plus the disposition event."""
    variables = (
        _v("STUDYID", "Study Identifier"), _v("DOMAIN", "Domain Abbreviation", origin="Assigned"),
        _v("USUBJID", "Unique Subject Identifier", origin="Derived"),
        _v("DSSEQ", "Sequence Number", "num", "Derived"),
        _v("DSTERM", "Reported Term for the Disposition Event"),
        _v("DSDECOD", "Standardized Disposition Term", origin="Assigned"),
        _v("DSCAT", "Category for Disposition Event", origin="Assigned"),
        _v("DSSTDTC", "Start Date/Time of Disposition Event"),
    )
    rows: list[tuple[Cell, ...]] = []
    for s in data.subjects:
        events: list[tuple[str, str, str, date | None]] = []
        if s.consented_on:
            events.append(("INFORMED CONSENT OBTAINED", "INFORMED CONSENT OBTAINED",
                           "PROTOCOL MILESTONE", s.consented_on))
        if s.randomized_on:
            events.append(("RANDOMIZED", "RANDOMIZED", "PROTOCOL MILESTONE", s.randomized_on))
        if s.status in DISPOSITION:
            decoded = DISPOSITION[s.status]
            term = (s.withdrawal_reason or decoded) if s.status == "withdrawn" else decoded
            when = s.completed_on if s.status == "completed" else s.withdrawn_on
            events.append((term.upper(), decoded, "DISPOSITION EVENT", when))
        for seq, (term, decoded, category, when) in enumerate(events, start=1):
            rows.append((data.trial.code, "DS", usubjid(data, s.subject_code), seq, term,
                         decoded, category, _iso(when)))
    return XptDataset("DS", "Disposition", variables, tuple(rows))


def ae_dataset(data: ExportData) -> XptDataset:
    """Return AE: one row per adverse event, AESEQ numbered per subject."""
    subjects = _subjects(data)
    variables = (
        _v("STUDYID", "Study Identifier"), _v("DOMAIN", "Domain Abbreviation", origin="Assigned"),
        _v("USUBJID", "Unique Subject Identifier", origin="Derived"),
        _v("AESEQ", "Sequence Number", "num", "Derived"),
        _v("AETERM", "Reported Term for the Adverse Event"),
        _v("AEDECOD", "Dictionary-Derived Term", origin="Assigned"),
        _v("AEBODSYS", "Body System or Organ Class", origin="Assigned"),
        _v("AESER", "Serious Event"), _v("AESEV", "Severity/Intensity"),
        _v("AEREL", "Causality"), _v("AEOUT", "Outcome of Adverse Event"),
        _v("AESTDTC", "Start Date/Time of Adverse Event"),
        _v("AEENDTC", "End Date/Time of Adverse Event"),
    )
    seq: dict[str, int] = defaultdict(int)
    rows: list[tuple[Cell, ...]] = []
    for ae in data.adverse_events:
        if ae.subject_code not in subjects:
            raise ExportError(f"adverse event for unknown subject {ae.subject_code!r}")
        seq[ae.subject_code] += 1
        rows.append((
            data.trial.code, "AE", usubjid(data, ae.subject_code), seq[ae.subject_code],
            ae.term, (ae.decoded_term or ae.term).upper(), ae.body_system.upper() or None,
            "Y" if ae.serious else "N", ae.severity, ae.relationship.upper(),
            ae.outcome.upper() or None, _iso(ae.start_on), _iso(ae.end_on),
        ))
    return XptDataset("AE", "Adverse Events", variables, tuple(rows))


def ex_dataset(data: ExportData) -> XptDataset:
    """Return EX: DTx exposure periods (treatment masked in blinded exports)."""
    subjects = _subjects(data)
    variables = (
        _v("STUDYID", "Study Identifier"), _v("DOMAIN", "Domain Abbreviation", origin="Assigned"),
        _v("USUBJID", "Unique Subject Identifier", origin="Derived"),
        _v("EXSEQ", "Sequence Number", "num", "Derived"),
        _v("EXTRT", "Name of Treatment", origin="Assigned"),
        _v("EXDOSE", "Dose", "num"), _v("EXDOSU", "Dose Units"),
        _v("EXSTDTC", "Start Date/Time of Treatment"),
        _v("EXENDTC", "End Date/Time of Treatment"),
    )
    seq: dict[str, int] = defaultdict(int)
    rows: list[tuple[Cell, ...]] = []
    for ex in data.exposures:
        if ex.subject_code not in subjects:
            raise ExportError(f"exposure for unknown subject {ex.subject_code!r}")
        seq[ex.subject_code] += 1
        treatment = "BLINDED TREATMENT" if data.trial.blinded else ex.treatment
        rows.append((data.trial.code, "EX", usubjid(data, ex.subject_code), seq[ex.subject_code],
                     treatment, ex.dose, ex.dose_unit or None, _iso(ex.start_on),
                     _iso(ex.end_on)))
    return XptDataset("EX", "Exposure", variables, tuple(rows))


def short_test_code(field_id: str, taken: set[str]) -> str:
    """Return a unique --TESTCD (≤ 8 uppercase letters/digits, starting with a letter)."""
    base = re.sub(r"[^A-Z0-9]", "", field_id.upper()) or "TEST"
    if not base[0].isalpha():
        base = "T" + base
    code = base[:8]
    counter = 1
    while code in taken:
        suffix = str(counter)
        code = base[: 8 - len(suffix)] + suffix
        counter += 1
    taken.add(code)
    return code


def _result(field_def: FieldDef, value: FieldValue) -> tuple[str | None, float | None]:
    text = text_of(value)
    if field_def.type == "yesno":
        return {"1": "Y", "0": "N"}.get(text, text), None
    if field_def.choices and isinstance(value, str):
        for choice in field_def.choices:
            if choice.code == value:
                return choice.label.en, None
    try:
        number = float(text)
    except ValueError:
        return text, None
    if field_def.type in ("integer", "decimal", "slider", "calculated"):
        return text, number
    return text, None


def findings_datasets(data: ExportData) -> list[XptDataset]:
    """Return one findings dataset per domain named in ``data.sdtm_findings``."""
    visit_numbers = {visit.id: n for n, visit in enumerate(data.visits, start=1)}
    visit_labels = {visit.id: visit.label.en for visit in data.visits}
    by_domain: dict[str, list[tuple[Cell, ...]]] = defaultdict(list)
    codes: dict[tuple[str, str], str] = {}
    taken: dict[str, set[str]] = defaultdict(set)
    seq: dict[tuple[str, str], int] = defaultdict(int)
    for form, field_def, value in exported_values(data):
        domain = data.sdtm_findings.get(form.id)
        if domain is None:
            continue
        key = (form.id, field_def.id)
        if key not in codes:
            codes[key] = short_test_code(field_def.id, taken[domain])
        seq[(domain, value.subject_code)] += 1
        reason = missing_code(value.value)
        result, number = (None, None) if reason else _result(field_def, value.value)
        by_domain[domain].append((
            data.trial.code, domain, usubjid(data, value.subject_code),
            seq[(domain, value.subject_code)], codes[key], field_def.label.en[:40],
            form.title.en[:200], result, field_def.unit, result, number,
            "NOT DONE" if reason else None, MISSING_CODES[reason] if reason else None,
            visit_numbers.get(value.visit_id), visit_labels.get(value.visit_id, value.visit_id),
            _iso(value.collected_on),
        ))
    datasets = []
    for domain_name, rows in sorted(by_domain.items()):
        p = domain_name
        variables = (
            _v("STUDYID", "Study Identifier"),
            _v("DOMAIN", "Domain Abbreviation", origin="Assigned"),
            _v("USUBJID", "Unique Subject Identifier", origin="Derived"),
            _v(f"{p}SEQ", "Sequence Number", "num", "Derived"),
            _v(f"{p}TESTCD", "Short Name of Test", origin="Assigned"),
            _v(f"{p}TEST", "Name of Test", origin="Assigned"),
            _v(f"{p}CAT", "Category", origin="Assigned"),
            _v(f"{p}ORRES", "Result or Finding in Original Units"),
            _v(f"{p}ORRESU", "Original Units"),
            _v(f"{p}STRESC", "Result or Finding in Standard Format", origin="Derived"),
            _v(f"{p}STRESN", "Numeric Result/Finding in Standard Units", "num", "Derived"),
            _v(f"{p}STAT", "Completion Status"),
            _v(f"{p}REASND", "Reason Not Done"),
            _v("VISITNUM", "Visit Number", "num", "Assigned"),
            _v("VISIT", "Visit Name", origin="Assigned"),
            _v(f"{p}DTC", "Date/Time of Collection"),
        )
        datasets.append(XptDataset(p, FINDINGS_LABELS[p], variables, tuple(rows)))
    return datasets


def check_sdtm(datasets: Sequence[XptDataset]) -> None:
    """Raise ExportError for a broken SDTM-01..05 rule (required, DM subjects, SEQ, DOMAIN, DTC)."""
    by_name = {d.name: d for d in datasets}
    if "DM" not in by_name:
        raise ExportError("SDTM export needs DM")
    dm = by_name["DM"]
    dm_subjects = {row[2] for row in dm.rows}
    iso = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?"
                     r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")
    for dataset in datasets:
        names = [v.name for v in dataset.variables]
        required = REQUIRED.get(dataset.name, ("STUDYID", "DOMAIN", "USUBJID",
                                               f"{dataset.name}SEQ", f"{dataset.name}TESTCD",
                                               f"{dataset.name}TEST"))
        for name in required:
            if name not in names:
                raise ExportError(f"SDTM-01: {dataset.name} lacks required {name}")
            index = names.index(name)
            if any(row[index] in (None, "") for row in dataset.rows):
                raise ExportError(f"SDTM-01: {dataset.name}.{name} has null values")
        domain = names.index("DOMAIN")
        if any(row[domain] != dataset.name for row in dataset.rows):
            raise ExportError(f"SDTM-04: {dataset.name} rows with another DOMAIN")
        if dataset.name != "DM":
            subject = names.index("USUBJID")
            unknown = {row[subject] for row in dataset.rows} - dm_subjects
            if unknown:
                raise ExportError(
                    f"SDTM-02: {dataset.name} subjects not in DM: {sorted(map(str, unknown))}"
                )
            seq_name = f"{dataset.name}SEQ"
            seq = names.index(seq_name)
            pairs = [(row[subject], row[seq]) for row in dataset.rows]
            if len(pairs) != len(set(pairs)):
                raise ExportError(f"SDTM-03: {seq_name} is not unique per subject")
        for index, name in enumerate(names):
            if name.endswith("DTC"):
                for row in dataset.rows:
                    value = row[index]
                    if value is not None and not iso.match(str(value)):
                        raise ExportError(f"SDTM-05: {dataset.name}.{name} {value!r} not ISO 8601")


def build_sdtm_datasets(data: ExportData) -> list[XptDataset]:
    """Return DM, DS, AE, EX and the findings datasets, checked against SDTM-01..05."""
    datasets = [dm_dataset(data), ds_dataset(data), ae_dataset(data), ex_dataset(data),
                *findings_datasets(data)]
    check_sdtm(datasets)
    return datasets
