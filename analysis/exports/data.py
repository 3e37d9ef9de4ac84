"""Plain input data for the standard exports, and the de-identification rules they share.

The export service fills an ``ExportData`` from the database; every exporter (CSV, SAS XPORT,
CDISC ODM, FHIR) reads only this, so none can reach a column that is not listed here. That
is the DEID-01 allow-list: participants appear only by their pseudonymous subject code, form
fields flagged ``identifier: true`` (name, phone, national id, address) are dropped, file and
signature fields are never exported, and a blinded export carries no arm at all.

Values follow ecrf.model's conventions: JSON scalars, ``YYYY-MM-DD`` dates, yes/no as
``"1"``/``"0"``, multiple choice as a sorted list of codes, a missing-data code as
``{"missing": code}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal, TypeAlias

from ecrf.model import MISSING_CODES, FieldDef, FormDef, VisitDef
from protocols.model import CdiscSpec

FieldValue: TypeAlias = (
    str | int | float | bool | list[str] | tuple[str, ...] | Mapping[str, str] | None
)
SubjectStatus = Literal[
    "screening", "screen_failed", "enrolled", "randomized", "completed", "withdrawn"
]
FormStatus = Literal["draft", "submitted", "signed", "locked"]
StudyStatus = Literal["active", "closed-to-accrual", "completed", "temporarily-closed-to-accrual"]

# Field types with no exportable value (binary payloads, ink signatures, display text).
UNEXPORTED_TYPES = frozenset({"file", "signature", "descriptive"})


class ExportError(Exception):
    """Export input that would produce a non-conforming or non-de-identified file."""


@dataclass(frozen=True)
class ArmInfo:
    """A treatment arm (used only by unblinded exports)."""

    code: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class TrialMeta:
    """Trial identification shared by all exports; ``code`` becomes SDTM STUDYID."""

    code: str
    title: str
    protocol_version: str
    sponsor: str
    phase: str = "phase-3"  # FHIR research-study-phase code, e.g. "phase-2", "n-a"
    status: StudyStatus = "active"
    description: str = ""
    product_name: str = ""
    blinded: bool = True
    arms: tuple[ArmInfo, ...] = ()
    #: protocol facts for SDTM TS (None: not declared, the TS row is left out)
    blinding_level: Literal["open", "single", "double"] | None = None
    registry_id: str | None = None
    planned_subjects: int | None = None


@dataclass(frozen=True)
class SiteInfo:
    """A site; ``country`` is ISO 3166-1 alpha-3 (SDTM DM.COUNTRY), None when the site has
    none recorded (never a guess)."""

    code: str
    name: str
    country: str | None


@dataclass(frozen=True)
class SubjectRecord:
    """A participant known only by the pseudonymous ``subject_code``.

    ``arm_code`` is ignored by blinded exports. ``age`` is in years at consent.
    """

    subject_code: str
    site_code: str
    status: SubjectStatus
    sex: Literal["F", "M", "U"] | None = None
    age: int | None = None
    arm_code: str | None = None
    consented_on: date | None = None
    randomized_on: date | None = None
    completed_on: date | None = None
    withdrawn_on: date | None = None
    withdrawal_reason: str | None = None
    #: date of the screening data on which eligibility failed (DS SCREEN FAILURE)
    screen_failed_on: date | None = None


@dataclass(frozen=True)
class FormValue:
    """One stored field value of one form instance, as a long row."""

    subject_code: str
    visit_id: str
    form_id: str
    field_id: str
    value: FieldValue
    repeat: int = 1
    status: FormStatus = "submitted"
    collected_on: date | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One audited change of one field value (old → new) by a user at a site."""

    subject_code: str
    visit_id: str
    form_id: str
    field_id: str
    old_value: FieldValue
    new_value: FieldValue
    user_id: str
    user_name: str
    site_code: str
    changed_at: datetime
    reason: str | None = None
    repeat: int = 1


@dataclass(frozen=True)
class SignatureEntry:
    """An electronic signature of one form instance (21 CFR 11.50 manifestation)."""

    subject_code: str
    visit_id: str
    form_id: str
    user_id: str
    user_name: str
    site_code: str
    meaning: Literal["authorship", "review", "approval", "responsibility"]
    signed_at: datetime
    repeat: int = 1


@dataclass(frozen=True)
class VisitDate:
    """The actual date of a held visit (SV)."""

    subject_code: str
    visit_id: str
    on: date


@dataclass(frozen=True)
class DeviceValue:
    """One device/app observation of a stream (EX exposure, XD device findings)."""

    subject_code: str
    stream: str
    observed_at: datetime
    value: float
    unit: str


@dataclass(frozen=True)
class CodedTerm:
    """A verbatim term coded against the sponsor's dictionary (AEDECOD, AEBODSYS)."""

    decoded: str
    body_system: str
    dictionary: str
    version: str


@dataclass(frozen=True)
class ExportData:
    """Everything an export may contain; ``exported_at`` is the UTC time stamped in files.

    SDTM datasets come from ``cdisc`` (the protocol's mapping) over ``values``,
    ``visit_dates`` and ``device_values``.
    """

    trial: TrialMeta
    forms: tuple[FormDef, ...]
    visits: tuple[VisitDef, ...]
    sites: tuple[SiteInfo, ...]
    subjects: tuple[SubjectRecord, ...]
    values: tuple[FormValue, ...]
    exported_at: datetime
    audit: tuple[AuditEntry, ...] = ()
    signatures: tuple[SignatureEntry, ...] = ()
    #: the protocol's CDISC mapping; SDTM is refused without one
    cdisc: CdiscSpec | None = None
    visit_dates: tuple[VisitDate, ...] = ()
    device_values: tuple[DeviceValue, ...] = ()
    #: coded terms by normalised verbatim (``coding_key``), from the coding table
    coded_terms: Mapping[str, CodedTerm] = field(default_factory=dict)
    #: coded concomitant medications, likewise (CMDECOD)
    coded_medications: Mapping[str, CodedTerm] = field(default_factory=dict)
    #: the protocol's ``schedule.unscheduled_forms``, entered at a participant's unscheduled
    #: visit (with the logs, entered at any visit): their values carry visit `UNSCHEDULED_VISIT`
    unscheduled_forms: tuple[str, ...] = ()


def coding_key(verbatim: str) -> str:
    """Return the key a verbatim term is coded under: trimmed, inner spaces collapsed,
    case-folded (exact matches up to case and spacing)."""
    return " ".join(verbatim.split()).casefold()


def exportable_fields(form: FormDef) -> tuple[FieldDef, ...]:
    """Return the fields of ``form`` that exports may carry (no identifiers, no binaries)."""
    return tuple(
        f for f in form.fields if not f.identifier and f.type not in UNEXPORTED_TYPES
    )


def form_index(data: ExportData) -> dict[str, FormDef]:
    """Return forms by id."""
    return {form.id: form for form in data.forms}


def missing_code(value: FieldValue) -> str | None:
    """Return the missing-data code of ``{"missing": code}``, else None.

    Raises ExportError for a code that ecrf does not define.
    """
    if isinstance(value, Mapping):
        code = value.get("missing")
        if code not in MISSING_CODES:
            raise ExportError(f"unknown missing-data value {dict(value)!r}")
        return str(code)
    return None


def exported_values(data: ExportData) -> list[tuple[FormDef, FieldDef, FormValue]]:
    """Return the de-identified values with their definitions, in input order.

    Raises ExportError for a value whose form or field is not defined (it could not be
    classified as safe to export) or whose subject is unknown.
    """
    forms = form_index(data)
    subjects = {s.subject_code for s in data.subjects}
    rows: list[tuple[FormDef, FieldDef, FormValue]] = []
    for value in data.values:
        form = forms.get(value.form_id)
        if form is None:
            raise ExportError(f"value for undefined form {value.form_id!r}")
        try:
            field_def = form.field(value.field_id)
        except KeyError:
            raise ExportError(
                f"value for undefined field {value.form_id}.{value.field_id}"
            ) from None
        if value.subject_code not in subjects:
            raise ExportError(f"value for unknown subject {value.subject_code!r}")
        if field_def.identifier or field_def.type in UNEXPORTED_TYPES:
            continue
        rows.append((form, field_def, value))
    return rows


def is_identifier_field(data: ExportData, form_id: str, field_id: str) -> bool:
    """Return True when the field is a direct identifier or otherwise not exportable."""
    form = form_index(data).get(form_id)
    if form is None:
        return True
    try:
        field_def = form.field(field_id)
    except KeyError:
        return True
    return field_def.identifier or field_def.type in UNEXPORTED_TYPES


def arm_of(data: ExportData, subject: SubjectRecord) -> ArmInfo | None:
    """Return the subject's arm in an unblinded export; always None when blinded."""
    if data.trial.blinded or subject.arm_code is None:
        return None
    for arm in data.trial.arms:
        if arm.code == subject.arm_code:
            return arm
    raise ExportError(f"subject {subject.subject_code}: unknown arm {subject.arm_code!r}")


def text_of(value: FieldValue) -> str:
    """Return a value as export text: missing code text, ``;``-joined choices, ``1``/``0``."""
    code = missing_code(value)
    if code is not None:
        return code
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
