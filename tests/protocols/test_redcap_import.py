"""REDCap data dictionaries import as loadable protocol skeletons with a report."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from protocols.loader import load_protocol_text, validate_protocol_text
from protocols.redcap import RedcapImportError, import_redcap_dictionary, translate_logic

DICTIONARY = (Path(__file__).parent / "data" / "redcap_dictionary.csv").read_text(
    encoding="utf-8")


@pytest.fixture(scope="module")
def imported() -> tuple[str, list[str]]:
    result = import_redcap_dictionary(DICTIONARY, code="RC-IMPORT", title="Imported study")
    return result.protocol_yaml, result.report


def test_import_loads_without_issues(imported: tuple[str, list[str]]) -> None:
    text, _ = imported
    assert validate_protocol_text(text, "imported.yaml") == []
    protocol = load_protocol_text(text)
    assert [f.id for f in protocol.forms] == ["enrollment", "vitals", "symptoms"]
    assert protocol.schedule.visits[0].id == "baseline"
    assert protocol.schedule.visits[0].forms == ("enrollment", "vitals", "symptoms")


def test_field_types_and_validations(imported: tuple[str, list[str]]) -> None:
    protocol = load_protocol_text(imported[0])
    f = protocol.field
    assert "record_id" not in protocol.field_index()
    assert (f("first_name").identifier, f("first_name").required) == (True, True)
    assert (f("dob").type, f("dob").min, f("dob").max) == ("date", "1930-01-01", None)
    assert (f("weight_kg").type, f("weight_kg").decimals, f("weight_kg").min) == \
        ("decimal", 1, 30.0)
    assert (f("sbp").type, f("sbp").max) == ("integer", 250.0)
    assert f("visit_time").type == "time"
    assert f("measured_at").type == "datetime"
    assert f("consent_signed").type == "yesno"  # truefalse
    assert f("consent_signature").type == "signature"
    assert f("enrollment_note").type == "descriptive"
    assert f("enrollment_note").label.en == "Please confirm eligibility before enrolment."
    assert f("comments").type == "text"  # notes
    assert f("phone_mobile").help is not None and f("phone_mobile").help.en == "Digits only"
    symptoms = f("symptoms")
    assert symptoms.type == "multiple_choice"
    assert [c.code for c in symptoms.choices] == ["1", "2", "3", "99"]
    assert f("sex").type == "single_choice"
    assert f("sex").choices[2].label.en == "Prefer not to say"
    pain = f("pain_now")
    assert (pain.type, pain.min, pain.max) == ("slider", 0.0, 100.0)
    assert [x.en for x in pain.slider_labels] == ["No pain", "Moderate", "Worst pain"]
    assert "site_lookup" not in protocol.field_index()


def test_logic_translation(imported: tuple[str, list[str]]) -> None:
    protocol = load_protocol_text(imported[0])
    f = protocol.field
    assert f("pregnant").show_if == "[sex] = '2'"
    assert f("symptoms_other").show_if == "[symptoms(99)] = '1'"
    assert f("comments").show_if == "[phq_total] >= 3 or [symptoms(1)] <> '0'"
    assert f("followup_flag").show_if == "[phq_total] <> ''"
    assert f("bmi").calculation == "round(([weight_kg]*10000)/(([height_cm])^(2)),1)"
    assert f("phq_total").calculation == "sum([phq_1],[phq_2])"
    assert f("age").calculation == "rounddown(datediff([dob],'today','y'),0)"
    assert f("current_med").show_if is None


def test_report_lists_what_was_not_translated(imported: tuple[str, list[str]]) -> None:
    report = "\n".join(imported[1])
    for expected in (
        "enrollment.site_lookup: sql fields are not supported; field skipped",
        "vitals.lab_code: unknown validation type 'lab_barcode_v2'; imported as plain text",
        "symptoms.symptoms: action tags @NONEOFTHEABOVE are not supported; ignored",
        "symptoms.phq_total: action tags @HIDDEN are not supported; ignored",
        "symptoms.phq_2: matrix ranking is not supported; ignored",
        "matrix group 'phq' (symptoms) imported as individual fields",
        "symptoms.followup_flag branching: event prefixes baseline_arm_1 removed",
        "symptoms.current_med branching: smart variables are not supported",
        "symptoms.current_med: ontology lookup BIOPORTAL:RXNORM is not supported",
        "enrollment.dob: max 'today' cannot be expressed as a fixed date limit; dropped",
        "enrollment: 2 section header(s) not imported",
    ):
        assert expected in report, expected


def test_api_column_names_are_accepted() -> None:
    csv_text = (
        "field_name,form_name,field_type,field_label,select_choices_or_calculations,"
        "branching_logic\n"
        "record_id,demo,text,ID,,\n"
        "smoker,demo,yesno,Smoker,,\n"
        "packs,demo,text,Packs per day,,\"[smoker] = \"\"1\"\"\"\n"
        "bad_calc,demo,calc,Broken,\"[packs] * * 2\",\n"
    )
    result = import_redcap_dictionary(csv_text, code="API-1", title="API")
    protocol = load_protocol_text(result.protocol_yaml)
    assert protocol.field("packs").show_if == "[smoker] = '1'"
    assert protocol.field("bad_calc").type == "decimal"
    assert any(line.startswith("demo.bad_calc calculation: cannot translate")
               for line in result.report)


def test_references_to_skipped_fields_are_dropped() -> None:
    csv_text = (
        "field_name,form_name,field_type,field_label,select_choices_or_calculations,"
        "branching_logic\n"
        "record_id,demo,text,ID,,\n"
        "lookup,demo,sql,Lookup,select 1,\n"
        "detail,demo,text,Detail,,[lookup] = '1'\n"
    )
    result = import_redcap_dictionary(csv_text, code="API-2", title="Skip")
    assert load_protocol_text(result.protocol_yaml).field("detail").show_if is None
    assert "demo.detail: show_if refers to fields not imported (lookup); dropped" in result.report


def test_not_a_dictionary() -> None:
    with pytest.raises(RedcapImportError, match="missing columns"):
        import_redcap_dictionary("a,b\n1,2\n", code="X", title="X")
    with pytest.raises(RedcapImportError, match="empty"):
        import_redcap_dictionary("", code="X", title="X")


def test_translate_logic_normalizes_quotes_and_inequality() -> None:
    report: list[str] = []
    assert translate_logic('[a] != "x" and [b] = "it\'s"', "f", report) == \
        "[a] <> 'x' and [b] = \"it's\""
    assert report == []


def test_output_is_plain_yaml(imported: tuple[str, list[str]]) -> None:
    document = yaml.safe_load(imported[0])
    assert document["forms"][0]["fields"][0] == {
        "id": "first_name", "type": "text", "label": {"en": "First name"}, "required": True,
        "identifier": True,
    }
