"""The builder's section inputs (issue #22): eligibility, endpoints, factors, minimization
settings, edit checks, consents and device streams read and write the protocol YAML without
loss, so the YAML text and the builder can be mixed."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import editing
from protocols.loader import library_protocol_paths, load_protocol_report
from protocols.sections import (
    SECTIONS,
    find_item,
    from_inputs,
    items,
    put_item,
    remove_item,
    to_inputs,
)

LIBRARY = {
    name: editing.parse(path.read_text(encoding="utf-8"))
    for name, path in library_protocol_paths().items()
}


def _roundtrip(data: dict[str, Any], section_name: str) -> dict[str, Any]:
    """Every item of the section through its inputs and back into a copy of the document."""
    section = SECTIONS[section_name]
    out = copy.deepcopy(data)
    for _ref, item in list(items(data, section)):
        shown = to_inputs(section, item)
        changes, errors = from_inputs(section, shown)
        # a hand-written item may lack a required key: the builder says so and changes nothing
        assert all(
            messages == ["required"] and shown.get(name, "") == ""
            for name, messages in errors.items()
        ), (section_name, item, errors)
        if not errors:
            put_item(out, section, changes)
    return out


@pytest.mark.parametrize("section", sorted(SECTIONS))
@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_protocols_survive_the_builder(name: str, section: str) -> None:
    data = LIBRARY[name]
    assert not any(from_inputs(SECTIONS[section], to_inputs(SECTIONS[section], item))[1]
                   for _, item in items(data, SECTIONS[section]))
    assert list(items(data, SECTIONS[section])) or section in ("checks", "minimization")
    after = _roundtrip(data, section)
    assert after == data
    assert editing.dump(after) == editing.dump(data)  # key order too


def test_every_library_endpoint_and_criterion_has_inputs_for_its_keys() -> None:
    """The inputs show (not merely keep) what a sponsor edits: the estimand's parts, the model."""
    shown = to_inputs(SECTIONS["endpoints"], LIBRARY["cognitive_impairment"]["endpoints"][0])
    assert shown["events"] == "stopped_training | treatment_policy\nstarted_achei | hypothetical"
    assert shown["population.en"].startswith("Adults 60-85") and shown["model"] == "mmrm"
    assert shown["change_from_baseline"] == "yes" and shown["strata"] == "moca_band"
    myopia = LIBRARY["pediatric_myopia"]["randomization"]["factors"][0]
    factor = to_inputs(SECTIONS["factors"], myopia)
    assert factor["levels"].splitlines()[0] == (
        "age_6_8 | [age_years] <= 8 | en: 6-8 years | zh: 6-8岁"
    )
    mci = LIBRARY["cognitive_impairment"]["randomization"]["factors"][0]
    second = to_inputs(SECTIONS["factors"], mci)["levels"].splitlines()[1]
    assert second.startswith("moca_22_25 | * | en: ")


def test_a_value_an_input_cannot_show_is_kept_as_written() -> None:
    data = copy.deepcopy(LIBRARY["cognitive_impairment"])
    stream = data["device_streams"][0]
    stream["label"]["en"] = "two\nlines"  # a one-line input would lose the break
    stream["adherence"]["threshold"] = float("nan")
    section = SECTIONS["streams"]
    shown = to_inputs(section, stream)
    assert "label.en" not in shown and "adherence_threshold" not in shown
    changes, errors = from_inputs(section, {**shown, "unit": "minutes"})
    assert errors == {}
    put_item(data, section, changes)
    assert data["device_streams"][0]["label"]["en"] == "two\nlines"
    assert data["device_streams"][0]["unit"] == "minutes"


def test_edit_add_and_remove_items_and_the_loader_checks_them() -> None:
    data = copy.deepcopy(LIBRARY["type2_diabetes"])
    checks = SECTIONS["checks"]
    changes, errors = from_inputs(checks, {
        "form": "vitals", "field": "", "id": "weight_sane", "condition": "[weight_kg] > 20",
        "severity": "warning", "message.en": "Weight looks low", "message.zh": "",
    })
    assert errors == {}
    form_ids = [f["id"] for f in data["forms"]]
    if "vitals" not in form_ids:
        changes[("form",)] = form_ids[0]
    put_item(data, checks, changes)
    refs = [ref for ref, _ in items(data, checks)]
    added = next(r for r in refs if r.endswith("|weight_sane"))
    assert find_item(data, checks, added)["message"] == {"en": "Weight looks low"}
    # a field-level check is found by its form, field and id
    field_ref = next(r for r in refs if r.count("|") == 2 and r.split("|")[1])
    assert remove_item(data, checks, field_ref)
    assert remove_item(data, checks, added) and not remove_item(data, checks, added)
    consents = SECTIONS["consents"]
    changes, errors = from_inputs(consents, {
        "id": "main_icf", "language": "ja", "version": "1.0", "signer": "participant",
        "title.en": "Consent (Japanese)", "title.ja": "同意書", "body.en": "Line one.\r\nLine two.",
    })
    assert errors == {}
    put_item(data, consents, changes)
    assert find_item(data, consents, "main_icf|ja")["body"] == {"en": "Line one.\nLine two."}
    report = load_protocol_report(editing.dump(data))
    assert [(i.path, "does not declare" in i.message) for i in report.errors] == [
        (f"consents[{len(data['consents']) - 1}].title.ja", True)
    ]
    data["languages"] = ["zh-Hans", "ja"]
    assert not load_protocol_report(editing.dump(data)).errors


def test_bad_inputs_are_named_and_nothing_is_applied() -> None:
    section = SECTIONS["endpoints"]
    _, errors = from_inputs(section, {
        "id": "", "name.en": "", "role": "main", "alpha": "five percent",
        "multiplicity_order": "1.5", "change_from_baseline": "maybe",
        "events": "a | b | c | d", "outcome_fields": "x",
    })
    assert set(errors) == {
        "id", "name.en", "alpha", "multiplicity_order", "change_from_baseline", "events"
    }
    assert errors["alpha"] == ["a number"] and errors["multiplicity_order"] == ["a whole number"]
    _, errors = from_inputs(SECTIONS["factors"], {
        "id": "f", "label.en": "F", "field": "x", "levels": "a | [x] < 1 | english",
    })
    assert errors == {"levels": ["line 1: write each label as language: text"]}
    with pytest.raises(editing.EditError):
        put_item({}, SECTIONS["checks"], {("form",): "nowhere", ("id",): "c"})


def test_the_loader_reports_what_the_builder_wrote_with_paths() -> None:
    """Validation as you go: a criterion over an unknown field is the loader's error, at its
    path in the document."""
    data = copy.deepcopy(LIBRARY["pediatric_myopia"])
    section = SECTIONS["eligibility"]
    changes, errors = from_inputs(section, {
        "id": "inc_bogus", "kind": "inclusion", "text.en": "Bogus", "expression": "[nope] > 1",
    })
    assert errors == {}
    put_item(data, section, changes)
    report = load_protocol_report(editing.dump(data))
    index = len(data["eligibility"]) - 1
    assert any(i.path.startswith(f"eligibility[{index}]") and "nope" in i.message
               for i in report.errors), [str(i) for i in report.errors]


_word = st.text(st.characters(codec="utf-8", exclude_characters="\r\x85\u2028\u2029"),
                min_size=0, max_size=12)
_ident = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_number = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False))
_label = st.dictionaries(st.sampled_from(["en", "zh", "zh-Hant", "ja"]), _word, min_size=0,
                         max_size=3)
_level = st.fixed_dictionaries(
    {"code": _word, "label": _label}, optional={"when": _word, "otherwise": st.just(True)}
)
_stream = st.fixed_dictionaries(
    {"id": _ident, "kind": _word, "label": _label, "unit": _word},
    optional={
        "min": _number,
        "max": st.one_of(_number, _word, st.booleans()),
        "cadence": st.one_of(_word, st.integers()),
        "adherence": st.fixed_dictionaries(
            {}, optional={"metric": _word, "threshold": _number,
                          "defines_per_protocol": st.one_of(st.booleans(), _word),
                          "condition": _word}),
        "note": _word,
    },
)
_factor = st.fixed_dictionaries(
    {"id": _ident, "label": _label, "field": _word},
    optional={"weight": st.one_of(_number, _word),
              "levels": st.one_of(st.lists(_level, max_size=3), _word)},
)


@settings(max_examples=50, deadline=None)
@given(streams=st.lists(_stream, max_size=3, unique_by=lambda s: s["id"]),
       factors=st.lists(_factor, max_size=3, unique_by=lambda f: f["id"]))
def test_any_document_survives_the_builder(streams: list[Any], factors: list[Any]) -> None:
    """Whatever a hand-written file holds (odd types, empty labels, line breaks, separators in
    text), inputs -> changes -> document gives the same document."""
    data = {"device_streams": streams, "randomization": {"method": "minimization",
                                                          "factors": factors}}
    assert _roundtrip(data, "streams") == data
    assert _roundtrip(data, "factors") == data
