"""Mixed model for repeated measures (MMRM) fitted by REML, with Satterthwaite df.

The model is the marginal linear model ``y_i ~ N(X_i beta, Sigma[O_i, O_i])`` where
``O_i`` are the visits subject ``i`` has observed, so subjects with monotone or
intermittent missing visits contribute what they have (missing at random). Sigma is
unstructured or structured (see ``_covariance``).

Numerics
--------
Subjects are grouped by missingness pattern. For each pattern the REML pieces are
accumulated from per-pattern sufficient statistics (cross-products of X and y by
visit pair) when that is cheaper than the raw rows, so one likelihood evaluation
costs O(patterns x visits^2 x p^2) instead of O(subjects). The REML criterion
``-2 l_R = sum_P m_P log|S_P| + log|X'V^-1 X| + r'V^-1 r + (N-p) log 2 pi``
has the analytic gradient ``tr(G dSigma/dtheta)`` with, per pattern,
``G_P = m_P W_P - W_P (R_P + T_P) W_P`` (W_P = S_P^-1, R_P the residual
cross-products, T_P[j,k] = sum_i x_ij' (X'V^-1X)^-1 x_ik), which L-BFGS-B uses and a
few Newton steps (finite-difference Hessian of the analytic gradient) polish.

Satterthwaite df for a contrast L: ``2 v^2 / (g' C g)`` where ``v = L'(X'V^-1X)^-1 L``,
``g = dv/dtheta`` (analytic) and ``C = 2 H^-1`` with H the Hessian of -2 l_R in
theta at the REML estimate (observed information; the df is invariant to how theta is
parameterised). Kenward-Roger is not implemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize, stats

from analysis.estimators._covariance import (
    DESCRIPTIONS,
    STRUCTURES,
    CovarianceStructure,
    covariance_and_derivatives,
    n_parameters,
    starting_values,
)
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
    sorted_levels,
)
from analysis.estimators._kenward_roger import LINEAR_STRUCTURES, KenwardRoger
from analysis.results import (
    AnalysisError,
    ArmSummary,
    EffectEstimate,
    EndpointResult,
    LSMean,
    sample_mean,
    sample_sd,
)

_LOG_2PI = float(np.log(2 * np.pi))
DdfMethod = Literal["satterthwaite", "kenward_roger", "residual", "between_within", "asymptotic"]
DDF_METHODS: tuple[str, ...] = DdfMethod.__args__  # type: ignore[attr-defined]


def between_within_df(
    n_obs: int, n_subjects: int, p_between: int, p_within: int, intercept: bool = True
) -> tuple[int, int]:
    """Return (between, within) denominator df by the mmrm package's rule: a column is
    *between* when constant within every subject, *within* otherwise;
    ``df_between = N_subj - p_between - 1{intercept}``, ``df_within = N_obs - N_subj -
    p_within`` (estimands reference §7.2, worked example D-1)."""
    return n_subjects - p_between - int(intercept), n_obs - n_subjects - p_within


@dataclass
class _Pattern:
    """One missingness pattern: which visits, how many subjects, and their data."""

    visits: npt.NDArray[np.intp]
    n_subjects: int
    x: FloatArray | None  # (m, n, p) raw rows, or None when statistics are used
    y: FloatArray | None  # (m, n)
    xx: FloatArray | None  # (n, n, p, p) sum_i x_ij x_ik'
    xy: FloatArray | None  # (n, n, p) sum_i x_ij y_ik
    yy: FloatArray | None  # (n, n) sum_i y_ij y_ik

    def pieces(self, w: FloatArray) -> tuple[FloatArray, FloatArray, float]:
        """Return this pattern's X'WX, X'Wy and y'Wy for the inverse covariance ``w``."""
        if self.xx is not None and self.xy is not None and self.yy is not None:
            return (
                np.einsum("jk,jkpq->pq", w, self.xx),
                np.einsum("jk,jkp->p", w, self.xy),
                float(np.sum(w * self.yy)),
            )
        assert self.x is not None and self.y is not None
        wx = np.einsum("jk,akq->ajq", w, self.x)
        m, n, p = self.x.shape
        xtwx = self.x.reshape(m * n, p).T @ wx.reshape(m * n, p)
        xtwy = wx.reshape(m * n, p).T @ self.y.reshape(m * n)
        wy = self.y @ w
        return xtwx, xtwy, float(np.sum(wy * self.y))

    def residual_and_leverage(
        self, beta: FloatArray, a_inv: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Return R_P (residual cross-products) and T_P (sum_i X_i A^-1 X_i')."""
        if self.xx is not None and self.xy is not None and self.yy is not None:
            xy_b = np.einsum("jkp,p->jk", self.xy, beta)
            resid = self.yy - xy_b - xy_b.T + np.einsum("jkpq,p,q->jk", self.xx, beta, beta)
            lev = np.einsum("jkpq,qp->jk", self.xx, a_inv)
            return resid, lev
        assert self.x is not None and self.y is not None
        r = self.y - self.x @ beta
        xa = self.x @ a_inv
        return r.T @ r, np.einsum("ajq,akq->jk", xa, self.x)

    def contract(self, m: FloatArray) -> FloatArray:
        """Return sum_i X_i' M X_i for a (not necessarily symmetric) visit matrix M."""
        if self.xx is not None:
            out: FloatArray = np.einsum("jk,jkpq->pq", m, self.xx)
            return out
        assert self.x is not None
        mx = np.einsum("jk,akq->ajq", m, self.x)
        count, n, p = self.x.shape
        result: FloatArray = self.x.reshape(count * n, p).T @ mx.reshape(count * n, p)
        return result

    def contrast_quadratic(self, u: FloatArray) -> FloatArray:
        """Return U_P[j,k] = sum_i (x_ij' u)(x_ik' u)."""
        if self.xx is not None:
            quad: FloatArray = np.einsum("jkpq,p,q->jk", self.xx, u, u)
            return quad
        assert self.x is not None
        z = self.x @ u
        return z.T @ z



@dataclass
class _Evaluation:
    """The REML criterion and everything derived from it at one theta."""

    objective: float
    gradient: FloatArray
    beta: FloatArray
    a_inv: FloatArray
    sigma: FloatArray
    inverses: list[FloatArray]


class _RemlProblem:
    """REML criterion of the MMRM on grouped data, with analytic gradient."""

    def __init__(
        self,
        patterns: list[_Pattern],
        structure: CovarianceStructure,
        n_visits: int,
        n_obs: int,
        n_coef: int,
    ) -> None:
        self.patterns = patterns
        self.structure = structure
        self.k = n_visits
        self.n_obs = n_obs
        self.p = n_coef

    def evaluate(self, theta: FloatArray, need_gradient: bool = True) -> _Evaluation | None:
        """Return the criterion (and gradient) at ``theta``; None if not positive definite."""
        with np.errstate(over="ignore", invalid="ignore"):
            sigma, dsigma = covariance_and_derivatives(self.structure, theta, self.k)
        if not (np.all(np.isfinite(sigma)) and np.all(np.isfinite(dsigma))):
            return None
        a = np.zeros((self.p, self.p))
        b = np.zeros(self.p)
        c = 0.0
        logdet = 0.0
        inverses: list[FloatArray] = []
        for pat in self.patterns:
            sub = sigma[np.ix_(pat.visits, pat.visits)]
            try:
                chol = np.linalg.cholesky(sub)
            except np.linalg.LinAlgError:
                return None
            inv_chol = np.linalg.inv(chol)
            w = inv_chol.T @ inv_chol
            inverses.append(w)
            logdet += pat.n_subjects * 2.0 * float(np.sum(np.log(np.diag(chol))))
            da, db, dc = pat.pieces(w)
            a += da
            b += db
            c += dc
        try:
            a_chol = np.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            return None
        beta: FloatArray = np.linalg.solve(a, b)
        a_inv: FloatArray = np.linalg.inv(a)
        a_inv = (a_inv + a_inv.T) / 2
        quad = c - float(b @ beta)
        objective = (
            logdet
            + 2.0 * float(np.sum(np.log(np.diag(a_chol))))
            + quad
            + (self.n_obs - self.p) * _LOG_2PI
        )
        grad_matrix: FloatArray = np.zeros((self.k, self.k))
        if need_gradient:
            for pat, w_p in zip(self.patterns, inverses, strict=True):
                resid, lev = pat.residual_and_leverage(beta, a_inv)
                g = pat.n_subjects * w_p - w_p @ (resid + lev) @ w_p
                grad_matrix[np.ix_(pat.visits, pat.visits)] += g
        gradient = np.tensordot(dsigma, grad_matrix, axes=([1, 2], [0, 1]))
        return _Evaluation(objective, gradient, beta, a_inv, sigma, inverses)

    def contrast_variance_gradient(
        self, theta: FloatArray, evaluation: _Evaluation, contrast: FloatArray
    ) -> tuple[float, FloatArray]:
        """Return v = L'A^-1 L and dv/dtheta for one contrast row L."""
        _, dsigma = covariance_and_derivatives(self.structure, theta, self.k)
        u = evaluation.a_inv @ contrast
        variance = float(contrast @ u)
        m = np.zeros((self.k, self.k))
        for pat, w in zip(self.patterns, evaluation.inverses, strict=True):
            m[np.ix_(pat.visits, pat.visits)] += w @ pat.contrast_quadratic(u) @ w
        return variance, np.tensordot(dsigma, m, axes=([1, 2], [0, 1]))


def _hessian(problem: _RemlProblem, theta: FloatArray) -> FloatArray:
    """Return the Hessian of -2 l_R by central differences of the analytic gradient."""
    q = len(theta)
    hess = np.empty((q, q))
    for i in range(q):
        step = 1e-4 * max(1.0, abs(theta[i]))
        plus, minus = theta.copy(), theta.copy()
        plus[i] += step
        minus[i] -= step
        ep = problem.evaluate(plus)
        em = problem.evaluate(minus)
        if ep is None or em is None:
            raise AnalysisError("covariance not positive definite near the REML estimate")
        hess[:, i] = (ep.gradient - em.gradient) / (2 * step)
    return (hess + hess.T) / 2


def _group_patterns(
    subject_codes: FloatArray, visit_index: FloatArray, x: FloatArray, y: FloatArray
) -> list[_Pattern]:
    """Group rows (sorted by subject then visit) into missingness patterns."""
    order = np.lexsort((visit_index, subject_codes))
    subj, vis, xs, ys = subject_codes[order], visit_index[order], x[order], y[order]
    starts = np.flatnonzero(np.r_[True, subj[1:] != subj[:-1]])
    ends = np.r_[starts[1:], len(subj)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for s, e in zip(starts, ends, strict=True):
        groups.setdefault(tuple(int(v) for v in vis[s:e]), []).append(int(s))
    p = x.shape[1]
    patterns: list[_Pattern] = []
    for key, subject_starts in groups.items():
        n = len(key)
        rows = np.asarray(subject_starts)[:, None] + np.arange(n)[None, :]
        xp = xs[rows]  # (m, n, p)
        yp = ys[rows]  # (m, n)
        m = len(subject_starts)
        if m > n * p:
            patterns.append(
                _Pattern(
                    visits=np.asarray(key),
                    n_subjects=m,
                    x=None,
                    y=None,
                    xx=np.einsum("ajp,akq->jkpq", xp, xp),
                    xy=np.einsum("ajp,ak->jkp", xp, yp),
                    yy=yp.T @ yp,
                )
            )
        else:
            patterns.append(_Pattern(np.asarray(key), m, xp, yp, None, None, None))
    return patterns


def _starting_covariance(
    visit_index: FloatArray, subject_codes: FloatArray, resid: FloatArray, k: int
) -> FloatArray:
    """Return a positive-definite start: pairwise covariances of OLS residuals by visit."""
    wide = np.full((int(subject_codes.max()) + 1, k), np.nan)
    wide[subject_codes.astype(int), visit_index.astype(int)] = resid
    frame = pd.DataFrame(wide)
    cov = frame.cov(min_periods=2).to_numpy()
    var = np.nanmean(resid**2)
    diag = np.where(np.isfinite(np.diag(cov)) & (np.diag(cov) > 0), np.diag(cov), var)
    cov = np.where(np.isfinite(cov), cov, 0.0)
    cov[np.diag_indices(k)] = diag
    vals, vecs = np.linalg.eigh(cov)
    floor = 1e-3 * float(np.max(vals)) if np.max(vals) > 0 else 1.0
    cov = (vecs * np.maximum(vals, floor)) @ vecs.T
    result: FloatArray = (cov + cov.T) / 2
    return result


def _natural_order(levels: Sequence[str]) -> tuple[str, ...]:
    """Sort visit labels numerically when they are all numbers, else as text."""
    try:
        return tuple(sorted(levels, key=float))
    except ValueError:
        return tuple(sorted(levels))


def fit_mmrm(
    data: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    visit: str,
    subject: str,
    reference_arm: str | None = None,
    baseline: str | None = None,
    covariates: Sequence[str] = (),
    strata: Sequence[str] = (),
    covariance: CovarianceStructure = "UN",
    visit_order: Sequence[str] | None = None,
    alpha: float = 0.05,
    max_iterations: int = 1000,
    ddf: DdfMethod = "satterthwaite",
) -> EndpointResult:
    """Fit an MMRM by REML and return LS means and differences vs reference per visit.

    Parameters
    ----------
    data
        Long data, one row per subject and visit; rows with a missing outcome are
        ignored (their subject still contributes its observed visits).
    outcome, arm, visit, subject
        Column names; ``arm`` and ``visit`` are treated as categorical.
    reference_arm
        Arm the others are compared with (default: first in sorted order).
    baseline
        Numeric covariate entered as ``baseline x visit``.
    covariates, strata
        Numeric covariates (one slope) and categorical factors (main effects).
    covariance
        One of ``UN, CS, CSH, AR1, ARH1, TOEP, TOEPH``.
    visit_order
        Visit levels in time order (default: numeric or text sort). AR(1) and Toeplitz
        use positions in this order as distances.
    alpha
        Two-sided CI level is ``1 - alpha``.
    ddf
        ``"satterthwaite"`` (any structure), ``"kenward_roger"`` (adjusted SEs and
        KR df; linear structures UN, CS and TOEP only, as SAS ``DDFM=KR``), ``"residual"``
        (N_obs - rank(X), mmrm's "Residual"), ``"between_within"`` (mmrm's rule; arm
        contrasts and LS means take min(between, within)) or ``"asymptotic"`` (normal).

    Returns
    -------
    EndpointResult
        ``ls_means`` and ``effects`` per visit (Satterthwaite or KR df), ``covariance`` the
        estimated Sigma over visits, ``warnings`` for non-convergence.
    """
    if covariance not in STRUCTURES:
        raise AnalysisError(f"unknown covariance structure {covariance!r}; use one of {STRUCTURES}")
    if ddf not in DDF_METHODS:
        raise AnalysisError(f"ddf must be one of {', '.join(DDF_METHODS)}, got {ddf!r}")
    if ddf == "kenward_roger" and covariance not in LINEAR_STRUCTURES:
        raise AnalysisError(
            f"Kenward-Roger is implemented for the linear structures {LINEAR_STRUCTURES}; "
            f"use ddf='satterthwaite' with {covariance}"
        )
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha must be in (0, 1), got {alpha}")
    covariates, strata = column_names(covariates), column_names(strata)
    numeric = [c for c in (outcome, baseline, *covariates) if c is not None]
    require_columns(data, [outcome, arm, visit, subject, *numeric, *strata])
    require_numeric(data, numeric)
    n_missing_outcome = int(data[outcome].isna().sum())
    frame, n_dropped = drop_incomplete(data, [outcome, arm, visit, subject, *numeric, *strata])
    n_dropped -= n_missing_outcome
    if frame.empty:
        raise AnalysisError("no complete rows to analyse")
    frame[arm] = level_labels(frame[arm])
    frame[visit] = level_labels(frame[visit])
    for fac in strata:
        frame[fac] = level_labels(frame[fac])
    if frame.duplicated([subject, visit]).any():
        dup = frame.loc[frame.duplicated([subject, visit]), [subject, visit]].iloc[0]
        raise AnalysisError(
            f"more than one row for subject {dup[subject]!r} at visit {dup[visit]!r}"
        )
    if (frame.groupby(subject)[arm].nunique() > 1).any():
        raise AnalysisError("a subject has rows in more than one arm")
    arms = order_arms(frame[arm], reference_arm)
    observed_visits = sorted_levels(frame[visit])
    if visit_order is None:
        visits = _natural_order(observed_visits)
    else:
        visits = tuple(str(v) for v in visit_order)
        unknown = set(observed_visits) - set(visits)
        if unknown:
            raise AnalysisError(f"visits {sorted(unknown)} not in visit_order {list(visits)}")
        if len(set(visits)) != len(visits):
            raise AnalysisError("visit_order has duplicates")
        visits = tuple(v for v in visits if v in observed_visits)
    k = len(visits)
    n_parameters(covariance, k)
    cells = [(a, v) for a in arms for v in visits]
    design = build_cell_design(
        frame,
        [arm, visit],
        cells,
        by_visit_covariates=[baseline] if baseline else [],
        covariates=covariates,
        factors=strata,
    )
    check_full_rank(design.matrix, design.names)
    x = design.matrix
    y = frame[outcome].to_numpy(dtype=float)
    subject_codes = np.asarray(pd.factorize(frame[subject])[0], dtype=float)
    visit_position = {v: i for i, v in enumerate(visits)}
    visit_index = np.asarray(frame[visit].map(visit_position), dtype=float)
    n_obs, p = x.shape
    if n_obs - p < 1:
        raise AnalysisError("fewer observations than fixed-effect parameters")
    patterns = _group_patterns(subject_codes, visit_index, x, y)
    problem = _RemlProblem(patterns, covariance, k, n_obs, p)

    ols_beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    sigma0 = _starting_covariance(visit_index, subject_codes, y - x @ ols_beta, k)
    theta0 = starting_values(covariance, sigma0)
    warnings: list[str] = []
    if n_dropped:
        warnings.append(
            f"{n_dropped} row(s) with a missing arm, visit, subject, covariate or stratum "
            "were not used"
        )
    theta, evaluation, iterations, converged = _maximise(problem, theta0, max_iterations)
    if not converged:
        warnings.append(
            f"REML did not converge (max |gradient| {np.max(np.abs(evaluation.gradient)):.2e})"
        )
    info_inv: FloatArray | None
    try:
        hessian = _hessian(problem, theta)
        info_inv = np.linalg.inv(hessian)
        if np.any(np.linalg.eigvalsh(hessian) <= 0):
            warnings.append(
                "Hessian of the REML criterion is not positive definite: residual df "
                f"({n_obs - p}) used instead of Satterthwaite"
            )
            info_inv = None
    except (AnalysisError, np.linalg.LinAlgError):
        warnings.append(
            f"Hessian of the REML criterion could not be computed: residual df ({n_obs - p}) "
            "used instead of Satterthwaite"
        )
        info_inv = None
    theta_cov = None if info_inv is None else 2.0 * info_inv

    kenward_roger = None
    kr_problems: set[str] = set()
    if ddf == "kenward_roger":
        if theta_cov is None:
            warnings.append("Kenward-Roger unavailable without a valid Hessian: unadjusted SEs")
        else:
            _, dsigma = covariance_and_derivatives(covariance, theta, k)
            kenward_roger = KenwardRoger(patterns, evaluation, covariance, theta_cov, dsigma)

    n_subjects = int(frame[subject].nunique())
    n_levels = sum(int(frame[f].nunique()) - 1 for f in strata)
    # R's treatment coding of y ~ arm * visit + baseline * visit + covariates + strata:
    # arm, baseline, covariates and strata are constant within a subject (between); visit,
    # arm:visit and baseline:visit vary (within). Arm contrasts involve the arm main effect.
    p_between = (len(arms) - 1) + (1 if baseline else 0) + len(covariates) + n_levels
    p_within = (k - 1) * (len(arms) + (1 if baseline else 0))
    df_between, df_within = between_within_df(
        int(n_obs), n_subjects, p_between, p_within
    )

    def estimate(row: FloatArray) -> tuple[float, float, float]:
        value = float(row @ evaluation.beta)
        if ddf in ("residual", "between_within", "asymptotic"):
            plain = float(np.sqrt(row @ evaluation.a_inv @ row))
            if ddf == "residual":
                return value, plain, float(n_obs - p)
            if ddf == "asymptotic":
                return value, plain, float("inf")
            return value, plain, float(min(df_between, df_within))
        if kenward_roger is not None:
            adjusted, kr_df = kenward_roger.contrast(row)
            if adjusted > 0 and np.isfinite(kr_df):
                return value, float(np.sqrt(adjusted)), kr_df
            kr_problems.add(
                "Kenward-Roger adjusted variance not positive: unadjusted SE with residual df"
            )
            return value, float(np.sqrt(row @ evaluation.a_inv @ row)), float(n_obs - p)
        variance, grad = problem.contrast_variance_gradient(theta, evaluation, row)
        if theta_cov is None:
            df = float(n_obs - p)
        else:
            denom = float(grad @ theta_cov @ grad)
            df = 2 * variance**2 / denom if denom > 0 else float("inf")
        return value, float(np.sqrt(variance)), df

    def tcrit(df: float) -> float:
        return float(stats.t.ppf(1 - alpha / 2, df)) if np.isfinite(df) else float(
            stats.norm.ppf(1 - alpha / 2))

    ls_means: list[LSMean] = []
    effects: list[EffectEstimate] = []
    for v in visits:
        rows = {a: design.lsmean_row((a, v)) for a in arms}
        for a in arms:
            est, se, df = estimate(rows[a])
            ls_means.append(
                LSMean(a, est, se, est - tcrit(df) * se, est + tcrit(df) * se, df, visit=v)
            )
        for a in arms[1:]:
            est, se, df = estimate(rows[a] - rows[arms[0]])
            tval = est / se
            effects.append(
                EffectEstimate(
                    contrast=f"{a} - {arms[0]}",
                    estimate=est,
                    se=se,
                    ci_low=est - tcrit(df) * se,
                    ci_high=est + tcrit(df) * se,
                    p_value=float(2 * stats.t.sf(abs(tval), df)) if np.isfinite(df)
                    else float(2 * stats.norm.sf(abs(tval))),
                    df=df if np.isfinite(df) else None,
                    visit=v,
                    ci_method=ddf,
                )
            )
    warnings.extend(sorted(kr_problems))
    arm_rows: list[ArmSummary] = []
    for v in visits:
        for a in arms:
            vals = frame.loc[(frame[arm] == a) & (frame[visit] == v), outcome]
            arm_rows.append(
                ArmSummary(
                    arm=a,
                    n=len(vals),
                    mean=sample_mean(vals),
                    sd=sample_sd(vals),
                    visit=v,
                )
            )
    n_by_arm = {a: int(frame.loc[frame[arm] == a, subject].nunique()) for a in arms}
    terms = [f"{arm} * {visit}"]
    if baseline:
        terms.append(f"{baseline} * {visit}")
    terms.extend(covariates)
    terms.extend(strata)
    model = (
        f"MMRM: {outcome} ~ {' + '.join(terms)}; covariance over {visit} within {subject}: "
        f"{covariance} ({DESCRIPTIONS[covariance]}); REML; LS means with covariates at "
        "their mean over analysed rows and factor levels weighted equally (emmeans "
        "default); "
        + (
            "Kenward-Roger adjusted covariance and df (linear covariance parameterisation, "
            "expected REML information)"
            if ddf == "kenward_roger"
            else f"residual df (N_obs - rank(X) = {n_obs - p})"
            if ddf == "residual"
            else f"between-within df (mmrm rule: between {df_between}, within {df_within}; "
            "a contrast takes the smaller)"
            if ddf == "between_within"
            else "asymptotic (normal) tests"
            if ddf == "asymptotic"
            else "Satterthwaite df from the observed REML information (Hessian in the "
            "covariance parameters)"
        )
    )
    return EndpointResult(
        method="mmrm",
        model=model,
        n_by_arm=n_by_arm,
        effects=tuple(effects),
        ls_means=tuple(ls_means),
        arms=tuple(arm_rows),
        warnings=tuple(warnings),
        parameters={
            "minus2_reml_loglik": evaluation.objective,
            "n_observations": float(n_obs),
            "n_missing_outcome": float(n_missing_outcome),
            "n_fixed_effects": float(p),
            "n_covariance_parameters": float(len(theta)),
            "n_patterns": float(len(patterns)),
            "iterations": float(iterations),
        },
        covariance=tuple(tuple(float(c) for c in row) for row in evaluation.sigma),
        covariance_labels=visits,
    )


def _maximise(
    problem: _RemlProblem, theta0: FloatArray, max_iterations: int
) -> tuple[FloatArray, _Evaluation, int, bool]:
    """Minimise -2 l_R by L-BFGS-B, then polish with Newton steps; return the optimum."""
    penalty = 1e300

    def fun(theta: FloatArray) -> tuple[float, FloatArray]:
        ev = problem.evaluate(theta)
        if ev is None or not np.isfinite(ev.objective):
            return penalty, np.zeros_like(theta)
        return ev.objective, ev.gradient

    start = problem.evaluate(theta0)
    if start is None:
        raise AnalysisError("starting covariance is not positive definite")
    res = optimize.minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iterations, "ftol": 1e-15, "gtol": 1e-9, "maxcor": 30},
    )
    theta = np.asarray(res.x, dtype=float)
    iterations = int(res.nit)
    best = problem.evaluate(theta)
    if best is None:
        raise AnalysisError("REML optimisation left the positive-definite region")
    for _ in range(8):
        if np.max(np.abs(best.gradient)) < 1e-8:
            break
        try:
            step = np.linalg.solve(_hessian(problem, theta), best.gradient)
        except (AnalysisError, np.linalg.LinAlgError):
            break
        shrink = 1.0
        improved = False
        while shrink > 1e-4:
            trial = problem.evaluate(theta - shrink * step)
            if trial is not None and trial.objective <= best.objective + 1e-10:
                theta, best, improved = theta - shrink * step, trial, True
                break
            shrink /= 2
        iterations += 1
        if not improved:
            break
    scale = max(1.0, abs(best.objective))
    converged = bool(np.max(np.abs(best.gradient)) < 1e-4 * scale)
    return theta, best, iterations, converged
