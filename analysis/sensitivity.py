"""Sensitivity analyses for a continuous endpoint at its final visit by multiple imputation.

Imputation model (per completed dataset m = 1..M): among subjects with the outcome observed,
``y ~ arm + baseline + covariates + strata`` by OLS; draw sigma^2 from its scaled inverse
chi-square posterior and beta from N(beta_hat, sigma^2 (X'X)^-1); impute each missing y from
its own row (MAR), or for non-reference arms from the row with the arm set to the reference
(reference-based: with one analysis visit every missing final value is after the event,
t~ = 1, where jump to reference, copy reference and copy increments in reference coincide —
rbmi's rule, `analysis.imputation.strategy_distribution`), optionally adding delta to imputed
values of non-reference arms (tipping point). Each completed dataset is analysed by the
primary ANCOVA and the estimates are combined by Rubin's rules with the Barnard-Rubin degrees
of freedom (nu_com = the ANCOVA's residual df).

The design columns come from the levels of the whole analysed frame (arms, strata), never
from the levels present among the missing rows only (which crashed with a shape mismatch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimators.ancova import PreparedAncova, fit_ancova, prepare_ancova
from analysis.imputation import rubin_rules
from analysis.results import AnalysisError, EffectEstimate, Serialisable

Strategy = Literal["mar", "j2r", "cr", "cir"]
REFERENCE_BASED = frozenset({"j2r", "cr", "cir"})


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


@dataclass(frozen=True)
class _Levels:
    """The column specification of the imputation model, from the whole frame."""

    arms: tuple[str, ...]  # non-reference arms
    strata: tuple[tuple[str, tuple[str, ...]], ...]  # factor, its non-first levels


def _levels(
    frame: pd.DataFrame, arm: str, reference: str, strata: Sequence[str]
) -> _Levels:
    return _Levels(
        arms=tuple(sorted(str(a) for a in frame[arm].unique() if a != reference)),
        strata=tuple(
            (s, tuple(sorted(frame[s].astype(str).unique())[1:])) for s in strata
        ),
    )


def _design(
    frame: pd.DataFrame,
    arm: str,
    levels: _Levels,
    covariates: Sequence[str],
    as_reference: bool,
) -> np.ndarray:
    columns: list[np.ndarray] = [np.ones(len(frame))]
    for level in levels.arms:
        indicator = (frame[arm].astype(str) == level).to_numpy(dtype=float)
        columns.append(np.zeros(len(frame)) if as_reference else indicator)
    for covariate in covariates:
        columns.append(frame[covariate].to_numpy(dtype=float))
    for stratum, stratum_levels in levels.strata:
        for level in stratum_levels:
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
    if strategy not in ("mar", *REFERENCE_BASED):
        raise AnalysisError(f"unknown imputation strategy {strategy!r}")
    rng = np.random.default_rng(seed)
    levels = _levels(frame, arm, reference_arm, strata)
    x_obs = _design(observed, arm, levels, covariates, as_reference=False)
    y_obs = observed[outcome].to_numpy(dtype=float)
    xtx_inv = np.linalg.pinv(x_obs.T @ x_obs)
    beta_hat = xtx_inv @ x_obs.T @ y_obs
    residual_df = len(y_obs) - np.linalg.matrix_rank(x_obs)
    rss = float(np.sum((y_obs - x_obs @ beta_hat) ** 2))
    mis = frame.loc[missing]
    non_reference = (mis[arm] != reference_arm).to_numpy()
    x_mis = _design(mis, arm, levels, covariates, as_reference=False)
    if strategy in REFERENCE_BASED and len(mis):
        x_ref = _design(mis, arm, levels, covariates, as_reference=True)
        x_mis = np.where(non_reference[:, None], x_ref, x_mis)
    fits: dict[str, list[tuple[float, float]]] = {}
    nu_com = math.inf
    prepared: PreparedAncova | None = None
    for _ in range(n_imputations):
        sigma2 = rss / rng.chisquare(residual_df)
        beta = rng.multivariate_normal(beta_hat, sigma2 * xtx_inv)
        completed = frame.copy()
        draws = x_mis @ beta + rng.normal(0.0, np.sqrt(sigma2), size=len(mis))
        draws = draws + delta * non_reference
        completed.loc[missing, outcome] = draws
        if prepared is None or prepared.n_dropped or np.isnan(draws).any():
            result = fit_ancova(
                completed,
                outcome=outcome,
                arm=arm,
                reference_arm=reference_arm,
                covariates=list(covariates),
                strata=list(strata),
                alpha=alpha,
            )
            if prepared is None and not np.isnan(draws).any():
                # every row complete: the next imputations refit this design with new outcomes
                prepared = prepare_ancova(
                    completed, outcome=outcome, arm=arm, reference_arm=reference_arm,
                    covariates=list(covariates), strata=list(strata), alpha=alpha,
                )
        else:
            result = prepared.fit(completed[outcome].to_numpy(dtype=float))
        for effect in result.effects:
            fits.setdefault(effect.contrast, []).append((effect.estimate, effect.se or 0.0))
            nu_com = float(effect.df) if effect.df else math.inf
    return [
        _pool(contrast, values, alpha, int(missing.sum()), strategy, delta, nu_com)
        for contrast, values in fits.items()
    ]


def _pool(
    contrast: str,
    values: list[tuple[float, float]],
    alpha: float,
    n_imputed: int,
    strategy: str,
    delta: float,
    nu_com: float = math.inf,
) -> PooledEstimate:
    pooled = rubin_rules([v[0] for v in values], [v[1] for v in values], nu_com)
    se = math.sqrt(pooled.total)
    df = pooled.df
    t = (
        float(stats.t.ppf(1 - alpha / 2, df))
        if math.isfinite(df)
        else float(stats.norm.ppf(1 - alpha / 2))
    )
    z = pooled.estimate / se if se > 0 else 0.0
    p = (float(2 * stats.t.sf(abs(z), df)) if math.isfinite(df)
         else float(2 * stats.norm.sf(abs(z)))) if se > 0 else 1.0
    return PooledEstimate(
        contrast,
        pooled.estimate,
        se,
        pooled.estimate - t * se,
        pooled.estimate + t * se,
        p,
        float(df) if math.isfinite(df) else 1e9,
        len(values),
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
