"""ADAE (OCCDS): one record per adverse event, from SDTM AE plus ADSL.

Every AE variable is copied unchanged (Predecessor; DOMAIN dropped), so severity, causality,
seriousness and outcome are exactly what was collected: a null AESEV stays a null ASEV, never a
default. Analysis dates are numeric (ASTDT/AENDT) only when the collected date is complete; a
partial date stays null (no imputation). TRTEMFL is Y when the event started on or after
TRTSDT; with a partial start date it is Y unless the known part of the date is already before
TRTSDT (a month or year entirely before treatment), so an event is never silently excluded.
"""

from __future__ import annotations

import datetime
import re

from analysis.adam.adsl import adsl_lookup
from analysis.adam.common import AdamError, date_cell, study_day, var
from analysis.exports.metadata import date_of_sas
from analysis.exports.xport import Cell, XptDataset, XptVariable

FULL = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
PARTIAL = re.compile(r"^(\d{4})(?:-(\d{2}))?$")


def _full_date(text: Cell) -> datetime.date | None:
    match = FULL.match(str(text)) if isinstance(text, str) else None
    return datetime.date.fromisoformat(match.group(0)) if match else None


def treatment_emergent(start_dtc: Cell, treatment_start: datetime.date | None) -> str | None:
    """Return TRTEMFL for an AE start (ISO 8601 text, possibly partial) and TRTSDT."""
    if treatment_start is None:
        return None
    full = _full_date(start_dtc)
    if full is not None:
        return "Y" if full >= treatment_start else None
    match = PARTIAL.match(str(start_dtc)) if isinstance(start_dtc, str) else None
    if match is None:
        return "Y"  # start unknown: cannot be shown to precede treatment
    year, month = int(match.group(1)), match.group(2)
    if year != treatment_start.year:
        return "Y" if year > treatment_start.year else None
    if month is None:
        return "Y"
    return "Y" if int(month) >= treatment_start.month else None


def build_adae(ae: XptDataset, adsl: XptDataset, *, blinded: bool) -> XptDataset:
    """Return ADAE from SDTM ``ae`` and ``adsl``; raise AdamError for an AE subject not in
    ADSL or an AE dataset without USUBJID/AESTDTC."""
    names = [v.name for v in ae.variables]
    for required in ("STUDYID", "USUBJID", "AESTDTC"):
        if required not in names:
            raise AdamError(f"AE has no {required}: ADAE cannot be derived")
    subjects = adsl_lookup(adsl)
    kept = [i for i, n in enumerate(names) if n != "DOMAIN"]
    variables: list[XptVariable] = [
        XptVariable(ae.variables[i].name, ae.variables[i].label, ae.variables[i].type,
                    "Predecessor")
        for i in kept
    ]
    if not blinded:
        variables.append(var("TRTA", "Actual Treatment"))
    variables += [
        var("ASTDT", "Analysis Start Date", "num"),
        var("ASTDY", "Analysis Start Relative Day", "num"),
        var("AENDT", "Analysis End Date", "num"),
        var("AENDY", "Analysis End Relative Day", "num"),
    ]
    if "AESEV" in names:
        variables.append(var("ASEV", "Analysis Severity/Intensity"))
    if "AEREL" in names:
        variables.append(var("AREL", "Analysis Causality"))
    variables.append(var("TRTEMFL", "Treatment Emergent Analysis Flag"))
    rows: list[tuple[Cell, ...]] = []
    for row in ae.rows:
        values = dict(zip(names, row, strict=True))
        subject = subjects.get(str(values["USUBJID"]))
        if subject is None:
            raise AdamError(f"AE subject {values['USUBJID']} is not in ADSL")
        trtsdt = subject.get("TRTSDT")
        start = date_of_sas(float(trtsdt)) if isinstance(trtsdt, int | float) else None
        began = _full_date(values["AESTDTC"])
        ended = _full_date(values.get("AEENDTC"))
        out: list[Cell] = [row[i] for i in kept]
        if not blinded:
            out.append(subject.get("TRT01A"))
        out += [date_cell(began), study_day(began, start), date_cell(ended),
                study_day(ended, start)]
        if "AESEV" in names:
            out.append(values["AESEV"])
        if "AEREL" in names:
            out.append(values["AEREL"])
        out.append(treatment_emergent(values["AESTDTC"], start))
        rows.append(tuple(out))
    return XptDataset("ADAE", "Adverse Events Analysis Dataset", tuple(variables), tuple(rows))


ADAE_METHODS = {
    "TRTA": "TRT01A from ADSL.",
    "ASTDT": "AESTDTC as a numeric date when it is a complete date; null when partial (no "
    "imputation).",
    "ASTDY": "ASTDT - TRTSDT + 1 when on or after TRTSDT, else ASTDT - TRTSDT.",
    "AENDT": "AEENDTC as a numeric date when it is a complete date; null when partial.",
    "AENDY": "AENDT - TRTSDT + 1 when on or after TRTSDT, else AENDT - TRTSDT.",
    "ASEV": "AESEV as collected.",
    "AREL": "AEREL as collected.",
    "TRTEMFL": "Y when the AE started on or after TRTSDT; for a partial AESTDTC, Y unless its "
    "known year (or year and month) lies entirely before TRTSDT; null otherwise or when the "
    "subject has no TRTSDT.",
}
