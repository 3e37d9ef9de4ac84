"""Form renderers: the JSON description for pages and apps, and the FHIR R4 Questionnaire."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ecrf.model import Choice, EditCheck, FieldDef, FieldType, FormDef, Label
from ecrf.render import EXPRESSION_LANGUAGE, form_to_fhir_questionnaire, form_to_json

SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition"
CORE = "http://hl7.org/fhir/StructureDefinition"


def fld(id_: str, type_: FieldType, **kwargs: object) -> FieldDef:
    label = kwargs.pop("label", Label(id_.title(), f"{id_}中文"))
    return FieldDef(id=id_, type=type_, label=label, **kwargs)  # type: ignore[arg-type]


SEVERITY = (Choice("1", Label("Mild", "轻度")), Choice("2", Label("Severe")))
REASONS = (Choice("1", Label("Pain")), Choice("6", Label("Other", "其他")))

FORM = FormDef(
    id="adverse_event",
    title=Label("Adverse event", "不良事件"),
    repeating=True,
    respondent="site",
    fields=(
        fld("any_ae", "yesno", required=True, help=Label("Since last visit", "自上次访视以来")),
        fld("severity", "single_choice", choices=SEVERITY, show_if="[any_ae] = '1'"),
        fld("reasons", "multiple_choice", choices=REASONS),
        fld("other", "text", max_length=200, show_if="[reasons(6)] = '1'"),
        fld("n_days", "integer", min=0, max=365, unit="d", show_if="[severity] <> '2'"),
        fld("dose", "decimal", min=0.5, max=10, decimals=1, unit="mg"),
        fld("pain", "slider", slider_labels=(Label("None"), Label("Worst"))),
        fld("onset_on", "date", min="2024-01-01", show_if="[n_days] > 3 and [any_ae] = '1'"),
        fld("onset_at", "datetime", show_if="[n_days] >= 3 or [dose] < 2.5"),
        fld("onset_time", "time", show_if="[severity] = ''"),
        fld("ratio", "calculated", calculation="[dose] / [n_days]", decimals=2),
        fld("score", "calculated", calculation="[n_days] * 2", decimals=0),
        fld("note", "descriptive", show_if="datediff([onset_on], 'today', 'd') > 30"),
        fld("photo", "file", show_if="[other_form_field] = '1'"),
        fld("sign", "signature", required=True),
        fld("mixed", "text", show_if="[any_ae] = '1' and ([dose] > 1 or [pain] > 1)"),
    ),
    checks=(EditCheck("dose_days", "[dose] < 5 or [n_days] < 30", "warning", Label("High")),),
)


def test_form_to_json_describes_everything_the_page_needs() -> None:
    described = form_to_json(FORM, "zh-CN")
    assert json.loads(json.dumps(described)) == described
    assert described["language"] == "zh"
    assert described["title"] == "不良事件"
    assert described["titles"] == {"en": "Adverse event", "zh": "不良事件"}
    assert described["repeating"] is True
    fields = {f["id"]: f for f in described["fields"]}
    assert [f["id"] for f in described["fields"]] == [f.id for f in FORM.fields]
    assert fields["severity"]["choices"] == [
        {"code": "1", "label": "轻度", "labels": {"en": "Mild", "zh": "轻度"}},
        {"code": "2", "label": "Severe", "labels": {"en": "Severe", "zh": "Severe"}},
    ]
    assert fields["severity"]["show_if"] == "[any_ae] = '1'"
    assert fields["any_ae"]["help"] == "自上次访视以来"
    assert {k: fields["dose"][k] for k in ("unit", "min", "max", "decimals")} == {
        "unit": "mg",
        "min": 0.5,
        "max": 10,
        "decimals": 1,
    }
    assert fields["pain"]["min"] == 0 and fields["pain"]["max"] == 100
    assert fields["pain"]["slider_labels"] == ["None", "Worst"]
    assert fields["ratio"]["calculation"] == "[dose] / [n_days]"
    assert fields["ratio"]["read_only"] is True
    assert described["checks"] == [
        {
            "id": "dose_days",
            "condition": "[dose] < 5 or [n_days] < 30",
            "severity": "warning",
            "message": "High",
            "messages": {"en": "High", "zh": "High"},
        }
    ]
    assert form_to_json(FORM)["fields"][0]["label"] == "Any_Ae"


def test_missing_codes_and_field_checks_are_described() -> None:
    form = FormDef(
        id="f",
        title=Label("F"),
        fields=(
            fld(
                "x",
                "integer",
                allow_missing_codes=("not_done",),
                checks=(EditCheck("pos", "[x] > 0", "error", Label("Positive", "正数")),),
            ),
        ),
    )
    field = form_to_json(form, "zh")["fields"][0]
    assert field["missing_codes"] == [{"code": "not_done", "label": "Not done"}]
    assert field["checks"][0]["message"] == "正数"


def items_by_link_id(questionnaire: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def walk(items: list[dict[str, Any]]) -> None:
        for item in items:
            assert item["linkId"] not in found, "linkId must be unique"
            found[item["linkId"]] = item
            walk(item.get("item", []))

    walk(questionnaire["item"])
    return found


@pytest.fixture(scope="module")
def questionnaire() -> dict[str, Any]:
    return form_to_fhir_questionnaire(FORM, url="https://example.org/q/ae", version="2")


def test_questionnaire_header(questionnaire: dict[str, Any]) -> None:
    assert json.loads(json.dumps(questionnaire)) == questionnaire
    assert questionnaire["resourceType"] == "Questionnaire"
    assert questionnaire["id"] == "adverse-event"
    assert questionnaire["name"] == "AdverseEvent"
    assert questionnaire["url"] == "https://example.org/q/ae"
    assert questionnaire["version"] == "2"
    assert questionnaire["status"] == "active"
    assert questionnaire["title"] == "Adverse event"
    translation = questionnaire["_title"]["extension"][0]
    assert translation["url"] == f"{CORE}/translation"
    assert {"url": "content", "valueString": "不良事件"} in translation["extension"]
    group = questionnaire["item"][0]
    assert group["type"] == "group" and group["repeats"] is True


def test_questionnaire_item_types(questionnaire: dict[str, Any]) -> None:
    items = items_by_link_id(questionnaire)
    types = {link_id: item["type"] for link_id, item in items.items()}
    assert types == {
        "adverse_event": "group",
        "any_ae": "boolean",
        "any_ae-help": "display",
        "severity": "choice",
        "reasons": "choice",
        "other": "string",
        "n_days": "integer",
        "dose": "decimal",
        "pain": "integer",
        "onset_on": "date",
        "onset_at": "dateTime",
        "onset_time": "time",
        "ratio": "decimal",
        "score": "integer",
        "note": "display",
        "photo": "attachment",
        "sign": "attachment",
        "mixed": "string",
    }
    assert items["reasons"]["repeats"] is True
    assert items["any_ae"]["required"] is True and items["sign"]["required"] is True
    assert items["other"]["maxLength"] == 200
    assert items["ratio"]["readOnly"] is True
    assert "required" not in items["note"]
    assert items["severity"]["answerOption"][0]["valueCoding"]["code"] == "1"
    assert items["severity"]["answerOption"][0]["valueCoding"]["_display"]["extension"]
    assert {"url": f"{CORE}/minValue", "valueInteger": 0} in items["n_days"]["extension"]
    assert {"url": f"{CORE}/maxValue", "valueDecimal": 10} in items["dose"]["extension"]
    assert {"url": f"{CORE}/maxDecimalPlaces", "valueInteger": 1} in items["dose"]["extension"]
    assert {"url": f"{CORE}/minValue", "valueDate": "2024-01-01"} in items["onset_on"]["extension"]
    assert {"url": f"{CORE}/maxValue", "valueInteger": 100} in items["pain"]["extension"]
    calculated = items["ratio"]["extension"][0]
    assert calculated == {
        "url": f"{SDC}/sdc-questionnaire-calculatedExpression",
        "valueExpression": {"language": EXPRESSION_LANGUAGE, "expression": "[dose] / [n_days]"},
    }


def test_simple_show_if_becomes_enable_when(questionnaire: dict[str, Any]) -> None:
    items = items_by_link_id(questionnaire)
    assert items["severity"]["enableWhen"] == [
        {"question": "any_ae", "operator": "=", "answerBoolean": True}
    ]
    assert items["other"]["enableWhen"] == [
        {
            "question": "reasons",
            "operator": "=",
            "answerCoding": {"code": "6", "display": "Other"},
        }
    ]
    assert items["n_days"]["enableWhen"] == [
        {
            "question": "severity",
            "operator": "!=",
            "answerCoding": {"code": "2", "display": "Severe"},
        }
    ]
    assert items["onset_on"]["enableWhen"] == [
        {"question": "n_days", "operator": ">", "answerInteger": 3},
        {"question": "any_ae", "operator": "=", "answerBoolean": True},
    ]
    assert items["onset_on"]["enableBehavior"] == "all"
    assert items["onset_at"]["enableWhen"] == [
        {"question": "n_days", "operator": ">=", "answerInteger": 3},
        {"question": "dose", "operator": "<", "answerDecimal": 2.5},
    ]
    assert items["onset_at"]["enableBehavior"] == "any"
    assert items["onset_time"]["enableWhen"] == [
        {"question": "severity", "operator": "exists", "answerBoolean": False}
    ]
    assert "enableBehavior" not in items["severity"]


@pytest.mark.parametrize("link_id", ["note", "photo", "mixed"])
def test_other_show_if_is_kept_as_expression(questionnaire: dict[str, Any], link_id: str) -> None:
    item = items_by_link_id(questionnaire)[link_id]
    field = FORM.field(link_id)
    assert "enableWhen" not in item
    assert {
        "url": f"{SDC}/sdc-questionnaire-enableWhenExpression",
        "valueExpression": {"language": EXPRESSION_LANGUAGE, "expression": field.show_if},
    } in item["extension"]


def test_non_repeating_form_lists_items_directly() -> None:
    form = FormDef(id="9vitals", title=Label("Vitals"), fields=(fld("w", "decimal"),))
    questionnaire = form_to_fhir_questionnaire(form, url="u", version="1", status="draft")
    assert questionnaire["status"] == "draft"
    assert questionnaire["name"] == "Form9vitals"
    assert "_title" not in questionnaire
    assert [item["linkId"] for item in questionnaire["item"]] == ["w"]


def test_reversed_and_checkbox_unchecked_comparisons() -> None:
    form = FormDef(
        id="f",
        title=Label("F"),
        fields=(
            fld("cb", "multiple_choice", choices=REASONS),
            fld("a", "integer", show_if="5 < [b]"),
            fld("b", "integer", show_if="[cb(1)] = '0'"),
            fld("c", "text", show_if="[t] = 'x'"),
            fld("t", "text", show_if="[cb(9)] = '1'"),
        ),
    )
    items = items_by_link_id(form_to_fhir_questionnaire(form, url="u", version="1"))
    assert items["a"]["enableWhen"] == [{"question": "b", "operator": ">", "answerInteger": 5}]
    assert items["b"]["enableWhen"] == [
        {"question": "cb", "operator": "!=", "answerCoding": {"code": "1", "display": "Pain"}}
    ]
    assert items["c"]["enableWhen"] == [{"question": "t", "operator": "=", "answerString": "x"}]
    assert "enableWhen" not in items["t"]
