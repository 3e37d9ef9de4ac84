"""Reference-based multiple imputation pieces (rbmi's approach; Carpenter, Roger & Kenward 2013)
and Rubin's rules with Barnard-Rubin degrees of freedom.

Pure numpy: the marginal imputation distribution of a participant by strategy (MAR, jump to
reference, copy reference, copy increments in reference, last mean carried forward), the
conditional distribution of the missing visits given the observed ones, and pooling. Worked
examples MI-1..MI-4, MI-7 and TP-1 of the estimands reference are the unit tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from analysis.results import AnalysisError

ImputationStrategy = Literal["mar", "jr", "cr", "cir", "lmcf"]
STRATEGIES: tuple[str, ...] = ("mar", "jr", "cr", "cir", "lmcf")


def strategy_distribution(
    mu_own: Sequence[float],
    mu_ref: Sequence[float],
    sigma_own: np.ndarray,
    sigma_ref: np.ndarray,
    first_post_ice: int | None,
    strategy: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (mean, covariance) of a participant's outcome vector under ``strategy``.

    ``first_post_ice`` is the 1-based first visit affected by the event (``t~``), None for no
    event (MAR). Visits before it keep the own arm's mean; see reference §2.5 for the rules.
    """
    if strategy not in STRATEGIES:
        raise AnalysisError(f"unknown imputation strategy {strategy!r}")
    mu = np.asarray(mu_own, dtype=float)
    ref = np.asarray(mu_ref, dtype=float)
    own_s = np.asarray(sigma_own, dtype=float)
    ref_s = np.asarray(sigma_ref, dtype=float)
    j = len(mu)
    if strategy == "mar" or first_post_ice is None or first_post_ice > j:
        return mu, own_s
    if strategy == "cr":
        return ref, ref_s
    t = first_post_ice - 1  # number of pre-event visits
    a, b = slice(0, t), slice(t, j)
    if strategy == "lmcf":
        if t == 0:
            raise AnalysisError("last mean carried forward needs a visit before the event")
        out = mu.copy()
        out[b] = mu[t - 1]
        return out, own_s
    if t == 0:  # event before the first visit: jump and copy increments equal copy reference
        return ref, ref_s
    out = mu.copy()
    if strategy == "jr":
        out[b] = ref[b]
    else:  # cir
        out[b] = mu[t - 1] + (ref[b] - ref[t - 1])
    sigma = np.empty_like(own_s)
    ref_aa_inv_ab = np.linalg.solve(ref_s[a, a], ref_s[a, b])  # Σref,aa⁻¹ Σref,ab
    sigma[a, a] = own_s[a, a]
    sigma[b, a] = ref_aa_inv_ab.T @ own_s[a, a]
    sigma[a, b] = sigma[b, a].T
    sigma[b, b] = ref_s[b, b] - ref_aa_inv_ab.T @ (ref_s[a, a] - own_s[a, a]) @ ref_aa_inv_ab
    return out, sigma


def conditional_distribution(
    mean: np.ndarray, sigma: np.ndarray, y: Sequence[float | None]
) -> tuple[np.ndarray, np.ndarray]:
    """Return (mean, covariance) of the missing visits (None in ``y``) given the observed."""
    values = np.array([math.nan if v is None else float(v) for v in y])
    q = np.isnan(values)
    o = ~q
    if not o.any():
        return mean[q], sigma[np.ix_(q, q)]
    s_qo = sigma[np.ix_(q, o)]
    s_oo = sigma[np.ix_(o, o)]
    gain = np.linalg.solve(s_oo, s_qo.T).T
    cond_mean = mean[q] + gain @ (values[o] - mean[o])
    cond_cov = sigma[np.ix_(q, q)] - gain @ s_qo.T
    return cond_mean, cond_cov


@dataclass(frozen=True)
class Pooled:
    """Rubin's rules: pooled estimate, within/between/total variance and the df."""

    estimate: float
    within: float
    between: float
    total: float
    fmi: float  # lambda, the fraction of missing information
    df: float  # math.inf when nu_com is infinite and there is no between variance


def rubin_rules(
    estimates: Sequence[float], ses: Sequence[float], nu_com: float = math.inf
) -> Pooled:
    """Pool per-imputation estimates and standard errors (Rubin 1987) with the Barnard-Rubin
    (1999) small-sample df; with B = 0 the df is nu_obs (rbmi's rule), infinite if nu_com is."""
    m = len(estimates)
    if m < 2 or len(ses) != m:
        raise AnalysisError("Rubin's rules need at least two imputations, one SE each")
    if any(not math.isfinite(s) for s in ses):
        raise AnalysisError("a standard error is not finite")
    theta = np.asarray(estimates, dtype=float)
    q_bar = float(theta.mean())
    within = float(np.mean(np.square(ses)))
    between = float(theta.var(ddof=1))
    total = within + (1 + 1 / m) * between
    fmi = (1 + 1 / m) * between / total if total > 0 else 0.0
    nu_obs = (
        nu_com * (nu_com + 1) * (1 - fmi) / (nu_com + 3) if math.isfinite(nu_com) else math.inf
    )
    if between <= 0:
        df = nu_obs
    else:
        nu_old = (m - 1) / fmi**2
        df = nu_old if math.isinf(nu_obs) else nu_old * nu_obs / (nu_old + nu_obs)
    return Pooled(q_bar, within, between, total, fmi, df)
