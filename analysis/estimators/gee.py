"""Clustered continuous outcomes (e.g. both eyes of a child): GEE and a random-intercept LMM.

``fit_gee`` is a Gaussian-identity GEE with exchangeable working correlation and the
robust (sandwich) covariance, using geepack's moment estimators
(``phi = sum r^2 / N``, ``alpha = sum_{pairs} r_j r_k / (n_pairs phi)``).
``fit_random_intercept`` is the linear mixed model ``y = X beta + b_cluster + e`` fitted
by REML (its marginal covariance is compound symmetry with non-negative correlation),
with nlme's "containment" denominator df.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimators._design import (
    FloatArray,
    build_cell_design,
    check_full_rank,
    column_names,
    drop_incomplete,
    level_labels,
    order_arms,
    require_columns,
    require_numeric,
)
from analysis.estimators.mmrm import _group_patterns, _maximise, _RemlProblem
from analysis.results import AnalysisError, EffectEstimate, EndpointResult


def _prepare(
    data: pd.DataFrame,
    outcome: str,
    arm: str,
    cluster: str,
    reference_arm: str | None,
    covariates: Sequence[str],
    factors: Sequence[str],
) -> tuple[pd.DataFrame, tuple[str, ...], FloatArray, FloatArray, FloatArray, list[str], int]:
    """Clean data; return frame, arms, treatment-coded X with intercept, y, cluster codes."""
    require_columns(data, [outcome, arm, cluster, *covariates, *factors])
    require_numeric(data, [outcome, *covariates])
    frame, n_dropped = drop_incomplete(data, [outcome, arm, cluster, *covariates, *factors])
    if frame.empty:
        raise AnalysisError("no complete rows to analyse")
    frame[arm] = level_labels(frame[arm])
    for fac in factors:
        frame[fac] = level_labels(frame[fac])
    frame = frame.sort_values(cluster, kind="stable").reset_index(drop=True)
    arms = order_arms(frame[arm], reference_arm)
    design = build_cell_design(
        frame, [arm], [(a,) for a in arms], covariates=covariates, factors=factors
    )
    # intercept + treatment coding: the reference-arm cell becomes the intercept
    x = design.matrix.copy()
    x[:, 0] = 1.0
    names = ["(Intercept)", *design.names[1:]]
    check_full_rank(x, names)
    y = frame[outcome].to_numpy(dtype=float)
    codes = np.asarray(pd.factorize(frame[cluster])[0], dtype=float)
    return frame, arms, x, y, codes, names, n_dropped


def fit_gee(
    data: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    cluster: str,
    reference_arm: str | None = None,
    covariates: Sequence[str] = (),
    factors: Sequence[str] = (),
    alpha: float = 0.05,
    max_iterations: int = 100,
) -> EndpointResult:
    """Fit a Gaussian GEE with exchangeable working correlation within ``cluster``.

    Parameters
    ----------
    data
        One row per eye (or other unit), several per cluster.
    outcome, arm, cluster
        Continuous outcome, arm (constant within cluster) and cluster (subject) columns.
    reference_arm, covariates, factors, alpha
        Reference arm, numeric and categorical covariates, CI level ``1 - alpha``.
    max_iterations
        Limit of the alternating beta / (scale, correlation) updates.

    Returns
    -------
    EndpointResult
        Differences vs the reference arm with the robust sandwich SE, normal CIs and
        Wald chi-square p-values (R: ``geepack::geeglm(..., corstr = "exchangeable")``),
        then the same with the model-based (naive) SE (``ci_method="wald_naive"``, geepack's
        ``vcov(fit, type = "naive")`` convention: scale = sum r^2 / N);
        ``working_correlation`` and ``scale`` in ``parameters``; ``n_by_arm`` counts
        clusters.
    """
    covariates, factors = column_names(covariates), column_names(factors)
    frame, arms, x, y, codes, _, n_dropped = _prepare(
        data, outcome, arm, cluster, reference_arm, covariates, factors
    )
    n, p = x.shape
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    bounds = list(zip(starts, np.r_[starts[1:], n], strict=True))
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    corr = 0.0
    scale = 1.0
    converged = False
    for _ in range(max_iterations):
        resid = y - x @ beta
        scale = float(resid @ resid) / n
        pair_sum, n_pairs = 0.0, 0
        for s, e in bounds:
            r = resid[s:e]
            m = e - s
            pair_sum += float((r.sum() ** 2 - r @ r) / 2)
            n_pairs += m * (m - 1) // 2
        if scale <= 0:
            raise AnalysisError("residual variance is zero: the GEE is degenerate")
        corr = pair_sum / (n_pairs * scale) if n_pairs else 0.0
        max_size = max(e - s for s, e in bounds)
        if max_size > 1 and not -1.0 / (max_size - 1) < corr < 1.0:
            raise AnalysisError(
                f"exchangeable working correlation {corr:.3f} is outside the valid range"
            )
        bread = np.zeros((p, p))
        rhs = np.zeros(p)
        for s, e in bounds:
            m = e - s
            w = np.linalg.inv(scale * ((1 - corr) * np.eye(m) + corr * np.ones((m, m))))
            bread += x[s:e].T @ w @ x[s:e]
            rhs += x[s:e].T @ w @ y[s:e]
        new_beta = np.linalg.solve(bread, rhs)
        change = float(np.max(np.abs(new_beta - beta)))
        beta = new_beta
        if change < 1e-12 * max(1.0, float(np.max(np.abs(beta)))):
            converged = True
            break
    resid = y - x @ beta
    bread = np.zeros((p, p))
    meat = np.zeros((p, p))
    for s, e in bounds:
        m = e - s
        w = np.linalg.inv(scale * ((1 - corr) * np.eye(m) + corr * np.ones((m, m))))
        xw = x[s:e].T @ w
        bread += xw @ x[s:e]
        u = xw @ resid[s:e]
        meat += np.outer(u, u)
    bread_inv = np.linalg.inv(bread)
    robust = bread_inv @ meat @ bread_inv
    z = float(stats.norm.ppf(1 - alpha / 2))
    effects = []
    for i, a in enumerate(arms[1:], start=1):
        est, se = float(beta[i]), float(np.sqrt(robust[i, i]))
        effects.append(
            EffectEstimate(
                contrast=f"{a} - {arms[0]}", estimate=est, se=se, ci_low=est - z * se,
                ci_high=est + z * se, p_value=float(stats.chi2.sf((est / se) ** 2, 1)),
                ci_method="wald_robust",
            )
        )
    for i, a in enumerate(arms[1:], start=1):  # model-based (naive) SE, geepack's scale
        est, se = float(beta[i]), float(np.sqrt(bread_inv[i, i]))
        effects.append(
            EffectEstimate(
                contrast=f"{a} - {arms[0]}", estimate=est, se=se, ci_low=est - z * se,
                ci_high=est + z * se, p_value=float(stats.chi2.sf((est / se) ** 2, 1)),
                ci_method="wald_naive",
            )
        )
    warnings = [f"{n_dropped} row(s) with missing values were excluded"] if n_dropped else []
    if not converged:
        warnings.append(f"GEE did not converge in {max_iterations} iterations")
    if len(bounds) < 40:
        warnings.append(
            f"only {len(bounds)} clusters: the sandwich SE is biased downwards in small samples"
        )
    terms = [arm, *covariates, *factors]
    return EndpointResult(
        method="gee",
        model=(
            f"GEE (Gaussian, identity link): {outcome} ~ {' + '.join(terms)}; exchangeable "
            f"working correlation within {cluster}; robust sandwich SEs (model-based naive SEs "
            "beside them, ci_method wald_naive); Wald tests; "
            "geepack moment estimators for scale and correlation"
        ),
        n_by_arm={a: int(frame.loc[frame[arm] == a, cluster].nunique()) for a in arms},
        effects=tuple(effects),
        warnings=tuple(warnings),
        parameters={
            "working_correlation": corr,
            "scale": scale,
            "n_clusters": float(len(bounds)),
            "n_observations": float(n),
        },
    )


def _containment_df(x: FloatArray, codes: FloatArray) -> FloatArray:
    """Return nlme's denominator df per column for a random intercept by cluster."""
    n = len(codes)
    n_groups = len(np.unique(codes))
    outer = np.zeros(x.shape[1], dtype=bool)
    for j in range(1, x.shape[1]):
        col = pd.Series(x[:, j]).groupby(codes).nunique()
        outer[j] = bool((col <= 1).all())
    n_outer = int(outer.sum()) + 1  # the intercept counts at the cluster level
    n_inner = int((~outer).sum()) - 1
    df = np.full(x.shape[1], float(n - n_groups - n_inner))
    df[outer] = float(n_groups - n_outer)
    return df


def fit_random_intercept(
    data: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    cluster: str,
    reference_arm: str | None = None,
    covariates: Sequence[str] = (),
    factors: Sequence[str] = (),
    alpha: float = 0.05,
) -> EndpointResult:
    """Fit ``outcome ~ arm + covariates`` with a random intercept per cluster by REML.

    Parameters
    ----------
    data, outcome, arm, cluster, reference_arm, covariates, factors, alpha
        As for :func:`fit_gee`.

    Returns
    -------
    EndpointResult
        Differences vs reference with model-based SEs and t tests on nlme's containment
        df (between-cluster terms: clusters minus cluster-level parameters;
        within-cluster terms: rows minus clusters minus within parameters) (R:
        ``nlme::lme(..., random = ~ 1 | cluster, method = "REML")``); ``sd_cluster``
        and ``sd_residual`` in ``parameters``.
    """
    covariates, factors = column_names(covariates), column_names(factors)
    frame, arms, x, y, codes, _, n_dropped = _prepare(
        data, outcome, arm, cluster, reference_arm, covariates, factors
    )
    position = np.asarray(pd.Series(codes).groupby(codes).cumcount(), dtype=float)
    k = int(position.max()) + 1
    if k < 2:
        raise AnalysisError("every cluster has one row: no within-cluster correlation to model")
    patterns = _group_patterns(codes, position, x, y)
    problem = _RemlProblem(patterns, "CS", k, len(y), x.shape[1])
    resid = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
    total = float(resid @ resid) / (len(y) - x.shape[1])
    a = 1.0 / (k - 1)
    theta0 = np.array([0.5 * np.log(total), np.log((0.3 + a) / (1 - 0.3))])
    _, evaluation, _, converged = _maximise(problem, theta0, 500)
    warnings = [f"{n_dropped} row(s) with missing values were excluded"] if n_dropped else []
    sigma = evaluation.sigma
    between = float(sigma[0, 1])
    if between < 0:
        warnings.append(
            "within-cluster correlation estimated negative: the fit is the compound-symmetry "
            "marginal model, which a random intercept (variance >= 0) cannot represent"
        )
    if not converged:
        warnings.append("REML did not converge")
    beta = evaluation.beta
    cov = evaluation.a_inv
    df = _containment_df(x, codes)
    effects = []
    for i, arm_level in enumerate(arms[1:], start=1):
        est, se = float(beta[i]), float(np.sqrt(cov[i, i]))
        tcrit = float(stats.t.ppf(1 - alpha / 2, df[i]))
        effects.append(
            EffectEstimate(
                contrast=f"{arm_level} - {arms[0]}", estimate=est, se=se,
                ci_low=est - tcrit * se, ci_high=est + tcrit * se,
                p_value=float(2 * stats.t.sf(abs(est / se), df[i])), df=float(df[i]),
                ci_method="t_containment",
            )
        )
    terms = [arm, *covariates, *factors]
    return EndpointResult(
        method="random_intercept_lmm",
        model=(
            f"linear mixed model: {outcome} ~ {' + '.join(terms)} + (1 | {cluster}); REML; "
            "t tests with nlme containment df"
        ),
        n_by_arm={a: int(frame.loc[frame[arm] == a, cluster].nunique()) for a in arms},
        effects=tuple(effects),
        warnings=tuple(warnings),
        parameters={
            "sd_cluster": float(np.sqrt(max(between, 0.0))),
            "sd_residual": float(np.sqrt(sigma[0, 0] - between)),
            "minus2_reml_loglik": evaluation.objective,
        },
    )
