"""CDISC metadata the protocol's ``cdisc`` mapping is checked against: the SDTM variables a
mapping may fill per domain (SDTMIG 3.4, with label and type), and the controlled-terminology
codelists it may use (NCI C-code, submission values, whether the list is extensible).

Only the small subset a DTx trial needs is listed; a variable or codelist outside it is refused
at protocol load rather than exported unchecked. Codelist contents follow the CDISC SDTM CT
package named in the protocol (``cdisc.ct_version``); extensible lists accept sponsor values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Codelist:
    """A CDISC codelist: C-code, short name, submission values, extensibility."""

    code: str
    name: str
    values: tuple[str, ...]
    extensible: bool


CODELISTS: dict[str, Codelist] = {
    c.code: c
    for c in (
        Codelist("C66731", "SEX", ("F", "M", "U", "INTERSEX"), False),  # C45908, CT 2022-03+
        Codelist("C66742", "NY", ("N", "Y", "U", "NA"), False),
        Codelist("C66769", "AESEV", ("MILD", "MODERATE", "SEVERE"), False),
        Codelist("C66768", "OUT", (
            "FATAL", "NOT RECOVERED/NOT RESOLVED", "RECOVERED/RESOLVED",
            "RECOVERED/RESOLVED WITH SEQUELAE", "RECOVERING/RESOLVING", "UNKNOWN"), False),
        Codelist("C66767", "ACN", (
            "DOSE INCREASED", "DOSE NOT CHANGED", "DOSE RATE REDUCED", "DOSE REDUCED",
            "DRUG INTERRUPTED", "DRUG WITHDRAWN", "NOT APPLICABLE", "UNKNOWN"), False),
        Codelist("C66781", "AGEU", ("DAYS", "HOURS", "MONTHS", "WEEKS", "YEARS"), False),
        Codelist("C74457", "RACE", (
            "AMERICAN INDIAN OR ALASKA NATIVE", "ASIAN", "BLACK OR AFRICAN AMERICAN",
            "NATIVE HAWAIIAN OR OTHER PACIFIC ISLANDER", "WHITE", "MULTIPLE", "OTHER",
            "NOT REPORTED", "UNKNOWN"), False),
        Codelist("C66790", "ETHNIC", (
            "HISPANIC OR LATINO", "NOT HISPANIC OR LATINO", "NOT REPORTED", "UNKNOWN"), False),
        Codelist("C66727", "NCOMPLT", (
            "ADVERSE EVENT", "COMPLETED", "DEATH", "LOST TO FOLLOW-UP", "NON-COMPLIANCE WITH "
            "STUDY DEVICE", "OTHER", "PHYSICIAN DECISION", "PROTOCOL DEVIATION",
            "SCREEN FAILURE", "STUDY TERMINATED BY SPONSOR", "TECHNICAL PROBLEMS",
            "WITHDRAWAL BY PARENT/GUARDIAN", "WITHDRAWAL BY SUBJECT", "WITHDRAWAL OF ASSENT"),
            True),
        Codelist("C71113", "FREQ", ("QD", "BID", "TID", "QID", "QW", "PRN", "ONCE"), True),
        Codelist("C71620", "UNIT", (
            "min", "h", "%", "mmol/L", "mmol/mol", "mm", "D", "DIOPTER", "kg", "cm", "kg/m2",
            "mmHg", "beats/min", "years", "h/day", "mL/min/1.73m2"), True),
        Codelist("C66770", "VSRESU", ("kg", "cm", "kg/m2", "mmHg", "beats/min"), True),
    )
}

VarType = Literal["char", "num"]


@dataclass(frozen=True)
class SdtmVariable:
    """A mappable SDTM variable: label (≤ 40), type, and what feeds it."""

    label: str
    type: VarType = "char"
    kind: Literal["text", "date", "coded", "number"] = "text"


_VARIABLES: dict[str, dict[str, SdtmVariable]] = {
    "DM": {
        "SEX": SdtmVariable("Sex", kind="coded"),
        "AGE": SdtmVariable("Age", "num", "number"),
        "AGEU": SdtmVariable("Age Units", kind="coded"),
        "BRTHDTC": SdtmVariable("Date/Time of Birth", kind="date"),
        "RACE": SdtmVariable("Race", kind="coded"),
        "ETHNIC": SdtmVariable("Ethnicity", kind="coded"),
        "DTHDTC": SdtmVariable("Date/Time of Death", kind="date"),
    },
    "AE": {
        "AETERM": SdtmVariable("Reported Term for the Adverse Event"),
        "AESTDTC": SdtmVariable("Start Date/Time of Adverse Event", kind="date"),
        "AEENDTC": SdtmVariable("End Date/Time of Adverse Event", kind="date"),
        "AESEV": SdtmVariable("Severity/Intensity", kind="coded"),
        "AESER": SdtmVariable("Serious Event", kind="coded"),
        "AEREL": SdtmVariable("Causality", kind="coded"),
        "AEOUT": SdtmVariable("Outcome of Adverse Event", kind="coded"),
        "AEACN": SdtmVariable("Action Taken with Study Treatment", kind="coded"),
        "AEACNOTH": SdtmVariable("Other Action Taken"),
    },
    "DS": {
        "DSDECOD": SdtmVariable("Standardized Disposition Term", kind="coded"),
        "DSTERM": SdtmVariable("Reported Term for the Disposition Event"),
        "DSSTDTC": SdtmVariable("Start Date/Time of Disposition Event", kind="date"),
    },
    "CM": {
        "CMTRT": SdtmVariable("Reported Name of Drug, Med, or Therapy"),
        "CMINDC": SdtmVariable("Indication"),
        "CMCAT": SdtmVariable("Category for Medication", kind="coded"),
        "CMSTDTC": SdtmVariable("Start Date/Time of Medication", kind="date"),
        "CMENDTC": SdtmVariable("End Date/Time of Medication", kind="date"),
    },
    "EX": {
        "EXDOSU": SdtmVariable("Dose Units", kind="coded"),
        "EXDOSFRQ": SdtmVariable("Dosing Frequency per Interval", kind="coded"),
    },
}

#: Variables every mapping into the domain must fill (beyond identifiers the builder derives).
REQUIRED_VARIABLES: dict[str, tuple[str, ...]] = {
    "DM": ("SEX",),
    "AE": ("AETERM", "AESTDTC"),
    "DS": ("DSDECOD", "DSSTDTC"),
    "CM": ("CMTRT",),
    "EX": ("EXDOSU",),
}


def mappable_variables(domain: str) -> dict[str, SdtmVariable]:
    """Return the variables a mapping into ``domain`` may fill (none for findings domains)."""
    return _VARIABLES.get(domain, {})

#: Coded variables without a CDISC codelist: the sponsor's terms are declared in the mapping.
SPONSOR_TERMS = frozenset({"AEREL", "CMCAT"})
