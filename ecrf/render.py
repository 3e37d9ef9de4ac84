"""Renderers: a form as a JSON description (web page, apps) and as a FHIR R4 Questionnaire.

Both return plain dicts ready for ``json.dumps``. The JSON description carries everything the
browser needs to render the form and evaluate it live with ``ecrf/static/expressions.js``.

FHIR mapping (R4, SDC extensions where the base resource has no slot):

========================  ==========================================================
field type                Questionnaire.item
========================  ==========================================================
integer, decimal          integer, decimal (minValue/maxValue, maxDecimalPlaces)
text                      string (maxLength)
date, datetime, time      date, dateTime, time
yesno                     boolean
single_choice             choice with answerOption.valueCoding
multiple_choice           choice, repeats = true
slider                    integer (decimal when it has decimals), itemControl slider
calculated                readOnly, decimal/integer (by decimals) or string, the
                          calculation in sdc calculatedExpression
descriptive               display
file, signature           attachment
========================  ==========================================================

``show_if`` becomes ``enableWhen`` when it is a comparison of a field of the same form with a
literal (``[x] = 'v'``, ``<>``, ``<``, …, ``[x] = ''``/``<> ''`` as ``exists``, checkbox
``[x(code)] = '1'``), or several of those joined only by ``and`` (enableBehavior all) or only
by ``or`` (any). Anything else is kept as text in the sdc ``enableWhenExpression`` extension
with the language ``EXPRESSION_LANGUAGE``. Chinese labels travel in the standard
``translation`` extension on ``_text``.
"""

from __future__ import annotations

import re
from typing import Any

from ecrf.expressions import BinaryNode, ExpressionError, LiteralNode, Node, RefNode, parse
from ecrf.model import MISSING_CODES, EditCheck, FieldDef, FormDef, Label

__all__ = ["EXPRESSION_LANGUAGE", "form_to_fhir_questionnaire", "form_to_json"]

EXPRESSION_LANGUAGE = "text/x-dtx-expression"
_SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition"
_CORE = "http://hl7.org/fhir/StructureDefinition"
_ITEM_CONTROL = "http://hl7.org/fhir/questionnaire-item-control"

_FHIR_TYPES = {
    "integer": "integer",
    "decimal": "decimal",
    "text": "string",
    "date": "date",
    "datetime": "dateTime",
    "time": "time",
    "yesno": "boolean",
    "single_choice": "choice",
    "multiple_choice": "choice",
    "file": "attachment",
    "signature": "attachment",
    "descriptive": "display",
}
_FHIR_OPERATORS = {"=": "=", "<>": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
_SWAPPED = {"=": "=", "<>": "<>", "<": ">", ">": "<", "<=": ">=", ">=": "<="}


# --------------------------------------------------------------------------- JSON description


def _labels(label: Label | None) -> dict[str, str] | None:
    if label is None:
        return None
    return {"en": label.en, "zh": label.zh or label.en}


def _check_json(check: EditCheck, language: str) -> dict[str, Any]:
    return {
        "id": check.id,
        "condition": check.condition,
        "severity": check.severity,
        "message": check.message.get(language),
        "messages": _labels(check.message),
    }


def _field_json(field: FieldDef, language: str) -> dict[str, Any]:
    return {
        "id": field.id,
        "type": field.type,
        "label": field.label.get(language),
        "labels": _labels(field.label),
        "help": field.help.get(language) if field.help else None,
        "helps": _labels(field.help),
        "unit": field.unit,
        "required": field.required,
        "min": field.min if field.min is not None else (0 if field.type == "slider" else None),
        "max": field.max if field.max is not None else (100 if field.type == "slider" else None),
        "decimals": field.decimals,
        "max_length": field.max_length,
        "choices": [
            {"code": c.code, "label": c.label.get(language), "labels": _labels(c.label)}
            for c in field.choices
        ],
        "slider_labels": [label.get(language) for label in field.slider_labels],
        "show_if": field.show_if,
        "calculation": field.calculation,
        "checks": [_check_json(check, language) for check in field.checks],
        "missing_codes": [
            {"code": code, "label": MISSING_CODES.get(code, code)}
            for code in field.allow_missing_codes
        ],
        "identifier": field.identifier,
        "read_only": field.type in ("calculated", "descriptive"),
    }


def form_to_json(form: FormDef, language: str = "en") -> dict[str, Any]:
    """Describe a form for the web page and apps: labels in ``language`` plus both languages."""
    return {
        "id": form.id,
        "language": "zh" if language.startswith("zh") else "en",
        "title": form.title.get(language),
        "titles": _labels(form.title),
        "respondent": form.respondent,
        "repeating": form.repeating,
        "fields": [_field_json(field, language) for field in form.fields],
        "checks": [_check_json(check, language) for check in form.checks],
    }


# --------------------------------------------------------------------------- FHIR Questionnaire


def _translation(label: Label) -> dict[str, Any] | None:
    if not label.zh:
        return None
    return {
        "extension": [
            {
                "url": f"{_CORE}/translation",
                "extension": [
                    {"url": "lang", "valueCode": "zh"},
                    {"url": "content", "valueString": label.zh},
                ],
            }
        ]
    }


def _with_text(item: dict[str, Any], label: Label) -> dict[str, Any]:
    item["text"] = label.en
    translation = _translation(label)
    if translation is not None:
        item["_text"] = translation
    return item


def _coding(code: str, label: Label) -> dict[str, Any]:
    coding: dict[str, Any] = {"code": code, "display": label.en}
    translation = _translation(label)
    if translation is not None:
        coding["_display"] = translation
    return coding


def _item_control(code: str) -> dict[str, Any]:
    return {
        "url": f"{_CORE}/questionnaire-itemControl",
        "valueCodeableConcept": {"coding": [{"system": _ITEM_CONTROL, "code": code}]},
    }


def _expression(url: str, text: str) -> dict[str, Any]:
    return {
        "url": f"{_SDC}/{url}",
        "valueExpression": {"language": EXPRESSION_LANGUAGE, "expression": text},
    }


def _typed_limit(fhir_type: str, limit: float | str) -> dict[str, Any] | None:
    if fhir_type == "integer" and isinstance(limit, int | float) and float(limit).is_integer():
        return {"valueInteger": int(limit)}
    if fhir_type in ("integer", "decimal") and isinstance(limit, int | float):
        return {"valueDecimal": limit}
    if fhir_type == "date" and isinstance(limit, str):
        return {"valueDate": limit}
    if fhir_type == "dateTime" and isinstance(limit, str):
        return {"valueDateTime": limit}
    if fhir_type == "time" and isinstance(limit, str):
        return {"valueTime": limit if len(limit) == 8 else f"{limit}:00"}
    return None


def _answer(field: FieldDef, value: object) -> dict[str, Any] | None:
    """Return the typed enableWhen answer for a literal compared with ``field``, or None."""
    text = value if isinstance(value, str) else None
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if text is not None and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
        number = float(text) if "." in text else int(text)
    if field.type == "yesno" and value in ("1", "0", 1, 0, True, False):
        return {"answerBoolean": value in ("1", 1, True)}
    if field.type in ("single_choice", "multiple_choice"):
        code = text if text is not None else (str(value) if number is not None else None)
        if code is None or code not in {c.code for c in field.choices}:
            return None
        display = next(c.label.en for c in field.choices if c.code == code)
        return {"answerCoding": {"code": code, "display": display}}
    if field.type in ("integer", "slider") and isinstance(number, int):
        return {"answerInteger": number}
    if field.type == "integer" and isinstance(number, float) and number.is_integer():
        return {"answerInteger": int(number)}
    if field.type in ("decimal", "slider") and number is not None:
        return {"answerDecimal": number}
    if field.type == "text" and text is not None:
        return {"answerString": text}
    if field.type == "date" and text is not None and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return {"answerDate": text}
    return None


def _condition(node: Node, fields: dict[str, FieldDef]) -> dict[str, Any] | None:
    if not isinstance(node, BinaryNode) or node.op not in _FHIR_OPERATORS:
        return None
    op, left, right = node.op, node.left, node.right
    if isinstance(left, LiteralNode) and isinstance(right, RefNode):
        op, left, right = _SWAPPED[op], right, left
    if not isinstance(left, RefNode) or not isinstance(right, LiteralNode):
        return None
    ref = left.reference
    field = fields.get(ref.field)
    if field is None or ref.visit is not None or ref.instance is not None:
        return None
    if ref.option is not None:
        if field.type != "multiple_choice" or op not in ("=", "<>"):
            return None
        if right.value not in ("1", "0", 1, 0):
            return None
        checked = right.value in ("1", 1)
        answer = _answer(field, ref.option)
        if answer is None:
            return None
        operator = "=" if checked == (op == "=") else "!="
        return {"question": field.id, "operator": operator, **answer}
    if right.value is None:
        if op not in ("=", "<>"):
            return None
        return {"question": field.id, "operator": "exists", "answerBoolean": op == "<>"}
    answer = _answer(field, right.value)
    if answer is None:
        return None
    if op not in ("=", "<>") and not {"answerInteger", "answerDecimal", "answerDate"} & set(answer):
        return None
    return {"question": field.id, "operator": _FHIR_OPERATORS[op], **answer}


def _flatten(node: Node, op: str) -> list[Node]:
    if isinstance(node, BinaryNode) and node.op == op:
        return _flatten(node.left, op) + _flatten(node.right, op)
    return [node]


def _enable_when(show_if: str, fields: dict[str, FieldDef]) -> dict[str, Any]:
    """Translate show_if into enableWhen (+ enableBehavior), or into the expression extension."""
    try:
        ast = parse(show_if).ast
    except ExpressionError:
        ast = None
    if ast is not None:
        for op, behavior in (("and", "all"), ("or", "any")):
            parts = _flatten(ast, op)
            if len(parts) < 2 and op == "or":
                continue
            conditions = [_condition(part, fields) for part in parts]
            if all(condition is not None for condition in conditions):
                result: dict[str, Any] = {"enableWhen": conditions}
                if len(conditions) > 1:
                    result["enableBehavior"] = behavior
                return result
    return {"extension": [_expression("sdc-questionnaire-enableWhenExpression", show_if)]}


def _question(field: FieldDef, fields: dict[str, FieldDef]) -> dict[str, Any]:
    if field.type == "slider":
        fhir_type = "decimal" if field.decimals else "integer"
    elif field.type == "calculated":
        fhir_type = {None: "string", 0: "integer"}.get(field.decimals, "decimal")
    else:
        fhir_type = _FHIR_TYPES[field.type]
    item: dict[str, Any] = {"linkId": field.id}
    _with_text(item, field.label)
    item["type"] = fhir_type
    extensions: list[dict[str, Any]] = []
    if field.required and fhir_type != "display" and field.type != "calculated":
        item["required"] = True
    if field.type == "multiple_choice":
        item["repeats"] = True
    if field.type == "calculated":
        item["readOnly"] = True
        if field.calculation:
            extensions.append(
                _expression("sdc-questionnaire-calculatedExpression", field.calculation)
            )
    if field.choices:
        item["answerOption"] = [{"valueCoding": _coding(c.code, c.label)} for c in field.choices]
    if field.max_length is not None and fhir_type == "string":
        item["maxLength"] = field.max_length
    low = field.min if field.min is not None else (0 if field.type == "slider" else None)
    high = field.max if field.max is not None else (100 if field.type == "slider" else None)
    for name, limit in (("minValue", low), ("maxValue", high)):
        typed = _typed_limit(fhir_type, limit) if limit is not None else None
        if typed is not None:
            extensions.append({"url": f"{_CORE}/{name}", **typed})
    if field.decimals is not None and fhir_type == "decimal":
        extensions.append({"url": f"{_CORE}/maxDecimalPlaces", "valueInteger": field.decimals})
    if field.unit:
        extensions.append(
            {
                "url": f"{_CORE}/questionnaire-unit",
                "valueCoding": {"system": "http://unitsofmeasure.org", "code": field.unit},
            }
        )
    if field.type == "slider":
        extensions.append(_item_control("slider"))
    if field.type == "signature":
        extensions.append(_item_control("signature"))
    if field.show_if:
        condition = _enable_when(field.show_if, fields)
        extensions.extend(condition.pop("extension", []))
        item.update(condition)
    if extensions:
        item["extension"] = extensions
    if field.help is not None:
        help_item: dict[str, Any] = {"linkId": f"{field.id}-help", "type": "display"}
        _with_text(help_item, field.help)
        help_item["extension"] = [_item_control("help")]
        item["item"] = [help_item]
    return item


def _fhir_id(form_id: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9\-.]", "-", form_id)[:64]
    return cleaned or "form"


def _fhir_name(form_id: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", form_id)
    name = "".join(word[:1].upper() + word[1:] for word in words if word)
    return name if name[:1].isalpha() and name[:1].isascii() else f"Form{name}"


def form_to_fhir_questionnaire(
    form: FormDef, *, url: str, version: str, status: str = "active"
) -> dict[str, Any]:
    """Return the form as a FHIR R4 Questionnaire resource (a plain dict).

    A repeating form (adverse events, medications) becomes one repeating group item.
    """
    fields = {field.id: field for field in form.fields}
    items = [_question(field, fields) for field in form.fields]
    questionnaire: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "id": _fhir_id(form.id),
        "url": url,
        "version": version,
        "name": _fhir_name(form.id),
        "status": status,
        "language": "en",
        "subjectType": ["Patient"],
    }
    _with_text(questionnaire, form.title)
    questionnaire["title"] = questionnaire.pop("text")
    if "_text" in questionnaire:
        questionnaire["_title"] = questionnaire.pop("_text")
    if form.repeating:
        group: dict[str, Any] = {"linkId": form.id, "type": "group", "repeats": True}
        _with_text(group, form.title)
        group["item"] = items
        questionnaire["item"] = [group]
    else:
        questionnaire["item"] = items
    return questionnaire
