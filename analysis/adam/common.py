"""Shared pieces of the ADaM builders: errors, identifiers, short codes, dates, columns."""

from __future__ import annotations

import datetime
import math
import re

from analysis.exports.metadata import sas_date
from analysis.exports.xport import Cell, XptVariable
from protocols.model import Protocol


class AdamError(ValueError):
    """An ADaM dataset cannot be derived: a required input is missing or inconsistent."""


def usubjid(studyid: str, subject: str) -> str:
    """Return the unique subject id ``<STUDYID>-<subject code>`` (as SDTM DM builds it)."""
    return f"{studyid}-{subject}"


def short_code(text: str, taken: set[str], length: int = 8, prefix: str = "") -> str:
    """Return a unique code: ``prefix`` + upper-case letters/digits of ``text``, at most
    ``length`` characters in all, starting with a letter; a clash ends in a counter."""
    room = length - len(prefix)
    base = re.sub(r"[^A-Z0-9]", "", text.upper()) or "X"
    if not prefix and not base[0].isalpha():
        base = "X" + base
    code = prefix + base[:room]
    counter = 1
    while code in taken:
        suffix = str(counter)
        code = prefix + base[: room - len(suffix)] + suffix
        counter += 1
    taken.add(code)
    return code


def date_cell(day: datetime.date | None) -> Cell:
    """Return a date as an ADaM numeric date (SAS days), or None."""
    return None if day is None else sas_date(day)


def study_day(day: datetime.date | None, start: datetime.date | None) -> Cell:
    """Return the study day of ``day`` relative to ``start`` (day 1 = start; no day 0)."""
    if day is None or start is None:
        return None
    delta = (day - start).days
    return delta + 1 if delta >= 0 else delta


def yn(flag: bool) -> str:
    return "Y" if flag else "N"


def var(name: str, label: str, kind: str = "char", origin: str = "Derived") -> XptVariable:
    """Return an ADaM column definition."""
    return XptVariable(name, label, "num" if kind == "num" else "char", origin)


def arm_names(protocol: Protocol) -> dict[str, tuple[str, int]]:
    """Return arm code -> (arm name, arm number in protocol order)."""
    return {arm.code: (arm.name.en, n) for n, arm in enumerate(protocol.arms, start=1)}


def visit_order(protocol: Protocol) -> dict[str, int]:
    """Return visit id -> analysis visit number (schedule position, 1-based)."""
    return {v.id: n for n, v in enumerate(protocol.schedule.visits, start=1)}


def number(value: object) -> float | None:
    """Return a captured value as a finite number, else None (text, missing codes, blanks),
    as `analysis.datasets` reads it."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        parsed = float(value)
    except ValueError:
        return None
    return parsed if math.isfinite(parsed) else None
