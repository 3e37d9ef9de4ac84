"""Small SDTM-shaped datasets and simulated ADaM datasets for the CDISC package tests."""

from __future__ import annotations

from functools import cache

from analysis.adam import build_adam
from analysis.datasets import TrialData
from analysis.exports.xport import XptDataset, XptVariable
from analysis.simulation import simulate_trial_data
from protocols.loader import library_protocol_paths, load_protocol

STUDY = "T2D-COACH-01"


def _v(name: str, label: str, kind: str = "char", origin: str = "Collected") -> XptVariable:
    return XptVariable(name, label, "num" if kind == "num" else "char", origin)  # type: ignore[arg-type]


@cache
def trial_data() -> TrialData:
    return simulate_trial_data(load_protocol(library_protocol_paths()["type2_diabetes"]), 40,
                               seed=5)


def subjects() -> list[str]:
    return [f"{STUDY}-{s.subject}" for s in trial_data().subjects]


def sdtm() -> list[XptDataset]:
    """DM, AE (one Chinese verbatim term, a partial date, a null severity), VS and SUPPAE."""
    ids = subjects()
    dm = XptDataset("DM", "Demographics", (
        _v("STUDYID", "Study Identifier"), _v("DOMAIN", "Domain Abbreviation", origin="Assigned"),
        _v("USUBJID", "Unique Subject Identifier", origin="Derived"),
        _v("SUBJID", "Subject Identifier for the Study"), _v("SITEID", "Study Site Identifier"),
        _v("SEX", "Sex"), _v("AGE", "Age", "num"), _v("AGEU", "Age Units", origin="Assigned"),
        _v("COUNTRY", "Country"), _v("RFSTDTC", "Subject Reference Start Date/Time",
                                      origin="Derived"),
    ), tuple(
        (STUDY, "DM", u, u.split("-", 3)[-1], "PUMCH", "F" if i % 2 else "M", 50 + i, "YEARS",
         "CHN", "2025-01-06" if i % 9 else None)
        for i, u in enumerate(ids)
    ))
    ae = XptDataset("AE", "Adverse Events", (
        _v("STUDYID", "Study Identifier"), _v("DOMAIN", "Domain Abbreviation", origin="Assigned"),
        _v("USUBJID", "Unique Subject Identifier", origin="Derived"),
        _v("AESEQ", "Sequence Number", "num", "Derived"),
        _v("AETERM", "Reported Term for the Adverse Event"),
        _v("AEDECOD", "Dictionary-Derived Term", origin="Assigned"),
        _v("AESEV", "Severity/Intensity"), _v("AESER", "Serious Event"),
        _v("AESTDTC", "Start Date/Time of Adverse Event"),
        _v("AEENDTC", "End Date/Time of Adverse Event"),
    ), (
        (STUDY, "AE", ids[1], 1, "头晕", "DIZZINESS", "MODERATE", "N", "2025-02-01", "2025-02-03"),
        (STUDY, "AE", ids[1], 2, "Headache", "HEADACHE", None, "N", "2025-03", None),
        (STUDY, "AE", ids[2], 1, "Fall", "FALL", "SEVERE", "Y", "2025-02-10T08:30", None),
    ))
    vs = XptDataset("VS", "Vital Signs", (
        _v("STUDYID", "Study Identifier"), _v("DOMAIN", "Domain Abbreviation", origin="Assigned"),
        _v("USUBJID", "Unique Subject Identifier", origin="Derived"),
        _v("VSSEQ", "Sequence Number", "num", "Derived"),
        _v("VSTESTCD", "Vital Signs Test Short Name", origin="Assigned"),
        _v("VSTEST", "Vital Signs Test Name", origin="Assigned"),
        _v("VSORRES", "Result or Finding in Original Units"),
        _v("VSORRESU", "Original Units"),
        _v("VSSTRESN", "Numeric Result/Finding in Standard Units", "num", "Derived"),
        _v("VISITNUM", "Visit Number", "num", "Assigned"),
        _v("VSDTC", "Date/Time of Measurements"),
    ), tuple(
        row for i, u in enumerate(ids[:5]) for row in (
            (STUDY, "VS", u, 1, "SYSBP", "Systolic Blood Pressure", str(120 + i), "mmHg",
             120.0 + i, 1, "2025-01-06"),
            (STUDY, "VS", u, 2, "WEIGHT", "Weight", f"{70.5 + i:.1f}", "kg", 70.5 + i, 1,
             "2025-01-06"),
        )
    ))
    supp = XptDataset("SUPPAE", "Supplemental Qualifiers for AE", (
        _v("STUDYID", "Study Identifier"), _v("RDOMAIN", "Related Domain Abbreviation",
                                              origin="Assigned"),
        _v("USUBJID", "Unique Subject Identifier", origin="Derived"),
        _v("IDVAR", "Identifying Variable", origin="Assigned"),
        _v("IDVARVAL", "Identifying Variable Value", origin="Assigned"),
        _v("QNAM", "Qualifier Variable Name", origin="Assigned"),
        _v("QLABEL", "Qualifier Variable Label", origin="Assigned"),
        _v("QVAL", "Data Value"), _v("QORIG", "Origin", origin="Assigned"),
    ), ((STUDY, "AE", ids[1], "AESEQ", "1", "AEAPPVER", "App Version at Onset", "2.3.1",
         "Collected"),))
    return [dm, ae, vs, supp]


@cache
def adam_unblinded() -> tuple[XptDataset, ...]:
    return tuple(build_adam(trial_data(), blinded=False, sdtm=sdtm(), studyid=STUDY))
