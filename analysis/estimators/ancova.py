"""Analysis of covariance: outcome ~ arm + covariates + strata by ordinary least squares."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimators._design import (
    CellDesign,
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
from analysis.results import (
    AnalysisError,
    ArmSummary,
    EffectEstimate,
    EndpointResult,
    LSMean,
    TestResult,
    sample_mean,
    sample_sd,
)


def wald_f_test(
    contrasts: FloatArray, beta: FloatArray, cov: FloatArray, df_resid: float
) -> tuple[float, float, int]:
    """Return (F, p, numerator df) of H0: C beta = 0 with t-based covariance ``cov``."""
    est = contrasts @ beta
    middle = contrasts @ cov @ contrasts.T
    rank = int(np.linalg.matrix_rank(middle))
    f_value = float(est @ np.linalg.pinv(middle) @ est) / rank
    return f_value, float(stats.f.sf(f_value, rank, df_resid)), rank


def fit_ancova(
    data: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    reference_arm: str | None = None,
    covariates: Sequence[str] = (),
    strata: Sequence[str] = (),
    alpha: float = 0.05,
) -> EndpointResult:
    """Fit ``outcome ~ arm + covariates + strata`` by OLS; LS means and differences vs reference.

    Parameters
    ----------
    data
        One row per subject; rows missing the outcome, arm, a covariate or a stratum
        are excluded (and counted in ``warnings``).
    outcome, arm
        Column names; ``arm`` is categorical.
    reference_arm
        Arm the others are compared with (default: first in sorted order).
    covariates
        Numeric covariates (e.g. the baseline value), one slope each.
    strata
        Categorical factors (stratification factors), main effects.
    alpha
        Two-sided CI level is ``1 - alpha``.

    Returns
    -------
    EndpointResult
        LS means per arm (covariates at their mean, factor levels weighted equally, as
        emmeans does), differences vs the reference with t CIs and p-values on the
        residual df, and the F test of no arm effect.
    """
    prepared = prepare_ancova(
        data, outcome=outcome, arm=arm, reference_arm=reference_arm, covariates=covariates,
        strata=strata, alpha=alpha,
    )
    return _fit_prepared(prepared, prepared.frame[outcome].to_numpy(dtype=float), prepared.frame)


@dataclass(frozen=True)
class PreparedAncova:
    """Everything `fit_ancova` computes before it reads the outcome values of the kept rows:
    multiple imputation refits the same rows with new outcomes (`fit`) without rebuilding it.
    Rows missing a model value were dropped (``n_dropped``), as `fit_ancova` does."""

    frame: pd.DataFrame
    n_dropped: int
    outcome: str
    arm: str
    covariates: list[str]
    strata: list[str]
    arms: list[str]
    design: CellDesign
    xtx_inv: FloatArray
    tcrit: float

    def fit(self, y: FloatArray) -> EndpointResult:
        """Return `fit_ancova`'s result with ``y`` as the outcome of the kept rows."""
        frame = self.frame
        if not np.array_equal(y, frame[self.outcome].to_numpy(dtype=float)):
            frame = frame.copy()  # the arm summaries read the outcome from the frame
            frame[self.outcome] = y
        return _fit_prepared(self, y, frame)


def prepare_ancova(
    data: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    reference_arm: str | None = None,
    covariates: Sequence[str] = (),
    strata: Sequence[str] = (),
    alpha: float = 0.05,
) -> PreparedAncova:
    """Check ``data`` and build the design of `fit_ancova` (same arguments)."""
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha must be in (0, 1), got {alpha}")
    covariates, strata = column_names(covariates), column_names(strata)
    require_columns(data, [outcome, arm, *covariates, *strata])
    require_numeric(data, [outcome, *covariates])
    frame, n_dropped = drop_incomplete(data, [outcome, arm, *covariates, *strata])
    if frame.empty:
        raise AnalysisError("no complete rows to analyse")
    frame[arm] = level_labels(frame[arm])
    for fac in strata:
        frame[fac] = level_labels(frame[fac])
    arms = order_arms(frame[arm], reference_arm)
    design = build_cell_design(
        frame, [arm], [(a,) for a in arms], covariates=covariates, factors=strata
    )
    check_full_rank(design.matrix, design.names)
    x = design.matrix
    n, p = x.shape
    df_resid = n - p
    if df_resid < 1:
        raise AnalysisError(f"no residual degrees of freedom ({n} rows, {p} parameters)")
    xtx_inv = np.linalg.inv(x.T @ x)
    tcrit = float(stats.t.ppf(1 - alpha / 2, df_resid))
    return PreparedAncova(frame, n_dropped, outcome, arm, list(covariates), list(strata),
                          list(arms), design, xtx_inv, tcrit)


def _fit_prepared(prepared: PreparedAncova, y: FloatArray, frame: pd.DataFrame) -> EndpointResult:
    design, xtx_inv, tcrit = prepared.design, prepared.xtx_inv, prepared.tcrit
    outcome, arm, arms, n_dropped = (
        prepared.outcome, prepared.arm, prepared.arms, prepared.n_dropped)
    covariates, strata = prepared.covariates, prepared.strata
    x = design.matrix
    n, p = x.shape
    df_resid = n - p
    beta = xtx_inv @ x.T @ y
    resid = y - x @ beta
    sigma2 = float(resid @ resid) / df_resid
    cov = sigma2 * xtx_inv
    rows = {a: design.lsmean_row((a,)) for a in arms}
    ls_means = []
    for a in arms:
        est = float(rows[a] @ beta)
        se = float(np.sqrt(rows[a] @ cov @ rows[a]))
        ls_means.append(LSMean(a, est, se, est - tcrit * se, est + tcrit * se, float(df_resid)))
    effects = []
    for a in arms[1:]:
        contrast = rows[a] - rows[arms[0]]
        est = float(contrast @ beta)
        se = float(np.sqrt(contrast @ cov @ contrast))
        effects.append(
            EffectEstimate(
                contrast=f"{a} - {arms[0]}",
                estimate=est,
                se=se,
                ci_low=est - tcrit * se,
                ci_high=est + tcrit * se,
                p_value=float(2 * stats.t.sf(abs(est / se), df_resid)),
                df=float(df_resid),
                ci_method="t",
            )
        )
    contrast_matrix = np.array([rows[a] - rows[arms[0]] for a in arms[1:]])
    f_value, f_p, f_df = wald_f_test(contrast_matrix, beta, cov, df_resid)
    warnings = []
    if n_dropped:
        warnings.append(f"{n_dropped} row(s) with missing values were excluded")
    summaries = []
    for a in arms:
        vals = frame.loc[frame[arm] == a, outcome]
        summaries.append(
            ArmSummary(
                arm=a,
                n=len(vals),
                mean=sample_mean(vals),
                sd=sample_sd(vals),
            )
        )
    terms = [arm, *covariates, *strata]
    model = (
        f"ANCOVA (OLS): {outcome} ~ {' + '.join(terms)}; LS means by emmeans-style "
        "equal weighting over factor levels with numeric covariates at their mean; "
        f"t-based CIs and p-values on {df_resid} residual df"
    )
    return EndpointResult(
        method="ancova",
        model=model,
        n_by_arm={s.arm: s.n for s in summaries},
        effects=tuple(effects),
        ls_means=tuple(ls_means),
        arms=tuple(summaries),
        tests=(TestResult(f"{arm} (F test)", f_value, f_p, float(f_df)),),
        warnings=tuple(warnings),
        parameters={"residual_sd": float(np.sqrt(sigma2)), "df_residual": float(df_resid)},
    )
