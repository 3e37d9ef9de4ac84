"""The safe expression language: syntax, REDCap semantics, and robustness against any input."""

from __future__ import annotations

import datetime
import math
import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecrf.expressions import (
    FUNCTIONS,
    Expression,
    ExpressionError,
    Reference,
    evaluate,
    parse,
    truthy,
)

TODAY = datetime.date(2024, 6, 1)


def ev(text: str, values: dict[str, object] | None = None, **kwargs: object) -> object:
    return evaluate(text, values or {}, today=TODAY, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- REDCap examples


def test_redcap_age_from_date_of_birth() -> None:
    assert ev("datediff([dob], 'today', 'y') >= 18", {"dob": "2006-05-31"}) is True
    assert ev("datediff([dob], 'today', 'y') >= 18", {"dob": "2006-06-10"}) is False
    assert ev("datediff([dob], 'today', 'y') >= 18", {}) is None
    assert truthy(ev("datediff([dob], 'today', 'y') >= 18", {})) is False


def test_redcap_bmi_calculation() -> None:
    text = "round(([weight]*10000)/(([height])^(2)), 1)"
    assert ev(text, {"weight": 70, "height": 175}) == 22.9
    assert ev(text, {"weight": "82.5", "height": "180"}) == 25.5
    assert ev(text, {"weight": 70}) is None
    assert ev(text, {"weight": 70, "height": 0}) is None


def test_redcap_checkbox_option() -> None:
    text = "[l_bu_unit2(6)] = '1'"
    assert ev(text, {"l_bu_unit2": ["1", "6"]}) is True
    assert ev(text, {"l_bu_unit2": ["1"]}) is False
    assert ev("[l_bu_unit2(6)] = '0'", {"l_bu_unit2": []}) is True
    assert ev("[l_bu_unit2(6)]", {}) is None
    assert ev("[l_bu_unit2(6)]", {"l_bu_unit2": {"missing": "unknown"}}) is None


def test_redcap_cross_event_reference() -> None:
    text = "[baseline_arm_1][consent_status]='1'"
    visits = {"baseline_arm_1": {"consent_status": "1"}}
    assert ev(text, {}, visits=visits) is True
    assert ev(text, {"consent_status": "1"}) is False
    assert ev(text, {}, visits={"baseline_arm_1": {"consent_status": 0}}) is False
    assert ev("[other][consent_status] = ''", {}, visits=visits) is True


def test_redcap_calctext_nested_if() -> None:
    text = (
        "if([l_fac_bu] = '2' and [l_bu_unit2(6)] = '1', 'Test 1', "
        "if([l_fac_bu] = '1', 'Test 2', 'none'))"
    )
    assert ev(text, {"l_fac_bu": "2", "l_bu_unit2": ["6"]}) == "Test 1"
    assert ev(text, {"l_fac_bu": 1, "l_bu_unit2": []}) == "Test 2"
    assert ev(text, {}) == "none"


def test_redcap_repeat_instance() -> None:
    values = {"med_name": {1: "Aspirin", "2": "Metformin"}}
    assert ev("[med_name][1]='Aspirin'", values) is True
    assert ev("[med_name][2]", values) == "Metformin"
    assert ev("[med_name][3]", values) is None
    visits = {"event_1_arm_1": values}
    assert ev("[event_1_arm_1][med_name][1]='Aspirin'", {}, visits=visits) is True


def test_redcap_blank_tests_and_double_quotes() -> None:
    assert ev("[email]<>''", {"email": "a@b.c"}) is True
    assert ev("[email]<>''", {"email": ""}) is False
    assert ev('[sex] = "0" and [given_birth] = "1"', {"sex": 0, "given_birth": "1"}) is True
    assert ev("[weight] > 80", {"weight": "80.5"}) is True


# --------------------------------------------------------------------------- parsing


def test_parse_collects_references() -> None:
    expr = parse("[a] + [v1][b] + [c(3)] + [d][2] + [v2][e(x)][4]")
    assert isinstance(expr, Expression)
    assert expr.references == {
        Reference("a"),
        Reference("b", visit="v1"),
        Reference("c", option="3"),
        Reference("d", instance=2),
        Reference("e", visit="v2", option="x", instance=4),
    }
    assert expr.fields == {"a", "b", "c", "d", "e"}
    assert parse("[a] + [v1][b]") is parse("[a] + [v1][b]")


def test_keywords_and_functions_are_case_insensitive() -> None:
    assert ev("1 = 1 AND NOT 2 = 3 Or FALSE") is True
    assert ev("IF(TRUE, ROUND(2.5), 0)") == 3
    assert ev("Null = ''") is True


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("", "empty expression", 1),
        ("   ", "empty expression", 4),
        ("[x", "malformed field reference", 1),
        ("[x] = 'a", "unterminated string", 7),
        ("foo(1)", "unknown function 'foo'", 1),
        ("x + 1", "unknown name 'x'", 1),
        ("1 < 2 < 3", "comparisons cannot be chained", 7),
        ("if(1, 2)", "if() takes 3 argument(s), got 2", 1),
        ("today(1)", "today() takes 0 argument(s), got 1", 1),
        ("round()", "round() takes 1 to 2 argument(s), got 0", 1),
        ("sum()", "sum() takes 1 or more argument(s), got 0", 1),
        ("datediff([a], [b], 'w')", "datediff unit must be one of", 20),
        ("(1 + 2", "missing ')'", 1),
        ("(1 + 2 3)", "expected ')' but found '3'", 8),
        ("1 +", "unexpected end of expression", 4),
        ("1 2", "unexpected '2'", 3),
        ("[a] [b]", "unexpected field reference [b]", 5),
        ("[a][b][c]", "a reference has at most [visit][field]", 7),
        ("[a(1)][b]", "a visit name cannot carry a checkbox code", 1),
        ("[a][1][2]", "nothing may follow an instance number", 7),
        ("[a][0]", "instance number out of range", 4),
        ("[1]", "malformed field reference", 1),
        ("1 ; 2", "unexpected character ';'", 3),
        ("1 and", "unexpected end of expression", 6),
        ("and 1", "unexpected 'and'", 1),
        ("9" * 400, "number out of range", 1),
        ("(" * 40 + "1" + ")" * 40, "expression nested too deeply", 33),
        ("-" * 40 + "1", "expression nested too deeply", 33),
    ],
)
def test_parse_errors_have_message_and_position(text: str, message: str, column: int) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert message in info.value.message
    assert info.value.expression == text
    assert info.value.position == column - 1
    assert str(info.value) == f"{info.value.message} at column {column}"


def test_long_operator_chain_is_rejected_not_overflowing() -> None:
    with pytest.raises(ExpressionError, match="too long or deeply nested"):
        parse(" + ".join(["[a]"] * 500))
    assert ev(" + ".join(["1"] * 50)) == 50


def test_python_code_is_rejected_and_never_executed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda command: calls.append(command) or 0)
    attacks = [
        "__import__('os').system('x')",
        "__import__('os')",
        "eval('1')",
        "exec('import os')",
        "[a].__class__",
        "open('/etc/passwd')",
        "lambda: 1",
        "().__class__.__bases__[0]",
        "os.system('x')",
        "[__import__('os').system('x')]",
    ]
    for attack in attacks:
        with pytest.raises(ExpressionError):
            parse(attack)
        with pytest.raises(ExpressionError):
            evaluate(attack, {})
    assert ev('\'__import__("os").system("x")\'') == '__import__("os").system("x")'
    assert calls == []


def test_non_text_input_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError):
        parse(42)  # type: ignore[arg-type]
    with pytest.raises(ExpressionError):
        evaluate(42, {})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- operators


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("[x] = '1'", {"x": "1"}, True),
        ("[x] = '1'", {"x": 1}, True),
        ("[x] = 1", {"x": "1.0"}, True),
        ("[x] = 'a'", {"x": "A"}, False),
        ("[x] == 'a'", {"x": "a"}, True),
        ("[x] <> '1'", {"x": 2}, True),
        ("[x] != '1'", {"x": "1"}, False),
        ("[x] = ''", {}, True),
        ("[x] = ''", {"x": None}, True),
        ("[x] = ''", {"x": ""}, True),
        ("[x] = ''", {"x": {"missing": "not_done"}}, True),
        ("[x] = ''", {"x": 0}, False),
        ("[x] <> ''", {"x": 0}, True),
        ("[x] <> 5", {}, True),
        ("[x] = 5", {}, False),
        ("[x] < 5", {}, None),
        ("[x] >= 5", {"x": ""}, None),
        ("[x] < 10", {"x": "9"}, True),
        ("[x] < '10'", {"x": "9"}, True),
        ("[x] < 'b'", {"x": "a"}, True),
        ("[x] > '2024-01-31'", {"x": "2024-02-01"}, True),
        ("[x] <= 3", {"x": 3}, True),
        ("[x] >= 3.5", {"x": 3}, False),
        ("[x] > 1", {"x": "abc"}, True),
        ("true = 1", {}, True),
        ("false = 0", {}, True),
        ("1 + 2 * 3", {}, 7),
        ("(1 + 2) * 3", {}, 9),
        ("7 - 2 - 1", {}, 4),
        ("8 / 2 / 2", {}, 2),
        ("1 / 4", {}, 0.25),
        ("2 ^ 3 ^ 2", {}, 512),
        ("-2 ^ 2", {}, -4),
        ("(-2) ^ 2", {}, 4),
        ("2 ^ -1", {}, 0.5),
        ("(-8) ^ (1/3)", {}, None),
        ("10 ^ 400", {}, None),
        ("1 / 0", {}, None),
        ("[x] + 1", {}, None),
        ("[x] + 1", {"x": "abc"}, None),
        ("[x] * 2", {"x": "2.5"}, 5),
        ("-[x]", {"x": "3"}, -3),
        ("+[x]", {"x": "3"}, 3),
        ("-[x]", {}, None),
        ("1 = 1 and 2 = 2", {}, True),
        ("1 = 1 and 2 = 3", {}, False),
        ("[x] > 1 and 1 = 1", {}, None),
        ("[x] > 1 and 1 = 2", {}, False),
        ("[x] > 1 or 1 = 1", {}, True),
        ("[x] > 1 or 1 = 2", {}, None),
        ("not 1 = 2", {}, True),
        ("not [x] > 1", {}, None),
        ("not [x] = ''", {}, False),
        ("[x] and 1", {"x": "0"}, False),
        ("[x] or 0", {"x": "yes"}, True),
    ],
)
def test_operators(text: str, values: dict[str, object], expected: object) -> None:
    result = ev(text, values)
    assert result == expected and type(result) is type(expected)


def test_integral_results_are_ints() -> None:
    assert ev("0.5 + 0.5") == 1
    assert isinstance(ev("0.5 + 0.5"), int)
    assert ev("2 ^ 60") == 2.0**60
    assert isinstance(ev("2 ^ 60"), float)


# --------------------------------------------------------------------------- functions


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("if([x] = 1, 'a', 'b')", {"x": 1}, "a"),
        ("if([x] = 1, 'a', 'b')", {}, "b"),
        ("if([x] > 1, 'a', 'b')", {}, "b"),
        ("datediff('2024-01-01', '2024-01-31', 'd')", {}, 30),
        ("datediff('2024-01-31', '2024-01-01', 'd')", {}, -30),
        ("datediff('2024-01-31', '2024-01-01', 'd', 'ymd', false)", {}, 30),
        ("datediff('2024-01-31', '2024-01-01', 'd', 'ymd', true)", {}, -30),
        ("datediff('2023-06-01', '2024-06-01', 'y')", {}, 366 / 365.2425),
        ("datediff('2024-01-01', '2024-03-01', 'M')", {}, 60 / 30.44),
        ("datediff('2024-01-01 08:00', '2024-01-01T10:30', 'h')", {}, 2.5),
        ("datediff('2024-01-01T10:00:00+02:00', '2024-01-01T10:00:00Z', 'm')", {}, 120),
        ("datediff('2024-01-01T00:00:00', '2024-01-01T00:00:10.5', 's')", {}, 10.5),
        ("datediff('2024-05-31', 'today', 'd')", {}, 1),
        ("datediff('2024-02-30', 'today', 'd')", {}, None),
        ("datediff('soon', 'today', 'd')", {}, None),
        ("datediff('2024-01-01', '2024-01-02', [u])", {"u": "d"}, 1),
        ("datediff('2024-01-01', '2024-01-02', [u])", {"u": "w"}, None),
        ("sum(1, [a], '2', 'x')", {}, 3),
        ("sum([a], [b])", {}, None),
        ("mean(1, 2, 3, 4)", {}, 2.5),
        ("median(5, 1, 3)", {}, 3),
        ("median(4, 1, 3, 2)", {}, 2.5),
        ("stdev(2, 4, 4, 4, 5, 5, 7, 9)", {}, math.sqrt(32 / 7)),
        ("stdev(2)", {}, None),
        ("min(3, '1', 2)", {}, 1),
        ("max(3, '1', [a])", {}, 3),
        ("round(2.5)", {}, 3),
        ("round(-2.5)", {}, -3),
        ("round(3.14159, 2)", {}, 3.14),
        ("round(1234, -2)", {}, 1200),
        ("round(1.25, 40)", {}, 1.25),
        ("round(1.25, -40)", {}, 0),
        ("round([a], 1)", {}, None),
        ("roundup(1.21, 1)", {}, 1.3),
        ("roundup(-1.21, 1)", {}, -1.3),
        ("rounddown(1.29, 1)", {}, 1.2),
        ("rounddown(-1.29)", {}, -1),
        ("sqrt(16)", {}, 4),
        ("sqrt(-1)", {}, None),
        ("abs(-3.5)", {}, 3.5),
        ("log(exp(2))", {}, 2),
        ("log(8, 2)", {}, 3),
        ("log(0)", {}, None),
        ("log(8, 1)", {}, None),
        ("exp(1000)", {}, None),
        ("exp(0)", {}, 1),
        ("mod(7, 3)", {}, 1),
        ("mod(-7, 3)", {}, -1),
        ("mod(7, 0)", {}, None),
        ("year('2024-02-29')", {}, 2024),
        ("month('2024-02-29T10:00Z')", {}, 2),
        ("day([d])", {"d": "2024-02-29"}, 29),
        ("day('2023-02-29')", {}, None),
        ("today()", {}, "2024-06-01"),
        ("isblank([a])", {}, True),
        ("isblank([a])", {"a": 0}, False),
        ("isblankormissingcode([a])", {"a": {"missing": "unknown"}}, True),
        ("isblankormissingcode([a])", {}, True),
        ("isblankormissingcode([a])", {"a": "x"}, False),
        ("hasmissingcode([a])", {"a": {"missing": "unknown"}}, True),
        ("hasmissingcode([a])", {}, False),
        ("hasmissingcode(1)", {}, False),
        ("isnumber('1.5')", {}, True),
        ("isnumber('1.5x')", {}, False),
        ("isinteger('4.0')", {}, True),
        ("isinteger(4.5)", {}, False),
        ("contains('Aspirin', 'PIR')", {}, True),
        ("contains([a], 'x')", {}, False),
        ("starts_with('Aspirin', 'as')", {}, True),
        ("ends_with('Aspirin', 'rin')", {}, True),
        ("left('abcdef', 2)", {}, "ab"),
        ("right('abcdef', 2)", {}, "ef"),
        ("right('abcdef', 0)", {}, None),
        ("mid('abcdef', 2, 3)", {}, "bcd"),
        ("mid('abcdef', 0, 2)", {}, "ab"),
        ("left('你好世界', 2)", {}, "你好"),
        ("length('你好')", {}, 2),
        ("length([a])", {}, 0),
        ("concat('a', [b], 1, 2.5)", {}, "a12.5"),
        ("concat([a], [b])", {}, None),
        ("lower('ABC')", {}, "abc"),
        ("upper('abc')", {}, "ABC"),
        ("trim('  a b  ')", {}, "a b"),
        ("trim('   ')", {}, None),
        ("coalesce([a], [b], 'z')", {"b": 0}, 0),
        ("coalesce([a])", {}, None),
    ],
)
def test_functions(text: str, values: dict[str, object], expected: object) -> None:
    result = ev(text, values)
    if isinstance(expected, float):
        assert isinstance(result, float) and math.isclose(result, expected, rel_tol=1e-12)
    else:
        assert result == expected and type(result) is type(expected)


def test_every_function_is_covered_by_a_test() -> None:
    source = Path(__file__).read_text(encoding="utf-8").lower()
    assert all(f"{name}(" in source for name in FUNCTIONS)


def test_today_defaults_to_the_current_utc_date() -> None:
    assert evaluate("today()", {}) == datetime.datetime.now(datetime.UTC).date().isoformat()


def test_stored_values_are_converted() -> None:
    assert ev("[a]", {"a": ["1", "3"]}) == "1,3"
    assert ev("[a]", {"a": []}) is None
    assert ev("[a]", {"a": datetime.date(2024, 1, 2)}) == "2024-01-02"
    assert ev("[a]", {"a": float("nan")}) is None
    assert ev("[a]", {"a": 10**400}) is None
    assert ev("[a]", {"a": object()}) is None
    assert ev("[a(1)]", {"a": "1"}) == "1"
    assert ev("[a(1)]", {"a": 2}) == "0"


def test_numbers_format_like_javascript_in_text() -> None:
    assert ev("concat(1/3)") == "0.3333333333333333"
    assert ev("concat(0.000001, ' ', 0.0000001)") == "0.000001 1e-7"
    assert ev("concat(10^21, ' ', 10^20, ' ', 1.5*10^22)") == "1e+21 100000000000000000000 1.5e+22"
    assert ev("concat(-0.5, ' ', true, ' ', false)") == "-0.5 1 0"


def test_truthy() -> None:
    assert [truthy(v) for v in (None, False, 0, 0.0, "", "0", "0.0", {"missing": "x"}, [])] == [
        False
    ] * 9
    assert [truthy(v) for v in (True, 1, -2.5, "1", "yes", ["1"], float("inf"))] == [
        True,
        True,
        True,
        True,
        True,
        True,
        False,
    ]


# --------------------------------------------------------------------------- properties

_names = st.sampled_from(["a", "b", "c", "dob", "x_1"])
_literals = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: f"{abs(x):.3f}"),
    st.sampled_from(["''", "'1'", "'abc'", "'2024-02-29'", "'today'", "true", "null", "'y'"]),
)
_refs = st.one_of(
    _names.map(lambda n: f"[{n}]"),
    st.tuples(_names, st.sampled_from(["1", "2", "x"])).map(lambda t: f"[{t[0]}({t[1]})]"),
    _names.map(lambda n: f"[v1][{n}]"),
    _names.map(lambda n: f"[{n}][2]"),
)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binary = st.tuples(
        children,
        st.sampled_from(["+", "-", "*", "/", "^", "=", "<>", "<", ">=", "and", "or"]),
        children,
    ).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
    unary = st.tuples(st.sampled_from(["-", "not "]), children).map(lambda t: f"{t[0]}({t[1]})")
    calls = st.tuples(
        st.sampled_from(sorted(FUNCTIONS)), st.lists(children, min_size=0, max_size=5)
    ).map(lambda t: f"{t[0]}({', '.join(t[1])})")
    return st.one_of(binary, unary, calls)


expressions = st.recursive(st.one_of(_literals, _refs), _combine, max_leaves=12)
stored_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=8),
        st.sampled_from(["1", "0", "2024-02-29", "2024-01-01T10:00:00+08:00", "d", "y"]),
        st.just({"missing": "unknown"}),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["1", "2"]), inner)
    ),
    max_leaves=4,
)
value_maps = st.dictionaries(_names, stored_values, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=string.printable + "[]()'\"你", max_size=60))
def test_parse_raises_only_expression_error(text: str) -> None:
    try:
        expr = parse(text)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text)
    else:
        assert expr.text == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_parse_raises_only_expression_error_for_any_unicode(text: str) -> None:
    try:
        parse(text)
    except ExpressionError as error:
        assert str(error).endswith(f"column {error.position + 1}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions, value_maps, value_maps)
def test_evaluation_raises_only_expression_error(
    text: str, values: dict[str, object], visit_values: dict[str, object]
) -> None:
    try:
        expr = parse(text)
    except ExpressionError:
        return
    result = evaluate(expr, values, visits={"v1": visit_values}, today=TODAY)
    assert result is None or isinstance(result, bool | int | float | str)
    assert result != ""
    if isinstance(result, float):
        assert math.isfinite(result)
