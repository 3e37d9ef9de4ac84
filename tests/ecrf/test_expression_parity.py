"""The shared expression cases: the Python evaluator and the browser's JavaScript one agree.

tests/ecrf/expression_cases.json lists expressions with values and the expected result (or an
expected parse error and its column). Every case runs through ecrf.expressions here and through
ecrf/static/expressions.js under node (tests/ecrf/run_js_cases.js).
"""

from __future__ import annotations

import datetime
import json
import math
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ecrf.expressions import FUNCTIONS, ExpressionError, evaluate
from tests import absent

HERE = Path(__file__).parent
CASES: list[dict[str, Any]] = json.loads((HERE / "expression_cases.json").read_text("utf-8"))
DEFAULT_TODAY = "2024-06-01"


def same(actual: object, expected: object) -> bool:
    """Compare results as JSON values; numbers within a relative 1e-9 (libm may differ by ulps)."""
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    if isinstance(actual, int | float) and isinstance(expected, int | float):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12)
    return actual == expected and type(actual) is type(expected)


def python_outcome(case: dict[str, Any]) -> dict[str, Any]:
    today = datetime.date.fromisoformat(case.get("today", DEFAULT_TODAY))
    try:
        result = evaluate(
            case["expression"], case.get("values", {}), visits=case.get("visits"), today=today
        )
    except ExpressionError as error:
        return {"error": error.message, "position": error.position}
    return {"result": result}


def check_outcome(case: dict[str, Any], outcome: dict[str, Any]) -> None:
    if case.get("error"):
        assert "error" in outcome, f"{case['expression']!r} should not parse: {outcome}"
        assert outcome["position"] == case["column"] - 1, outcome
    else:
        assert "result" in outcome, f"{case['expression']!r} failed: {outcome}"
        assert same(outcome["result"], case["expected"]), (
            f"{case['expression']!r} with {case.get('values')}: "
            f"got {outcome['result']!r}, expected {case['expected']!r}"
        )


def test_case_file_is_large_enough() -> None:
    assert len(CASES) >= 80
    assert sum(1 for case in CASES if case.get("error")) >= 10


@pytest.mark.parametrize("case", CASES, ids=[case["expression"][:50] for case in CASES])
def test_python_evaluator_matches_case(case: dict[str, Any]) -> None:
    check_outcome(case, python_outcome(case))


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        absent("node is not installed (the JavaScript evaluator's parity is checked with it)")
    return node


def test_javascript_evaluator_matches_every_case_and_python() -> None:
    completed = subprocess.run(
        [node_executable(), str(HERE / "run_js_cases.js"), str(HERE / "expression_cases.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    outcomes = json.loads(completed.stdout)
    assert len(outcomes) == len(CASES)
    failures = []
    for case, js in zip(CASES, outcomes, strict=True):
        py = python_outcome(case)
        try:
            check_outcome(case, js)
            if "error" in py:
                assert js["position"] == py["position"]
            else:
                assert same(js["result"], py["result"])
        except AssertionError as failure:
            failures.append(f"{case['expression']!r}: js={js} py={py} ({failure})")
    assert not failures, "\n".join(failures)


def assert_javascript_agrees(cases: list[dict[str, Any]], tmp_path: Path) -> None:
    """Run cases through node and assert each outcome equals Python's (result or error column)."""
    case_file = tmp_path / "cases.json"
    case_file.write_text(json.dumps(cases), "utf-8")
    completed = subprocess.run(
        [node_executable(), str(HERE / "run_js_cases.js"), str(case_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    failures = []
    for case, js in zip(cases, json.loads(completed.stdout), strict=True):
        py = python_outcome(case)
        agree = (
            js.get("position") == py["position"]
            if "error" in py
            else "result" in js and same(js["result"], py["result"])
        )
        if not agree:
            failures.append(f"{case['expression']}: js={js} py={py}")
    assert not failures, "\n".join(failures[:20])


def random_expression(rng: random.Random, depth: int = 0) -> str:
    """Build a random expression from the grammar (leaves: literals and references)."""
    if depth > 3 or rng.random() < 0.3:
        return rng.choice(LEAVES)
    kind = rng.random()
    if kind < 0.45:
        op = rng.choice(BINARY_OPS)
        return f"({random_expression(rng, depth + 1)} {op} {random_expression(rng, depth + 1)})"
    if kind < 0.55:
        return f"{rng.choice(['-', 'not '])}({random_expression(rng, depth + 1)})"
    name = rng.choice(sorted(FUNCTIONS))
    low, high = FUNCTIONS[name]
    count = rng.randint(low, high if high is not None else low + 3)
    args = [random_expression(rng, depth + 1) for _ in range(count)]
    if name == "datediff":
        args[2] = rng.choice(["'y'", "'M'", "'d'", "'h'", "'m'", "'s'", "[u]"])
    return f"{name}({', '.join(args)})"


LEAVES = [
    "0", "1", "2", "2.5", ".5", "10", "-3", "''", "'1'", "'0'", "'abc'", "'ABC d'", "'你好'",
    "'2024-02-29'", "'2023-12-31T23:30:00+08:00'", "'today'", "true", "false", "null",
    "[a]", "[b]", "[c]", "[d]", "[cb(1)]", "[cb(2)]", "[v1][a]", "[v1][cb(1)]", "[r][1]",
    "[r][2]", "[u]", "[missing]",
]  # fmt: skip
BINARY_OPS = ["+", "-", "*", "/", "^", "=", "<>", "<", ">", "<=", ">=", "and", "or"]
VALUES = {
    "a": "3",
    "b": 2.5,
    "c": "2024-01-15",
    "d": "",
    "cb": ["1", "3"],
    "r": {"1": "x", "2": 7},
    "u": "d",
    "missing": {"missing": "unknown"},
}
VISITS = {"v1": {"a": 10, "cb": []}}


def test_javascript_agrees_with_python_on_random_expressions(tmp_path: Path) -> None:
    rng = random.Random(20240601)
    cases = [
        {"expression": random_expression(rng), "values": VALUES, "visits": VISITS}
        for _ in range(400)
    ]
    assert_javascript_agrees(cases, tmp_path)


def test_javascript_agrees_with_python_on_random_text(tmp_path: Path) -> None:
    rng = random.Random(7)
    pieces = [*LEAVES, *BINARY_OPS, "(", ")", ",", "[", "]", "'", '"', "if(", "round(", " ", "x"]
    cases = [
        {"expression": "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))}
        for _ in range(400)
    ]
    assert_javascript_agrees(cases, tmp_path)
