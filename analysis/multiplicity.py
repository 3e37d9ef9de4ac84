"""Multiplicity control across an ordered family of confirmatory hypotheses."""

from __future__ import annotations

import math
from collections.abc import Sequence

from analysis.results import AnalysisError, MultiplicityDecision, MultiplicityResult


def _check(tests: Sequence[tuple[str, float]], alpha: float) -> None:
    """Raise AnalysisError on an empty family, bad p-values, duplicates or alpha."""
    if not tests:
        raise AnalysisError("no hypotheses given")
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha must be in (0, 1), got {alpha}")
    names = [name for name, _ in tests]
    if len(set(names)) != len(names):
        raise AnalysisError(f"duplicate endpoints in {names}")
    for name, p in tests:
        if not isinstance(p, int | float) or math.isnan(p) or not 0 <= p <= 1:
            raise AnalysisError(f"p-value of {name!r} must be in [0, 1], got {p!r}")


def adjust_fixed_sequence(
    tests: Sequence[tuple[str, float]], alpha: float = 0.05
) -> MultiplicityResult:
    """Test hypotheses in the given order, each at ``alpha``, stopping at the first failure.

    Parameters
    ----------
    tests
        ``(endpoint, p_value)`` pairs in the pre-specified testing order.
    alpha
        Family-wise (two-sided) significance level.

    Returns
    -------
    MultiplicityResult
        Per endpoint: adjusted p-value (running maximum of the p-values so far),
        ``rejected``, and ``tested`` (False after the first non-rejection).
    """
    _check(tests, alpha)
    decisions = []
    running = 0.0
    still_testing = True
    for name, p in tests:
        running = max(running, float(p))
        rejected = still_testing and running <= alpha
        decisions.append(MultiplicityDecision(name, float(p), running, rejected, still_testing))
        if not rejected:
            still_testing = False
    return MultiplicityResult("fixed_sequence", alpha, tuple(decisions))


def adjust_holm(tests: Sequence[tuple[str, float]], alpha: float = 0.05) -> MultiplicityResult:
    """Apply Holm's step-down procedure; adjusted p-values as R's ``p.adjust(p, "holm")``.

    Parameters
    ----------
    tests
        ``(endpoint, p_value)`` pairs (order does not matter).
    alpha
        Family-wise significance level.

    Returns
    -------
    MultiplicityResult
        Per endpoint, in input order: Holm-adjusted p-value and ``rejected``.
    """
    _check(tests, alpha)
    m = len(tests)
    order = sorted(range(m), key=lambda i: tests[i][1])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(tests[i][1])))
        adjusted[i] = running
    decisions = tuple(
        MultiplicityDecision(name, float(p), adjusted[i], adjusted[i] <= alpha, True)
        for i, (name, p) in enumerate(tests)
    )
    return MultiplicityResult("holm", alpha, decisions)
