"""`MemoEvaluator` (one evaluation per distinct referenced input, used by the analysis datasets)
gives exactly what `evaluate` gives, record by record, blanks and missing codes included."""

from __future__ import annotations

import datetime
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ecrf.expressions import ExpressionError, MemoEvaluator, evaluate

TODAY = datetime.date(2026, 3, 1)

REFS = ["[a]", "[b]", "[a(1)]", "[b][2]", "[v1][a]", "[v2][b]", "[c]"]
LITERALS = ["0", "1", "1.5", "7", "''", "'1'", "'x'", "'2026-01-05'", "'today'", "true",
            "false", "null"]
STORED = st.sampled_from([
    None, "", "0", "1", "1.0", "x", "X", "2026-01-05", "2026-02-30", "today", 0, 1, 1.0, 7.25,
    -3, True, False, math.nan, math.inf, ["1", "2"], [], {"missing": "NA"}, {1: "a", "2": 3},
    datetime.date(2026, 1, 5),
])


def _expressions() -> st.SearchStrategy[str]:
    leaf = st.sampled_from(REFS + LITERALS)

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        binary = st.tuples(
            children,
            st.sampled_from(["and", "or", "=", "<>", "<", ">=", "+", "-", "*", "/", "^"]),
            children,
        ).map(lambda t: f"({t[0]} {t[1]} {t[2]})")
        unary = st.tuples(st.sampled_from(["not ", "-"]), children).map(
            lambda t: f"{t[0]}({t[1]})")
        call = st.one_of(
            st.tuples(children, children, children).map(lambda t: "if({}, {}, {})".format(*t)),
            st.tuples(st.sampled_from(["isblank", "hasmissingcode", "isblankormissingcode",
                                       "isnumber", "year", "length", "upper", "abs"]),
                      st.sampled_from(REFS)).map(lambda t: f"{t[0]}({t[1]})"),
            st.lists(children, min_size=1, max_size=3).map(
                lambda xs: f"{'coalesce' if len(xs) % 2 else 'concat'}({', '.join(xs)})"),
            st.tuples(children, children, st.sampled_from(["'d'", "'y'", "'q'"])).map(
                lambda t: "datediff({}, {}, {})".format(*t)),
        )
        return st.one_of(binary, unary, call)

    return st.recursive(leaf, extend, max_leaves=8)


RECORD = st.fixed_dictionaries({}, optional={"a": STORED, "b": STORED, "c": STORED})
VISITS = st.fixed_dictionaries({}, optional={"v1": RECORD, "v2": RECORD})


def _same(x: object, y: object) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return type(x) is type(y) and x == y


@settings(max_examples=200, deadline=None)
@given(_expressions(), st.lists(st.tuples(RECORD, VISITS), min_size=1, max_size=12))
def test_memo_evaluator_matches_evaluate_record_by_record(
    text: str, records: list[tuple[dict[str, object], dict[str, dict[str, object]]]]
) -> None:
    try:
        memo = MemoEvaluator(text, today=TODAY)
    except ExpressionError:
        return  # the generator can build text the parser refuses (arity, nesting)
    for values, visits in records + records:  # the second pass reads the memo
        expected = evaluate(text, values, visits=visits, today=TODAY)
        assert _same(memo(values, visits), expected), (text, values, visits)


def test_equal_values_of_different_types_are_not_confused() -> None:
    memo = MemoEvaluator("if([a] = 1, [a], 'no')", today=TODAY)
    assert memo({"a": True}) is True
    assert memo({"a": 1}) == 1 and type(memo({"a": 1})) is int
    assert memo({"a": "1"}) == "1"
    assert memo({}) == "no"
    assert memo({"a": {"missing": "NA"}}) == "no"


def test_a_bad_expression_fails_as_evaluate_does() -> None:
    try:
        MemoEvaluator("[a] +")
    except ExpressionError as error:
        assert error.position == 5
    else:
        raise AssertionError("no ExpressionError")
