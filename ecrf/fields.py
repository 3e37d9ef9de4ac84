"""Field types: convert submitted values into the stored representation of ecrf/model.py.

Submitted values come either from HTML forms (always text) or from typed JSON; both are accepted.
Blank input (``None``, ``''`` or only whitespace) is stored as ``None``. Rules per type:

- ``integer``: a whole number (``12``, ``"12"``, ``12.0``); ``decimal``: any finite number,
  optionally limited to ``decimals`` places; both checked against ``min``/``max``.
- ``slider``: a number within ``min``..``max`` (0..100 by default), whole unless ``decimals``.
- ``text``: text (numbers are turned into text), at most ``max_length`` characters, trimmed.
- ``date``: ``YYYY-MM-DD``; ``time``: ``HH:MM`` or ``HH:MM:SS``; ``datetime``: ISO 8601
  ``YYYY-MM-DDTHH:MM[:SS][offset]`` stored as ``YYYY-MM-DDTHH:MM:SS±HH:MM`` with the offset given;
  a datetime without an offset is taken as UTC (``+00:00``). ``min``/``max`` are ISO texts.
- ``yesno``: ``true``/``false``, ``1``/``0``, ``"yes"``/``"no"``, ``"y"``/``"n"``,
  ``"true"``/``"false"`` (any case) → ``"1"``/``"0"``.
- ``single_choice``: one of the choice codes; ``multiple_choice``: a list (or comma-separated text)
  of choice codes, stored sorted without duplicates (``[]`` = nothing checked).
- ``file``/``signature``: the reference (text) under which the shell stored the upload.
- a missing-data code ``{"missing": code}`` is accepted only when ``code`` is listed in the field's
  ``allow_missing_codes``.
- ``calculated`` and ``descriptive`` fields never accept values from clients.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation

from ecrf.model import MISSING_CODES, FieldDef
from ecrf.text import text_problem

__all__ = ["EARLIEST_DATE", "LATEST_DATE", "FieldValueError", "coerce_value", "is_blank"]

# The dates a trial can meet: birth dates of the oldest participants to far-future windows.
# Outside them a value is a typo or an attack (0001-01-01T00:00+14:00 overflows in UTC).
EARLIEST_DATE = datetime.date(1900, 1, 1)
LATEST_DATE = datetime.date(2199, 12, 31)
_DATE_RANGE_MESSAGE = f"must be between {EARLIEST_DATE.isoformat()} and {LATEST_DATE.isoformat()}"

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_TIME = re.compile(r"([0-9]{2}):([0-9]{2})(?::([0-9]{2}))?", re.ASCII)
_DATETIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]([0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?)"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?",
    re.ASCII,
)
_YES = {"1", "yes", "true", "y"}
_NO = {"0", "no", "false", "n"}
_MAX_REFERENCE_LENGTH = 500
_MAX_TEXT_LENGTH = 100_000


class FieldValueError(ValueError):
    """A submitted value that does not fit its field."""

    def __init__(self, field_id: str, message: str) -> None:
        super().__init__(field_id, message)
        self.field_id = field_id
        self.message = message

    def __str__(self) -> str:
        return f"{self.field_id}: {self.message}"


def is_blank(value: object) -> bool:
    """Return True for a value that counts as not answered (None, empty text or [])."""
    return value is None or value == "" or (isinstance(value, list | tuple) and not value)


def coerce_value(field: FieldDef, raw: object) -> object:
    """Convert a submitted value to its stored form; raise FieldValueError when it does not fit."""
    if field.type == "calculated":
        raise FieldValueError(field.id, "field is calculated")
    if field.type == "descriptive":
        raise FieldValueError(field.id, "field is descriptive and takes no value")
    if isinstance(raw, Mapping):
        return _coerce_missing_code(field, raw)
    if isinstance(raw, str):
        raw = raw.strip()
    if raw is None or raw == "":
        return None
    converter = _CONVERTERS.get(field.type)
    if converter is None:
        raise FieldValueError(field.id, f"unsupported field type {field.type!r}")
    return converter(field, raw)


def _coerce_missing_code(field: FieldDef, raw: Mapping[object, object]) -> dict[str, str]:
    code = raw.get("missing")
    if set(raw) != {"missing"} or not isinstance(code, str):
        raise FieldValueError(field.id, 'expected a value or {"missing": code}')
    if code not in MISSING_CODES or code not in field.allow_missing_codes:
        allowed = ", ".join(field.allow_missing_codes) or "none"
        raise FieldValueError(field.id, f"missing code {code!r} not allowed (allowed: {allowed})")
    return {"missing": code}


def _format_limit(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


def _check_range(field: FieldDef, number: float, low: object, high: object) -> None:
    if isinstance(low, int | float) and not isinstance(low, bool) and number < low:
        raise FieldValueError(field.id, f"must be at least {_format_limit(low)}")
    if isinstance(high, int | float) and not isinstance(high, bool) and number > high:
        raise FieldValueError(field.id, f"must be at most {_format_limit(high)}")


def _parse_number(field: FieldDef, raw: object) -> Decimal:
    if isinstance(raw, bool):
        raise FieldValueError(field.id, "must be a number")
    if isinstance(raw, int):
        return Decimal(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise FieldValueError(field.id, "must be a finite number")
        return Decimal(repr(raw))
    if isinstance(raw, str) and _DECIMAL.fullmatch(raw) and len(raw) <= 50:
        try:
            return Decimal(raw)
        except InvalidOperation:
            raise FieldValueError(field.id, "must be a number") from None
    raise FieldValueError(field.id, "must be a number")


def _decimal_places(number: Decimal) -> int:
    exponent = number.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _as_json_number(number: Decimal, whole: bool) -> int | float:
    if whole:
        return int(number)
    value = float(number)
    if not math.isfinite(value):
        raise OverflowError
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _coerce_number(
    field: FieldDef, raw: object, *, whole: bool, low: object, high: object
) -> object:
    number = _parse_number(field, raw)
    if whole and number != number.to_integral_value():
        raise FieldValueError(field.id, "must be a whole number")
    if not whole and field.decimals is not None and _decimal_places(number) > field.decimals:
        raise FieldValueError(field.id, f"at most {field.decimals} decimal place(s)")
    try:
        value = _as_json_number(number, whole)
    except OverflowError:
        raise FieldValueError(field.id, "number out of range") from None
    _check_range(field, float(number), low, high)
    return value


def _coerce_integer(field: FieldDef, raw: object) -> object:
    if isinstance(raw, str) and not _INTEGER.fullmatch(raw) and _DECIMAL.fullmatch(raw):
        raise FieldValueError(field.id, "must be a whole number")
    return _coerce_number(field, raw, whole=True, low=field.min, high=field.max)


def _coerce_decimal(field: FieldDef, raw: object) -> object:
    return _coerce_number(field, raw, whole=False, low=field.min, high=field.max)


def _coerce_slider(field: FieldDef, raw: object) -> object:
    low = field.min if field.min is not None else 0
    high = field.max if field.max is not None else 100
    whole = not field.decimals
    return _coerce_number(field, raw, whole=whole, low=low, high=high)


def _coerce_text(field: FieldDef, raw: object) -> object:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise FieldValueError(field.id, "must be text")
    limit = field.max_length if field.max_length is not None else _MAX_TEXT_LENGTH
    if len(raw) > limit:
        raise FieldValueError(field.id, f"at most {limit} characters")
    problem = text_problem(raw)
    if problem is not None:
        raise FieldValueError(field.id, problem)
    return raw


def _date_limit(limit: object) -> datetime.date | None:
    if isinstance(limit, str) and _DATE.fullmatch(limit):
        try:
            return datetime.date.fromisoformat(limit)
        except ValueError:
            return None
    return None


def _coerce_date(field: FieldDef, raw: object) -> object:
    if isinstance(raw, datetime.date) and not isinstance(raw, datetime.datetime):
        day = raw
    else:
        if not isinstance(raw, str) or not _DATE.fullmatch(raw):
            raise FieldValueError(field.id, "must be a date YYYY-MM-DD")
        try:
            day = datetime.date.fromisoformat(raw)
        except ValueError:
            raise FieldValueError(field.id, "not a valid calendar date") from None
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        raise FieldValueError(field.id, _DATE_RANGE_MESSAGE)
    low, high = _date_limit(field.min), _date_limit(field.max)
    if low is not None and day < low:
        raise FieldValueError(field.id, f"must be on or after {low.isoformat()}")
    if high is not None and day > high:
        raise FieldValueError(field.id, f"must be on or before {high.isoformat()}")
    return day.isoformat()


def _parse_datetime(text: str) -> datetime.datetime | None:
    match = _DATETIME.fullmatch(text)
    if match is None:
        return None
    day, clock, offset = match.groups()
    try:
        moment = datetime.datetime.fromisoformat(f"{day}T{clock}")
    except ValueError:
        return None
    if offset is None or offset == "Z":
        return moment.replace(tzinfo=datetime.UTC)
    sign = 1 if offset[0] == "+" else -1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    if hours > 23 or minutes > 59:
        return None
    zone = datetime.timezone(sign * datetime.timedelta(hours=hours, minutes=minutes))
    return moment.replace(tzinfo=zone)


def _coerce_datetime(field: FieldDef, raw: object) -> object:
    if isinstance(raw, datetime.datetime):
        moment: datetime.datetime | None = (
            raw if raw.tzinfo is not None else raw.replace(tzinfo=datetime.UTC)
        )
    else:
        moment = _parse_datetime(raw) if isinstance(raw, str) else None
    if moment is None:
        raise FieldValueError(field.id, "must be a date and time YYYY-MM-DDTHH:MM[:SS][±HH:MM]")
    if not EARLIEST_DATE <= moment.date() <= LATEST_DATE:
        raise FieldValueError(field.id, _DATE_RANGE_MESSAGE)
    for limit, before in ((field.min, True), (field.max, False)):
        bound = _parse_datetime(limit) if isinstance(limit, str) else None
        if bound is None and isinstance(limit, str) and _date_limit(limit) is not None:
            bound = _parse_datetime(f"{limit}T00:00" if before else f"{limit}T23:59:59.999999")
        if bound is not None and (moment < bound if before else moment > bound):
            word = "after" if before else "before"
            raise FieldValueError(field.id, f"must be on or {word} {limit}")
    return moment.isoformat(timespec="seconds")


def _coerce_time(field: FieldDef, raw: object) -> object:
    match = _TIME.fullmatch(raw) if isinstance(raw, str) else None
    if match is None:
        raise FieldValueError(field.id, "must be a time HH:MM or HH:MM:SS")
    hour, minute = int(match.group(1)), int(match.group(2))
    second = int(match.group(3)) if match.group(3) else 0
    if hour > 23 or minute > 59 or second > 59:
        raise FieldValueError(field.id, "not a valid time of day")
    assert isinstance(raw, str)
    for limit, before in ((field.min, True), (field.max, False)):
        if isinstance(limit, str) and _TIME.fullmatch(limit):
            normalised = limit if len(limit) == 8 else f"{limit}:00"
            current = raw if len(raw) == 8 else f"{raw}:00"
            if current < normalised if before else current > normalised:
                word = "after" if before else "before"
                raise FieldValueError(field.id, f"must be at or {word} {limit}")
    return raw


def _coerce_yesno(field: FieldDef, raw: object) -> object:
    if isinstance(raw, bool):
        return "1" if raw else "0"
    if isinstance(raw, int) and raw in (0, 1):
        return str(raw)
    if isinstance(raw, str):
        word = raw.lower()
        if word in _YES:
            return "1"
        if word in _NO:
            return "0"
    raise FieldValueError(field.id, "must be yes or no")


def _choice_code(field: FieldDef, raw: object) -> str:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str):
        raise FieldValueError(field.id, "must be a choice code")
    code = raw.strip()
    if code not in {choice.code for choice in field.choices}:
        raise FieldValueError(field.id, f"{code!r} is not one of the choices")
    return code


def _coerce_single_choice(field: FieldDef, raw: object) -> object:
    return _choice_code(field, raw)


def _coerce_multiple_choice(field: FieldDef, raw: object) -> object:
    if isinstance(raw, str):
        items: list[object] = [part for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list | tuple | set | frozenset):
        items = list(raw)
    else:
        items = [raw]
    return sorted({_choice_code(field, item) for item in items})


def _coerce_reference(field: FieldDef, raw: object) -> object:
    if not isinstance(raw, str) or len(raw) > _MAX_REFERENCE_LENGTH:
        raise FieldValueError(field.id, "must be the reference of an uploaded file")
    return raw


_CONVERTERS: dict[str, Callable[[FieldDef, object], object]] = {
    "integer": _coerce_integer,
    "decimal": _coerce_decimal,
    "slider": _coerce_slider,
    "text": _coerce_text,
    "date": _coerce_date,
    "datetime": _coerce_datetime,
    "time": _coerce_time,
    "yesno": _coerce_yesno,
    "single_choice": _coerce_single_choice,
    "multiple_choice": _coerce_multiple_choice,
    "file": _coerce_reference,
    "signature": _coerce_reference,
}
