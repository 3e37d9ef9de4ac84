"""Binary endpoints: logistic regression, risk differences, exact and CMH tests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

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
    safe_exp,
)
from analysis.results import AnalysisError, ArmSummary, EffectEstimate, EndpointResult, TestResult


@dataclass(frozen=True)
class LogisticFit:
    """A maximum-likelihood logistic fit (internal to the estimators)."""

    beta: FloatArray
    cov: FloatArray
    deviance: float
    iterations: int
    converged: bool
    separated: bool


def fit_logistic_model(
    x: FloatArray, y: FloatArray, max_iterations: int = 100, offset: FloatArray | None = None
) -> LogisticFit:
    """Fit a logistic regression by Newton-Raphson (IRLS) to full convergence."""
    off = np.zeros(len(y)) if offset is None else offset
    beta = np.zeros(x.shape[1])
    deviance = np.inf
    converged = False
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007
        eta = x @ beta + off
        mu = special.expit(eta)
        weight = np.maximum(mu * (1 - mu), 1e-300)
        info = x.T @ (x * weight[:, None])
        score = x.T @ (y - mu)
        try:
            step = np.linalg.solve(info, score)
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):  # separation: the information matrix degenerated
            break
        beta = beta + step
        new_dev = _binomial_deviance(y, x @ beta + off)
        if abs(new_dev - deviance) < 1e-12 * (abs(new_dev) + 0.1) and np.max(np.abs(step)) < 1e-9:
            deviance = new_dev
            converged = True
            break
        deviance = new_dev
    mu = special.expit(x @ beta + off)
    weight = mu * (1 - mu)
    info = x.T @ (x * weight[:, None])
    try:
        cov = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        cov = np.full(info.shape, np.nan)
    separated = bool(
        not converged
        or np.max(np.abs(beta)) > 15
        or np.any(np.minimum(mu, 1 - mu)[y == np.round(mu)] < 1e-8)
    )
    return LogisticFit(beta, cov, float(deviance), iterations, converged, separated)


def _profile_deviance(x: FloatArray, y: FloatArray, column: int, value: float) -> float:
    """Return the deviance with coefficient ``column`` fixed at ``value`` (others refitted)."""
    rest = np.delete(x, column, axis=1)
    return fit_logistic_model(rest, y, offset=value * x[:, column]).deviance


def profile_interval(
    x: FloatArray, y: FloatArray, fit: LogisticFit, column: int, alpha: float
) -> tuple[float, float, float]:
    """Return the profile-likelihood CI of one coefficient and its likelihood-ratio p-value.

    The bounds solve ``D(b) - D_min = chi2_{1, 1 - alpha}`` (R: ``confint(glm)`` profiles
    the same function on a grid and interpolates; this solves it exactly).
    """
    target = float(stats.chi2.ppf(1 - alpha, 1))
    estimate = float(fit.beta[column])
    se = float(np.sqrt(fit.cov[column, column]))

    def excess(b: float) -> float:
        return _profile_deviance(x, y, column, b) - fit.deviance - target

    if excess(estimate) >= 0:
        raise AnalysisError("the profile likelihood does not peak at the estimate (no convergence)")
    bounds = []
    for direction in (-1.0, 1.0):
        step = 2.0 * se
        far = estimate + direction * step
        while excess(far) < 0:
            step *= 2
            far = estimate + direction * step
            if step > 1e3:
                raise AnalysisError("profile-likelihood bound is infinite (separation?)")
        lo, hi = sorted((estimate, far))
        bounds.append(float(optimize.brentq(excess, lo, hi, xtol=1e-12, rtol=1e-12)))
    lrt = _profile_deviance(x, y, column, 0.0) - fit.deviance
    return bounds[0], bounds[1], float(stats.chi2.sf(max(lrt, 0.0), 1))


@dataclass(frozen=True)
class FirthFit:
    """A Firth penalized-likelihood logistic fit (Firth 1993; Heinze & Schemper 2002)."""

    beta: FloatArray
    cov: FloatArray  # classical I(beta)^-1 at the estimate
    loglik: float  # penalized log-likelihood l*(beta) = l(beta) + 1/2 log det I(beta)
    converged: bool


def _penalized(x: FloatArray, y: FloatArray, beta: FloatArray) -> tuple[float, FloatArray,
                                                                        FloatArray]:
    """Return l*(beta), the modified score U*(beta) and the information I(beta), full X."""
    eta = x @ beta
    mu = special.expit(eta)
    weight = np.maximum(mu * (1 - mu), 1e-300)
    info = x.T @ (x * weight[:, None])
    sign, logdet = np.linalg.slogdet(info)
    if sign <= 0 or logdet < -200:
        raise AnalysisError("Firth: the information matrix is numerically singular")
    loglik = float(-np.sum(np.logaddexp(0, eta) - y * eta)) + 0.5 * logdet
    xw = x * np.sqrt(weight)[:, None]
    hat = np.einsum("ij,ij->i", xw @ np.linalg.inv(info), xw)
    score = x.T @ (y - mu + hat * (0.5 - mu))
    return loglik, score, info


def fit_firth_model(
    x: FloatArray, y: FloatArray, fixed: dict[int, float] | None = None,
    max_iterations: int = 100,
) -> FirthFit:
    """Maximise the penalized log-likelihood, with coefficients in ``fixed`` held at their
    values (the penalty always uses the full information matrix, as logistf)."""
    fixed = fixed or {}
    free = [j for j in range(x.shape[1]) if j not in fixed]
    beta = np.zeros(x.shape[1])
    for j, value in fixed.items():
        beta[j] = value
    loglik, score, info = _penalized(x, y, beta)
    converged = False
    for _ in range(max_iterations):
        if not free:
            converged = True
            break
        step = np.zeros_like(beta)
        step[free] = np.linalg.solve(info[np.ix_(free, free)], score[free])
        largest = float(np.max(np.abs(step)))
        if largest > 5:
            step *= 5 / largest
        shrink = 1.0
        while True:
            trial = beta + shrink * step
            try:
                new = _penalized(x, y, trial)
            except AnalysisError:
                new = (-np.inf, score, info)
            if new[0] >= loglik - 1e-12 or shrink < 1e-8:
                break
            shrink /= 2
        beta = trial
        change = new[0] - loglik
        loglik, score, info = new
        if np.max(np.abs(shrink * step)) < 1e-10 and abs(change) < 1e-12 and \
                np.max(np.abs(score[free])) < 1e-8:
            converged = True
            break
    return FirthFit(beta, np.linalg.inv(info), loglik, converged)


def firth_profile(
    x: FloatArray, y: FloatArray, fit: FirthFit, column: int, alpha: float
) -> tuple[float, float, float]:
    """Profile penalized-likelihood CI of one coefficient and its penalized likelihood-ratio
    p-value (logistf's defaults: ``pl = TRUE``); both limits are finite under separation."""
    target = float(stats.chi2.ppf(1 - alpha, 1)) / 2
    estimate = float(fit.beta[column])
    se = float(np.sqrt(fit.cov[column, column]))

    def excess(b: float) -> float:
        return fit.loglik - fit_firth_model(x, y, {column: b}).loglik - target

    bounds = []
    for direction in (-1.0, 1.0):
        step = se
        far = estimate + direction * step
        while excess(far) < 0:
            step *= 2
            far = estimate + direction * step
            if step > 1e3:
                raise AnalysisError("penalized profile bound not found")
        lo, hi = sorted((estimate, far))
        bounds.append(float(optimize.brentq(excess, lo, hi, xtol=1e-10, rtol=1e-12)))
    statistic = 2 * (fit.loglik - fit_firth_model(x, y, {column: 0.0}).loglik)
    return bounds[0], bounds[1], float(stats.chi2.sf(max(statistic, 0.0), 1))


def _binomial_deviance(y: FloatArray, eta: FloatArray) -> float:
    """Return -2 log-likelihood of 0/1 outcomes ``y`` at linear predictor ``eta``."""
    # log(1 + exp(eta)) - y * eta, computed stably
    return float(2 * np.sum(np.logaddexp(0, eta) - y * eta))


def _prepare(
    data: pd.DataFrame,
    outcome: str,
    arm: str,
    reference_arm: str | None,
    numeric: Sequence[str],
    factors: Sequence[str],
) -> tuple[pd.DataFrame, tuple[str, ...], int]:
    """Check and clean the data of a binary analysis; outcome must be 0/1 (or bool)."""
    require_columns(data, [outcome, arm, *numeric, *factors])
    frame, n_dropped = drop_incomplete(data, [outcome, arm, *numeric, *factors])
    if frame.empty:
        raise AnalysisError("no complete rows to analyse")
    if pd.api.types.is_bool_dtype(frame[outcome]):
        frame[outcome] = frame[outcome].astype(int)
    require_numeric(frame, [outcome, *numeric])
    values = set(frame[outcome].unique().tolist())
    if not values <= {0, 1}:
        raise AnalysisError(f"outcome {outcome!r} must be 0/1, found values {sorted(values)}")
    frame[arm] = level_labels(frame[arm])
    for fac in factors:
        frame[fac] = level_labels(frame[fac])
    return frame, order_arms(frame[arm], reference_arm), n_dropped


def _arm_summaries(frame: pd.DataFrame, outcome: str, arm: str, arms: Sequence[str]) -> (
    tuple[ArmSummary, ...]
):
    out = []
    for a in arms:
        vals = frame.loc[frame[arm] == a, outcome]
        out.append(
            ArmSummary(arm=a, n=len(vals), n_events=int(vals.sum()), proportion=float(vals.mean()))
        )
    return tuple(out)


def fit_logistic(
    data: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    reference_arm: str | None = None,
    covariates: Sequence[str] = (),
    strata: Sequence[str] = (),
    alpha: float = 0.05,
    profile_ci: bool = False,
) -> EndpointResult:
    """Fit ``logit P(outcome = 1) ~ arm + covariates + strata``; odds ratios vs reference.

    Parameters
    ----------
    data
        One row per subject; rows missing any used column are excluded.
    outcome
        0/1 (or boolean) response column.
    arm, reference_arm
        Arm column and the arm the others are compared with (default: first sorted).
    covariates, strata
        Numeric covariates and categorical factors (main effects).
    alpha
        Two-sided CI level is ``1 - alpha``.
    profile_ci
        Also give, per arm, the profile-likelihood CI with the likelihood-ratio p-value
        (``ci_method="profile_likelihood"``).

    Returns
    -------
    EndpointResult
        Odds ratios with Wald CIs and z tests on the log-odds scale (R:
        ``confint.default``), per-arm response counts, and warnings on
        non-convergence or (quasi-)complete separation. Under separation the odds ratios
        are Firth's (``ci_method="firth_profile_penalized_likelihood"``: profile penalized-
        likelihood CI, penalized likelihood-ratio p; R ``logistf``).
    """
    covariates, strata = column_names(covariates), column_names(strata)
    frame, arms, n_dropped = _prepare(data, outcome, arm, reference_arm, covariates, strata)
    design = build_cell_design(
        frame, [arm], [(a,) for a in arms], covariates=covariates, factors=strata
    )
    check_full_rank(design.matrix, design.names)
    y = frame[outcome].to_numpy(dtype=float)
    fit = fit_logistic_model(design.matrix, y)
    z = float(stats.norm.ppf(1 - alpha / 2))
    effects = []
    for i, a in enumerate(arms[1:], start=1):
        contrast = np.zeros(len(fit.beta))
        contrast[i], contrast[0] = 1.0, -1.0
        log_or = float(contrast @ fit.beta)
        se = float(np.sqrt(contrast @ fit.cov @ contrast))
        effects.append(
            EffectEstimate(
                contrast=f"{a} / {arms[0]}",
                estimate=safe_exp(log_or),
                se=se,
                ci_low=safe_exp(log_or - z * se),
                ci_high=safe_exp(log_or + z * se),
                p_value=float(2 * stats.norm.sf(abs(log_or / se))),
                scale="odds_ratio",
            )
        )
    profile_problem = None
    firth_used = False
    if fit.separated:
        # Separation: ML odds ratios diverge (OR ~ 1e32, p ~ 1). Fall back to Firth's
        # penalized likelihood with profile penalized-likelihood CIs and PLR tests.
        coded = design.matrix.copy()
        coded[:, 0] = 1.0
        try:
            firth = fit_firth_model(coded, y)
            firth_effects = []
            for i, a in enumerate(arms[1:], start=1):
                low, high, plr_p = firth_profile(coded, y, firth, i, alpha)
                b = float(firth.beta[i])
                firth_effects.append(
                    EffectEstimate(
                        contrast=f"{a} / {arms[0]}", estimate=safe_exp(b),
                        se=float(np.sqrt(firth.cov[i, i])), ci_low=safe_exp(low),
                        ci_high=safe_exp(high), p_value=plr_p, scale="odds_ratio",
                        ci_method="firth_profile_penalized_likelihood",
                    )
                )
            effects = firth_effects
            firth_used = True
        except (AnalysisError, np.linalg.LinAlgError) as exc:
            profile_problem = f"Firth fallback failed: {exc}"
    if profile_ci and fit.separated:
        profile_problem = profile_problem or "separation (Firth penalized likelihood used)"
    elif profile_ci:
        coded = design.matrix.copy()
        coded[:, 0] = 1.0  # intercept + treatment coding: column i is log OR(arm i vs ref)
        coded_fit = fit_logistic_model(coded, y)
        for i in range(1, len(arms)):
            try:
                low, high, lrt_p = profile_interval(coded, y, coded_fit, i, alpha)
            except AnalysisError as exc:
                profile_problem = str(exc)
                break
            wald = effects[i - 1]
            effects.append(
                EffectEstimate(
                    contrast=wald.contrast, estimate=wald.estimate, se=wald.se,
                    ci_low=safe_exp(low), ci_high=safe_exp(high), p_value=lrt_p,
                    scale="odds_ratio", ci_method="profile_likelihood",
                )
            )
    warnings = []
    if n_dropped:
        warnings.append(f"{n_dropped} row(s) with missing values were excluded")
    if not fit.converged:
        warnings.append(f"logistic regression did not converge in {fit.iterations} iterations")
    if profile_problem:
        warnings.append(f"profile-likelihood CI not computed: {profile_problem}")
    if fit.separated and firth_used:
        warnings.append(
            "(quasi-)complete separation: maximum-likelihood odds ratios diverge; Firth's "
            "penalized likelihood used (Heinze & Schemper 2002), profile penalized-likelihood "
            "CIs and penalized likelihood-ratio tests"
        )
    elif fit.separated:
        warnings.append(
            "possible (quasi-)complete separation: fitted probabilities of 0 or 1 or "
            "diverging coefficients; odds ratios and Wald CIs are unreliable"
        )
    arms_summary = _arm_summaries(frame, outcome, arm, arms)
    return EndpointResult(
        method="logistic",
        model=(
            f"logistic regression: logit P({outcome} = 1) ~ "
            f"{' + '.join([arm, *covariates, *strata])}; "
            + (
                "Firth penalized likelihood (separation in the data); odds ratios with "
                "profile penalized-likelihood CIs and penalized likelihood-ratio tests"
                if firth_used
                else "maximum likelihood; odds ratios with Wald CIs and z tests on the "
                "log-odds scale"
            )
        ),
        n_by_arm={s.arm: s.n for s in arms_summary},
        effects=tuple(effects),
        arms=arms_summary,
        warnings=tuple(warnings),
        parameters={"deviance": fit.deviance, "iterations": float(fit.iterations)},
    )


def wilson_interval(events: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Return the Wilson score interval of a proportion (R: prop.test(correct = FALSE))."""
    z = float(stats.norm.ppf(1 - alpha / 2))
    p = events / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def yates_chi_square(table: np.ndarray) -> tuple[float, float]:
    """Pearson chi-square of a 2 x 2 table with Yates' continuity correction, as R's
    ``chisq.test`` (the correction is capped so |O - E| never crosses zero); NaN for a zero
    margin."""
    observed = np.asarray(table, dtype=float)
    expected = observed.sum(axis=1)[:, None] * observed.sum(axis=0)[None, :] / observed.sum()
    if np.any(expected == 0):
        return float("nan"), float("nan")
    deviation = np.abs(observed - expected)
    statistic = float(np.sum((deviation - np.minimum(0.5, deviation)) ** 2 / expected))
    return statistic, float(stats.chi2.sf(statistic, 1))


def compare_proportions(
    data: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    reference_arm: str | None = None,
    alpha: float = 0.05,
) -> EndpointResult:
    """Compare response proportions of each arm with the reference arm, unadjusted.

    Parameters
    ----------
    data, outcome, arm, reference_arm, alpha
        As for :func:`fit_logistic`.

    Returns
    -------
    EndpointResult
        Per arm vs reference: the risk difference twice, with a Wald CI and z test
        (``ci_method="wald"``) and with Newcombe's hybrid-score CI (method 10, Wilson
        intervals without continuity correction); tests ``fisher_exact <contrast>``,
        ``pearson_chi2 <contrast>`` (no continuity correction; R ``fisher.test``,
        ``chisq.test(correct = FALSE)``) and ``pearson_chi2_yates <contrast>`` (R's default
        ``chisq.test``).
    """
    frame, arms, n_dropped = _prepare(data, outcome, arm, reference_arm, (), ())
    summaries = _arm_summaries(frame, outcome, arm, arms)
    ref = summaries[0]
    z = float(stats.norm.ppf(1 - alpha / 2))
    effects: list[EffectEstimate] = []
    tests: list[TestResult] = []
    for s in summaries[1:]:
        x1, n1, x2, n2 = s.n_events or 0, s.n, ref.n_events or 0, ref.n
        p1, p2 = x1 / n1, x2 / n2
        diff = p1 - p2
        se = float(np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2))
        label = f"{s.arm} - {ref.arm}"
        p_wald = float(2 * stats.norm.sf(abs(diff / se))) if se > 0 else None
        effects.append(
            EffectEstimate(label, diff, se, diff - z * se, diff + z * se, p_wald,
                           scale="risk_difference", ci_method="wald")
        )
        l1, u1 = wilson_interval(x1, n1, alpha)
        l2, u2 = wilson_interval(x2, n2, alpha)
        low = diff - float(np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2))
        high = diff + float(np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
        effects.append(
            EffectEstimate(label, diff, None, low, high, None, scale="risk_difference",
                           ci_method="newcombe_hybrid_score")
        )
        table = np.array([[n2 - x2, x2], [n1 - x1, x1]])
        _, fisher_p = stats.fisher_exact(table, alternative="two-sided")
        tests.append(TestResult(f"fisher_exact {label}", float("nan"), float(fisher_p)))
        expected = table.sum(axis=1)[:, None] * table.sum(axis=0)[None, :] / table.sum()
        if np.any(expected == 0):
            chi2, chi_p = float("nan"), float("nan")
        else:
            chi2 = float(np.sum((table - expected) ** 2 / expected))
            chi_p = float(stats.chi2.sf(chi2, 1))
        tests.append(TestResult(f"pearson_chi2 {label}", chi2, chi_p, 1.0))
        yates, yates_p = yates_chi_square(table)
        tests.append(TestResult(f"pearson_chi2_yates {label}", yates, yates_p, 1.0))
    warnings = [f"{n_dropped} row(s) with missing values were excluded"] if n_dropped else []
    return EndpointResult(
        method="proportions",
        model=(
            f"unadjusted comparison of P({outcome} = 1) between arms: risk difference with "
            "Wald and Newcombe hybrid-score (method 10) CIs; Fisher exact, Pearson "
            "chi-square without and with Yates' continuity correction (R chisq.test's "
            "default for 2 x 2) tests"
        ),
        n_by_arm={s.arm: s.n for s in summaries},
        effects=tuple(effects),
        arms=summaries,
        tests=tuple(tests),
        warnings=tuple(warnings),
    )


def fit_cmh(
    data: pd.DataFrame,
    *,
    outcome: str,
    arm: str,
    stratum: str,
    reference_arm: str | None = None,
    alpha: float = 0.05,
    continuity_correction: bool = False,
) -> EndpointResult:
    """Cochran-Mantel-Haenszel analysis of a 2 x 2 x K table (two arms, K strata).

    Parameters
    ----------
    data, outcome, arm, reference_arm, alpha
        As for :func:`fit_logistic`; exactly two arms.
    stratum
        Stratification column; strata lacking either arm are ignored (with a warning).
    continuity_correction
        Apply the 0.5 continuity correction to the CMH statistic (R's default).

    Returns
    -------
    EndpointResult
        The Mantel-Haenszel common odds ratio (Robins-Breslow-Greenland CI, CMH p), the
        Mantel-Haenszel common risk difference (Sato variance, Wald CI and p) and the
        ``cmh`` test (R: ``mantelhaen.test(table(arm, outcome, stratum))``).
    """
    frame, arms, n_dropped = _prepare(data, outcome, arm, reference_arm, (), (stratum,))
    if len(arms) != 2:
        raise AnalysisError(f"CMH needs exactly two arms, found {list(arms)}")
    ref_arm, trt_arm = arms
    a_, b_, c_, d_, n_ = [], [], [], [], []
    for _, grp in frame.groupby(stratum, sort=True):
        trt = grp.loc[grp[arm] == trt_arm, outcome]
        ctl = grp.loc[grp[arm] == ref_arm, outcome]
        n_k = len(trt) + len(ctl)
        if n_k < 2:
            continue
        a_.append(float(trt.sum()))  # treated responders
        b_.append(float(len(trt) - trt.sum()))
        c_.append(float(ctl.sum()))
        d_.append(float(len(ctl) - ctl.sum()))
        n_.append(float(n_k))
    a, b, c, d, n = (np.asarray(v) for v in (a_, b_, c_, d_, n_))
    n1, n0 = a + b, c + d
    m1 = a + c
    keep = (n1 > 0) & (n0 > 0)
    a, b, c, d, n, n1, n0, m1 = (v[keep] for v in (a, b, c, d, n, n1, n0, m1))
    if len(a) == 0:
        raise AnalysisError("no stratum has subjects in both arms")
    expected = n1 * m1 / n
    variance = n1 * n0 * m1 * (n - m1) / (n**2 * (n - 1))
    dev = abs(float(np.sum(a - expected)))
    if continuity_correction:
        dev = max(0.0, dev - 0.5)
    if float(np.sum(variance)) <= 0 or not (np.any(a + c > 0) and np.any(b + d > 0)):
        raise AnalysisError("CMH is undefined: no stratum has both responders and non-responders")
    cmh = dev**2 / float(np.sum(variance))
    r, s = a * d / n, b * c / n
    if float(np.sum(r)) == 0 or float(np.sum(s)) == 0:
        raise AnalysisError(
            "Mantel-Haenszel odds ratio is 0 or infinite (a zero cell in every stratum)"
        )
    mh_or = float(np.sum(r) / np.sum(s))
    p_, q_ = (a + d) / n, (b + c) / n
    var_log = (
        np.sum(p_ * r) / (2 * np.sum(r) ** 2)
        + np.sum(p_ * s + q_ * r) / (2 * np.sum(r) * np.sum(s))
        + np.sum(q_ * s) / (2 * np.sum(s) ** 2)
    )
    se_log = float(np.sqrt(var_log))
    z = float(stats.norm.ppf(1 - alpha / 2))
    weights = n1 * n0 / n
    rd = float(np.sum(weights * (a / n1 - c / n0)) / np.sum(weights))
    # Sato (1989) variance of the Mantel-Haenszel risk difference
    sato_p = (n1**2 * c - n0**2 * a + n1 * n0 * (n0 - n1) / 2) / n**2
    sato_q = (a * (n0 - c) + c * (n1 - a)) / (2 * n)
    var_rd = float((rd * np.sum(sato_p) + np.sum(sato_q)) / np.sum(weights) ** 2)
    se_rd = math.sqrt(var_rd) if var_rd > 0 else math.nan
    p_value = float(stats.chi2.sf(cmh, 1))
    label = f"{trt_arm} / {ref_arm}"
    effects = (
        EffectEstimate(
            label, mh_or, se_log, safe_exp(np.log(mh_or) - z * se_log),
            safe_exp(np.log(mh_or) + z * se_log), p_value, scale="odds_ratio",
            ci_method="robins_breslow_greenland",
        ),
        EffectEstimate(
            f"{trt_arm} - {ref_arm}", rd, se_rd, rd - z * se_rd, rd + z * se_rd,
            float(2 * stats.norm.sf(abs(rd / se_rd))) if se_rd > 0 else None,
            scale="risk_difference",
            ci_method="sato",
        ),
    )
    summaries = _arm_summaries(frame, outcome, arm, arms)
    warnings = [f"{n_dropped} row(s) with missing values were excluded"] if n_dropped else []
    if int(np.sum(~keep)):
        warnings.append(f"{int(np.sum(~keep))} stratum/strata without both arms ignored")
    return EndpointResult(
        method="cmh",
        model=(
            f"Cochran-Mantel-Haenszel: {outcome} by {arm} stratified by {stratum}; "
            "MH common odds ratio (Robins-Breslow-Greenland CI), MH risk difference "
            "(Sato variance), CMH chi-square "
            + ("with" if continuity_correction else "without")
            + " continuity correction"
        ),
        n_by_arm={s.arm: s.n for s in summaries},
        effects=effects,
        arms=summaries,
        tests=(TestResult("cmh", cmh, p_value, 1.0),),
        warnings=tuple(warnings),
        parameters={"n_strata": float(len(a))},
    )
