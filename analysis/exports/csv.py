"""CSV exports: per form in long and wide layouts, a bilingual codebook and a subject list.

Files are UTF-8 with a byte-order mark (Excel opens Chinese labels correctly) and CRLF line
ends (RFC 4180). Text a spreadsheet would evaluate (``=cmd|...``, ``+``, ``-``, ``@``, tab,
CR at the start) is prefixed with ``'``. A missing-data value ``{"missing": code}`` is
written as its code text
(``not_done``, ``unknown``, ``not_applicable``), never as a blank; a blank means "not asked".
"""

from __future__ import annotations

import csv as std_csv
import io
import re
from collections.abc import Iterable, Sequence

from analysis.exports.data import (
    ExportData,
    ExportError,
    FormValue,
    arm_of,
    exportable_fields,
    exported_values,
    text_of,
)
from ecrf.model import MISSING_CODES, FieldDef, FormDef

STATUS_ORDER = ("draft", "submitted", "signed", "locked")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,60}$")
SUBJECT_COLUMNS = (
    "subject_code",
    "site_code",
    "status",
    "sex",
    "age",
    "consented_on",
    "randomized_on",
    "completed_on",
    "withdrawn_on",
    "withdrawal_reason",
)
LONG_COLUMNS = (
    "subject_code", "site_code", "visit", "form", "repeat", "field", "value", "status",
    "collected_on",
)
CODEBOOK_COLUMNS = (
    "form", "field", "label_en", "label_zh", "type", "unit", "required", "choices",
    "missing_codes",
)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def neutralised(cell: object) -> object:
    """Return a text cell that a spreadsheet would run as a formula (starting with = + - @,
    tab or carriage return) prefixed with ``'``, so it shows as text (OWASP CSV injection);
    numbers such as ``-1.5`` stay numbers."""
    if isinstance(cell, str) and cell.startswith(FORMULA_START) and not NUMBER.match(cell):
        return "'" + cell
    return cell


def write_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """Return header and rows as UTF-8 (with BOM) CSV bytes, CRLF line ends, None as blank,
    formula-like text neutralised."""
    buffer = io.StringIO()
    writer = std_csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralised(h) for h in header])
    for row in rows:
        writer.writerow(["" if cell is None else neutralised(cell) for cell in row])
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


def age_text(age: int | None) -> str:
    """Return age as exported: ages of 90 and over become ``90+`` (HIPAA Safe Harbor)."""
    if age is None:
        return ""
    return "90+" if age >= 90 else str(age)


def subjects_csv(data: ExportData) -> bytes:
    """Return subjects.csv: the allow-listed subject columns (+ arm when unblinded)."""
    header = list(SUBJECT_COLUMNS)
    if not data.trial.blinded:
        header += ["arm_code", "arm_name"]
    rows = []
    for s in data.subjects:
        row: list[object] = [
            s.subject_code, s.site_code, s.status, s.sex, age_text(s.age), s.consented_on,
            s.randomized_on, s.completed_on, s.withdrawn_on, s.withdrawal_reason,
        ]
        if not data.trial.blinded:
            arm = arm_of(data, s)
            row += [arm.code if arm else "", arm.name if arm else ""]
        rows.append(row)
    return write_csv(header, rows)


def _choices_text(field_def: FieldDef) -> str:
    return "; ".join(
        f"{c.code}={c.label.en}" + (f" / {c.label.zh}" if c.label.zh else "")
        for c in field_def.choices
    )


def codebook_csv(data: ExportData) -> bytes:
    """Return codebook.csv: one row per exported field with bilingual label, type, choices."""
    rows = []
    for form in data.forms:
        for f in exportable_fields(form):
            codes = f.allow_missing_codes or ()
            rows.append([
                form.id, f.id, f.label.en, f.label.zh or "", f.type, f.unit or "",
                "yes" if f.required else "no", _choices_text(f),
                "; ".join(f"{c}={MISSING_CODES[c]}" for c in codes if c in MISSING_CODES),
            ])
    return write_csv(CODEBOOK_COLUMNS, rows)


def _site_of(data: ExportData) -> dict[str, str]:
    return {s.subject_code: s.site_code for s in data.subjects}


def form_long_csv(data: ExportData, form: FormDef, values: Sequence[FormValue]) -> bytes:
    """Return one form's values as long rows (one row per field value)."""
    sites = _site_of(data)
    return write_csv(LONG_COLUMNS, (
        [v.subject_code, sites[v.subject_code], v.visit_id, form.id, v.repeat, v.field_id,
         text_of(v.value), v.status, v.collected_on]
        for v in values
    ))


def form_wide_csv(data: ExportData, form: FormDef, values: Sequence[FormValue]) -> bytes:
    """Return one form's values wide: one row per form instance, one column per field."""
    sites = _site_of(data)
    fields = exportable_fields(form)
    instances: dict[tuple[str, str, int], dict[str, str]] = {}
    status: dict[tuple[str, str, int], str] = {}
    for v in values:
        key = (v.subject_code, v.visit_id, v.repeat)
        instances.setdefault(key, {})[v.field_id] = text_of(v.value)
        # An instance is only as final as its least final value (a draft anywhere = draft).
        if key not in status or STATUS_ORDER.index(v.status) < STATUS_ORDER.index(status[key]):
            status[key] = v.status
    header = ["subject_code", "site_code", "visit", "repeat", "status", *[f.id for f in fields]]
    return write_csv(header, (
        [subject, sites[subject], visit, repeat, status[(subject, visit, repeat)],
         *[cells.get(f.id, "") for f in fields]]
        for (subject, visit, repeat), cells in instances.items()
    ))


def build_csv_exports(data: ExportData) -> dict[str, bytes]:
    """Return {file name: CSV bytes}: subjects, codebook, and ``<form>_long``/``_wide`` per form.

    Raises ExportError for values of undefined forms, fields or subjects.
    """
    by_form: dict[str, list[FormValue]] = {form.id: [] for form in data.forms}
    for form, _, value in exported_values(data):
        by_form[form.id].append(value)
    files = {"subjects.csv": subjects_csv(data), "codebook.csv": codebook_csv(data)}
    for form in data.forms:
        if not SAFE_NAME.match(form.id):
            raise ExportError(f"form id {form.id!r} cannot be used as a file name")
        files[f"{form.id}_long.csv"] = form_long_csv(data, form, by_form[form.id])
        files[f"{form.id}_wide.csv"] = form_wide_csv(data, form, by_form[form.id])
    return files
