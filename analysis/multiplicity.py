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


def adjust_hochberg(tests: Sequence[tuple[str, float]], alpha: float = 0.05) -> MultiplicityResult:
    """Apply Hochberg's step-up procedure; adjusted p-values as R's ``p.adjust(p, "hochberg")``
    (valid under positive dependence of the test statistics)."""
    _check(tests, alpha)
    m = len(tests)
    order = sorted(range(m), key=lambda i: tests[i][1])
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m - 1, -1, -1):
        i = order[rank]
        running = min(running, min(1.0, (m - rank) * float(tests[i][1])))
        adjusted[i] = running
    decisions = tuple(
        MultiplicityDecision(name, float(p), adjusted[i], adjusted[i] <= alpha, True)
        for i, (name, p) in enumerate(tests)
    )
    return MultiplicityResult("hochberg", alpha, decisions)


def adjust_bonferroni(
    tests: Sequence[tuple[str, float]],
    alpha: float = 0.05,
    weights: Sequence[float] | None = None,
) -> MultiplicityResult:
    """Bonferroni (``min(1, m p)``) or, with weights summing to at most 1, weighted Bonferroni
    (``min(1, p / w)``; a zero weight is never rejected)."""
    _check(tests, alpha)
    m = len(tests)
    w = list(weights) if weights is not None else [1.0 / m] * m
    _check_weights(w, m)
    adjusted = [min(1.0, float(p) / wi) if wi > 0 else 1.0 for (_, p), wi in zip(tests, w,
                                                                                strict=True)]
    decisions = tuple(
        MultiplicityDecision(name, float(p), adjusted[i], adjusted[i] <= alpha and w[i] > 0,
                             True)
        for i, (name, p) in enumerate(tests)
    )
    return MultiplicityResult("bonferroni", alpha, decisions)


def _check_weights(weights: Sequence[float], m: int) -> None:
    if len(weights) != m:
        raise AnalysisError(f"{len(weights)} weights for {m} hypotheses")
    if any(not 0 <= w <= 1 for w in weights) or sum(weights) > 1 + 1e-9:
        raise AnalysisError("weights must be in [0, 1] and sum to at most 1")


def _check_graph(matrix: Sequence[Sequence[float]], m: int) -> None:
    if len(matrix) != m or any(len(row) != m for row in matrix):
        raise AnalysisError(f"the transition matrix must be {m} x {m}")
    for i, row in enumerate(matrix):
        if row[i] != 0:
            raise AnalysisError("a hypothesis cannot pass its level to itself (g_ii = 0)")
        if any(not 0 <= g <= 1 for g in row) or sum(row) > 1 + 1e-9:
            raise AnalysisError(f"row {i + 1} of the transition matrix: entries in [0, 1], "
                                "sum at most 1")


def remove_hypothesis(
    weights: list[float], matrix: list[list[float]], j: int, alive: set[int]
) -> None:
    """Delete H_j from a graph in place (Bretz et al. 2009, algorithm 1): its weight moves
    along its edges and the edges through it are joined."""
    alive.discard(j)
    wj = weights[j]
    for lo in alive:
        weights[lo] += wj * matrix[j][lo]
    new = [row[:] for row in matrix]
    for lo in alive:
        for k in alive:
            if lo == k:
                continue
            denominator = 1.0 - matrix[lo][j] * matrix[j][lo]
            new[lo][k] = (
                (matrix[lo][k] + matrix[lo][j] * matrix[j][k]) / denominator
                if denominator > 1e-12
                else 0.0
            )
    for i in range(len(matrix)):
        for k in range(len(matrix)):
            matrix[i][k] = 0.0 if j in (i, k) else new[i][k]
    weights[j] = 0.0


def adjust_graphical(
    tests: Sequence[tuple[str, float]],
    alpha: float,
    weights: Sequence[float],
    matrix: Sequence[Sequence[float]],
) -> MultiplicityResult:
    """The graphical procedure of Bretz, Maurer, Brannath & Posch (2009) with weighted
    Bonferroni tests: adjusted p-values by the shortcut (graphicalMCP ``graph_test_shortcut``)
    and the rejection path (each step's weights and local levels, what was rejected).

    ``weights``: initial weights (sum at most 1); ``matrix[i][j]``: the share of H_i's level
    passed to H_j when H_i is rejected (rows sum to at most 1, zero diagonal).
    """
    _check(tests, alpha)
    m = len(tests)
    _check_weights(weights, m)
    _check_graph(matrix, m)
    p = [float(pv) for _, pv in tests]
    w = [float(x) for x in weights]
    g = [[float(x) for x in row] for row in matrix]
    alive = set(range(m))
    adjusted = [1.0] * m
    running = 0.0
    for _ in range(m):
        ratios = {i: p[i] / w[i] if w[i] > 0 else math.inf for i in alive}
        j = min(sorted(alive), key=lambda i: ratios[i])
        if math.isinf(ratios[j]) and all(p[i] == 0 for i in alive):
            raise AnalysisError("every remaining weight is 0 with p = 0: p / w is undefined")
        running = max(running, ratios[j])
        adjusted[j] = min(1.0, running)
        remove_hypothesis(w, g, j, alive)
    # the rejection path, step by step (the sequentially rejective algorithm)
    w = [float(x) for x in weights]
    g = [[float(x) for x in row] for row in matrix]
    alive = set(range(m))
    path: list[dict[str, object]] = []
    while alive:
        candidates = [i for i in sorted(alive) if w[i] > 0 and p[i] <= w[i] * alpha + 1e-12]
        step: dict[str, object] = {
            "weights": {tests[i][0]: round(w[i], 10) for i in sorted(alive)},
            "levels": {tests[i][0]: round(w[i] * alpha, 10) for i in sorted(alive)},
        }
        if not candidates:
            step["rejected"] = None
            path.append(step)
            break
        j = min(candidates, key=lambda i: p[i] / w[i])
        step["rejected"] = tests[j][0]
        path.append(step)
        remove_hypothesis(w, g, j, alive)
    rejected = {str(s["rejected"]) for s in path if s["rejected"] is not None}
    decisions = tuple(
        MultiplicityDecision(name, float(pv), round(adjusted[i], 12),
                             name in rejected, True)
        for i, (name, pv) in enumerate(tests)
    )
    return MultiplicityResult("graphical", alpha, decisions, tuple(path))
