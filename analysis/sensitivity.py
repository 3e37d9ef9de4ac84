"""Sensitivity analyses for a continuous endpoint at its final visit by multiple imputation.

Imputation model (per completed dataset m = 1..M): among subjects with the outcome observed,
``y ~ arm + baseline + covariates + strata`` by OLS; draw sigma^2 from its scaled inverse
chi-square posterior and beta from N(beta_hat, sigma^2 (X'X)^-1); impute each missing y from
its own row (MAR), or for non-reference arms from the row with the arm set to the reference
(jump to reference, J2R), optionally adding delta to imputed values of non-reference arms
(tipping point). Each completed dataset is analysed by the primary ANCOVA and the estimates
are combined by Rubin's rules (t reference with Rubin's 1987 degrees of freedom).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimators.ancova import fit_ancova
from analysis.results import AnalysisError, EffectEstimate, Serialisable

Strategy = Literal["mar", "j2r"]


@dataclass(frozen=True)
class PooledEstimate(Serialisable):
    contrast: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    df: float
    n_imputations: int
    n_imputed: int
    strategy: str
    delta: float = 0.0


def _design(
    frame: pd.DataFrame,
    arm: str,
    reference: str,
    covariates: Sequence[str],
    strata: Sequence[str],
    as_reference: bool,
) -> np.ndarray:
    columns = [np.ones(len(frame))]
    arms = sorted(a for a in frame[arm].unique() if a != reference)
    for level in arms:
        indicator = (frame[arm] == level).to_numpy(dtype=float)
        columns.append(np.zeros(len(frame)) if as_reference else indicator)
    for covariate in covariates:
        columns.append(frame[covariate].to_numpy(dtype=float))
    for stratum in strata:
        for level in sorted(frame[stratum].astype(str).unique())[1:]:
            columns.append((frame[stratum].astype(str) == level).to_numpy(dtype=float))
    return np.column_stack(columns)


def impute_and_pool(
    frame: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    reference_arm: str,
    covariates: Sequence[str] = (),
    strata: Sequence[str] = (),
    strategy: Strategy = "mar",
    delta: float = 0.0,
    n_imputations: int = 20,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[PooledEstimate]:
    """Multiply impute missing outcomes and pool the ANCOVA effects by Rubin's rules."""
    needed = [arm, *covariates, *strata]
    frame = frame.dropna(subset=needed).reset_index(drop=True)
    missing = frame[outcome].isna().to_numpy()
    observed = frame.loc[~missing]
    if len(observed) <= len(covariates) + 3:
        raise AnalysisError("too few observed outcomes to impute")
    rng = np.random.default_rng(seed)
    x_obs = _design(observed, arm, reference_arm, covariates, strata, as_reference=False)
    y_obs = observed[outcome].to_numpy(dtype=float)
    xtx_inv = np.linalg.pinv(x_obs.T @ x_obs)
    beta_hat = xtx_inv @ x_obs.T @ y_obs
    residual_df = len(y_obs) - np.linalg.matrix_rank(x_obs)
    rss = float(np.sum((y_obs - x_obs @ beta_hat) ** 2))
    mis = frame.loc[missing]
    non_reference = (mis[arm] != reference_arm).to_numpy()
    x_mis = _design(mis, arm, reference_arm, covariates, strata, as_reference=False)
    if strategy == "j2r" and len(mis):
        x_ref = _design(mis, arm, reference_arm, covariates, strata, as_reference=True)
        x_mis = np.where(non_reference[:, None], x_ref, x_mis)
    fits: dict[str, list[tuple[float, float]]] = {}
    for _ in range(n_imputations):
        sigma2 = rss / rng.chisquare(residual_df)
        beta = rng.multivariate_normal(beta_hat, sigma2 * xtx_inv)
        completed = frame.copy()
        draws = x_mis @ beta + rng.normal(0.0, np.sqrt(sigma2), size=len(mis))
        draws = draws + delta * non_reference
        completed.loc[missing, outcome] = draws
        result = fit_ancova(
            completed,
            outcome=outcome,
            arm=arm,
            reference_arm=reference_arm,
            covariates=list(covariates),
            strata=list(strata),
            alpha=alpha,
        )
        for effect in result.effects:
            fits.setdefault(effect.contrast, []).append((effect.estimate, effect.se or 0.0))
    return [
        _pool(contrast, values, alpha, int(missing.sum()), strategy, delta)
        for contrast, values in fits.items()
    ]


def _pool(
    contrast: str,
    values: list[tuple[float, float]],
    alpha: float,
    n_imputed: int,
    strategy: str,
    delta: float,
) -> PooledEstimate:
    estimates = np.array([v[0] for v in values])
    variances = np.array([v[1] ** 2 for v in values])
    m = len(values)
    q_bar = float(estimates.mean())
    within = float(variances.mean())
    between = float(estimates.var(ddof=1)) if m > 1 else 0.0
    total = within + (1 + 1 / m) * between
    df = (m - 1) * (1 + within / ((1 + 1 / m) * between)) ** 2 if between > 0 else float("inf")
    se = float(np.sqrt(total))
    t = (
        float(stats.t.ppf(1 - alpha / 2, df))
        if np.isfinite(df)
        else float(stats.norm.ppf(1 - alpha / 2))
    )
    p = float(2 * stats.t.sf(abs(q_bar / se), df)) if se > 0 else 1.0
    return PooledEstimate(
        contrast,
        q_bar,
        se,
        q_bar - t * se,
        q_bar + t * se,
        p,
        float(df) if np.isfinite(df) else 1e9,
        m,
        n_imputed,
        strategy,
        delta,
    )


def tipping_point(
    frame: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    reference_arm: str,
    covariates: Sequence[str] = (),
    strata: Sequence[str] = (),
    deltas: Sequence[float],
    n_imputations: int = 20,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[list[PooledEstimate], float | None]:
    """MAR imputation shifted by each delta; return the results and the first delta at which
    the primary conclusion (p < alpha) no longer holds (None if it holds throughout)."""
    results: list[PooledEstimate] = []
    tipping: float | None = None
    for delta in deltas:
        pooled = impute_and_pool(
            frame,
            outcome=outcome,
            arm=arm,
            reference_arm=reference_arm,
            covariates=covariates,
            strata=strata,
            strategy="mar",
            delta=delta,
            n_imputations=n_imputations,
            seed=seed,
            alpha=alpha,
        )
        results.extend(pooled)
        if tipping is None and any(p.p_value >= alpha for p in pooled):
            tipping = delta
    return results, tipping


def as_effect(pooled: PooledEstimate) -> EffectEstimate:
    return EffectEstimate(
        contrast=pooled.contrast,
        estimate=pooled.estimate,
        se=pooled.se,
        ci_low=pooled.ci_low,
        ci_high=pooled.ci_high,
        p_value=pooled.p_value,
        df=pooled.df,
        ci_method="rubin_t",
    )
