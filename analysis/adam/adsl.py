"""ADSL: one record per screened subject, from the same `TrialData` the SAP analyses.

Populations come from `analysis.datasets.in_population` (the SAP's own definition), intercurrent
events from `analysis.datasets.subject_events` (the protocol's ``intercurrent_events``), strata
from the values the randomization used. Treatment variables (ARM, TRT01P/TRT01A and their
numeric codes) exist only in an unblinded build. Demographics are copied from SDTM DM
(Predecessor) when DM is given; nothing is filled in when a value is missing.
"""

from __future__ import annotations

import datetime

from analysis.adam.common import (
    AdamError,
    arm_names,
    date_cell,
    study_day,
    usubjid,
    var,
    yn,
)
from analysis.datasets import (
    SubjectData,
    TrialData,
    in_population,
    subject_events,
    used_the_dtx,
)
from analysis.exports.xport import Cell, XptDataset, XptVariable

DM_COPIED = (
    ("AGE", "Age", "num"),
    ("AGEU", "Age Units", "char"),
    ("SEX", "Sex", "char"),
    ("RACE", "Race", "char"),
    ("ETHNIC", "Ethnicity", "char"),
    ("COUNTRY", "Country", "char"),
)
POPULATIONS = (
    ("RANDFL", "Randomized Population Flag", None),
    ("ITTFL", "Intent-To-Treat Population Flag", "itt"),
    ("FASFL", "Full Analysis Set Population Flag", "fas"),
    ("SAFFL", "Safety Population Flag", "safety"),
    ("PPROTFL", "Per-Protocol Population Flag", "per_protocol"),
)
END_STATUS = {"completed": "COMPLETED", "withdrawn": "DISCONTINUED"}


def treatment_start(subject: SubjectData) -> datetime.date | None:
    """TRTSDT: the date treatment started - the analysis data's ``randomized_on``, which the
    platform reads from the actual date of the day-0 visit (allocation date as fallback)."""
    return subject.randomized_on if subject.arm is not None else None


def end_of_study(subject: SubjectData) -> tuple[str | None, datetime.date | None]:
    """EOSSTT and EOSDT: discontinued on the withdrawal date, completed on the last visit
    date, ongoing (no date) otherwise; None for subjects never randomized."""
    if subject.arm is None:
        return None, None
    status = END_STATUS.get(subject.status, "ONGOING")
    if subject.withdrawn_on is not None:
        return "DISCONTINUED", subject.withdrawn_on
    if status == "COMPLETED":
        if not subject.visit_dates:
            raise AdamError(f"subject {subject.subject}: completed without any visit date")
        return status, max(subject.visit_dates.values())
    if status == "DISCONTINUED":
        raise AdamError(f"subject {subject.subject}: withdrawn without a withdrawal date")
    return status, None


def _dm_index(
    dm: XptDataset | None,
) -> tuple[list[tuple[str, str, str]], dict[str, dict[str, Cell]]]:
    if dm is None:
        return [], {}
    names = [v.name for v in dm.variables]
    if "USUBJID" not in names:
        raise AdamError("DM has no USUBJID")
    copied = [c for c in DM_COPIED if c[0] in names]
    key = names.index("USUBJID")
    index: dict[str, dict[str, Cell]] = {}
    for row in dm.rows:
        subject = str(row[key])
        if subject in index:
            raise AdamError(f"DM has more than one record for {subject}")
        index[subject] = {name: row[names.index(name)] for name, _, _ in copied}
    return copied, index


def build_adsl(
    data: TrialData, *, studyid: str, blinded: bool, dm: XptDataset | None = None
) -> XptDataset:
    """Return ADSL for every subject of ``data`` (screen failures included, flags ``N``).

    Raises AdamError when DM lacks a subject, a randomized subject lacks a stratification
    factor's value, or a status contradicts the dates (e.g. withdrawn without a date).
    """
    protocol = data.protocol
    arms = arm_names(protocol)
    copied, demographics = _dm_index(dm)
    factors = [f.id for f in protocol.randomization.factors]
    if protocol.randomization.stratify_by_site:
        factors.append("site")
    variables: list[XptVariable] = [
        var("STUDYID", "Study Identifier", origin="Predecessor"),
        var("USUBJID", "Unique Subject Identifier", origin="Predecessor"),
        var("SUBJID", "Subject Identifier for the Study", origin="Predecessor"),
        var("SITEID", "Study Site Identifier", origin="Predecessor"),
    ]
    variables += [var(name, label, kind, "Predecessor") for name, label, kind in copied]
    if not blinded:
        variables += [
            var("ARM", "Description of Planned Arm", origin="Predecessor"),
            var("TRT01P", "Planned Treatment for Period 01"),
            var("TRT01PN", "Planned Treatment for Period 01 (N)", "num"),
            var("TRT01A", "Actual Treatment for Period 01"),
            var("TRT01AN", "Actual Treatment for Period 01 (N)", "num"),
        ]
    variables += [var(name, label) for name, label, _ in POPULATIONS]
    variables += [
        var("TRTSDT", "Date of First Exposure to Treatment", "num"),
        var("TRTEDT", "Date of Last Exposure to Treatment", "num"),
        var("EOSSTT", "End of Study Status"),
        var("EOSDT", "End of Study Date", "num"),
    ]
    for n, _factor in enumerate(factors, start=1):
        variables.append(var(f"STRAT{n}R", f"Randomization Stratum {n} (as randomized)"))
    for n, _event in enumerate(protocol.intercurrent_events, start=1):
        variables += [
            var(f"AIE{n}FL", f"Intercurrent Event {n} Flag"),
            var(f"AIE{n}DT", f"Intercurrent Event {n} Date", "num"),
            var(f"AIE{n}DY", f"Intercurrent Event {n} Study Day", "num"),
        ]
    rows: list[tuple[Cell, ...]] = []
    for subject in data.subjects:
        subject_id = usubjid(studyid, subject.subject)
        randomized = subject.arm is not None
        row: list[Cell] = [studyid, subject_id, subject.subject, subject.site]
        if copied:
            if subject_id not in demographics:
                raise AdamError(f"subject {subject_id} is not in DM")
            row += [demographics[subject_id][name] for name, _, _ in copied]
        if not blinded:
            if randomized and subject.arm not in arms:
                raise AdamError(f"subject {subject.subject}: unknown arm {subject.arm!r}")
            name, code = arms[subject.arm] if subject.arm is not None else (None, None)
            # the actual treatment: none for a participant with no recorded use of the DTx (as
            # DM's ACTARM and the report's "received"; before, the planned arm); taken as
            # planned when the protocol records no use
            actual = (None, None) if used_the_dtx(data, subject) is False else (name, code)
            row += [name, name, code, actual[0], actual[1]]
        row += [
            yn(randomized) if population is None else yn(in_population(data, subject, population))
            for _, _, population in POPULATIONS
        ]
        start = treatment_start(subject)
        status, ended_on = end_of_study(subject)
        row += [date_cell(start), date_cell(ended_on), status, date_cell(ended_on)]
        for factor in factors:
            level = subject.strata.get(factor) if factor != "site" else (
                subject.strata.get("site") or subject.site)
            if randomized and not level:
                raise AdamError(
                    f"subject {subject.subject}: no value of stratification factor {factor!r}"
                )
            row.append(level if randomized else None)
        events = subject_events(data, subject) if randomized else {}
        for event in protocol.intercurrent_events:
            found = events.get(event.id)
            on = found.on if found else None
            row += [yn(found is not None) if randomized else None, date_cell(on),
                    study_day(on, start)]
        rows.append(tuple(row))
    return XptDataset("ADSL", "Subject-Level Analysis Dataset", tuple(variables), tuple(rows))


def adsl_methods(data: TrialData) -> dict[str, str]:
    """Return the Define method text of every derived ADSL variable."""
    protocol = data.protocol
    factors = [f"{f.id} ({f.label.en})" for f in protocol.randomization.factors]
    if protocol.randomization.stratify_by_site:
        factors.append("site")
    methods = {
        "TRT01P": "Name of the arm the participant was randomized to (allocation record).",
        "TRT01PN": "Position of the randomized arm in the protocol's list of arms (1, 2, ...).",
        "TRT01A": "TRT01P for a participant with a day of recorded use of the DTx (a DTx-use "
        "stream, from treatment start to the data cut-off), null without one (as DM's ACTARM); "
        "TRT01P when the protocol records no use.",
        "TRT01AN": "Position of TRT01A in the protocol's list of arms.",
        "RANDFL": "Y if the participant was randomized (has an allocation), else N.",
        "ITTFL": "Y if randomized (analysis.datasets.in_population 'itt'), else N.",
        "FASFL": "Y if randomized (analysis.datasets.in_population 'fas'), else N.",
        "SAFFL": "Y if randomized (analysis.datasets.in_population 'safety'), else N.",
        "PPROTFL": "Y if randomized, not non-adherent by the protocol's per-protocol adherence "
        "rule, without recorded deviations and not withdrawn "
        "(analysis.datasets.in_population 'per_protocol'), else N.",
        "TRTSDT": "Actual date of the day-0 visit anchored at randomization (treatment start); "
        "the allocation date when that visit has no actual date.",
        "TRTEDT": "Withdrawal date for discontinued participants; last visit date for "
        "completers; null while the participant is ongoing.",
        "EOSSTT": "DISCONTINUED when withdrawn, COMPLETED when the participant's status is "
        "completed, else ONGOING; null when never randomized.",
        "EOSDT": "Same date as TRTEDT.",
    }
    for n, factor in enumerate(factors, start=1):
        methods[f"STRAT{n}R"] = (
            f"Level of stratification factor {factor} used by the randomization service."
        )
    for n, event in enumerate(protocol.intercurrent_events, start=1):
        text = f"intercurrent event '{event.id}' ({event.description.en}), detected by " \
               f"{event.detected_by}"
        methods[f"AIE{n}FL"] = f"Y if the participant had {text} after randomization and " \
            "on or before the data cut-off, else N; null when never randomized."
        methods[f"AIE{n}DT"] = f"Date of the first occurrence of {text}."
        methods[f"AIE{n}DY"] = f"Study day of AIE{n}DT relative to TRTSDT (day 1 = TRTSDT)."
    return methods


def adsl_lookup(adsl: XptDataset) -> dict[str, dict[str, Cell]]:
    """Return USUBJID -> {variable: value} of ADSL."""
    names = [v.name for v in adsl.variables]
    return {str(row[1]): dict(zip(names, row, strict=True)) for row in adsl.rows}

