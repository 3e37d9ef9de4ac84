"""Column and dataset metadata shared by the Dataset-JSON writer, Define-XML and conformance.

Everything here is read from an ``XptDataset`` (the dataset interface SDTM and ADaM share) or
from the data in it, so the three outputs cannot disagree: a column's type, length and
significant digits are computed once, here, from the values actually present (FDA asks for
lengths equal to the longest value). Conventions:

* ADaM numeric dates follow ADaMIG naming: a numeric variable ending in ``DTM`` is a SAS
  datetime (seconds since 1960-01-01), ``DT`` a SAS date (days since 1960-01-01), ``TM`` a
  SAS time (seconds since midnight). They travel as ISO 8601 text in Dataset-JSON
  (``targetDataType: integer``) and as ``integer`` with a display format in Define-XML.
* A character variable ending in ``DTC`` holds ISO 8601 text; its type is ``date`` or
  ``datetime`` only when every value is complete, otherwise partial (text) - SDTM never imputes.
* Item OIDs are ``IT.<dataset>.<variable>``, item group OIDs ``IG.<dataset>``: the Define and
  the Dataset-JSON files name the same objects.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from analysis.exports.xport import Cell, XptDataset, XptVariable, sas_format

SAS_EPOCH = datetime.date(1960, 1, 1)
SAS_EPOCH_DATETIME = datetime.datetime(1960, 1, 1)
FULL_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FULL_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")
ISO_8601 = re.compile(
    r"^(\d{4}|-)(-(\d{2}|-)(-(\d{2}|-)(T(\d{2}|-)(:(\d{2}|-)(:\d{2}(\.\d+)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)

JsonType = Literal["string", "integer", "double", "date", "datetime", "time"]
DefineType = Literal[
    "text", "integer", "float", "date", "datetime", "time", "partialDate", "partialDatetime"
]
Standard = Literal["SDTM", "ADaM"]


class MetadataError(ValueError):
    """A dataset whose metadata cannot be described (unknown origin, bad date cell...)."""


def sas_date(day: datetime.date) -> int:
    """Return ``day`` as a SAS date: days since 1960-01-01."""
    return (day - SAS_EPOCH).days


def date_of_sas(days: float) -> datetime.date:
    """Return the calendar date of a SAS date value."""
    if not float(days).is_integer():
        raise MetadataError(f"SAS date {days!r} is not a whole number of days")
    return SAS_EPOCH + datetime.timedelta(days=int(days))


@dataclass(frozen=True)
class ColumnType:
    """How one column is typed in Dataset-JSON and Define-XML (all from the data)."""

    json_type: JsonType
    define_type: DefineType
    target_type: Literal["integer"] | None = None  # numeric SAS date/time carried as ISO text
    display_format: str | None = None
    length: int | None = None  # text: longest value; integer: digits; float: total digits
    significant_digits: int | None = None  # float only: decimals present


def _decimals(value: float) -> int:
    text = repr(round(float(value), 10))
    if "e" in text or "E" in text:
        return 10
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


_DATE_KINDS: dict[str, JsonType] = {"DATETIME": "datetime", "DATE": "date", "TIME": "time"}


def column_type(dataset: XptDataset, index: int) -> ColumnType:
    """Return the column's Dataset-JSON / Define-XML typing, computed from its values."""
    variable = dataset.variables[index]
    values = [row[index] for row in dataset.rows if row[index] is not None]
    name = variable.name
    if variable.type == "num":
        shown = sas_format(variable)
        if shown is not None:
            form, width = shown
            return ColumnType(_DATE_KINDS[form], "integer", "integer", f"{form}{width}.", None)
        numbers = [float(v) for v in values]  # type: ignore[arg-type]
        if numbers and all(n.is_integer() for n in numbers):
            digits = max(len(str(int(abs(n)))) for n in numbers)
            return ColumnType("integer", "integer", length=digits)
        if not numbers:
            return ColumnType("double", "float", length=8, significant_digits=0)
        decimals = max(_decimals(n) for n in numbers)
        whole = max(len(str(int(abs(n)))) for n in numbers)
        return ColumnType("double", "float", length=whole + decimals,
                          significant_digits=decimals)
    length = dataset.char_length(index)
    if name.endswith("DTC") and values:
        texts = [str(v) for v in values]
        if all(FULL_DATE.match(t) for t in texts):
            return ColumnType("date", "date")
        if all(FULL_DATETIME.match(t) for t in texts):
            return ColumnType("datetime", "datetime")
        partial: DefineType = "partialDatetime" if any("T" in t for t in texts) else "partialDate"
        return ColumnType("string", partial, length=length)
    return ColumnType("string", "text", length=length)


def json_value(variable: XptVariable, kind: ColumnType, cell: Cell) -> str | int | float | None:
    """Return one cell as Dataset-JSON carries it (numeric dates become ISO 8601 text)."""
    if cell is None:
        return None
    if variable.type == "char":
        return str(cell)
    number = float(cell)
    if not math.isfinite(number):
        raise MetadataError(f"{variable.name}: {cell!r} is not a finite number")
    if kind.json_type == "date":
        return date_of_sas(number).isoformat()
    if kind.json_type == "datetime":
        return (SAS_EPOCH_DATETIME + datetime.timedelta(seconds=number)).isoformat()
    if kind.json_type == "time":
        seconds = int(number)
        return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    if kind.json_type == "integer":
        return int(number)
    return number


def item_group_oid(dataset: XptDataset) -> str:
    """Return the Define ItemGroupDef OID of a dataset (``IG.DM``)."""
    return f"IG.{dataset.name}"


def item_oid(dataset: XptDataset, variable: XptVariable) -> str:
    """Return the Define ItemDef OID of a column (``IT.DM.SEX``)."""
    return f"IT.{dataset.name}.{variable.name}"


def standard_of(dataset: XptDataset) -> Standard:
    """ADaM datasets are the ``AD*`` ones; everything else is SDTM."""
    return "ADaM" if dataset.name.startswith("AD") else "SDTM"


SUBJECT_LEVEL = frozenset({"DM", "ADSL"})
REFERENCE_DATA = frozenset({"TS", "TA", "TE", "TV", "TI"})
SDTM_CLASSES = {
    "DM": "SPECIAL PURPOSE", "SV": "SPECIAL PURPOSE", "SE": "SPECIAL PURPOSE",
    "CO": "SPECIAL PURPOSE",
    "AE": "EVENTS", "DS": "EVENTS", "MH": "EVENTS", "DV": "EVENTS", "CE": "EVENTS",
    "EX": "INTERVENTIONS", "EC": "INTERVENTIONS", "CM": "INTERVENTIONS",
    "TS": "TRIAL DESIGN", "TA": "TRIAL DESIGN", "TE": "TRIAL DESIGN", "TV": "TRIAL DESIGN",
    "TI": "TRIAL DESIGN", "RELREC": "RELATIONSHIP",
}


def dataset_class(dataset: XptDataset) -> tuple[str, str | None]:
    """Return the Define ``def:Class`` name and ``def:SubClass`` (or None) of a dataset."""
    name = dataset.name
    names = {v.name for v in dataset.variables}
    if standard_of(dataset) == "ADaM":
        if name == "ADSL":
            return "SUBJECT LEVEL ANALYSIS DATASET", None
        if name == "ADAE":
            return "OCCURRENCE DATA STRUCTURE", "ADVERSE EVENT"
        if "CNSR" in names:
            return "BASIC DATA STRUCTURE", "TIME-TO-EVENT"
        if "PARAMCD" in names:
            return "BASIC DATA STRUCTURE", None
        return "ADAM OTHER", None
    if name.startswith("SUPP"):
        return "RELATIONSHIP", None
    if name in SDTM_CLASSES:
        return SDTM_CLASSES[name], None
    if f"{name}TESTCD" in names or f"{name[:2]}TESTCD" in names:
        return "FINDINGS", None
    if f"{name}TRT" in names:
        return "INTERVENTIONS", None
    if f"{name}TERM" in names:
        return "EVENTS", None
    raise MetadataError(f"{name}: cannot tell the dataset's SDTM class from its variables")


def dataset_keys(dataset: XptDataset) -> tuple[str, ...]:
    """Return the natural key variables of a dataset, in key order (present ones only)."""
    names = [v.name for v in dataset.variables]
    name = dataset.name
    if name in SUBJECT_LEVEL:
        wanted: Sequence[str] = ("STUDYID", "USUBJID")
    elif name == "TS":
        wanted = ("STUDYID", "TSPARMCD", "TSSEQ")
    elif name.startswith("SUPP"):
        wanted = ("STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM")
    elif name == "SV":
        wanted = ("STUDYID", "USUBJID", "VISITNUM")
    elif "CNSR" in names:
        wanted = ("STUDYID", "USUBJID", "PARAMCD")
    elif "PARAMCD" in names:
        wanted = ("STUDYID", "USUBJID", "PARAMCD", "AVISITN", "DTYPE")
    else:
        wanted = ("STUDYID", "USUBJID", f"{name[:2]}SEQ")
    return tuple(n for n in wanted if n in names)


def dataset_structure(dataset: XptDataset) -> str:
    """Return the Define ``def:Structure`` text (one record per ...)."""
    name = dataset.name
    if name in SUBJECT_LEVEL:
        return "One record per subject"
    if name == "TS":
        return "One record per trial summary parameter value"
    if name.startswith("SUPP"):
        return "One record per supplemental qualifier per related parent domain record"
    if name == "SV":
        return "One record per actual or planned visit per subject"
    cls, sub = dataset_class(dataset)
    if sub == "TIME-TO-EVENT":
        return "One record per subject per parameter"
    if cls == "BASIC DATA STRUCTURE":
        return "One or more records per subject per parameter per analysis visit"
    if cls == "OCCURRENCE DATA STRUCTURE":
        return "One record per adverse event per subject"
    if cls == "FINDINGS":
        return "One record per test per visit per subject"
    if cls == "INTERVENTIONS":
        return "One record per constant-dosing interval per subject"
    return "One record per event per subject"


# --- Controlled terminology -------------------------------------------------------------
# A subset of CDISC CT (SDTM and ADaM packages 2025-09-26) for the codelists the platform's
# datasets use. Codelist C-codes are verified (cdisc-package.md §2.8); term C-codes are given
# only where known, else the term is listed without one (Define then has no Alias for it).
CT_VERSION = "2025-09-26"


@dataclass(frozen=True)
class Codelist:
    """A CDISC codelist: C-code, name, extensibility and terms (submission value -> C-code)."""

    code: str
    name: str
    extensible: bool
    terms: tuple[tuple[str, str | None], ...]

    def term_code(self, value: str) -> str | None:
        return dict(self.terms).get(value)

    def has(self, value: str) -> bool:
        return value in dict(self.terms)


NY = Codelist("C66742", "No Yes Response", False,
              (("N", "C49487"), ("Y", "C49488"), ("U", "C17998"), ("NA", "C48660")))
CODELISTS: dict[str, Codelist] = {
    "NY": NY,
    "SEX": Codelist("C66731", "Sex", False,
                    (("F", "C16576"), ("M", "C20197"), ("U", "C17998"),
                     ("INTERSEX", "C45908"))),
    "AESEV": Codelist("C66769", "Severity/Intensity Scale for Adverse Events", False,
                      (("MILD", "C41338"), ("MODERATE", "C41339"), ("SEVERE", "C41340"))),
    "OUT": Codelist("C66768", "Outcome of Event", False,
                    (("FATAL", None), ("NOT RECOVERED/NOT RESOLVED", None),
                     ("RECOVERED/RESOLVED", None), ("RECOVERED/RESOLVED WITH SEQUELAE", None),
                     ("RECOVERING/RESOLVING", None), ("UNKNOWN", None))),
    "AGEU": Codelist("C66781", "Age Unit", False,
                     (("YEARS", None), ("MONTHS", None), ("WEEKS", None), ("DAYS", None))),
    "DTYPE": Codelist("C81224", "Derivation Type", True,
                      (("LOCF", None), ("BOCF", None), ("AVERAGE", None), ("LOV", None),
                       ("ML", None))),
    "SBJTSTAT": Codelist("C124296", "Subject Trial Status", False,
                         (("COMPLETED", None), ("DISCONTINUED", None), ("ONGOING", None))),
    "DSCAT": Codelist("C74558", "Category of Disposition Event", False,
                      (("DISPOSITION EVENT", None), ("PROTOCOL MILESTONE", None),
                       ("OTHER EVENT", None))),
}
# Variables whose values come from a codelist above (SDTM and ADaM names alike).
VARIABLE_CODELISTS: dict[str, str] = {
    "SEX": "SEX", "AESEV": "AESEV", "ASEV": "AESEV", "AEOUT": "OUT", "AGEU": "AGEU",
    "AESER": "NY", "DTHFL": "NY", "DTYPE": "DTYPE", "EOSSTT": "SBJTSTAT", "DSCAT": "DSCAT",
    "AESCAN": "NY", "AESCONG": "NY", "AESDISAB": "NY", "AESDTH": "NY", "AESHOSP": "NY",
    "AESLIFE": "NY", "AESMIE": "NY", "SVPRESP": "NY", "SVOCCUR": "NY",
}
FLAG = re.compile(r"^[A-Z][A-Z0-9]*FL$")


def codelist_of(dataset: XptDataset, variable: XptVariable) -> Codelist | None:
    """Return the CDISC codelist a variable's values must come from, or None.

    A codelist the SDTM map names on the variable (an optional ``codelist`` attribute with a
    C-code) wins; otherwise the variable's name decides (``*FL`` flags use NY)."""
    declared = getattr(variable, "codelist", None)
    if isinstance(declared, str) and declared:
        for codelist in CODELISTS.values():
            if codelist.code == declared:
                return codelist
    key = VARIABLE_CODELISTS.get(variable.name)
    if key is None and variable.type == "char" and FLAG.match(variable.name):
        key = "NY"
    return CODELISTS[key] if key else None


ORIGINS = ("Collected", "Derived", "Assigned", "Protocol", "Predecessor", "Not Available",
           "Other")


def origin_of(dataset: XptDataset, variable: XptVariable) -> str:
    """Return the Define origin type of a column; raise MetadataError for an unknown one."""
    if variable.origin not in ORIGINS:
        raise MetadataError(
            f"{dataset.name}.{variable.name}: origin {variable.origin!r} is not one of {ORIGINS}"
        )
    return variable.origin
