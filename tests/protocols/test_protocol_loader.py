"""The loader reports every problem at once as file:line:col: path: message."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecrf.checks import check_form_definition
from protocols.loader import (
    Issue,
    ProtocolError,
    load_protocol,
    load_protocol_report,
    load_protocol_text,
    validate_protocol_text,
)

MINIMAL = (Path(__file__).parent / "data" / "minimal.yaml").read_text(encoding="utf-8")

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"


def replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    """Return the 1-based line of the first occurrence of needle."""
    index = text.index(needle)
    return text.count("\n", 0, index) + 1


def column_of(text: str, needle: str) -> int:
    index = text.index(needle)
    return index - text.rfind("\n", 0, index)


def errors(text: str) -> list[Issue]:
    return [i for i in validate_protocol_text(text) if i.severity == "error"]


def only_error(text: str) -> Issue:
    found = errors(text)
    assert len(found) == 1, [str(i) for i in found]
    return found[0]


def test_minimal_protocol_is_clean() -> None:
    assert validate_protocol_text(MINIMAL) == []
    protocol = load_protocol_text(MINIMAL)
    assert protocol.code == "TEST-01"
    assert protocol.form("outcome").fields[0].decimals == 1
    assert set(protocol.field_index()) == {"age", "sex", "score"}
    assert protocol.visits_of_form("screening") == ("screening",)


@pytest.mark.parametrize("name", ["cognitive_impairment", "pediatric_myopia", "type2_diabetes"])
def test_library_protocols_load_without_errors(name: str) -> None:
    path = LIBRARY / f"{name}.yaml"
    report = load_protocol_report(path.read_text(encoding="utf-8"), str(path))
    assert report.errors == (), "\n".join(str(i) for i in report.errors)
    protocol = load_protocol(path)
    assert protocol.primary_endpoints
    for form in protocol.forms:
        assert form.title.zh, form.id
        for field in form.fields:
            assert field.label.zh, field.id
    for arm in protocol.arms:
        assert arm.name.zh
    for visit in protocol.schedule.visits:
        assert visit.label.zh


def test_unknown_key_with_suggestion_points_at_the_key() -> None:
    text = replace(MINIMAL, "ratio: 1, is_control", "ratoi: 1, is_control")
    issue = only_error(text)
    assert issue.message == "unknown key 'ratoi' in Arm (did you mean 'ratio'?)"
    assert issue.path == "arms[1].ratoi"
    assert (issue.line, issue.column) == (line_of(text, "ratoi"), column_of(text, "ratoi"))
    assert str(issue).startswith(f"protocol.yaml:{issue.line}:{issue.column}: arms[1].ratoi: ")


def test_wrong_type_is_reported_at_the_value() -> None:
    text = replace(MINIMAL, "day: 28", "day: four weeks")
    issue = only_error(text)
    assert issue.path == "schedule.visits[1].day"
    assert issue.message == "expected an integer, got a string"
    assert (issue.line, issue.column) == (line_of(text, "four weeks"), column_of(text, "four"))


def test_enum_value_with_suggestion() -> None:
    text = replace(MINIMAL, "type: decimal", "type: decimel")
    issue = only_error(text)
    assert issue.path == "forms[1].fields[0].type"
    assert "'decimel' is not one of" in issue.message
    assert issue.message.endswith("(did you mean 'decimal'?)")
    assert issue.line == line_of(text, "decimel")


def test_missing_required_key_points_at_the_mapping() -> None:
    text = replace(MINIMAL, "      day: -7\n", "")
    issue = only_error(text)
    assert issue.path == "schedule.visits[0]"
    assert issue.message == "missing required key 'day' in Visit"
    assert issue.line == line_of(text, "- id: screening")


def test_duplicate_yaml_key() -> None:
    text = replace(MINIMAL, "phase: pilot\n", "phase: pilot\nphase: pivotal\n")
    issue = only_error(text)
    assert issue.message == "duplicate key 'phase' (first defined at line 3)"
    assert (issue.line, issue.column) == (4, 1)


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ("code: control, name", "code: active, name", "code: active, name: {en: Control",
         "duplicate arm code 'active' (first defined at line 7)"),
        ("- id: outcome\n", "- id: screening\n", "- id: screening\n    title: {en: Outcome",
         "duplicate form id 'screening'"),
        ("{id: score, type", "{id: age, type", "{id: age, type: decimal",
         "duplicate field id 'age'"),
        ("- id: week_4", "- id: screening", "- id: screening\n      label: {en: Week 4",
         "duplicate visit id 'screening'"),
    ],
)
def test_duplicate_ids(old: str, new: str, needle: str, message: str) -> None:
    text = replace(MINIMAL, old, new)
    found = [i for i in errors(text) if i.message.startswith(message)]
    assert found, [str(i) for i in errors(text)]
    assert found[0].line == line_of(text, needle)


def test_duplicate_endpoint_and_criterion_ids() -> None:
    endpoint = MINIMAL[MINIMAL.index("  - id: score_w4"):MINIMAL.index("sample_size")]
    criterion = "  - id: inc_age\n    kind: exclusion\n    text: {en: Old}\n" \
                "    expression: \"[age] > 90\"\n"
    text = replace(MINIMAL, "sample_size", endpoint.replace("multiplicity", "x") + "sample_size")
    text = replace(text, "schedule:\n", criterion + "schedule:\n")
    messages = {i.message: i.line for i in errors(text)}
    second_endpoint = text.index("- id: score_w4", text.index("- id: score_w4") + 1)
    second_line = text.count("\n", 0, second_endpoint) + 1
    assert messages["duplicate endpoint id 'score_w4' (first defined at line "
                    f"{line_of(text, '- id: score_w4')})"] == second_line
    assert messages["duplicate criterion id 'inc_age' (first defined at line "
                    f"{line_of(text, '- id: inc_age')})"] == line_of(text, "kind: exclusion") - 1


def test_undefined_field_in_expression_has_expression_column() -> None:
    text = replace(MINIMAL, '"[age] >= 18"', '"[age] >= 18 and [weight] > 40"')
    issue = only_error(text)
    assert issue.path == "eligibility[0].expression"
    assert issue.message == "undefined field 'weight' in expression (column 17)"
    assert issue.line == line_of(text, "[weight]")
    assert issue.column == column_of(text, "[weight]")


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        ("min: 0, max: 120}", "min: 0, max: 120, show_if: \"[sexx] = '1'\"}",
         "forms[0].fields[0].show_if"),
        ("{id: score, type: decimal, label: {en: Score}, min: 0, max: 100, decimals: 1}",
         "{id: score, type: calculated, label: {en: Score}, calculation: \"[age] * [bmi]\"}",
         "forms[1].fields[0].calculation"),
        ("decimals: 1}", "decimals: 1, checks: [{id: c1, condition: \"[scor] < 90\", "
         "message: {en: High}}]}", "forms[1].fields[0].checks[0].condition"),
        ("when: \"[sex] = '1'\"", "when: \"[gender] = '1'\"",
         "randomization.factors[0].levels[0].when"),
    ],
)
def test_undefined_fields_everywhere(old: str, new: str, path: str) -> None:
    text = replace(MINIMAL, old, new)
    found = [i for i in errors(text) if i.message.startswith("undefined field")]
    assert [i.path for i in found] == [path]


def test_undefined_field_in_adherence_condition() -> None:
    stream = (
        "device_streams:\n  - id: usage\n    kind: app_usage\n    label: {en: Usage}\n"
        "    unit: min\n    cadence: daily\n    adherence:\n      metric: total\n"
        "      threshold: 100\n      condition: \"[completed] = '1'\"\n"
    )
    text = replace(MINIMAL, "endpoints:\n", stream + "endpoints:\n")
    issue = only_error(text)
    assert issue.path == "device_streams[0].adherence.condition"
    assert issue.line == line_of(text, "[completed]")
    assert issue.column == column_of(text, "[completed]")


def test_expression_syntax_error_column() -> None:
    text = replace(MINIMAL, '"[age] >= 18"', '"[age] >= >= 18"')
    issue = only_error(text)
    assert issue.message.startswith("expression syntax error at column 10")
    assert issue.line == line_of(text, "[age] >= >=")
    assert issue.column == column_of(text, "[age] >= >=") + 9


def test_option_references_need_a_multiple_choice_field_and_known_code() -> None:
    text = replace(MINIMAL, '"[age] >= 18"', '"[age] >= 18 and [sex(2)] = \'1\'"')
    issue = only_error(text)
    assert issue.message == "[sex(2)] needs a multiple_choice field, but 'sex' is single_choice"
    assert (issue.line, issue.column) == (line_of(text, "[sex(2)]"), column_of(text, "[sex(2)]"))
    text = replace(text, "type: single_choice", "type: multiple_choice")
    text = replace(text, "[sex(2)]", "[sex(3)]")
    messages = [i.message for i in errors(text)]
    assert "'3' is not a choice code of field 'sex' (codes: 1, 2)" in messages


def test_calculation_cycle_and_self_reference() -> None:
    text = replace(MINIMAL, "{id: score, type: decimal, label: {en: Score}, min: 0, max: 100, "
                   "decimals: 1}",
                   "{id: score, type: calculated, label: {en: Score}, calculation: \"[s2] + 1\"}\n"
                   "      - {id: s2, type: calculated, label: {en: S2}, calculation: \"[score]\"}\n"
                   "      - {id: s3, type: integer, label: {en: S3}, show_if: \"[s3] > 1\"}")
    messages = sorted(i.message for i in errors(text))
    assert messages == ["calculated fields form a cycle: score -> s2 -> score",
                        "show_if of 's3' refers to the field itself"]


def test_library_forms_pass_the_ecrf_definition_checks() -> None:
    for path in sorted(LIBRARY.glob("*.yaml")):
        protocol = load_protocol(path)
        known = set(protocol.field_index())
        for form in protocol.forms:
            assert check_form_definition(form, known) == [], (path.stem, form.id)


def test_form_not_scheduled_unless_repeating_or_unscheduled() -> None:
    extra = "  - id: notes\n    title: {en: Notes}\n    fields:\n" \
            "      - {id: note, type: text, label: {en: Note}}\n"
    text = replace(MINIMAL, "endpoints:\n", extra + "endpoints:\n")
    issue = only_error(text)
    assert issue.path == "forms[2].id"
    assert issue.message.startswith("form 'notes' is not scheduled at any visit")
    assert issue.line == line_of(text, "- id: notes")
    assert errors(replace(text, "title: {en: Notes}", "title: {en: Notes}\n    repeating: true")) \
        == []
    assert errors(replace(text, "forms:\n  - id: screening",
                          "forms:\n  - id: screening")) != []
    unscheduled = replace(text, "      forms: [outcome]\n",
                          "      forms: [outcome]\n  unscheduled_forms: [notes]\n")
    assert errors(unscheduled) == []


def test_visit_references_unknown_form() -> None:
    text = replace(MINIMAL, "forms: [outcome]", "forms: [outcome, outcomes]")
    issue = only_error(text)
    assert issue.path == "schedule.visits[1].forms[1]"
    assert issue.message == "visit 'week_4' references unknown form 'outcomes' " \
                            "(did you mean 'outcome'?)"
    assert issue.column == column_of(text, "outcomes]")


def test_endpoint_on_unknown_field_and_reference_arm() -> None:
    text = replace(MINIMAL, "outcome_fields: [score]", "outcome_fields: [scores]")
    text = replace(text, "reference_arm: control", "reference_arm: placebo")
    found = {i.path: i for i in errors(text)}
    assert found["endpoints[0].analysis.outcome_fields[0]"].message == \
        "unknown field 'scores' (did you mean 'score'?)"
    assert found["endpoints[0].analysis.reference_arm"].message == \
        "unknown reference arm 'placebo'"
    assert found["endpoints[0].analysis.reference_arm"].line == line_of(text, "placebo")


def test_block_size_not_multiple_of_reduced_ratio_sum() -> None:
    text = replace(MINIMAL, "name: {en: Active, zh: 试验组}, ratio: 1",
                   "name: {en: Active, zh: 试验组}, ratio: 4")
    text = replace(text, "ratio: 1, is_control", "ratio: 2, is_control")
    text = replace(text, "block_sizes: [2, 4]", "block_sizes: [3, 4]")
    issue = only_error(text)
    assert issue.message == "block size 4 is not a multiple of ratio sum 3"
    assert issue.path == "randomization.block_sizes[1]"
    assert issue.line == line_of(text, "block_sizes")


def test_stratification_levels_must_cover_choice_codes() -> None:
    text = replace(MINIMAL, "when: \"[sex] = '2'\"", "when: \"[sex] = '9'\"")
    issue = only_error(text)
    assert issue.path == "randomization.factors[0].levels"
    assert issue.message.startswith(
        "levels of factor 'sex_factor' do not cover codes of 'sex': 2")
    assert issue.line == line_of(text, "levels:")
    assert errors(replace(text, "when: \"[sex] = '9'\"", "otherwise: true")) == []


def test_stratification_levels_must_cover_numeric_range() -> None:
    factor = (
        "    - id: age_band\n      label: {en: Age band}\n      field: age\n      levels:\n"
        "        - {code: young, label: {en: Young}, when: \"[age] < 40\"}\n"
        "        - {code: old, label: {en: Old}, when: \"[age] >= 65\"}\n"
    )
    text = replace(MINIMAL, "eligibility:\n", factor + "eligibility:\n")
    issue = only_error(text)
    assert issue.message.startswith(
        "levels of factor 'age_band' do not cover values of 'age': 40–64")
    assert issue.line == line_of(text, "levels:\n        - {code: young")


def test_otherwise_must_be_last() -> None:
    text = replace(MINIMAL, "when: \"[sex] = '1'\"", "otherwise: true")
    issue = only_error(text)
    assert issue.message == "the otherwise level must be the last level"
    line = line_of(text, "otherwise: true")
    assert (issue.line, issue.column) == (line, text.splitlines()[line - 1].index("true") + 1)


def test_minimization_parameters() -> None:
    text = replace(MINIMAL, "method: permuted_block\n  block_sizes: [2, 4]",
                   "method: minimization\n  p: 1.5")
    issue = only_error(text)
    assert issue.path == "randomization.p"
    assert issue.message == "must be at most 1, got 1.5"
    assert (issue.line, issue.column) == (line_of(text, "p: 1.5"), column_of(text, "1.5"))
    text = replace(text, "p: 1.5", "p: 1")
    assert only_error(text).message.startswith("p = 1 makes minimization deterministic")
    assert only_error(text).line == line_of(text, "p: 1")
    text = replace(text, "p: 1", "p: 0.8")
    text = replace(text, "field: sex\n", "field: sex\n      weight: 0\n")
    assert only_error(text).message == "at least one minimization weight must be positive"
    assert only_error(text).line == line_of(text, "factors:")
    text = replace(text, "weight: 0", "weight: -1")
    assert "must be at least 0, got -1" in [i.message for i in errors(text)]


def test_parameters_of_another_method_are_rejected() -> None:
    text = replace(MINIMAL, "block_sizes: [2, 4]", "block_sizes: [2, 4]\n  efron_p: 0.67")
    issue = only_error(text)
    assert issue.message == "efron_p is not used by method permuted_block"
    assert issue.line == line_of(text, "efron_p")


def test_labels_need_english() -> None:
    text = replace(MINIMAL, "title: {en: Outcome}", "title: {zh: 结局}")
    issue = only_error(text)
    assert issue.message == "missing required key 'en' in Label"
    assert issue.path == "forms[1].title"
    assert (issue.line, issue.column) == (line_of(text, "{zh: 结局}"), column_of(text, "{zh"))
    text = replace(MINIMAL, "title: {en: Outcome}", "title: Outcome")
    assert only_error(text).message == "expected a mapping, got a string"
    assert only_error(text).line == line_of(text, "title: Outcome")


def test_choice_field_without_choices() -> None:
    text = replace(MINIMAL, "{id: score, type: decimal, label: {en: Score}, min: 0, max: 100, "
                   "decimals: 1}", "{id: score, type: single_choice, label: {en: Score}}")
    issue = only_error(text)
    assert issue.message == "field 'score' of type single_choice has no choices"
    assert issue.path == "forms[1].fields[0].type"
    assert (issue.line, issue.column) == (line_of(text, "type: single_choice, label: {en: Score"),
                                          column_of(text, "single_choice, label: {en: Score"))


def test_mmrm_needs_covariance_and_visits() -> None:
    text = replace(MINIMAL, "model: ancova", "model: mmrm")
    found = sorted((i.message, i.line) for i in errors(text))
    assert found == [("mmrm needs a covariance structure (covariance: ...)",
                      line_of(text, "model: mmrm")),
                     ("mmrm needs at least two post-baseline visits",
                      line_of(text, "visits: [week_4]"))]


def test_every_error_is_reported_at_once() -> None:
    text = replace(MINIMAL, "phase: pilot", "phase: pilott")
    text = replace(text, "day: 28", "day: x")
    text = replace(text, "forms: [outcome]", "forms: [outcome, nope]")
    text = replace(text, "reference_arm: control", "reference_arm: nobody")
    with pytest.raises(ProtocolError) as caught:
        load_protocol_text(text, "trial.yaml")
    lines = str(caught.value).splitlines()
    assert len(lines) == 4
    assert all(line.startswith("trial.yaml:") for line in lines)
    assert [i.line for i in caught.value.issues] == sorted(i.line for i in caught.value.issues)


def test_yaml_syntax_error_has_position() -> None:
    issue = only_error("code: [unclosed\ntitle: x\n")
    assert issue.message.startswith("YAML syntax error")
    assert issue.line == 2


def test_empty_and_non_mapping_documents() -> None:
    assert only_error("").message == "the document is empty"
    assert only_error("- a\n- b\n").message == "expected a mapping, got a list"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError) as caught:
        load_protocol(tmp_path / "missing.yaml")
    assert "cannot read file" in str(caught.value)


def test_sparse_strata_warning() -> None:
    sites = "sites:\n  initial:\n" + "".join(
        f"    - {{code: S{k}, name: Site {k}}}\n" for k in range(10))
    text = replace(MINIMAL, "eligibility:\n", "  stratify_by_site: true\n" + sites
                   + "eligibility:\n")
    issues = validate_protocol_text(text)
    assert [i.severity for i in issues] == ["warning"]
    assert issues[0].line == line_of(text, "factors:")
    assert issues[0].message.startswith("20 strata for a planned n of 100 leave 5.0 participants")
    assert str(issues[0]).split(": ", 2)[2].startswith("warning: ")
    assert load_protocol_text(text).code == "TEST-01"


def test_decimal_factor_coverage_finds_a_boundary_gap() -> None:
    text = (LIBRARY / "pediatric_myopia.yaml").read_text(encoding="utf-8")
    text = replace(text, 'when: "[se_mean] >= -3"', 'when: "[se_mean] > -3"')
    issue = only_error(text)
    assert issue.path == "randomization.factors[1].levels"
    assert issue.message.startswith(
        "levels of factor 'se_band' do not cover values of 'se_mean': -3.0 ")


def test_library_models_expose_the_design() -> None:
    myopia = load_protocol(LIBRARY / "pediatric_myopia.yaml")
    assert myopia.randomization.method == "minimization"
    assert myopia.randomization.p == 0.8
    assert [f.id for f in myopia.randomization.factors] == ["age_group", "se_band"]
    primary = myopia.primary_endpoints[0].analysis
    assert (primary.model, primary.outcome_fields) == ("gee_per_eye", ("se_right", "se_left"))
    assert {c.signer for c in myopia.consents} == {"guardian", "participant"}
    diabetes = load_protocol(LIBRARY / "type2_diabetes.yaml")
    assert diabetes.reduced_ratio == (2, 1)
    assert diabetes.control_arm is not None and diabetes.control_arm.code == "usual_care"
    per_protocol = [s for s in diabetes.device_streams
                    if s.adherence is not None and s.adherence.defines_per_protocol]
    assert [s.id for s in per_protocol] == ["app_usage"]
    mci = load_protocol(LIBRARY / "cognitive_impairment.yaml")
    mmrm = mci.endpoint("adas_change_w24").analysis
    assert (mmrm.covariance, mmrm.visits) == ("unstructured", ("week_4", "week_12", "week_24"))
    assert mci.randomization.block_sizes == (4, 6)


def test_block_scalar_expression_points_at_the_value() -> None:
    text = replace(MINIMAL, 'expression: "[age] >= 18"',
                   "expression: >-\n      [age] >= 18 and\n      [height] > 1")
    issue = only_error(text)
    assert issue.message.startswith("undefined field 'height'")
    assert (issue.line, issue.column) == (line_of(text, "expression: >-"),
                                          column_of(text, ">-"))


def test_single_quoted_expression_column() -> None:
    text = replace(MINIMAL, '"[age] >= 18"', "'[age] >= 18 and [bmi] > 1'")
    issue = only_error(text)
    assert issue.column == column_of(text, "[bmi]")


def test_package_exports_the_public_api() -> None:
    import protocols

    assert protocols.load_protocol_text(MINIMAL).code == "TEST-01"
    assert callable(protocols.check_amendment)


def test_design_warnings() -> None:
    text = replace(MINIMAL, "method: permuted_block\n  block_sizes: [2, 4]",
                   "method: minimization\n  p: 0.8")
    text = replace(text, "ratio: 1, is_control", "ratio: 2, is_control")
    second = MINIMAL[MINIMAL.index("  - id: score_w4"):MINIMAL.index("      sensitivity:")]
    text = replace(text, "sample_size", second.replace("score_w4", "score_w4b").replace(
        "role: primary", "role: key_secondary") + "sample_size")
    issues = validate_protocol_text(text)
    assert all(i.severity == "warning" for i in issues)
    messages = [i.message for i in issues]
    assert messages[0].startswith("minimization with an unequal ratio")
    text = replace(text, "      sensitivity:\n        - id: complete_case\n"
                   "          method: complete_case\n"
                   "          description: {en: Complete cases only}\n", "")
    messages = [i.message for i in validate_protocol_text(text)]
    assert "primary endpoint 'score_w4' has no sensitivity analysis of its estimand " \
        "(ICH E9(R1) A.5.2)" in messages
    assert sum("has no multiplicity_order" in m for m in messages) == 2


def test_minimization_only_parameters_on_other_methods() -> None:
    text = replace(MINIMAL, "block_sizes: [2, 4]", "block_sizes: [2, 4]\n  burn_in: 10")
    issue = only_error(text)
    assert issue.message == "burn_in is only used by minimization, not permuted_block"
    assert issue.line == line_of(text, "burn_in")
    text = replace(MINIMAL, "method: permuted_block\n  block_sizes: [2, 4]",
                   "method: minimization\n  p: 0.8\n  burn_in: 10\n  overall_weight: 0.5\n"
                   "  block_sizes: [2]")
    issue = only_error(text)
    assert issue.message == "block_sizes are not used by method minimization"
    assert issue.line == line_of(text, "block_sizes")


def test_readme_example_is_clean() -> None:
    text = (Path(__file__).parent / "data" / "readme_example.yaml").read_text(encoding="utf-8")
    assert validate_protocol_text(text, "insomnia.yaml") == []


def test_unquoted_comma_in_flow_label_gets_a_hint() -> None:
    text = replace(MINIMAL, "title: {en: Outcome}", "title: {en: Outcome, final}")
    issue = only_error(text)
    assert issue.message == ("unknown key 'final' in Label")
    text = replace(MINIMAL, "title: {en: Outcome}", "title: {en: Outcome, all visits}")
    issue = only_error(text)
    assert issue.message == ("unknown key 'all visits' in Label (a comma inside {...} starts a "
                             "new key: quote the text)")
    assert issue.column == column_of(text, "all visits")


def test_library_paths_and_merge_key_hint() -> None:
    from protocols.loader import library_protocol_paths

    assert list(library_protocol_paths()) == [
        "adolescent_depression", "cognitive_impairment", "pediatric_myopia", "type2_diabetes"]
    text = replace(MINIMAL, "sample_size: {n: 100}", "base: &b {n: 100}\nsample_size: {<<: *b}")
    messages = [i.message for i in errors(text)]
    assert "unknown key 'base' in Protocol (did you mean 'phase'?)" in messages
    assert "unknown key '<<' in SampleSize (YAML merge keys are not supported; repeat the keys " \
        "or use an alias)" in messages


def test_overlapping_visit_windows_warn() -> None:
    text = replace(MINIMAL, "      day: 28\n", "      day: 28\n      window_before: 40\n")
    issues = validate_protocol_text(text)
    assert [(i.severity, i.message) for i in issues] == [
        ("warning", "the windows of visits 'screening' and 'week_4' overlap")]
    assert issues[0].line == line_of(text, "window_before: 40")


def test_randomization_inputs_must_be_collected_before_randomization() -> None:
    text = replace(MINIMAL, "field: sex\n", "field: score\n")
    text = replace(text, "when: \"[sex] = '1'\"", "when: \"[score] < 50\"")
    text = replace(text, "when: \"[sex] = '2'\"", "otherwise: true")
    text = replace(text, '"[age] >= 18"', '"[age] >= 18 and [score] > 1"')
    issues = validate_protocol_text(text)
    assert [(i.severity, i.message, i.line) for i in issues] == [
        ("error", "field 'score' is not collected at any visit before randomization, so the "
         "stratum cannot be derived", line_of(text, "field: score")),
        ("warning", "criterion 'inc_age' uses score, not collected at any visit before "
         "randomization", line_of(text, "[score] > 1")),
    ]


def test_cross_visit_reference_to_a_form_not_collected_there() -> None:
    text = replace(MINIMAL, '"[age] >= 18"', '"[age] >= 18 and [week_4][age] > 1"')
    issues = validate_protocol_text(text)
    assert [(i.severity, i.message) for i in issues] == [
        ("warning", "field 'age' is not collected at visit 'week_4'")]
    text = replace(MINIMAL, '"[age] >= 18"', '"[age] >= 18 and [week_5][age] > 1"')
    assert only_error(text).message == "undefined visit 'week_5' in expression " \
        "(did you mean 'week_4'?)"


def test_outcome_and_baseline_must_be_collected_at_their_visits() -> None:
    text = replace(MINIMAL, "visits: [week_4]", "visits: [screening]\n      baseline_visit: week_4"
                   "\n      baseline_field: age")
    found = [(i.message, i.line) for i in errors(text)]
    assert found == [
        ("outcome field 'score' is not collected at visit 'screening'",
         line_of(text, "visits: [screening]")),
        ("baseline field 'age' is not collected at visit 'week_4'",
         line_of(text, "baseline_visit: week_4")),
    ]


BLINDING = "blinding: {level: open}"


@pytest.mark.parametrize(
    ("blinding", "message"),
    [
        (
            "blinding: {level: double, blinded_roles: [participant, investigator, statistician]}",
            "add coordinator, outcome_assessor",
        ),
        (
            "blinding: {level: single, blinded_roles: [statistician, sponsor]}",
            "blinds the participant or the outcome assessor",
        ),
        ("blinding: {level: open, blinded_roles: [statistician]}", "has no blinded roles"),
    ],
)
def test_blinded_roles_must_agree_with_the_level(blinding: str, message: str) -> None:
    """Issue #14: blinded_roles decides who sees arms, so a list the level contradicts is
    refused with its line, never silently widened or narrowed."""
    text = replace(MINIMAL, BLINDING, blinding)
    issue = only_error(text)
    assert issue.path == "blinding.blinded_roles" and message in issue.message
    assert issue.line == line_of(text, "blinding:")


def test_outcome_assessor_forms_are_declared_per_form() -> None:
    text = replace(
        MINIMAL, "  - id: outcome\n", "  - id: outcome\n    respondent: outcome_assessor\n"
    )
    text = replace(
        text,
        BLINDING,
        "blinding: {level: single, blinded_roles: [outcome_assessor, statistician]}",
    )
    assert errors(text) == []
    assert load_protocol_text(text).form("outcome").respondent == "outcome_assessor"
    unblinded = replace(text, "blinded_roles: [outcome_assessor, statistician]",
                        "blinded_roles: [participant]")
    warnings = [i for i in validate_protocol_text(unblinded) if i.severity == "warning"]
    assert any("does not blind the outcome assessor" in w.message for w in warnings)


def test_maximal_procedure_parameters() -> None:
    text = replace(MINIMAL, "method: permuted_block\n  block_sizes: [2, 4]",
                   "method: maximal\n  mp_b: 2\n  mp_block_length: 8")
    assert errors(text) == []
    protocol = load_protocol_text(text)
    assert (protocol.randomization.mp_b, protocol.randomization.mp_block_length) == (2, 8)
    odd = replace(text, "mp_block_length: 8", "mp_block_length: 7")
    assert only_error(odd).message.startswith("mp_block_length must be even")
    assert only_error(odd).line == line_of(odd, "mp_block_length: 7")
    missing = replace(text, "\n  mp_block_length: 8", "")
    assert only_error(missing).message == "method maximal needs mp_block_length"
    unequal = replace(text, "ratio: 1}\n  - {code: control", "ratio: 2}\n  - {code: control")
    assert only_error(unequal).message == "maximal is defined for two arms with a 1:1 ratio"
    stray = replace(MINIMAL, "block_sizes: [2, 4]", "block_sizes: [2, 4]\n  mp_b: 2")
    assert only_error(stray).message == "mp_b is not used by method permuted_block"


def test_unblinding_notify_roles() -> None:
    blinded = replace(MINIMAL, "blinding: {level: open}",
                      "blinding: {level: double, blinded_roles: [participant, investigator, "
                      "coordinator, outcome_assessor], activation_code_prefix: T, "
                      "unblinding_notify: [sponsor_admin, monitor]}")
    assert errors(blinded) == []
    assert load_protocol_text(blinded).blinding.roles_notified_of_unblinding == (
        "sponsor_admin", "monitor"
    )
    default = replace(blinded, ", unblinding_notify: [sponsor_admin, monitor]", "")
    assert load_protocol_text(default).blinding.unblinding_notify is None
    empty = replace(blinded, "[sponsor_admin, monitor]", "[]")
    assert only_error(empty).message.startswith("name at least one role")
    twice = replace(blinded, "[sponsor_admin, monitor]", "[monitor, monitor]")
    assert only_error(twice).message.startswith("duplicate role 'monitor'")
    unknown = replace(blinded, "[sponsor_admin, monitor]", "[sponsor]")
    assert "sponsor_admin" in only_error(unknown).message
    open_label = replace(MINIMAL, "blinding: {level: open}",
                         "blinding: {level: open, unblinding_notify: [monitor]}")
    issue = only_error(open_label)
    assert issue.message == "an open-label trial has no emergency unblinding to notify"
    assert issue.path == "blinding.unblinding_notify"
    assert load_protocol_text(MINIMAL).blinding.roles_notified_of_unblinding == ()


def test_one_sided_tests_are_refused() -> None:
    """A one-sided test needs the direction of benefit, which the language cannot state."""
    model = "      model: ancova\n"
    text = replace(MINIMAL, model, model + "      sidedness: one_sided\n")
    issue = only_error(text)
    assert issue.path == "endpoints[0].analysis.sidedness"
    assert issue.message.startswith("one-sided tests are not supported")
    two_sided = replace(text, "one_sided", "two_sided")
    assert errors(two_sided) == []


def test_comparative_review_names_blinded_roles_only() -> None:
    """A comparative blinded review hides the arms behind dummy labels: naming a role that sees
    the arms anyway is refused with its line."""
    blinded = "blinding: {level: single, blinded_roles: [outcome_assessor, statistician]"
    assert errors(replace(MINIMAL, BLINDING, blinded + ", comparative_review: [statistician]}")) \
        == []
    text = replace(MINIMAL, BLINDING, "blinding: {level: single, blinded_roles: "
                   "[outcome_assessor], comparative_review: [statistician]}")
    issue = only_error(text)
    assert issue.path == "blinding.comparative_review[0]"
    assert "not blinded in this trial" in issue.message and issue.line == line_of(text, "blinding:")
def test_site_timezone_must_be_an_iana_name() -> None:
    sites = "sites:\n  initial:\n    - {code: S1, name: One, timezone: Mars/Olympus}\n"
    text = replace(MINIMAL, "arms:\n", sites + "arms:\n")
    issue = only_error(text)
    assert issue.path == "sites.initial[0].timezone"
    assert "Mars/Olympus" in issue.message and "IANA" in issue.message
    assert issue.line == line_of(text, "Mars/Olympus")
    assert errors(replace(text, "Mars/Olympus", "Asia/Shanghai")) == []
    assert errors(replace(text, "Mars/Olympus", "../../etc/passwd")) != []


def test_site_country_is_an_iso_3166_alpha_2_code() -> None:
    """A site's country is exported as DM.COUNTRY (alpha-3): a code without one is refused
    with its line, not exported as a guess."""
    sites = "sites:\n  initial:\n    - {code: S1, name: One, country: XZ}\n"
    text = replace(MINIMAL, "arms:\n", sites + "arms:\n")
    issue = only_error(text)
    assert issue.path == "sites.initial[0].country"
    assert "'XZ'" in issue.message and "ISO 3166-1" in issue.message
    assert issue.line == line_of(text, "country: XZ")
    for good in ("CN", "JP", "DE"):
        assert errors(replace(text, "country: XZ", f"country: {good}")) == []
    assert errors(replace(text, "country: XZ", "country: cn")) != []


def test_site_target_is_a_positive_integer() -> None:
    """Issue #22: `sites.initial[].target` (the dashboard's per-site target); the targets need
    not add up to sample_size.n (sites over-recruit, sites are added later)."""
    sites = "sites:\n  initial:\n    - {code: S1, name: One, target: 0}\n"
    text = replace(MINIMAL, "arms:\n", sites + "arms:\n")
    issue = only_error(text)
    assert issue.path == "sites.initial[0].target" and issue.message == "must be at least 1, got 0"
    assert (issue.line, issue.column) == (line_of(text, "target: 0"), column_of(text, "0}"))
    assert "integer" in only_error(replace(text, "target: 0", "target: 2.5")).message
    protocol = load_protocol_text(replace(text, "target: 0", "target: 12345"))
    assert protocol.sites.initial_sites[0].target == 12345


def test_no_schedule_visit_takes_the_unscheduled_visits_code() -> None:
    # a visit named 'unscheduled' would be every participant's unscheduled visit too: its forms
    # saved as unscheduled entries, exported under VISIT UNSCHEDULED with no VISITNUM
    text = replace(MINIMAL, "- id: week_4", "- id: unscheduled")
    text = text.replace("week_4", "unscheduled")
    issue = only_error(text)
    assert issue.path == "schedule.visits[1].id"
    assert issue.message.startswith("'unscheduled' is the code of every participant's "
                                    "unscheduled visit")
    assert issue.line == line_of(text, "- id: unscheduled")
    assert errors(text.replace("unscheduled", "unscheduled_1")) == []


def test_ae_mapped_from_a_second_form_is_refused_not_left_out_of_the_export() -> None:
    """The SDTM AE (and CM) dataset is built from one mapping: a second form mapped to AE
    would have its events coded but missing from ae.xpt, so the protocol is refused naming
    the second mapping (as DM, DS and EX are)."""
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    first = "    - domain: AE\n      form: adverse_events\n      variables:\n" \
            "        - {variable: AETERM, field: ae_term}\n"
    assert text.count(first) == 1 and not errors(text)
    text = text.replace(first, first + "        - {variable: AESTDTC, field: ae_onset_on}\n"
                        + first, 1)
    messages = [(i.path, i.message) for i in validate_protocol_text(text)
                if i.severity == "error"]
    assert len(messages) == 1, messages
    path, message = messages[0]
    assert path.endswith(".domain") and message.startswith("AE is mapped twice (first at mapping")
