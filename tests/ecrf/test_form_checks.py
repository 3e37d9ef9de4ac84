"""The form pipeline: coercion, branching, derivation, required fields, edit checks, eligibility."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecrf.checks import (
    FORM_KEY,
    CheckResult,
    calculation_order,
    check_form_definition,
    evaluate_eligibility,
    evaluate_form,
)
from ecrf.expressions import ExpressionError
from ecrf.model import (
    FIELD_TYPES,
    Choice,
    Criterion,
    EditCheck,
    FieldDef,
    FieldType,
    FormDef,
    Label,
)

TODAY = datetime.date(2024, 6, 1)


def fld(id_: str, type_: FieldType = "integer", **kwargs: object) -> FieldDef:
    return FieldDef(id=id_, type=type_, label=Label(id_), **kwargs)  # type: ignore[arg-type]


YES_NO = (Choice("1", Label("Yes")), Choice("0", Label("No")))

VITALS = FormDef(
    id="vitals",
    title=Label("Vital signs", "生命体征"),
    fields=(
        fld("weight", "decimal", required=True, min=20, max=300, decimals=1),
        fld("height", "integer", required=True, min=100, max=230),
        fld(
            "bmi",
            "calculated",
            calculation="round(([weight]*10000)/(([height])^(2)), 1)",
            decimals=1,
        ),
        fld("bmi_class", "calculated", calculation="if([bmi] >= 30, 'obese', 'not obese')"),
        fld("smoker", "yesno", required=True),
        fld("cigarettes", "integer", required=True, show_if="[smoker] = '1'", min=0),
        fld(
            "sbp",
            "integer",
            checks=(EditCheck("sbp_high", "[sbp] < 180", "warning", Label("SBP very high")),),
        ),
        fld("dbp", "integer", allow_missing_codes=("not_done",)),
    ),
    checks=(EditCheck("bp_order", "[sbp] > [dbp]", "error", Label("SBP must exceed DBP")),),
)


def run(submitted: dict[str, object], **kwargs: object) -> object:
    options: dict[str, object] = {"today": TODAY, "submit": True} | kwargs
    return evaluate_form(VITALS, submitted, **options)  # type: ignore[arg-type]


def test_valid_submission_derives_in_dependency_order() -> None:
    result = evaluate_form(
        VITALS,
        {"weight": "95", "height": "175", "smoker": "no", "sbp": "120", "dbp": "80"},
        today=TODAY,
        submit=True,
    )
    assert result.is_valid, result.errors
    assert result.derived == {"bmi": 31, "bmi_class": "obese"}
    assert result.values == {
        "weight": 95,
        "height": 175,
        "smoker": "0",
        "sbp": 120,
        "dbp": 80,
        "bmi": 31,
        "bmi_class": "obese",
    }
    assert result.hidden == ("cigarettes",)
    assert result.cleared == ()
    assert result.warnings == ()


def test_calculated_decimals_are_rounded() -> None:
    result = evaluate_form(
        VITALS, {"weight": "70", "height": "175", "smoker": "0"}, today=TODAY, submit=False
    )
    assert result.derived["bmi"] == 22.9


def test_required_applies_on_submit_only() -> None:
    draft = evaluate_form(VITALS, {"weight": "70"}, today=TODAY, submit=False)
    assert draft.is_valid
    assert "bmi" not in draft.derived
    final = evaluate_form(VITALS, {"weight": "70"}, today=TODAY, submit=True)
    assert final.errors == {"height": ["required"], "smoker": ["required"]}
    assert not final.is_valid


def test_hidden_field_is_not_required_and_visible_one_is() -> None:
    base = {"weight": "70", "height": "175"}
    hidden = evaluate_form(VITALS, base | {"smoker": "0"}, today=TODAY, submit=True)
    assert "cigarettes" not in hidden.errors
    shown = evaluate_form(VITALS, base | {"smoker": "1"}, today=TODAY, submit=True)
    assert shown.errors == {"cigarettes": ["required"]}


def test_stale_value_of_hidden_field_is_cleared_and_reported() -> None:
    submitted = {"weight": "70", "height": "175", "smoker": "0", "cigarettes": "10"}
    result = evaluate_form(VITALS, submitted, today=TODAY, submit=True)
    assert "cigarettes" not in result.values
    assert result.cleared == ("cigarettes",)
    from_previous = evaluate_form(
        VITALS,
        {"weight": "70", "height": "175", "smoker": "0"},
        previous={"smoker": "1", "cigarettes": 10},
        today=TODAY,
        submit=False,
    )
    assert from_previous.cleared == ("cigarettes",)


def test_coercion_errors_are_keyed_by_field() -> None:
    result = evaluate_form(
        VITALS,
        {"weight": "7000", "height": "abc", "smoker": "maybe", "bmi": "20", "extra": 1},
        today=TODAY,
        submit=False,
    )
    assert result.errors == {
        "extra": ["unknown field"],
        "weight": ["must be at most 300"],
        "height": ["must be a number"],
        "bmi": ["field is calculated"],
        "smoker": ["must be yes or no"],
    }
    assert result.invalid == ("weight", "height", "bmi", "smoker")
    assert "weight" not in result.values


def test_error_check_blocks_and_warning_is_reported() -> None:
    base = {"weight": "70", "height": "175", "smoker": "0"}
    result = evaluate_form(VITALS, base | {"sbp": "190", "dbp": "200"}, today=TODAY, submit=True)
    assert result.errors == {"sbp": ["SBP must exceed DBP"]}
    assert result.failed_checks == (
        CheckResult("bp_order", "sbp", Label("SBP must exceed DBP"), "error"),
    )
    assert result.warnings == (CheckResult("sbp_high", "sbp", Label("SBP very high"), "warning"),)


def test_check_over_blank_inputs_does_not_fire() -> None:
    base = {"weight": "70", "height": "175", "smoker": "0"}
    result = evaluate_form(VITALS, base | {"sbp": "120"}, today=TODAY, submit=True)
    assert result.is_valid and result.warnings == ()
    coded = evaluate_form(
        VITALS, base | {"sbp": "120", "dbp": {"missing": "not_done"}}, today=TODAY, submit=True
    )
    assert coded.is_valid
    assert coded.values["dbp"] == {"missing": "not_done"}


def test_form_check_without_form_field_is_keyed_by_form() -> None:
    form = FormDef(
        id="f",
        title=Label("F"),
        fields=(fld("a"),),
        checks=(
            EditCheck("consented", "[screening][consent] = '1'", "error", Label("No consent")),
        ),
    )
    visits = {"screening": {"consent": "0"}}
    result = evaluate_form(form, {"a": 1}, visits=visits, today=TODAY, submit=True)
    assert result.errors == {FORM_KEY: ["No consent"]}
    ok = evaluate_form(
        form, {"a": 1}, visits={"screening": {"consent": "1"}}, today=TODAY, submit=True
    )
    assert ok.is_valid


def test_cascading_branching_reveals_and_hides() -> None:
    form = FormDef(
        id="ae",
        title=Label("AE"),
        fields=(
            fld("any_ae", "yesno"),
            fld("serious", "yesno", show_if="[any_ae] = '1'"),
            fld("sae_report", "text", show_if="[serious] = '1'", required=True),
            fld("no_sae_reason", "text", show_if="[serious] = ''"),
        ),
    )
    result = evaluate_form(
        form,
        {"any_ae": "0", "serious": "1", "sae_report": "x", "no_sae_reason": "n/a"},
        today=TODAY,
        submit=True,
    )
    assert result.values == {"any_ae": "0", "no_sae_reason": "n/a"}
    assert result.cleared == ("serious", "sae_report")
    assert result.is_valid


def test_checkbox_branching_and_calculation_from_other_visit() -> None:
    form = FormDef(
        id="meds",
        title=Label("Medication"),
        fields=(
            fld("reasons", "multiple_choice", choices=(*YES_NO, Choice("6", Label("Other")))),
            fld("other", "text", show_if="[reasons(6)] = '1'", required=True),
            fld("weight_change", "calculated", calculation="[weight] - [baseline][weight]"),
            fld("weight", "decimal"),
        ),
    )
    result = evaluate_form(
        form,
        {"reasons": ["6"], "weight": "68.5"},
        visits={"baseline": {"weight": 70}},
        today=TODAY,
        submit=True,
    )
    assert result.errors == {"other": ["required"]}
    assert result.derived == {"weight_change": -1.5}


def test_invalid_expression_becomes_an_error_not_an_exception() -> None:
    form = FormDef(
        id="f",
        title=Label("F"),
        fields=(fld("a", show_if="[b] = = 1"), fld("b")),
    )
    result = evaluate_form(form, {"a": 1, "b": 1}, today=TODAY, submit=False)
    assert result.errors["a"][0].startswith("invalid expression: unexpected '='")
    assert result.hidden == ("a",)


def test_check_form_definition_accepts_a_sound_form() -> None:
    assert check_form_definition(VITALS, known_fields=()) == []


def test_check_form_definition_reports_problems() -> None:
    form = FormDef(
        id="bad",
        title=Label("Bad"),
        fields=(
            fld("a", show_if="[zz] = 1"),
            fld("a"),
            fld("c", "single_choice"),
            fld("d", "multiple_choice", choices=(Choice("1", Label("x")), Choice("1", Label("y")))),
            fld("e", "calculated", calculation="[f] + 1"),
            fld("f", "calculated", calculation="[e] + 1"),
            fld("g", "calculated"),
            fld("h", calculation="1"),
            fld("i", show_if="[i] = 1 and [d(7)] = '1' and [a(1)] = '1'"),
            fld("j", show_if="[a] ="),
            fld("k", allow_missing_codes=("refused",), min=5, max=1),
            fld("l", checks=(EditCheck("x", "[m] > 1", "error", Label("m")),)),
        ),
        checks=(EditCheck("x", "[visit1][known] = 1 and [visit1][nope] = 1", "error", Label("")),),
    )
    assert check_form_definition(form, known_fields=["known"]) == [
        "form bad: duplicate field id 'a'",
        "form bad: duplicate check id 'x'",
        "field a: show_if: unknown field [zz]",
        "field c: single_choice needs choices",
        "field d: duplicate choice code '1'",
        "field g: calculated field needs a calculation",
        "field h: only calculated fields may have a calculation",
        "field i: show_if: [a(1)] but a is not a multiple choice field",
        "field i: show_if: d has no choice '7'",
        "field i: show_if refers to the field itself",
        "field j: show_if: unexpected end of expression at column 6 in '[a] ='",
        "field k: unknown missing code 'refused' (known: not_done, unknown, not_applicable)",
        "field k: min is greater than max",
        "field l: check x: unknown field [m]",
        "form bad: check x: unknown field [nope]",
        "form bad: calculated fields form a cycle: e -> f -> e",
    ]


def test_calculation_order_is_topological() -> None:
    form = FormDef(
        id="f",
        title=Label("F"),
        fields=(
            fld("total", "calculated", calculation="[part1] + [part2]"),
            fld("part2", "calculated", calculation="[part1] * 2"),
            fld("part1", "calculated", calculation="[x] + 1"),
            fld("x"),
        ),
    )
    assert calculation_order(form) == (("part1", "part2", "total"), ())
    result = evaluate_form(form, {"x": 1}, today=TODAY, submit=True)
    assert result.derived == {"part1": 2, "part2": 4, "total": 6}


def test_cyclic_calculations_do_not_hang() -> None:
    form = FormDef(
        id="f",
        title=Label("F"),
        fields=(
            fld("a", "calculated", calculation="[b] + 1"),
            fld("b", "calculated", calculation="[a] + 1"),
        ),
    )
    order, cycles = calculation_order(form)
    assert order == ("a", "b") and cycles == (("a", "b", "a"),)
    assert evaluate_form(form, {}, today=TODAY, submit=True).derived == {}


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["weight", "height", "bmi", "smoker", "cigarettes", "sbp", "dbp", "zz"]),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    ),
    st.booleans(),
)
def test_evaluate_form_never_raises(submitted: dict[str, object], submit: bool) -> None:
    result = evaluate_form(VITALS, submitted, today=TODAY, submit=submit)
    assert set(result.values) <= {f.id for f in VITALS.fields}
    assert not set(result.values) & set(result.hidden)


# --------------------------------------------------------------------------- eligibility

CRITERIA = (
    Criterion("age", "inclusion", Label("Aged 60 or over"), "datediff([dob], 'today', 'y') >= 60"),
    Criterion("mmse", "inclusion", Label("MMSE 20–26"), "[mmse] >= 20 and [mmse] <= 26"),
    Criterion("stroke", "exclusion", Label("Prior stroke"), "[stroke] = '1'"),
)


@pytest.mark.parametrize(
    ("values", "failed", "undetermined", "eligible"),
    [
        ({"dob": "1950-01-01", "mmse": 24, "stroke": "0"}, (), (), True),
        ({"dob": "1990-01-01", "mmse": 24, "stroke": "0"}, ("age",), (), False),
        ({"dob": "1950-01-01", "mmse": 24, "stroke": "1"}, ("stroke",), (), False),
        ({"dob": "1950-01-01", "mmse": 24}, (), ("stroke",), False),
        ({"mmse": 30, "stroke": "0"}, ("mmse",), ("age",), False),
    ],
)
def test_evaluate_eligibility(
    values: dict[str, object],
    failed: tuple[str, ...],
    undetermined: tuple[str, ...],
    eligible: bool,
) -> None:
    result = evaluate_eligibility(CRITERIA, values, today=TODAY)
    assert tuple(c.id for c in result.failed) == failed
    assert tuple(c.id for c in result.undetermined) == undetermined
    assert result.is_eligible is eligible


def test_eligibility_with_invalid_expression_raises_expression_error() -> None:
    bad = Criterion("x", "inclusion", Label("x"), "[a] >")
    with pytest.raises(ExpressionError):
        evaluate_eligibility([bad], {}, today=TODAY)


def test_check_form_definition_reports_bad_ids_and_types() -> None:
    form = FormDef(
        id="f",
        title=Label("F"),
        fields=(fld("1st visit"), fld("ok", "colour")),  # type: ignore[arg-type]
    )
    assert check_form_definition(form, ()) == [
        "field 1st visit: id must start with a letter or '_' and hold only letters, digits, "
        "'_', '-'",
        "field ok: unknown type 'colour' (known: " + ", ".join(FIELD_TYPES) + ")",
    ]


_expression_texts = st.one_of(
    st.none(),
    st.text(alphabet="[]()'=<>+-*/^ abcdefgh0123456789,", max_size=25),
    st.sampled_from(["[a] = '1'", "[b] + 1", "[c(1)] = '1'", "[v][a] > 2", "[a] >"]),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from(["integer", "text", "calculated", "multiple_choice", "yesno"]),
            _expression_texts,
            _expression_texts,
        ),
        min_size=1,
        max_size=5,
    ),
    st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.text(max_size=4) | st.integers()),
)
def test_definition_check_and_evaluation_never_raise(
    specs: list[tuple[str, FieldType, str | None, str | None]], submitted: dict[str, object]
) -> None:
    form = FormDef(
        id="f",
        title=Label("F"),
        fields=tuple(
            fld(
                id_,
                type_,
                show_if=show_if,
                calculation=calculation if type_ == "calculated" else None,
                choices=YES_NO if type_ == "multiple_choice" else (),
            )
            for id_, type_, show_if, calculation in specs
        ),
    )
    problems = check_form_definition(form, known_fields=["v"])
    assert all(isinstance(problem, str) for problem in problems)
    result = evaluate_form(form, submitted, today=TODAY, submit=True)
    assert not set(result.values) & set(result.hidden)
