"""De-identification profiles applied to an ``ExportData`` before any exporter reads it.

``limited``: the HIPAA limited data set the exports have always written (ISO dates, direct
identifiers dropped by the DEID-01 allow-list). ``safe_harbor`` (45 CFR 164.514(b)(2)):

- DEID-02 dates: every date of a participant moves by the same whole number of days, 1 to 365
  days back, derived as HMAC-SHA256(instance key, "deid-date-shift", subject code). Intervals
  within a participant are kept; the offset is never stored or exported. Partial dates
  (``YYYY-MM``, ``YYYY``) move by the offset of their first day and keep their precision.
- DEID-03 ages of 90 and over become 90 (numeric AGE; text exports print ``90+``).
- DEID-04 fields classified ``free_text`` are dropped, unless the protocol's CDISC mapping needs
  them (AETERM), then phone numbers, e-mail addresses, URLs, IPv4/IPv6 addresses, PRC resident
  ids (with a valid checksum) and known names are replaced by ``[REDACTED]``.
- fields classified ``quasi_identifier`` (birth date, postcode) are dropped.
- the field-level audit trail and e-signature manifestations (time stamps, old values) are left
  out; DEID-05 device ids and IPs never enter ``ExportData``.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Literal

from analysis.exports.data import (
    CodedTerm,
    ExportData,
    FieldValue,
    FormValue,
    coding_key,
)
from ecrf.model import FieldDef, FormDef

Profile = Literal["limited", "safe_harbor"]
PROFILES: tuple[str, ...] = ("limited", "safe_harbor")
REDACTED = "[REDACTED]"
AGE_CAP = 90
MAX_SHIFT_DAYS = 365

_PHONE = r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)"
_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
_URL = r"(?:https?://|www\.)[^\s]+"
_IPV4 = r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])"
_PATTERNS = re.compile("|".join((_URL, _EMAIL, _IPV4, _PHONE)))
# an IPv6 candidate: hex groups and colons; it is an address when it has all 8 groups or a
# "::" (so clock times such as 10:30:00 are left alone)
_IPV6 = re.compile(r"(?<![0-9A-Za-z:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![0-9A-Za-z:])")
_PRC_ID = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
_PRC_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_PRC_CHECK = "10X98765432"


def prc_id_valid(text: str) -> bool:
    """Return True for an 18-character PRC resident id whose ISO 7064 check character holds."""
    if len(text) != 18 or not text[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(text[:17], _PRC_WEIGHTS, strict=True))
    return _PRC_CHECK[total % 11] == text[17].upper()


def scrub_text(text: str, names: Iterable[str] = ()) -> str:
    """Return ``text`` with DEID-04 identifiers and the given names replaced by [REDACTED]."""
    text = _PRC_ID.sub(lambda m: REDACTED if prc_id_valid(m.group()) else m.group(), text)
    text = _PATTERNS.sub(REDACTED, text)
    text = _IPV6.sub(
        lambda m: REDACTED if "::" in m.group() or m.group().count(":") == 7 else m.group(), text)
    for name in sorted({n.strip() for n in names if n.strip()}, key=len, reverse=True):
        text = re.sub(re.escape(name), REDACTED, text, flags=re.IGNORECASE)
    return text


def date_shift_days(key: bytes, subject_code: str) -> int:
    """The participant's date offset in days (-365..-1) from the instance key."""
    digest = hmac.new(key, b"deid-date-shift\x00" + subject_code.encode(), "sha256").digest()
    return -(int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS + 1)


def _shift_iso(text: str, days: int) -> str:
    """Shift an ISO date, partial date or date-time text; other text is returned unchanged."""
    try:
        if len(text) == 4 and text.isdigit():
            return str((date(int(text), 1, 1) + timedelta(days)).year)
        if len(text) == 7 and text[4] == "-":
            moved = date(int(text[:4]), int(text[5:]), 1) + timedelta(days)
            return f"{moved.year:04d}-{moved.month:02d}"
        if len(text) == 10:
            return (date.fromisoformat(text) + timedelta(days)).isoformat()
        return (datetime.fromisoformat(text) + timedelta(days)).isoformat()
    except ValueError:
        return text


def _cdisc_fields(data: ExportData) -> set[str]:
    if data.cdisc is None:
        return set()
    return {
        v.field
        for m in data.cdisc.mappings
        for v in m.variables
        if v.field is not None
    }


def apply_profile(
    data: ExportData, profile: str, *, key: bytes | None, names: Iterable[str] = ()
) -> ExportData:
    """Return ``data`` as the profile allows. ``key`` (the instance's secret) is required by
    safe_harbor; ``names`` are known participant names scrubbed from free text.

    Raises ValueError for an unknown profile or a safe_harbor export without a key.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown export profile {profile!r}; one of {', '.join(PROFILES)}")
    if profile == "limited":
        return data
    if not key:
        raise ValueError("the safe_harbor profile needs the instance key (DTX_FIELD_KEY)")
    # the trial's own direct identifiers (names, phones, ids) are scrubbed from free text too
    defs = {(f.id, fd.id): fd for f in data.forms for fd in f.fields}
    names = (*names, *(
        v.value for v in data.values
        if isinstance(v.value, str) and len(v.value.strip()) >= 2
        and (fd_ := defs.get((v.form_id, v.field_id))) is not None and fd_.identifier
    ))
    offsets = {s.subject_code: date_shift_days(key, s.subject_code) for s in data.subjects}

    def move(d: date | None, code: str) -> date | None:
        return None if d is None else d + timedelta(offsets[code])

    subjects = tuple(
        replace(
            s,
            age=min(s.age, AGE_CAP) if s.age is not None else None,
            consented_on=move(s.consented_on, s.subject_code),
            randomized_on=move(s.randomized_on, s.subject_code),
            completed_on=move(s.completed_on, s.subject_code),
            withdrawn_on=move(s.withdrawn_on, s.subject_code),
            screen_failed_on=move(s.screen_failed_on, s.subject_code),
            withdrawal_reason=(scrub_text(s.withdrawal_reason, names)
                               if s.withdrawal_reason else s.withdrawal_reason),
        )
        for s in data.subjects
    )
    mapped = _cdisc_fields(data)
    ages = {v.field for m in (data.cdisc.domain_maps("DM") if data.cdisc else ())
            for v in m.variables if v.variable == "AGE" and v.field is not None}
    recoded: dict[str, CodedTerm] = dict(data.coded_terms)
    recoded_cm: dict[str, CodedTerm] = dict(data.coded_medications)
    values: list[FormValue] = []
    for v in data.values:
        fd = defs.get((v.form_id, v.field_id))
        offset = offsets.get(v.subject_code, 0)
        value = v.value
        if fd is not None:
            if fd.classification == "quasi_identifier":
                continue
            if fd.classification == "free_text":
                if fd.id not in mapped:
                    continue
                if isinstance(value, str):
                    scrubbed = scrub_text(value, names)
                    for table in (recoded, recoded_cm):
                        if coding_key(value) in table:
                            table.setdefault(coding_key(scrubbed), table[coding_key(value)])
                    value = scrubbed
            value = _shift_value(fd, value, offset)
            if fd.id in ages and isinstance(value, int | float) and value >= AGE_CAP:
                value = AGE_CAP
        values.append(replace(v, value=value, collected_on=(
            v.collected_on + timedelta(offset) if v.collected_on else None)))
    return replace(
        data,
        subjects=subjects,
        values=tuple(values),
        forms=tuple(_drop_fields(f, lambda fd: fd.classification == "quasi_identifier" or (
            fd.classification == "free_text" and fd.id not in mapped)) for f in data.forms),
        visit_dates=tuple(replace(d, on=d.on + timedelta(offsets.get(d.subject_code, 0)))
                          for d in data.visit_dates),
        device_values=tuple(
            replace(d, observed_at=d.observed_at + timedelta(offsets.get(d.subject_code, 0)))
            for d in data.device_values),
        audit=(),
        signatures=(),
        coded_terms=recoded,
        coded_medications=recoded_cm,
    )


def _shift_value(fd: FieldDef, value: FieldValue, days: int) -> FieldValue:
    if fd.type in ("date", "datetime") and isinstance(value, str):
        return _shift_iso(value, days)
    return value


def _drop_fields(form: FormDef, drop: Callable[[FieldDef], bool]) -> FormDef:
    kept = tuple(f for f in form.fields if not drop(f))
    return form if len(kept) == len(form.fields) else replace(form, fields=kept)

