"""Power/sample size against R's power.t.test / power.prop.test; Holm against p.adjust."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_data import read_reference

from analysis.multiplicity import adjust_fixed_sequence, adjust_holm
from analysis.power import (
    compute_power_binary,
    compute_power_continuous,
    compute_sample_size_binary,
    compute_sample_size_continuous,
)
from analysis.results import AnalysisError

REF = read_reference("power")


@pytest.mark.parametrize("case", REF["t_power"])
def test_power_t_matches_r(case: dict[str, Any]) -> None:
    """tests/reference/power.R: power.t.test(n, delta, sd, sig.level, alternative)$power."""
    result = compute_power_continuous(
        delta=case["delta"], sd=case["sd"], n_control=int(case["n"]), alpha=case["alpha"],
        sided=int(case["sided"]),  # type: ignore[arg-type]
    )
    assert result.power == pytest.approx(case["power"], rel=1e-8)


@pytest.mark.parametrize("case", REF["t_n"])
def test_sample_size_t_matches_r(case: dict[str, Any]) -> None:
    """tests/reference/power.R: power.t.test(delta, sd, sig.level, power)$n (R's uniroot
    stops at tol = 1.2e-4, so n is compared to 1e-3 absolute)."""
    result = compute_sample_size_continuous(
        delta=case["delta"], sd=case["sd"], power=case["power"], alpha=case["alpha"],
        sided=int(case["sided"]),  # type: ignore[arg-type]
    )
    assert result.n_control_exact == pytest.approx(case["n"], abs=1e-3)
    assert result.n_control == -(-case["n"] // 1)
    assert result.power >= case["power"]


@pytest.mark.parametrize("case", REF["prop_power"])
def test_power_prop_matches_r(case: dict[str, Any]) -> None:
    """tests/reference/power.R: power.prop.test(n, p1, p2, sig.level, alternative)$power."""
    result = compute_power_binary(
        p_control=case["p1"], p_treatment=case["p2"], n_control=int(case["n"]),
        alpha=case["alpha"], sided=int(case["sided"]),  # type: ignore[arg-type]
    )
    assert result.power == pytest.approx(case["power"], rel=1e-8)


@pytest.mark.parametrize("case", REF["prop_n"])
def test_sample_size_prop_matches_r(case: dict[str, Any]) -> None:
    """tests/reference/power.R: power.prop.test(p1, p2, sig.level, power)$n (n to 1e-3)."""
    result = compute_sample_size_binary(
        p_control=case["p1"], p_treatment=case["p2"], power=case["power"],
        alpha=case["alpha"], sided=int(case["sided"]),  # type: ignore[arg-type]
    )
    assert result.n_control_exact == pytest.approx(case["n"], abs=1e-3)


def test_unequal_allocation_needs_more_subjects_in_total() -> None:
    """2:1 allocation reaches the same power with more subjects than 1:1, fewer controls."""
    equal = compute_sample_size_continuous(delta=0.5, sd=1.0, power=0.9)
    unequal = compute_sample_size_continuous(delta=0.5, sd=1.0, power=0.9, ratio=2.0)
    assert unequal.n_total > equal.n_total
    assert unequal.n_control < equal.n_control
    assert unequal.n_treatment == 2 * unequal.n_control
    assert unequal.power >= 0.9


@pytest.mark.parametrize("case", REF["holm"])
def test_holm_matches_p_adjust(case: dict[str, Any]) -> None:
    """tests/reference/power.R: p.adjust(p, method = "holm")."""
    tests = [(f"e{i}", p) for i, p in enumerate(case["p"])]
    result = adjust_holm(tests, alpha=0.05)
    assert [d.adjusted_p_value for d in result.decisions] == pytest.approx(case["adjusted"])
    assert [d.rejected for d in result.decisions] == [a <= 0.05 for a in case["adjusted"]]


def test_fixed_sequence_stops_at_first_failure() -> None:
    """Once a hypothesis is not rejected, later ones are not tested even if p is tiny."""
    result = adjust_fixed_sequence([("primary", 0.01), ("key2", 0.2), ("key3", 0.001)])
    assert [d.rejected for d in result.decisions] == [True, False, False]
    assert [d.tested for d in result.decisions] == [True, True, False]
    assert result.decision("key3").adjusted_p_value == 0.2


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8), st.floats(0.001, 0.2))
def test_multiplicity_never_rejects_above_unadjusted_level(ps: list[float], alpha: float) -> None:
    """Adjusted p-values are >= raw ones, and every rejection has raw p <= alpha."""
    tests = [(f"e{i}", p) for i, p in enumerate(ps)]
    for result in (adjust_holm(tests, alpha), adjust_fixed_sequence(tests, alpha)):
        for d in result.decisions:
            assert d.adjusted_p_value >= d.p_value
            assert not d.rejected or d.p_value <= alpha


def test_multiplicity_and_power_reject_bad_input() -> None:
    """Duplicates, p outside [0, 1] and impossible designs raise AnalysisError."""
    with pytest.raises(AnalysisError, match="duplicate"):
        adjust_holm([("a", 0.1), ("a", 0.2)])
    with pytest.raises(AnalysisError, match=r"\[0, 1\]"):
        adjust_fixed_sequence([("a", 1.5)])
    with pytest.raises(AnalysisError, match="no sample size"):
        compute_sample_size_binary(p_control=0.3, p_treatment=0.3)
