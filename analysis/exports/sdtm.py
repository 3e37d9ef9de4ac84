"""SDTM IG 3.4-shaped tabulation datasets from ExportData and the protocol's ``cdisc`` mapping.

Every value comes from a form field, a device stream, a protocol constant named in the mapping,
or platform data with its real date (consent, randomization, visit dates); nothing is filled in
by default. A value the mapping needs but the data lack is an ``ExportError`` naming the
participant, form and field, unless the mapping declares the variable ``nullable``.

Datasets: TS (trial summary from the protocol), DM (RF dates from the data; ARM/ACTARM only in
unblinded exports), SUPPDM is not needed (every DM item has a standard home), DS (consent and
randomization milestones, the disposition event from the end-of-study form, screen failures),
SV (actual visit dates), AE (AEDECOD/AEBODSYS from the coding table, else null with the verbatim
in AETERM), CM, EX (one record per day of DTx use from the exposure stream), the findings
domains VS/LB/QS/OE and XD (sponsor device findings from streams). ``--SEQ`` is deterministic
(sorted by the natural key), ``--DTC`` ISO 8601 (partial dates kept as collected) and ``--DY``
the SDTMIG study day relative to RFSTDTC (first DTx exposure). Checked against SDTM-01..05.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from analysis.exports.data import (
    ExportData,
    ExportError,
    FieldValue,
    SubjectRecord,
    arm_of,
    coding_key,
    form_index,
    missing_code,
    text_of,
)
from analysis.exports.xport import Cell, XptDataset, XptVariable
from ecrf.model import MISSING_CODES, UNSCHEDULED_VISIT, FieldDef, FormDef
from protocols.cdisc import mappable_variables
from protocols.model import CdiscSpec, DomainMap, VariableMap

REQUIRED: dict[str, tuple[str, ...]] = {
    "DM": ("STUDYID", "DOMAIN", "USUBJID", "SUBJID", "SITEID", "SEX", "COUNTRY"),
    "DS": ("STUDYID", "DOMAIN", "USUBJID", "DSSEQ", "DSTERM", "DSDECOD"),
    # AEDECOD is Req, but an uncoded term stays null until the data manager codes it
    "AE": ("STUDYID", "DOMAIN", "USUBJID", "AESEQ", "AETERM"),
    "EX": ("STUDYID", "DOMAIN", "USUBJID", "EXSEQ", "EXTRT"),
    "CM": ("STUDYID", "DOMAIN", "USUBJID", "CMSEQ", "CMTRT"),
    "SV": ("STUDYID", "DOMAIN", "USUBJID", "VISITNUM"),
    "TS": ("STUDYID", "DOMAIN", "TSSEQ", "TSPARMCD", "TSPARM"),
}
DOMAIN_LABELS = {
    "TS": "Trial Summary", "DM": "Demographics", "DS": "Disposition", "SV": "Subject Visits",
    "AE": "Adverse Events", "CM": "Concomitant Medications", "EX": "Exposure",
    "VS": "Vital Signs", "LB": "Laboratory Test Results", "QS": "Questionnaires",
    "OE": "Ophthalmic Examinations", "XD": "Device Findings",
}
ISO_VALUE = re.compile(r"^\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?)?)?)?$")
FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T[0-9:.]*)?$")
TBLIND = {"open": "OPEN LABEL", "single": "SINGLE BLIND", "double": "DOUBLE BLIND"}


def _v(name: str, label: str, kind: str = "char", origin: str = "Collected", *,
       codelist: str | None = None, source: str | None = None) -> XptVariable:
    return XptVariable(name, label, "num" if kind == "num" else "char", origin, codelist, source)


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def usubjid(data: ExportData, subject_code: str) -> str:
    """Return the unique subject id: ``<STUDYID>-<subject code>``."""
    return f"{data.trial.code}-{subject_code}"


def study_day(dtc: Cell, rfstdtc: Cell) -> int | None:
    """Return the SDTMIG study day of ``dtc`` (day 1 = RFSTDTC, no day 0); None when either
    date is partial or missing."""
    if not isinstance(dtc, str) or not isinstance(rfstdtc, str):
        return None
    if not FULL_DATE.match(dtc) or not FULL_DATE.match(rfstdtc):
        return None
    delta = (date.fromisoformat(dtc[:10]) - date.fromisoformat(rfstdtc[:10])).days
    return delta + 1 if delta >= 0 else delta


@dataclass
class _Record:
    """One submitted form instance of one participant."""

    subject: str
    visit_id: str
    form_id: str
    repeat: int
    collected_on: date | None
    values: dict[str, FieldValue] = field(default_factory=dict)

    @property
    def where(self) -> str:
        repeat = f" #{self.repeat}" if self.repeat != 1 else ""
        return f"participant {self.subject}, form {self.form_id}{repeat} at visit {self.visit_id}"


class _Build:
    """Indexes shared by the dataset builders."""

    def __init__(self, data: ExportData) -> None:
        if data.cdisc is None:
            raise ExportError(
                "the protocol declares no 'cdisc' mapping: SDTM datasets are built only from "
                "a declared mapping (see README, CDISC mapping)"
            )
        self.data = data
        self.spec: CdiscSpec = data.cdisc
        self.forms: dict[str, FormDef] = form_index(data)
        self.subjects: dict[str, SubjectRecord] = {s.subject_code: s for s in data.subjects}
        self.visit_numbers = {v.id: n for n, v in enumerate(data.visits, start=1)}
        # the unscheduled visit has no date to be placed by (one visit row holds a
        # participant's every unscheduled entry): VISIT UNSCHEDULED, no VISITNUM, no SV row
        self.visit_labels = {v.id: v.label.en for v in data.visits} | {
            UNSCHEDULED_VISIT: "UNSCHEDULED"}
        self.visit_dates = {(v.subject_code, v.visit_id): v.on for v in data.visit_dates}
        records: dict[tuple[str, str, str, int], _Record] = {}
        for value in data.values:
            if value.subject_code not in self.subjects:
                raise ExportError(f"value for unknown subject {value.subject_code!r}")
            key = (value.subject_code, value.visit_id, value.form_id, value.repeat)
            record = records.get(key)
            if record is None:
                record = records[key] = _Record(value.subject_code, value.visit_id,
                                                value.form_id, value.repeat, value.collected_on)
            record.values[value.field_id] = value.value
        self.records: dict[str, list[_Record]] = defaultdict(list)
        for record in records.values():
            self.records[record.form_id].append(record)
        self.rfstdtc: dict[str, str | None] = {}
        self.rfx: tuple[dict[str, str], dict[str, str]] = ({}, {})

    def field(self, form_id: str, field_id: str) -> FieldDef:
        return self.forms[form_id].field(field_id)

    def value(self, mapping: DomainMap, var: VariableMap, record: _Record | None) -> Cell:
        """Return the SDTM value of ``var`` for ``record`` (see the module docstring)."""
        if var.value is not None:
            return var.value
        assert var.field is not None and record is not None and mapping.form is not None
        raw = record.values.get(var.field)
        code = missing_code(raw)
        if raw is None or raw == "" or code is not None:
            if var.nullable:
                return None
            state = f"is '{code}'" if code else "has no value"
            raise ExportError(f"{record.where}: field {var.field} {state}, and "
                              f"{mapping.domain}.{var.variable} needs one (or declare it "
                              "nullable in the protocol)")
        field_def = self.field(mapping.form, var.field)
        meta = mappable_variables(mapping.domain)[var.variable]
        if var.terms:
            text = text_of(raw)
            term = next((t.value for t in var.terms if t.code == text), None)
            if term is None:
                raise ExportError(f"{record.where}: field {var.field} holds {text!r}, which the "
                                  f"{mapping.domain}.{var.variable} terms do not map")
            return term
        if meta.kind == "number":
            return float(text_of(raw))
        if meta.kind == "date":
            text = text_of(raw)
            if not ISO_VALUE.match(text):
                raise ExportError(f"{record.where}: field {var.field} holds {text!r}, not an "
                                  "ISO 8601 date")
            return text
        if field_def.choices and isinstance(raw, str):
            return next((c.label.en for c in field_def.choices if c.code == raw), raw)
        return " ".join(text_of(raw).split())

    def variables(self, mapping: DomainMap) -> list[XptVariable]:
        out = []
        allowed = mappable_variables(mapping.domain)
        for var in mapping.variables:
            meta = allowed[var.variable]
            origin = "Assigned" if var.value is not None else "Collected"
            source = None if var.field is None else f"{mapping.form}.{var.field}"
            out.append(_v(var.variable, meta.label, meta.type, origin,
                          codelist=var.codelist, source=source))
        return out


def _sequenced(rows: list[tuple[tuple[object, ...], list[Cell]]], seq_at: int,
               subject_at: int = 2) -> tuple[tuple[Cell, ...], ...]:
    """Number rows 1..n per subject in natural-key order (stable across re-runs)."""
    rows.sort(key=lambda r: (str(r[1][subject_at]), tuple(str(k) for k in r[0])))
    counters: dict[Cell, int] = defaultdict(int)
    out = []
    for _, row in rows:
        counters[row[subject_at]] += 1
        row[seq_at] = counters[row[subject_at]]
        out.append(tuple(row))
    return tuple(out)


_ID = (("STUDYID", "Study Identifier", "Assigned"), ("DOMAIN", "Domain Abbreviation", "Assigned"),
       ("USUBJID", "Unique Subject Identifier", "Derived"))


def _ids(domain: str) -> list[XptVariable]:
    return [_v(n, label, origin=o) for n, label, o in _ID] + [
        _v(f"{domain}SEQ", "Sequence Number", "num", "Derived")]


# ------------------------------------------------------------------ EX (first: RF dates)


def ex_dataset(b: _Build) -> XptDataset:
    """EX: one record per participant-day with DTx use (minutes > 0) on the exposure stream."""
    data = b.data
    maps = b.spec.domain_maps("EX")
    variables = [*_ids("EX"), _v("EXTRT", "Name of Treatment", origin="Assigned"),
                 _v("EXDOSE", "Dose", "num", source=None),
                 _v("EXDOSU", "Dose Units", origin="Assigned", codelist="C71620"),
                 _v("EXDOSFRQ", "Dosing Frequency per Interval", origin="Assigned",
                    codelist="C71113"),
                 _v("EXSTDTC", "Start Date/Time of Treatment", origin="Derived"),
                 _v("EXENDTC", "End Date/Time of Treatment", origin="Derived"),
                 _v("EXSTDY", "Study Day of Start of Treatment", "num", "Derived")]
    if not maps:
        return XptDataset("EX", DOMAIN_LABELS["EX"], tuple(variables), ())
    mapping = maps[0]
    variables[5] = _v("EXDOSE", "Dose", "num", source=f"stream:{mapping.stream}")
    constants = {v.variable: v.value for v in mapping.variables}
    daily: dict[tuple[str, date], float] = defaultdict(float)
    for obs in data.device_values:
        if obs.stream == mapping.stream and obs.value > 0:
            if obs.subject_code not in b.subjects:
                raise ExportError(f"device data for unknown subject {obs.subject_code!r}")
            daily[(obs.subject_code, obs.observed_at.date())] += obs.value
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    rows: list[tuple[tuple[object, ...], list[Cell]]] = []
    for (subject, day), minutes in sorted(daily.items()):
        record = b.subjects[subject]
        arm = arm_of(data, record)
        treatment = arm.name if arm else "BLINDED TREATMENT"
        iso = day.isoformat()
        first.setdefault(subject, iso)
        last[subject] = iso
        rows.append(((iso,), [data.trial.code, "EX", usubjid(data, subject), None, treatment,
                              round(minutes, 3), constants.get("EXDOSU"),
                              constants.get("EXDOSFRQ"), iso, iso, None]))
    b.rfstdtc = {s: first.get(s) for s in b.subjects}
    b.rfx = (first, last)
    for _, row in rows:
        row[10] = study_day(row[8], first.get(str(row[2])[len(data.trial.code) + 1:]))
    return XptDataset("EX", DOMAIN_LABELS["EX"], tuple(variables), _sequenced(rows, 3))


# ------------------------------------------------------------------ DS


def _disposition(b: _Build) -> dict[str, tuple[Cell, Cell, Cell, str]]:
    """Return participant -> (DSTERM, DSDECOD, DSSTDTC, source) from the mapped form."""
    maps = b.spec.domain_maps("DS")
    out: dict[str, tuple[Cell, Cell, Cell, str]] = {}
    if not maps:
        return out
    mapping = maps[0]
    assert mapping.form is not None
    by_name = {v.variable: v for v in mapping.variables}
    for record in b.records.get(mapping.form, []):
        values = {name: b.value(mapping, var, record) for name, var in by_name.items()}
        current = out.get(record.subject)
        when = values.get("DSSTDTC")
        if current is None or str(when or "") >= str(current[2] or ""):
            out[record.subject] = (values.get("DSTERM", values.get("DSDECOD")),
                                   values.get("DSDECOD"), when, record.where)
    return out


def ds_dataset(b: _Build) -> XptDataset:
    """DS: consent and randomization milestones, the disposition event, screen failures."""
    data = b.data
    maps = b.spec.domain_maps("DS")
    form_id = maps[0].form if maps else None
    disposition = _disposition(b)
    variables = [*_ids("DS"), _v("DSTERM", "Reported Term for the Disposition Event",
                                 source=f"{form_id}.*" if form_id else None),
                 _v("DSDECOD", "Standardized Disposition Term", codelist="C66727"),
                 _v("DSCAT", "Category for Disposition Event", origin="Assigned",
                    codelist="C74558"),
                 _v("DSSTDTC", "Start Date/Time of Disposition Event"),
                 _v("DSSTDY", "Study Day of Start of Disposition Event", "num", "Derived")]
    rows: list[tuple[tuple[object, ...], list[Cell]]] = []
    for s in data.subjects:
        events: list[tuple[Cell, Cell, str, Cell]] = []
        if s.consented_on:
            events.append(("INFORMED CONSENT OBTAINED", "INFORMED CONSENT OBTAINED",
                           "PROTOCOL MILESTONE", _iso(s.consented_on)))
        if s.randomized_on:
            events.append(("RANDOMIZED", "RANDOMIZED", "PROTOCOL MILESTONE",
                           _iso(s.randomized_on)))
        if s.status == "screen_failed":
            events.append(("SCREEN FAILURE", "SCREEN FAILURE", "DISPOSITION EVENT",
                           _iso(s.screen_failed_on)))
        found = disposition.get(s.subject_code)
        if found is not None:
            events.append((found[0], found[1], "DISPOSITION EVENT", found[2]))
        elif s.status in ("withdrawn", "completed") and s.randomized_on is not None:
            raise ExportError(
                f"participant {s.subject_code} is {s.status} but has no {form_id or 'disposition'}"
                " form: DS needs its disposition term and date (the reason and date are never "
                "guessed)"
            )
        for order, (term, decod, category, when) in enumerate(events):
            rows.append(((when or "", order), [
                data.trial.code, "DS", usubjid(data, s.subject_code), None,
                str(term).upper() if term else term, decod, category, when,
                study_day(when, b.rfstdtc.get(s.subject_code))]))
    return XptDataset("DS", DOMAIN_LABELS["DS"], tuple(variables), _sequenced(rows, 3))


# ------------------------------------------------------------------ DM


def dm_dataset(b: _Build, others: Sequence[XptDataset] = ()) -> XptDataset:
    """DM: one row per participant; the mapped demographics, RF dates from the data (RFPENDTC
    the latest full date of the participant in any of the ``others`` datasets, `_last_dates`)."""
    data = b.data
    sites = {s.code: s for s in data.sites}
    without = sorted({s.site_code for s in data.subjects
                      if sites.get(s.site_code) is None or sites[s.site_code].country is None})
    if without:  # DM.COUNTRY is required, and never guessed
        raise ExportError(f"DM.COUNTRY: site(s) {', '.join(without)} have no ISO 3166-1 country "
                          "recorded (set the site's country code, then export again)")
    maps = b.spec.domain_maps("DM")
    if not maps:
        raise ExportError("the cdisc mapping has no DM mapping (SEX is required)")
    mapping = maps[0]
    assert mapping.form is not None
    by_name = {v.variable: v for v in mapping.variables}
    mapped = {v.name: v for v in b.variables(mapping)}
    disposition = _disposition(b)
    first, last = b.rfx
    names = ["STUDYID", "DOMAIN", "USUBJID", "SUBJID", "RFSTDTC", "RFENDTC", "RFXSTDTC",
             "RFXENDTC", "RFICDTC", "RFPENDTC", "DTHDTC", "DTHFL", "SITEID"]
    names += [n for n in ("BRTHDTC",) if n in by_name]
    names += ["AGE", "AGEU", "SEX", "RACE"] + [n for n in ("ETHNIC",) if n in by_name]
    blinded = data.trial.blinded
    if not blinded:
        names += ["ARMCD", "ARM", "ACTARMCD", "ACTARM", "ARMNRS"]
    names += ["COUNTRY"]
    labels = {
        "SUBJID": "Subject Identifier for the Study", "RFSTDTC": "Subject Reference Start "
        "Date/Time", "RFENDTC": "Subject Reference End Date/Time", "RFXSTDTC": "Date/Time of "
        "First Study Treatment", "RFXENDTC": "Date/Time of Last Study Treatment", "RFICDTC":
        "Date/Time of Informed Consent", "RFPENDTC": "Date/Time of End of Participation",
        "DTHDTC": "Date/Time of Death", "DTHFL": "Subject Death Flag", "SITEID":
        "Study Site Identifier", "AGE": "Age", "AGEU": "Age Units", "SEX": "Sex", "RACE": "Race",
        "ARMCD": "Planned Arm Code", "ARM": "Description of Planned Arm", "ACTARMCD":
        "Actual Arm Code", "ACTARM": "Description of Actual Arm", "ARMNRS":
        "Reason Arm and/or Actual Arm is Null", "COUNTRY": "Country",
    }
    derived = {"RFSTDTC", "RFENDTC", "RFXSTDTC", "RFXENDTC", "RFPENDTC", "DTHFL", "DTHDTC"}
    variables = [_v(n, label, origin=o) for n, label, o in _ID]
    for name in names[3:]:
        if name in mapped:
            variables.append(mapped[name])
        else:
            kind = "num" if name == "AGE" else "char"
            origin = "Derived" if name in derived else "Assigned" if name.startswith(
                ("ARM", "ACT")) else "Collected"
            variables.append(_v(name, labels[name], kind, origin,
                                codelist="C66742" if name == "DTHFL" else None))
    dm_records: dict[str, _Record] = {}
    for record in b.records.get(mapping.form, []):
        dm_records.setdefault(record.subject, record)
    last_dates = _last_dates(b, others)
    has_exposure = bool(b.spec.domain_maps("EX"))
    rows: list[tuple[Cell, ...]] = []
    for s in data.subjects:
        site = sites.get(s.site_code)
        if site is None:
            raise ExportError(f"subject {s.subject_code}: unknown site {s.site_code!r}")
        found_record = dm_records.get(s.subject_code)
        if found_record is None:
            raise ExportError(f"participant {s.subject_code}: no submitted {mapping.form} form, "
                              "and DM needs its demographics (SEX is required)")
        values = {n: b.value(mapping, var, found_record) for n, var in by_name.items()}
        found = disposition.get(s.subject_code)
        death = found[2] if found is not None and found[1] == "DEATH" else None
        death = values.get("DTHDTC", death)
        rfx_first, rfx_last = first.get(s.subject_code), last.get(s.subject_code)
        row: dict[str, Cell] = {
            "STUDYID": data.trial.code, "DOMAIN": "DM", "USUBJID": usubjid(data, s.subject_code),
            "SUBJID": s.subject_code, "RFSTDTC": rfx_first, "RFENDTC": rfx_last,
            "RFXSTDTC": rfx_first, "RFXENDTC": rfx_last, "RFICDTC": _iso(s.consented_on),
            "RFPENDTC": max((d for d in (last_dates.get(s.subject_code),
                                         death[:10] if isinstance(death, str)
                                         and FULL_DATE.match(death) else None) if d),
                            default=None),
            "DTHDTC": death,
            "DTHFL": "Y" if death else None, "SITEID": s.site_code, "COUNTRY": site.country,
            **values,
        }
        if not blinded:
            arm = arm_of(data, s)
            arm_code: str | None = arm.code if arm else None
            arm_name: str | None = arm.name if arm else None
            reason: str | None = None
            actual_code, actual_name = arm_code, arm_name
            if arm is None:
                reason = "SCREEN FAILURE" if s.status == "screen_failed" else "NOT ASSIGNED"
            elif has_exposure and rfx_first is None:
                # randomized, no day of use in EX: the actual arm is none (before: the planned
                # arm, as if treated); without an exposure mapping nothing tells, and the
                # actual arm is taken as planned
                actual_code = actual_name = None
                reason = "ASSIGNED, NOT TREATED"
            row.update(ARMCD=arm_code, ARM=arm_name, ACTARMCD=actual_code, ACTARM=actual_name,
                       ARMNRS=reason)
        rows.append(tuple(row.get(v.name) for v in variables))
    return XptDataset("DM", DOMAIN_LABELS["DM"], tuple(variables), tuple(rows))


def _last_dates(b: _Build, others: Sequence[XptDataset]) -> dict[str, str]:
    """Latest full date of any contact per participant (RFPENDTC): consent, withdrawal, and
    every --DTC of the participant's records in the other datasets (visits, disposition,
    events, exposure, findings), so that no date of the participant is later (CORE-000720;
    before: consent, withdrawal, visits and disposition only, and a day of app use or an AE
    after the last visit fell after RFPENDTC)."""
    out: dict[str, str] = {}

    def see(subject: str, day: str | None) -> None:
        if day and FULL_DATE.match(day) and day[:10] > out.get(subject, ""):
            out[subject] = day[:10]

    for s in b.data.subjects:
        see(s.subject_code, _iso(s.consented_on))
        see(s.subject_code, _iso(s.withdrawn_on))
    subject_of = {usubjid(b.data, s.subject_code): s.subject_code for s in b.data.subjects}
    for dataset in others:
        names = [v.name for v in dataset.variables]
        if "USUBJID" not in names:
            continue
        at = names.index("USUBJID")
        dated = [i for i, name in enumerate(names) if name.endswith("DTC")]
        for row in dataset.rows:
            subject = subject_of.get(str(row[at]))
            if subject is not None:
                for i in dated:
                    value = row[i]
                    see(subject, value if isinstance(value, str) else None)
    return out


# ------------------------------------------------------------------ SV


def sv_dataset(b: _Build) -> XptDataset:
    """SV: one record per held visit with its actual date."""
    data = b.data
    variables = [_v(n, label, origin=o) for n, label, o in _ID] + [
        _v("VISITNUM", "Visit Number", "num", "Assigned"), _v("VISIT", "Visit Name",
                                                             origin="Assigned"),
        _v("SVSTDTC", "Start Date/Time of Visit"), _v("SVENDTC", "End Date/Time of Visit"),
        _v("SVSTDY", "Study Day of Start of Visit", "num", "Derived")]
    rows = []
    for v in sorted(data.visit_dates, key=lambda v: (v.subject_code,
                                                     b.visit_numbers.get(v.visit_id, 0))):
        if v.visit_id not in b.visit_numbers:
            continue
        iso = v.on.isoformat()
        rows.append((data.trial.code, "SV", usubjid(data, v.subject_code),
                     b.visit_numbers[v.visit_id], b.visit_labels[v.visit_id], iso, iso,
                     study_day(iso, b.rfstdtc.get(v.subject_code))))
    return XptDataset("SV", DOMAIN_LABELS["SV"], tuple(variables), tuple(rows))


# ------------------------------------------------------------------ AE, CM (events, interventions)


def _event_dataset(b: _Build, domain: str) -> XptDataset | None:
    maps = b.spec.domain_maps(domain)
    if not maps:
        return None
    data = b.data
    mapping = maps[0]
    assert mapping.form is not None
    p = domain
    topic = "AETERM" if p == "AE" else "CMTRT"
    start, end = f"{p}STDTC", f"{p}ENDTC"
    mapped = b.variables(mapping)
    names = [v.name for v in mapped]
    coded = p == "AE"
    variables = [*_ids(p), _v(f"{p}SPID", "Sponsor-Defined Identifier", origin="Assigned",
                              source=f"{mapping.form}.@record")]
    variables += [v for v in mapped if v.name == topic]
    if coded:
        variables += [_v("AEDECOD", "Dictionary-Derived Term", origin="Assigned"),
                      _v("AEBODSYS", "Body System or Organ Class", origin="Assigned")]
    else:
        variables += [_v("CMDECOD", "Standardized Medication Name", origin="Assigned")]
    variables += [v for v in mapped if v.name not in (topic, start, end)]
    variables += [v for v in mapped if v.name in (start, end)]
    what = "Adverse Event" if coded else "Medication"
    if start in names:
        variables.append(_v(f"{p}STDY", f"Study Day of Start of {what}", "num", "Derived"))
    if end in names:
        variables.append(_v(f"{p}ENDY", f"Study Day of End of {what}", "num", "Derived"))
    by_name = {v.variable: v for v in mapping.variables}
    rows: list[tuple[tuple[object, ...], list[Cell]]] = []
    for record in b.records.get(mapping.form, []):
        values: dict[str, Cell] = {n: b.value(mapping, var, record) for n, var in by_name.items()}
        values.update(STUDYID=data.trial.code, DOMAIN=p,
                      USUBJID=usubjid(data, record.subject))
        values[f"{p}SPID"] = f"{record.visit_id}-{record.repeat}"
        if coded:
            term = data.coded_terms.get(coding_key(str(values.get("AETERM") or "")))
            values["AEDECOD"] = term.decoded if term else None
            values["AEBODSYS"] = term.body_system if term else None
        else:
            term = data.coded_medications.get(coding_key(str(values.get("CMTRT") or "")))
            values["CMDECOD"] = term.decoded if term else None
        rf = b.rfstdtc.get(record.subject)
        values[f"{p}STDY"] = study_day(values.get(start), rf)
        values[f"{p}ENDY"] = study_day(values.get(end), rf)
        key = (values.get(start) or "", values.get(topic) or "", values[f"{p}SPID"])
        rows.append((key, [values.get(v.name) for v in variables]))
    return XptDataset(p, DOMAIN_LABELS[p], tuple(variables), _sequenced(rows, 3))


# ------------------------------------------------------------------ findings


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


def findings_datasets(b: _Build) -> list[XptDataset]:
    """VS, LB, QS, OE from forms and XD from device streams, one dataset per domain."""
    data = b.data
    by_domain: dict[str, list[tuple[tuple[object, ...], list[Cell]]]] = defaultdict(list)
    has = defaultdict(set)
    for m_index, mapping in enumerate(b.spec.mappings):
        p = mapping.domain
        if p not in ("VS", "LB", "QS", "OE", "XD"):
            continue
        if mapping.category:
            has[p].add("CAT")
        if mapping.method:
            has[p].add("METHOD")
        if any(t.laterality for t in mapping.tests):
            has[p].add("LAT")
        if p == "XD":
            test = mapping.tests[0]
            for obs in data.device_values:
                if obs.stream != mapping.stream:
                    continue
                if obs.subject_code not in b.subjects:
                    raise ExportError(f"device data for unknown subject {obs.subject_code!r}")
                if test.unit and obs.unit != test.unit:
                    raise ExportError(f"participant {obs.subject_code}: stream {obs.stream} "
                                      f"value in {obs.unit!r}, the mapping says {test.unit!r}")
                at = obs.observed_at.strftime("%Y-%m-%dT%H:%M")
                text = f"{obs.value:g}"
                by_domain[p].append(((test.testcd, at), [
                    data.trial.code, p, usubjid(data, obs.subject_code), None, test.testcd,
                    test.test, mapping.category, None, None, text, test.unit, text, obs.value,
                    test.unit, None, None, None, None, at,
                    study_day(at, b.rfstdtc.get(obs.subject_code))]))
            continue
        assert mapping.form is not None
        for record in b.records.get(mapping.form, []):
            dtc: str | None = None
            if mapping.date_field is not None:
                raw = record.values.get(mapping.date_field)
                dtc = raw if isinstance(raw, str) and ISO_VALUE.match(raw) else None
            if dtc is None:
                on = b.visit_dates.get((record.subject, record.visit_id))
                dtc = _iso(on)
            for t_index, test in enumerate(mapping.tests):
                if test.field not in record.values:
                    continue  # not asked (branching) or not answered: no record
                field_def = b.field(mapping.form, test.field)
                raw = record.values[test.field]
                reason = missing_code(raw)
                result, number = (None, None) if reason else _result(field_def, raw)
                unit = test.unit if result is not None else None
                key = (f"{b.visit_numbers.get(record.visit_id, 0):04d}", dtc or "",
                       f"{m_index:03d}", f"{t_index:03d}", record.repeat)
                by_domain[p].append((key, [
                    data.trial.code, p, usubjid(data, record.subject), None, test.testcd,
                    test.test, mapping.category, mapping.method, test.laterality, result, unit,
                    result, number, unit if number is not None else None,
                    "NOT DONE" if reason else None, MISSING_CODES[reason] if reason else None,
                    b.visit_numbers.get(record.visit_id),
                    b.visit_labels.get(record.visit_id, record.visit_id), dtc,
                    study_day(dtc, b.rfstdtc.get(record.subject))]))
    datasets = []
    for p in ("VS", "LB", "QS", "OE", "XD"):
        if p not in by_domain and not b.spec.domain_maps(p):
            continue
        all_vars = [
            *_ids(p),
            _v(f"{p}TESTCD", "Short Name of Test", origin="Assigned"),
            _v(f"{p}TEST", "Name of Test", origin="Assigned"),
            _v(f"{p}CAT", "Category", origin="Assigned"),
            _v(f"{p}METHOD", "Method of Test or Examination", origin="Assigned",
               codelist="C85492"),
            _v(f"{p}LAT", "Laterality", origin="Assigned", codelist="C99073"),
            _v(f"{p}ORRES", "Result or Finding in Original Units"),
            _v(f"{p}ORRESU", "Original Units", origin="Assigned", codelist="C71620"),
            _v(f"{p}STRESC", "Result or Finding in Standard Format", origin="Derived"),
            _v(f"{p}STRESN", "Numeric Result/Finding in Standard Units", "num", "Derived"),
            _v(f"{p}STRESU", "Standard Units", origin="Assigned", codelist="C71620"),
            _v(f"{p}STAT", "Completion Status"),
            _v(f"{p}REASND", "Reason Not Done"),
            _v("VISITNUM", "Visit Number", "num", "Assigned"),
            _v("VISIT", "Visit Name", origin="Assigned"),
            _v(f"{p}DTC", "Date/Time of Collection"),
            _v(f"{p}DY", "Study Day of Visit/Collection/Exam", "num", "Derived"),
        ]
        keep = [i for i, v in enumerate(all_vars)
                if not (v.name == f"{p}CAT" and "CAT" not in has[p] and p != "QS")
                and not (v.name == f"{p}METHOD" and "METHOD" not in has[p])
                and not (v.name == f"{p}LAT" and "LAT" not in has[p])
                and not (p == "XD" and v.name in ("VISITNUM", "VISIT"))]
        rows = _sequenced(by_domain[p], 3)
        datasets.append(XptDataset(p, DOMAIN_LABELS[p], tuple(all_vars[i] for i in keep),
                                   tuple(tuple(r[i] for i in keep) for r in rows)))
    return datasets


# ------------------------------------------------------------------ TS


def ts_dataset(b: _Build) -> XptDataset:
    """TS: trial summary parameters from the protocol and the data (SSTDTC)."""
    data = b.data
    trial = data.trial
    consents = sorted(s.consented_on for s in data.subjects if s.consented_on)
    params: list[tuple[str, str, str | None]] = [
        ("TITLE", "Trial Title", trial.title),
        ("SDTIGVER", "SDTM IG Version", b.spec.sdtmig),
        ("STYPE", "Study Type", "INTERVENTIONAL"),
        ("RANDOM", "Trial is Randomized", "Y"),
        ("NARMS", "Planned Number of Arms", str(len(trial.arms)) if trial.arms else None),
        ("TBLIND", "Trial Blinding Schema",
         TBLIND.get(trial.blinding_level) if trial.blinding_level else None),
        ("REGID", "Registry Identifier", trial.registry_id),
        ("PLANSUB", "Planned Number of Subjects",
         str(trial.planned_subjects) if trial.planned_subjects else None),
        ("SSTDTC", "Study Start Date", _iso(consents[0]) if consents else None),
        ("ACTSUB", "Actual Number of Subjects",
         str(sum(1 for s in data.subjects if s.randomized_on))),
    ]
    rows = []
    for code, name, value in params:
        if value is None:
            continue
        rows.append((trial.code, "TS", 1, code, name, value))
    variables = (_v("STUDYID", "Study Identifier", origin="Assigned"),
                 _v("DOMAIN", "Domain Abbreviation", origin="Assigned"),
                 _v("TSSEQ", "Sequence Number", "num", "Derived"),
                 _v("TSPARMCD", "Trial Summary Parameter Short Name", origin="Assigned",
                    codelist="C66738"),
                 _v("TSPARM", "Trial Summary Parameter", origin="Assigned", codelist="C67152"),
                 _v("TSVAL", "Parameter Value", origin="Protocol"))
    return XptDataset("TS", DOMAIN_LABELS["TS"], variables, tuple(rows))


# ------------------------------------------------------------------ checks and entry point


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
        if dataset.name not in ("DM", "TS"):
            subject = names.index("USUBJID")
            unknown = {row[subject] for row in dataset.rows} - dm_subjects
            if unknown:
                raise ExportError(
                    f"SDTM-02: {dataset.name} subjects not in DM: {sorted(map(str, unknown))}"
                )
            seq_name = f"{dataset.name}SEQ"
            if seq_name in names:
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
    """Return TS, DM, DS, SV, AE, CM, EX and the findings datasets, checked against
    SDTM-01..05; raise ExportError when the mapping needs a value the data lack."""
    b = _Build(data)
    ex = ex_dataset(b)
    others = [ds_dataset(b), sv_dataset(b)]
    for domain in ("AE", "CM"):
        built = _event_dataset(b, domain)
        if built is not None:
            others.append(built)
    others.append(ex)
    others.extend(findings_datasets(b))
    # DM last: its RFPENDTC is the latest date of each participant in the others
    datasets = [ts_dataset(b), dm_dataset(b, others), *others]
    check_sdtm(datasets)
    return datasets
