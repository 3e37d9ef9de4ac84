"""Power and sample size of two-arm trials, matching R's power.t.test / power.prop.test.

With ``ratio = n_treatment / n_control = 1`` the results equal R's (``strict = FALSE``:
only the rejection region on the side of the effect counts). Unequal allocation uses the
same formulas with ``1/n_control + 1/n_treatment`` in place of ``2/n``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from scipy import optimize, stats

from analysis.results import AnalysisError, PowerResult

Sided = Literal[1, 2]


def _check(alpha: float, ratio: float, sided: int) -> None:
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha must be in (0, 1), got {alpha}")
    if not ratio > 0:
        raise AnalysisError(f"allocation ratio must be positive, got {ratio}")
    if sided not in (1, 2):
        raise AnalysisError(f"sided must be 1 or 2, got {sided}")


def _power_t(delta: float, sd: float, n_control: float, ratio: float, alpha: float,
             sided: int) -> float:
    n_treatment = ratio * n_control
    df = n_control + n_treatment - 2
    ncp = abs(delta) / (sd * math.sqrt(1 / n_control + 1 / n_treatment))
    critical = float(stats.t.isf(alpha / sided, df))
    return float(stats.nct.sf(critical, df, ncp))


def _power_prop(p_control: float, p_treatment: float, n_control: float, ratio: float,
                alpha: float, sided: int) -> float:
    n_treatment = ratio * n_control
    pooled = (n_control * p_control + n_treatment * p_treatment) / (n_control + n_treatment)
    z = float(stats.norm.isf(alpha / sided))
    null_sd = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_treatment))
    alt_sd = math.sqrt(p_control * (1 - p_control) / n_control
                       + p_treatment * (1 - p_treatment) / n_treatment)
    return float(stats.norm.cdf((abs(p_treatment - p_control) - z * null_sd) / alt_sd))


def _solve_n(power_of: Callable[[float], float], target: float, lower: float) -> float:
    """Return the real n_control where ``power_of(n) == target``."""
    if not 0 < target < 1:
        raise AnalysisError(f"target power must be in (0, 1), got {target}")
    upper = max(lower * 2, 10.0)
    while power_of(upper) < target:
        upper *= 2
        if upper > 1e9:
            raise AnalysisError("no sample size below 1e9 reaches the target power")
    if power_of(lower) >= target:
        return lower
    return float(optimize.brentq(lambda n: power_of(n) - target, lower, upper, xtol=1e-10))


def compute_power_continuous(
    *, delta: float, sd: float, n_control: int, ratio: float = 1.0, alpha: float = 0.05,
    sided: Sided = 2,
) -> PowerResult:
    """Return the power of a two-sample t test (R: ``power.t.test(n, delta, sd)``).

    Parameters
    ----------
    delta, sd
        True mean difference and common standard deviation.
    n_control
        Subjects in the control arm; the treatment arm has ``ratio * n_control``.
    ratio
        Allocation ratio treatment : control.
    alpha, sided
        Significance level and 1- or 2-sided test.

    Returns
    -------
    PowerResult
        ``power`` at the given sizes.
    """
    _check(alpha, ratio, sided)
    if sd <= 0 or n_control < 2:
        raise AnalysisError("sd must be positive and n_control at least 2")
    power = _power_t(delta, sd, n_control, ratio, alpha, sided)
    return PowerResult("two-sample t test", power, n_control,
                       math.ceil(ratio * n_control - 1e-9), float(n_control), alpha, ratio, sided)


def compute_sample_size_continuous(
    *, delta: float, sd: float, power: float = 0.8, ratio: float = 1.0, alpha: float = 0.05,
    sided: Sided = 2,
) -> PowerResult:
    """Return the smallest arms giving ``power`` for a two-sample t test (R: power.t.test).

    Parameters
    ----------
    delta, sd, ratio, alpha, sided
        As for :func:`compute_power_continuous`.
    power
        Target power.

    Returns
    -------
    PowerResult
        Whole-subject arm sizes, the real-valued ``n_control_exact`` (R's ``n`` when
        ``ratio == 1``) and the power actually achieved.
    """
    _check(alpha, ratio, sided)
    if sd <= 0 or delta == 0:
        raise AnalysisError("sd must be positive and delta non-zero")
    exact = _solve_n(lambda n: _power_t(delta, sd, n, ratio, alpha, sided), power,
                     max(2.0, 1.0 + 1.0 / ratio))
    n_control = math.ceil(exact - 1e-9)
    n_treatment = math.ceil(ratio * n_control - 1e-9)
    achieved = _power_t(delta, sd, n_control, n_treatment / n_control, alpha, sided)
    return PowerResult("two-sample t test", achieved, n_control, n_treatment, exact, alpha,
                       ratio, sided)


def compute_power_binary(
    *, p_control: float, p_treatment: float, n_control: int, ratio: float = 1.0,
    alpha: float = 0.05, sided: Sided = 2,
) -> PowerResult:
    """Return the power of the two-proportion z test (R: ``power.prop.test(n, p1, p2)``).

    Parameters
    ----------
    p_control, p_treatment
        True response proportions.
    n_control, ratio, alpha, sided
        As for :func:`compute_power_continuous`.

    Returns
    -------
    PowerResult
        ``power`` at the given sizes.
    """
    _check(alpha, ratio, sided)
    _check_proportions(p_control, p_treatment)
    power = _power_prop(p_control, p_treatment, n_control, ratio, alpha, sided)
    return PowerResult("two-proportion z test", power, n_control,
                       math.ceil(ratio * n_control - 1e-9), float(n_control), alpha, ratio, sided)


def compute_sample_size_binary(
    *, p_control: float, p_treatment: float, power: float = 0.8, ratio: float = 1.0,
    alpha: float = 0.05, sided: Sided = 2,
) -> PowerResult:
    """Return the smallest arms giving ``power`` for the two-proportion z test.

    Parameters
    ----------
    p_control, p_treatment, ratio, alpha, sided
        As for :func:`compute_power_binary`.
    power
        Target power.

    Returns
    -------
    PowerResult
        Whole-subject arm sizes, ``n_control_exact`` (R's ``n`` when ``ratio == 1``)
        and the power achieved.
    """
    _check(alpha, ratio, sided)
    _check_proportions(p_control, p_treatment)
    if p_control == p_treatment:
        raise AnalysisError("p_control equals p_treatment: no sample size gives power")
    exact = _solve_n(
        lambda n: _power_prop(p_control, p_treatment, n, ratio, alpha, sided), power, 2.0
    )
    n_control = math.ceil(exact - 1e-9)
    n_treatment = math.ceil(ratio * n_control - 1e-9)
    achieved = _power_prop(p_control, p_treatment, n_control, n_treatment / n_control, alpha,
                           sided)
    return PowerResult("two-proportion z test", achieved, n_control, n_treatment, exact, alpha,
                       ratio, sided)


def _check_proportions(p_control: float, p_treatment: float) -> None:
    for name, p in (("p_control", p_control), ("p_treatment", p_treatment)):
        if not 0 < p < 1:
            raise AnalysisError(f"{name} must be in (0, 1), got {p}")
