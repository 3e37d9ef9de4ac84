"""Import a REDCap data dictionary (CSV) as a protocol skeleton.

Forms, fields, choices, validations (types, min/max), branching logic, calculations, checkbox,
yes/no, true/false, slider, descriptive, file/signature, notes and identifiers are translated;
everything that cannot be (SQL fields, action tags, matrix ranking, smart variables, unknown
validation codes, …) is listed in the report. Arms and randomization are placeholders and every
form is put in a single ``baseline`` visit: the sponsor edits the YAML from there.
Column meanings follow the REDCap data dictionary reference (redcap-dictionary.md §2).
"""

from __future__ import annotations

import csv
import html
import io
import re
from dataclasses import dataclass
from typing import Any

import yaml

from ecrf.expressions import ExpressionError, parse

from .structure import CODE_PATTERN, ID_PATTERN

#: Canonical column keys, by the exact CSV header and by the API's snake_case name.
_COLUMNS = {
    "Variable / Field Name": "field_name",
    "Form Name": "form_name",
    "Section Header": "section_header",
    "Field Type": "field_type",
    "Field Label": "field_label",
    "Choices, Calculations, OR Slider Labels": "select_choices_or_calculations",
    "Field Note": "field_note",
    "Text Validation Type OR Show Slider Number": "text_validation_type_or_show_slider_number",
    "Text Validation Min": "text_validation_min",
    "Text Validation Max": "text_validation_max",
    "Identifier?": "identifier",
    "Branching Logic (Show field only if...)": "branching_logic",
    "Required Field?": "required_field",
    "Custom Alignment": "custom_alignment",
    "Question Number (surveys only)": "question_number",
    "Matrix Group Name": "matrix_group_name",
    "Matrix Ranking?": "matrix_ranking",
    "Field Annotation": "field_annotation",
}
_REQUIRED_COLUMNS = ("field_name", "form_name", "field_type", "field_label")

_DATE_CODES = {"date_ymd", "date_mdy", "date_dmy"}
_DATETIME_CODES = {
    "datetime_ymd", "datetime_mdy", "datetime_dmy",
    "datetime_seconds_ymd", "datetime_seconds_mdy", "datetime_seconds_dmy",
}
_TIME_CODES = {"time", "time_hh_mm_ss", "time_mm_ss"}
_TEXT_FORMAT_CODES = {
    "email", "phone", "phone_australia", "zipcode", "postalcode_australia", "postalcode_canada",
    "postalcode_french", "postalcode_germany", "ssn", "mrn_10d", "mrn_generic", "vmrn",
    "alpha_only",
}
_DECIMALS_CODE = re.compile(r"^number_([1-4])dp(_comma_decimal)?$")
_EVENT_PREFIX = re.compile(r"\[([a-z][a-z0-9_]*_arm_\d+[a-z]?)\](?=\[)")
_SMART_VARIABLE = re.compile(r"\[[a-z0-9_]+(?:-[a-z0-9_]+)+(?::[^\]]*)?\]")
_KEY_ORDER = (
    "id", "type", "label", "help", "required", "identifier", "min", "max", "decimals", "choices",
    "slider_labels", "calculation", "show_if",
)
_TAG = re.compile(r"<[^>]+>")
_ACTION_TAG = re.compile(r"@[A-Z][A-Z0-9_-]+")


@dataclass(frozen=True)
class RedcapImport:
    """The protocol YAML skeleton and what could not be translated (one line per item)."""

    protocol_yaml: str
    report: list[str]


class RedcapImportError(ValueError):
    """The CSV is not a REDCap data dictionary (missing columns, no rows)."""


def _plain_text(label: str) -> str:
    text = html.unescape(_TAG.sub("", label))
    return " ".join(text.split())


def _read_rows(csv_text: str) -> list[dict[str, str]]:
    reader = csv.reader(io.StringIO(csv_text.lstrip("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        raise RedcapImportError("the data dictionary is empty") from None
    keys = [_COLUMNS.get(h.strip(), h.strip().lower()) for h in header]
    missing = [c for c in _REQUIRED_COLUMNS if c not in keys]
    if missing:
        raise RedcapImportError(f"not a REDCap data dictionary: missing columns {missing}")
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        row = {key: (values[i].strip() if i < len(values) else "") for i, key in enumerate(keys)}
        rows.append(row)
    if not rows:
        raise RedcapImportError("the data dictionary has no fields")
    return rows


def _parse_choices(text: str, where: str, report: list[str]) -> list[dict[str, Any]]:
    choices = []
    for part in text.split("|"):
        part = part.strip()
        if not part:
            continue
        code, sep, label = part.partition(",")
        code = code.strip()
        if not sep:
            report.append(f"{where}: choice '{part}' has no label; the code is used as label")
            label = code
        if not re.fullmatch(CODE_PATTERN.removeprefix("^").removesuffix("$"), code):
            report.append(f"{where}: choice code '{code}' is not a valid code; choice dropped")
            continue
        choices.append({"code": code, "label": {"en": _plain_text(label) or code}})
    return choices


def translate_logic(text: str, where: str, report: list[str]) -> str | None:
    """Return REDCap logic in our expression syntax, or None (reported) when it cannot be."""
    logic = " ".join(text.split())
    if _SMART_VARIABLE.search(logic):
        report.append(f"{where}: smart variables are not supported in {logic!r}; logic dropped")
        return None
    events = sorted(set(_EVENT_PREFIX.findall(logic)))
    if events:
        report.append(f"{where}: event prefixes {', '.join(events)} removed (all forms are in "
                      "one visit); check the logic")
        logic = _EVENT_PREFIX.sub("", logic)
    logic = _normalize_quotes(logic).replace("!=", "<>")
    try:
        parse(logic)
    except ExpressionError as exc:
        report.append(f"{where}: cannot translate {text!r}: {exc}; logic dropped")
        return None
    return logic


def _normalize_quotes(logic: str) -> str:
    """Rewrite "..." string literals as '...' (Excel mangles double quotes in CSV exports)."""
    out: list[str] = []
    i = 0
    while i < len(logic):
        ch = logic[i]
        if ch in "'\"":
            end = logic.find(ch, i + 1)
            if end < 0:
                out.append(logic[i:])
                break
            body = logic[i + 1:end]
            out.append(f"'{body}'" if "'" not in body else logic[i:end + 1])
            i = end + 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _bound(value: str, kind: str, where: str, side: str, report: list[str]) -> Any:
    if not value:
        return None
    if kind in ("integer", "decimal", "slider"):
        try:
            number = float(value)
        except ValueError:
            report.append(f"{where}: {side} {value!r} is not a number; dropped")
            return None
        return int(number) if number.is_integer() else number
    if kind == "date" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return value
    if kind == "datetime" and re.fullmatch(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?", value):
        return value.replace(" ", "T")
    if kind == "time" and re.fullmatch(r"\d{2}:\d{2}(:\d{2})?", value):
        return value
    report.append(f"{where}: {side} {value!r} cannot be expressed as a fixed {kind} limit; dropped")
    return None


def _text_field(row: dict[str, str], field: dict[str, Any], where: str,
                report: list[str]) -> None:
    code = row.get("text_validation_type_or_show_slider_number", "")
    if not code:
        field["type"] = "text"
    elif code == "integer":
        field["type"] = "integer"
    elif code == "number":
        field["type"] = "decimal"
    elif match := _DECIMALS_CODE.match(code):
        field["type"] = "decimal"
        field["decimals"] = int(match.group(1))
        if match.group(2):
            report.append(f"{where}: comma decimal separator of '{code}' is a display choice; "
                          "values are stored with a point")
    elif code.startswith("number_comma_decimal"):
        field["type"] = "decimal"
        report.append(f"{where}: comma decimal separator of '{code}' is a display choice")
    elif code in _DATE_CODES:
        field["type"] = "date"
    elif code in _DATETIME_CODES:
        field["type"] = "datetime"
    elif code in _TIME_CODES:
        field["type"] = "time"
        if code == "time_mm_ss":
            report.append(f"{where}: time_mm_ss (minutes:seconds) imported as a time of day")
    elif code in _TEXT_FORMAT_CODES:
        field["type"] = "text"
        report.append(f"{where}: validation '{code}' imported as plain text (format not checked)")
    else:
        field["type"] = "text"
        report.append(f"{where}: unknown validation type '{code}'; imported as plain text")
    if field["type"] != "text":
        for side in ("min", "max"):
            bound = _bound(row.get(f"text_validation_{side}", ""), field["type"], where, side,
                           report)
            if bound is not None:
                field[side] = bound
    choices = row.get("select_choices_or_calculations", "")
    if choices.upper().startswith("BIOPORTAL:"):
        report.append(f"{where}: ontology lookup {choices} is not supported; plain text field")


def _convert_field(row: dict[str, str], report: list[str]) -> dict[str, Any] | None:
    name = row["field_name"]
    where = f"{row['form_name']}.{name}"
    kind = row["field_type"].lower()
    label = _plain_text(row["field_label"]) or name
    field: dict[str, Any] = {"id": name}
    choices_text = row.get("select_choices_or_calculations", "")
    if kind == "sql":
        report.append(f"{where}: sql fields are not supported; field skipped")
        return None
    if kind == "text":
        _text_field(row, field, where, report)
    elif kind == "notes":
        field["type"] = "text"
    elif kind in ("dropdown", "radio", "checkbox"):
        field["type"] = "multiple_choice" if kind == "checkbox" else "single_choice"
        field["choices"] = _parse_choices(choices_text, where, report)
        if not field["choices"]:
            report.append(f"{where}: no usable choices; imported as plain text")
            field["type"] = "text"
            del field["choices"]
    elif kind in ("yesno", "truefalse"):
        field["type"] = "yesno"
    elif kind == "calc":
        field["type"] = "calculated"
        calculation = translate_logic(choices_text, f"{where} calculation", report)
        if calculation is None:
            report.append(f"{where}: calculated field without a usable formula; imported as "
                          "decimal")
            field["type"] = "decimal"
        else:
            field["calculation"] = calculation
    elif kind == "slider":
        field["type"] = "slider"
        field["min"] = _bound(row.get("text_validation_min", ""), "slider", where, "min",
                              report) or 0
        high = _bound(row.get("text_validation_max", ""), "slider", where, "max", report)
        field["max"] = 100 if high is None else high
        anchors = [_plain_text(p) for p in choices_text.split("|") if p.strip()]
        if anchors:
            field["slider_labels"] = [{"en": a} for a in anchors]
    elif kind == "descriptive":
        field["type"] = "descriptive"
    elif kind == "file":
        is_signature = row.get("text_validation_type_or_show_slider_number", "") == "signature"
        field["type"] = "signature" if is_signature else "file"
    else:
        report.append(f"{where}: unknown field type '{kind}'; field skipped")
        return None
    field["label"] = {"en": label}
    note = _plain_text(row.get("field_note", ""))
    if note:
        field["help"] = {"en": note}
    if row.get("required_field", "").lower() == "y" and field["type"] not in (
        "descriptive", "calculated"
    ):
        field["required"] = True
    if row.get("identifier", "").lower() == "y":
        field["identifier"] = True
    branching = row.get("branching_logic", "")
    if branching:
        show_if = translate_logic(branching, f"{where} branching", report)
        if show_if is not None:
            field["show_if"] = show_if
    field = {key: field[key] for key in _KEY_ORDER if key in field}
    annotation = row.get("field_annotation", "")
    tags = sorted(set(_ACTION_TAG.findall(annotation)))
    if tags:
        report.append(f"{where}: action tags {', '.join(tags)} are not supported; ignored")
    if row.get("matrix_ranking", "").lower() == "y":
        report.append(f"{where}: matrix ranking is not supported; ignored")
    return field


def _drop_unknown_references(forms: list[dict[str, Any]], report: list[str]) -> None:
    known = {f["id"] for form in forms for f in form["fields"]}
    for form in forms:
        for field in form["fields"]:
            for key in ("show_if", "calculation"):
                text = field.get(key)
                if text is None:
                    continue
                unknown = sorted({r.field for r in parse(text).references} - known)
                if unknown:
                    report.append(f"{form['id']}.{field['id']}: {key} refers to fields not "
                                  f"imported ({', '.join(unknown)}); dropped")
                    del field[key]
                    if key == "calculation":
                        field["type"] = "decimal"


def import_redcap_dictionary(csv_text: str, *, code: str, title: str) -> RedcapImport:
    """Translate a REDCap data dictionary into protocol YAML plus a report of what was not.

    Raise RedcapImportError when the text is not a data dictionary at all.
    """
    rows = _read_rows(csv_text)
    report: list[str] = []
    record_id = rows[0]["field_name"]
    report.append(f"{rows[0]['form_name']}.{record_id}: record id field not imported "
                  "(participants are identified by their subject code)")
    forms: dict[str, dict[str, Any]] = {}
    sections: dict[str, int] = {}
    matrices: dict[str, set[str]] = {}
    seen: set[str] = set()
    for row in rows[1:]:
        form_id, name = row["form_name"], row["field_name"]
        if not re.fullmatch(ID_PATTERN.removeprefix("^").removesuffix("$"), form_id):
            report.append(f"{form_id}: form name is not a valid id; form skipped")
            continue
        if not re.fullmatch(ID_PATTERN.removeprefix("^").removesuffix("$"), name) \
                or name in seen:
            report.append(f"{form_id}.{name}: invalid or duplicate field name; field skipped")
            continue
        seen.add(name)
        if row.get("section_header"):
            sections[form_id] = sections.get(form_id, 0) + 1
        if row.get("matrix_group_name"):
            matrices.setdefault(row["matrix_group_name"], set()).add(form_id)
        field = _convert_field(row, report)
        if field is None:
            continue
        form = forms.setdefault(form_id, {
            "id": form_id, "title": {"en": form_id.replace("_", " ").capitalize()},
            "fields": [],
        })
        form["fields"].append(field)
    for form_id, count in sections.items():
        report.append(f"{form_id}: {count} section header(s) not imported (forms have no "
                      "sections)")
    for group, form_ids in sorted(matrices.items()):
        report.append(f"matrix group '{group}' ({', '.join(sorted(form_ids))}) imported as "
                      "individual fields")
    form_list = [f for f in forms.values() if f["fields"]]
    _drop_unknown_references(form_list, report)
    report.append("arms, randomization, eligibility and endpoints are placeholders: edit them; "
                  "all forms were put in one 'baseline' visit")
    document = {
        "code": code,
        "title": {"en": title},
        "phase": "na",
        "therapeutic_area": "unspecified",
        "version": "0.1",
        "arms": [
            {"code": "active", "name": {"en": "Active"}, "ratio": 1},
            {"code": "control", "name": {"en": "Control"}, "ratio": 1, "is_control": True},
        ],
        "randomization": {"method": "simple"},
        "schedule": {"visits": [{
            "id": "baseline", "label": {"en": "Baseline"}, "day": 0,
            "forms": [f["id"] for f in form_list],
        }]},
        "forms": form_list,
    }
    header = f"# Imported from a REDCap data dictionary: {len(form_list)} forms.\n"
    body = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
    return RedcapImport(header + body, report)
