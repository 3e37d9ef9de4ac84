"""Treatment effects within subgroup levels and the arm x subgroup interaction (forest plots)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimators._design import (
    build_cell_design,
    check_full_rank,
    column_names,
    drop_incomplete,
    level_labels,
    order_arms,
    require_columns,
    require_numeric,
    safe_exp,
    sorted_levels,
)
from analysis.estimators.ancova import wald_f_test
from analysis.estimators.binary import fit_logistic_model
from analysis.results import (
    AnalysisError,
    EffectEstimate,
    SubgroupLevel,
    SubgroupResult,
    TestResult,
)

SubgroupMethod = Literal["ancova", "logistic"]


def estimate_subgroup_effects(
    data: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    subgroup: str,
    reference_arm: str | None = None,
    covariates: Sequence[str] = (),
    strata: Sequence[str] = (),
    method: SubgroupMethod = "ancova",
    alpha: float = 0.05,
) -> SubgroupResult:
    """Estimate the effect vs reference within each subgroup level, and the interaction test.

    Parameters
    ----------
    data, outcome, arm, reference_arm
        As for the ANCOVA / logistic estimators (0/1 outcome for ``"logistic"``).
    subgroup
        Categorical column defining the subgroups (at least two levels).
    covariates, strata
        Numeric covariates and categorical factors kept in both models.
    method
        ``"ancova"`` (OLS) or ``"logistic"``.
    alpha
        Two-sided CI level is ``1 - alpha``.

    Returns
    -------
    SubgroupResult
        Per level (a forest-plot row): n per arm and the effect of each arm vs reference
        from ``outcome ~ arm * subgroup + covariates + strata`` (LS-mean difference with a
        t CI on the residual df, or odds ratio with a Wald CI). ``interaction`` compares
        with ``outcome ~ arm + subgroup + covariates + strata``: partial F test (ANCOVA)
        or likelihood-ratio chi-square (logistic).
    """
    if method not in ("ancova", "logistic"):
        raise AnalysisError(f"method must be 'ancova' or 'logistic', got {method!r}")
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha must be in (0, 1), got {alpha}")
    covariates, strata = column_names(covariates), column_names(strata)
    if subgroup in strata or subgroup == arm:
        raise AnalysisError(f"subgroup {subgroup!r} must differ from the arm and the strata")
    require_columns(data, [outcome, arm, subgroup, *covariates, *strata])
    require_numeric(data, [outcome, *covariates])
    frame, n_dropped = drop_incomplete(data, [outcome, arm, subgroup, *covariates, *strata])
    if frame.empty:
        raise AnalysisError("no complete rows to analyse")
    for col in (arm, subgroup, *strata):
        frame[col] = level_labels(frame[col])
    arms = order_arms(frame[arm], reference_arm)
    levels = sorted_levels(frame[subgroup])
    if len(levels) < 2:
        raise AnalysisError(f"subgroup {subgroup!r} has a single level {levels}")
    cells = [(a, lev) for a in arms for lev in levels]
    design = build_cell_design(frame, [arm, subgroup], cells, covariates=covariates,
                               factors=strata)
    check_full_rank(design.matrix, design.names)
    x = design.matrix
    y = frame[outcome].to_numpy(dtype=float)
    warnings = [f"{n_dropped} row(s) with missing values were excluded"] if n_dropped else []
    if method == "ancova":
        beta = np.linalg.lstsq(x, y, rcond=None)[0]
        df_resid = len(y) - x.shape[1]
        if df_resid < 1:
            raise AnalysisError("no residual degrees of freedom")
        resid = y - x @ beta
        cov = float(resid @ resid) / df_resid * np.linalg.inv(x.T @ x)
        crit = float(stats.t.ppf(1 - alpha / 2, df_resid))
    else:
        if not set(np.unique(y).tolist()) <= {0.0, 1.0}:
            raise AnalysisError(f"outcome {outcome!r} must be 0/1 for logistic subgroups")
        fit = fit_logistic_model(x, y)
        beta, cov = fit.beta, fit.cov
        crit = float(stats.norm.ppf(1 - alpha / 2))
        if fit.separated:
            warnings.append("possible separation within a subgroup level: odds ratios unreliable")
    rows = {cell: design.lsmean_row(cell) for cell in cells}
    out_levels = []
    for lev in levels:
        effects = []
        for a in arms[1:]:
            contrast = rows[(a, lev)] - rows[(arms[0], lev)]
            est = float(contrast @ beta)
            se = float(np.sqrt(contrast @ cov @ contrast))
            if method == "ancova":
                effects.append(EffectEstimate(
                    f"{a} - {arms[0]}", est, se, est - crit * se, est + crit * se,
                    float(2 * stats.t.sf(abs(est / se), df_resid)), df=float(df_resid),
                    ci_method="t",
                ))
            else:
                effects.append(EffectEstimate(
                    f"{a} / {arms[0]}", safe_exp(est), se, safe_exp(est - crit * se),
                    safe_exp(est + crit * se), float(2 * stats.norm.sf(abs(est / se))),
                    scale="odds_ratio",
                ))
        in_level = frame[subgroup] == lev
        counts = {a: int(((frame[arm] == a) & in_level).sum()) for a in arms}
        out_levels.append(SubgroupLevel(lev, counts, tuple(effects)))
    ref_arm, first = arms[0], levels[0]
    inter_rows = np.array([
        (rows[(a, lev)] - rows[(ref_arm, lev)]) - (rows[(a, first)] - rows[(ref_arm, first)])
        for a in arms[1:]
        for lev in levels[1:]
    ])
    if method == "ancova":
        f_value, f_p, f_df = wald_f_test(inter_rows, beta, cov, df_resid)
        interaction = TestResult("interaction (F test)", f_value, f_p, float(f_df))
        name = "ANCOVA (OLS)"
    else:
        reduced = build_cell_design(frame, [arm], [(a,) for a in arms], covariates=covariates,
                                    factors=[subgroup, *strata])
        reduced_fit = fit_logistic_model(reduced.matrix, y)
        lrt = reduced_fit.deviance - fit.deviance
        n_df = x.shape[1] - reduced.matrix.shape[1]
        interaction = TestResult("interaction (likelihood ratio)", lrt,
                                 float(stats.chi2.sf(lrt, n_df)), float(n_df))
        name = "logistic regression"
    terms = [f"{arm} * {subgroup}", *covariates, *strata]
    return SubgroupResult(
        subgroup=subgroup,
        method=method,
        model=(
            f"{name}: {outcome} ~ {' + '.join(terms)}; effect of {arm} within each level of "
            f"{subgroup}; interaction test against {outcome} ~ {arm} + {subgroup}"
            + "".join(f" + {c}" for c in (*covariates, *strata))
        ),
        levels=tuple(out_levels),
        interaction=interaction,
        warnings=tuple(warnings),
    )
