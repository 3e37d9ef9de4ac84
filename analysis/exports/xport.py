"""SAS XPORT version 5 transport files, written in pure Python (SAS TS-140 record layout).

The FDA accepts only version 5 (XPT-01). Every limit is checked before a byte is written,
because readers silently truncate: names ≤ 8 uppercase letters/digits starting with a letter
(XPT-02/03), labels ≤ 40 printable ASCII with balanced quotes and brackets (XPT-04), character
values ≤ 200 bytes with length = longest value (XPT-05), printable ASCII values (XPT-06).
Numbers are IBM System/370 double precision; a missing number is the SAS ``.``.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from analysis.exports.data import ExportError

NAME_PATTERN = re.compile(r"^[A-Z][A-Z0-9]{0,7}$")
MAX_LABEL = 40
MAX_CHAR = 200
RECORD = 80
NAMESTR_LENGTH = 140
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

Cell = str | float | int | None


class XptError(ExportError):
    """A dataset that would break an XPORT v5 / FDA limit."""


@dataclass(frozen=True)
class XptVariable:
    """A dataset column: SAS name, label, type and define-style origin."""

    name: str
    label: str
    type: Literal["char", "num"]
    origin: str = "Collected"
    #: CDISC codelist C-code of the values (None: not controlled terminology)
    codelist: str | None = None
    #: where a collected value comes from, ``form.field`` or ``stream:<id>`` (None: derived)
    source: str | None = None


@dataclass(frozen=True)
class XptDataset:
    """A SAS dataset: its name is also the lowercase file stem (XPT-02)."""

    name: str
    label: str
    variables: tuple[XptVariable, ...]
    rows: tuple[tuple[Cell, ...], ...]

    def char_length(self, index: int) -> int:
        """Return the storage width of character column ``index`` (longest value, ≥ 1)."""
        return max([1] + [len(str(row[index])) for row in self.rows if row[index] is not None])

    def length(self, index: int) -> int:
        """Return the storage width of column ``index`` in bytes."""
        return 8 if self.variables[index].type == "num" else self.char_length(index)


def _is_printable_ascii(text: str) -> bool:
    return all(32 <= ord(c) < 127 for c in text)


def _balanced(text: str) -> bool:
    if text.count('"') % 2 or text.count("'") % 2:
        return False
    depth = {"(": 0, "[": 0, "{": 0}
    closing = {")": "(", "]": "[", "}": "{"}
    for char in text:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def check_label(where: str, label: str) -> None:
    """Raise XptError unless ``label`` is ≤ 40 printable ASCII with balanced quotes/brackets."""
    if len(label) > MAX_LABEL:
        raise XptError(f"{where}: label {label!r} is {len(label)} characters (max {MAX_LABEL})")
    if not _is_printable_ascii(label):
        raise XptError(f"{where}: label {label!r} is not printable ASCII")
    if not _balanced(label):
        raise XptError(f"{where}: label {label!r} has unbalanced quotes or brackets")


def validate_dataset(dataset: XptDataset) -> None:
    """Raise XptError naming the first dataset, variable, row or value that breaks XPT-02..06."""
    if not NAME_PATTERN.match(dataset.name):
        raise XptError(f"dataset name {dataset.name!r} must match {NAME_PATTERN.pattern}")
    check_label(dataset.name, dataset.label)
    names = [v.name for v in dataset.variables]
    if len(set(names)) != len(names):
        raise XptError(f"{dataset.name}: duplicate variable names")
    if not names:
        raise XptError(f"{dataset.name}: no variables")
    for variable in dataset.variables:
        if not NAME_PATTERN.match(variable.name):
            raise XptError(
                f"{dataset.name}.{variable.name}: variable name must match {NAME_PATTERN.pattern}"
            )
        check_label(f"{dataset.name}.{variable.name}", variable.label)
    subject = names.index("USUBJID") if "USUBJID" in names else None
    for number, row in enumerate(dataset.rows, start=1):
        if len(row) != len(names):
            raise XptError(f"{dataset.name} row {number}: {len(row)} cells for {len(names)}")
        for variable, cell in zip(dataset.variables, row):
            where = f"{dataset.name}.{variable.name} row {number}"
            if subject is not None:
                where += f" (participant {row[subject]})"
            if variable.type == "num":
                if cell is not None and (
                    isinstance(cell, str) or not math.isfinite(float(cell))
                ):
                    raise XptError(f"{where}: {cell!r} is not a finite number")
            elif cell is not None:
                if not isinstance(cell, str):
                    raise XptError(f"{where}: {cell!r} is not text")
                if len(cell) > MAX_CHAR:
                    raise XptError(f"{where}: value longer than {MAX_CHAR} bytes")
                if not _is_printable_ascii(cell):
                    raise XptError(
                        f"{where}: value {cell!r} is not printable ASCII; SAS XPORT v5 holds "
                        "ASCII only: correct or translate the value, or use the UTF-8 "
                        "Dataset-JSON export"
                    )


def ibm_double(value: float) -> bytes:
    """Return ``value`` as an 8-byte IBM System/370 hexadecimal floating-point number."""
    if value == 0:
        return bytes(8)
    sign = 0x80 if value < 0 else 0
    mantissa, exponent = math.frexp(abs(value))  # abs = mantissa * 2**exponent, 0.5 ≤ m < 1
    shift = (-exponent) % 4
    exponent16 = (exponent + shift) // 4
    fraction = int(mantissa * 2.0 ** (56 - shift))  # exact: 53 significant bits fit in 56
    if exponent16 + 64 < 0:  # below 16**-65: underflows to zero, as SAS does
        return bytes(8)
    if exponent16 + 64 > 127:
        raise XptError(f"{value!r} is outside the IBM floating-point range")
    return bytes([sign | (exponent16 + 64)]) + fraction.to_bytes(7, "big")


def _sas_datetime(moment: datetime) -> bytes:
    moment = moment.astimezone(UTC)
    text = f"{moment.day:02d}{MONTHS[moment.month - 1]}{moment.year % 100:02d}:" + moment.strftime(
        "%H:%M:%S"
    )
    return text.encode("ascii")


def _pad(data: bytes, length: int) -> bytes:
    return data[:length].ljust(length, b" ")


def _header(kind: str, tail: str = "0" * 30) -> bytes:
    return _pad(f"HEADER RECORD*******{kind:<8}HEADER RECORD!!!!!!!{tail}".encode("ascii"), RECORD)


def _pad_records(data: bytes) -> bytes:
    remainder = len(data) % RECORD
    return data if remainder == 0 else data + b" " * (RECORD - remainder)


# The SAS display format of a numeric date, time or datetime, by the ADaM name's ending (*DTM
# datetimes, *DT dates, *TM times): named in the file so that SAS and its readers show a date,
# not a day count (XPT-07), and in define.xml and Dataset-JSON as the same format.
_DATE_FORMATS = (("DTM", "DATETIME", 20), ("DT", "DATE", 9), ("TM", "TIME", 8))


def sas_format(variable: XptVariable) -> tuple[str, int] | None:
    """The (format name, width) of a numeric date, time or datetime variable, else None."""
    if variable.type == "num":
        for ending, name, width in _DATE_FORMATS:
            if variable.name.endswith(ending):
                return name, width
    return None


def _namestr(variable: XptVariable, number: int, length: int, position: int) -> bytes:
    form, width = sas_format(variable) or ("", 0)
    record = struct.pack(
        ">hhhh8s40s8shhh2s8shhl52s",
        1 if variable.type == "num" else 2,
        0,
        length,
        number,
        _pad(variable.name.encode("ascii"), 8),
        _pad(variable.label.encode("ascii"), 40),
        _pad(form.encode("ascii"), 8),
        width,
        0,
        0 if variable.type == "char" else 1,
        b"\x00\x00",
        b" " * 8,
        0,
        0,
        position,
        bytes(52),
    )
    assert len(record) == NAMESTR_LENGTH
    return record


def write_xpt(dataset: XptDataset, created_at: datetime) -> bytes:
    """Return ``dataset`` as an XPORT v5 file; ``created_at`` (UTC) is stamped in the headers.

    Raises XptError (before writing anything) when a limit of XPT-02..06 is broken.
    """
    validate_dataset(dataset)
    stamp = _sas_datetime(created_at)
    out = bytearray()
    out += _header("LIBRARY")
    out += _pad(b"SAS     SAS     SASLIB  9.4     " + b"dtx     " + b" " * 24 + stamp, RECORD)
    out += _pad(stamp, RECORD)
    out += _header("MEMBER", "0" * 17 + "16" + "0" * 8 + "140")
    out += _header("DSCRPTR")
    out += _pad(
        b"SAS     " + _pad(dataset.name.encode("ascii"), 8) + b"SASDATA 9.4     dtx     "
        + b" " * 24 + stamp,
        RECORD,
    )
    out += _pad(stamp + b" " * 16 + _pad(dataset.label.encode("ascii"), 40) + b" " * 8, RECORD)
    out += _header("NAMESTR", f"000000{len(dataset.variables):04d}" + "0" * 20)
    lengths = [dataset.length(i) for i in range(len(dataset.variables))]
    namestrs = bytearray()
    position = 0
    for number, (variable, length) in enumerate(zip(dataset.variables, lengths), start=1):
        namestrs += _namestr(variable, number, length, position)
        position += length
    out += _pad_records(bytes(namestrs))
    out += _header("OBS")
    observations = bytearray()
    for row in dataset.rows:
        for variable, length, cell in zip(dataset.variables, lengths, row):
            if variable.type == "num":
                observations += b"." + bytes(7) if cell is None else ibm_double(float(cell))
            else:
                observations += _pad(("" if cell is None else str(cell)).encode("ascii"), length)
    out += _pad_records(bytes(observations))
    return bytes(out)


def define_rows(datasets: Sequence[XptDataset]) -> list[tuple[str, str, str, str, int, str]]:
    """Return define-style metadata rows: dataset, variable, label, type, length, origin."""
    return [
        (dataset.name, variable.name, variable.label, variable.type, dataset.length(i),
         variable.origin)
        for dataset in datasets
        for i, variable in enumerate(dataset.variables)
    ]
