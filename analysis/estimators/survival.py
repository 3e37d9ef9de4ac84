"""Time-to-event endpoints: Kaplan-Meier, log-rank and Cox proportional hazards.

Written in numpy to reproduce R's ``survival`` package exactly: ``survfit``
(Greenwood variance, ``conf.type = "log"`` or ``"log-log"``, medians and their CIs by
``quantile.survfit``), ``survdiff`` (with ``strata()``) and ``coxph`` with Efron ties
and ``strata()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

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
    safe_exp,
)
from analysis.results import (
    AnalysisError,
    EffectEstimate,
    EndpointResult,
    LandmarkSurvival,
    MedianSurvival,
    SurvivalCurve,
    SurvivalResult,
    TestResult,
)

ConfType = Literal["log", "log-log"]
_TOL = float(np.sqrt(np.finfo(float).eps))


def _prepare(
    data: pd.DataFrame,
    time: str,
    event: str,
    arm: str,
    reference_arm: str | None,
    numeric: Sequence[str],
    factors: Sequence[str],
) -> tuple[pd.DataFrame, tuple[str, ...], int]:
    """Check and clean survival data: time >= 0, event 0/1 (1 = event, 0 = censored)."""
    require_columns(data, [time, event, arm, *numeric, *factors])
    frame, n_dropped = drop_incomplete(data, [time, event, arm, *numeric, *factors])
    if frame.empty:
        raise AnalysisError("no complete rows to analyse")
    if pd.api.types.is_bool_dtype(frame[event]):
        frame[event] = frame[event].astype(int)
    require_numeric(frame, [time, event, *numeric])
    if (frame[time] < 0).any():
        raise AnalysisError(f"column {time!r} has negative times")
    if not set(frame[event].unique().tolist()) <= {0, 1}:
        raise AnalysisError(f"column {event!r} must be 0 (censored) or 1 (event)")
    frame[arm] = level_labels(frame[arm])
    for fac in factors:
        frame[fac] = level_labels(frame[fac])
    return frame, order_arms(frame[arm], reference_arm), n_dropped


def _kaplan_meier(
    arm_label: str, times: FloatArray, events: FloatArray, conf_type: ConfType, z: float
) -> SurvivalCurve:
    """Return the Kaplan-Meier curve at every distinct time, as survfit reports it."""
    uniq, inverse = np.unique(times, return_inverse=True)
    n_at_time = np.bincount(inverse, minlength=len(uniq))
    n_event = np.bincount(inverse, weights=events, minlength=len(uniq)).astype(int)
    n_cens = n_at_time - n_event
    n_risk = np.cumsum(n_at_time[::-1])[::-1]
    surv = np.cumprod(1 - n_event / n_risk)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(n_event > 0, n_event / (n_risk * (n_risk - n_event)), 0.0)
        se_log = np.sqrt(np.cumsum(terms))  # std. error of log S (survfit's $std.err)
        if conf_type == "log":
            low = surv * np.exp(-z * se_log)
            high = np.minimum(surv * np.exp(z * se_log), 1.0)
            undefined = surv == 0
        else:
            loglog = np.log(-np.log(surv))
            low = np.exp(-np.exp(loglog - z * se_log / np.log(surv)))
            high = np.exp(-np.exp(loglog + z * se_log / np.log(surv)))
            undefined = (surv == 0) | (surv == 1)
        std_err = np.where(surv == 0, np.nan, surv * se_log)  # R: NaN once S reaches 0
    low = np.where(undefined, np.nan, low)
    high = np.where(undefined, np.nan, high)
    return SurvivalCurve(
        arm=arm_label,
        conf_type=conf_type,
        time=tuple(float(t) for t in uniq),
        n_at_risk=tuple(int(v) for v in n_risk),
        n_events=tuple(int(v) for v in n_event),
        n_censored=tuple(int(v) for v in n_cens),
        survival=tuple(float(v) for v in surv),
        std_err=tuple(float(v) for v in std_err),
        ci_low=tuple(float(v) for v in low),
        ci_high=tuple(float(v) for v in high),
    )


def _approx_constant_right(xs: FloatArray, positions: FloatArray, p: float) -> float:
    """R's approx(xs, positions, p, method = "constant", f = 1) for increasing xs."""
    ok = ~np.isnan(xs)
    xs, positions = xs[ok], positions[ok]
    if len(xs) == 0 or p < xs[0] or p > xs[-1]:
        return float("nan")
    exact = np.flatnonzero(xs == p)
    if len(exact):
        return float(positions[exact[-1]])
    return float(positions[np.searchsorted(xs, p, side="right")])


def _find_quantile(times: FloatArray, failure: FloatArray, p: float) -> float | None:
    """Port of survival:::findq: the time where 1 - S first reaches ``p``."""
    x = np.concatenate([[0.0], times])
    y = np.concatenate([[0.0], failure])
    if np.all(np.isnan(y)) or np.nanmax(y) < p:
        return None
    xmax = x[-1]
    keep = np.ones(len(y), dtype=bool)
    seen: list[float] = []
    has_nan = False
    for i, v in enumerate(y):
        if np.isnan(v):
            keep[i] = not has_nan
            has_nan = True
        elif any(v == s for s in seen):
            keep[i] = False
        else:
            seen.append(float(v))
    x, y = x[keep], y[keep]
    positions = np.arange(len(y), dtype=float)
    i1 = _approx_constant_right(y + _TOL, positions, p)
    i2 = _approx_constant_right(y - _TOL, positions, p)
    last = y[-1]
    if not np.isnan(last) and abs(p - last) < _TOL and not np.isnan(i1):
        return float((x[int(i1)] + xmax) / 2)
    if np.isnan(i1) or np.isnan(i2):
        return None
    return float((x[int(i1)] + x[int(i2)]) / 2)


def _median(curve: SurvivalCurve) -> MedianSurvival:
    times = np.asarray(curve.time)
    return MedianSurvival(
        arm=curve.arm,
        median=_find_quantile(times, 1 - np.asarray(curve.survival), 0.5),
        ci_low=_find_quantile(times, 1 - np.asarray(curve.ci_low), 0.5),
        ci_high=_find_quantile(times, 1 - np.asarray(curve.ci_high), 0.5),
    )


def _landmark(curve: SurvivalCurve, at: float) -> LandmarkSurvival:
    times = np.asarray(curve.time)
    idx = int(np.searchsorted(times, at, side="right")) - 1
    if idx < 0:
        return LandmarkSurvival(curve.arm, at, 1.0, 0.0, 1.0, 1.0)
    if at > times[-1]:
        raise AnalysisError(f"landmark {at} is after the last follow-up time of arm {curve.arm}")
    return LandmarkSurvival(
        curve.arm, at, curve.survival[idx], curve.std_err[idx], curve.ci_low[idx],
        curve.ci_high[idx],
    )


def _logrank(
    times: FloatArray, events: FloatArray, groups: FloatArray, strata: FloatArray, n_groups: int
) -> tuple[float, int]:
    """Return the (stratified) log-rank chi-square and its df, as survdiff computes it."""
    o_minus_e = np.zeros(n_groups)
    var = np.zeros((n_groups, n_groups))
    for s in np.unique(strata):
        in_s = strata == s
        t_s, e_s, g_s = times[in_s], events[in_s], groups[in_s].astype(int)
        uniq, inverse = np.unique(t_s, return_inverse=True)
        cells = inverse * n_groups + g_s
        size = len(uniq) * n_groups
        at_time = np.bincount(cells, minlength=size).reshape(len(uniq), n_groups)
        dead_g = np.bincount(cells, weights=e_s, minlength=size).reshape(len(uniq), n_groups)
        risk_g = np.cumsum(at_time[::-1], axis=0)[::-1].astype(float)
        has_event = dead_g.sum(axis=1) > 0
        risk_g, dead_g = risk_g[has_event], dead_g[has_event]
        n = risk_g.sum(axis=1)
        d = dead_g.sum(axis=1)
        o_minus_e += (dead_g - (d / n)[:, None] * risk_g).sum(axis=0)
        multi = n > 1
        factor = np.zeros_like(n)
        factor[multi] = d[multi] * (n[multi] - d[multi]) / (n[multi] ** 2 * (n[multi] - 1))
        var += np.diag((factor * n) @ risk_g) - np.einsum("t,tg,th->gh", factor, risk_g, risk_g)
    sub = slice(1, n_groups)
    chisq = float(o_minus_e[sub] @ np.linalg.pinv(var[sub, sub]) @ o_minus_e[sub])
    return chisq, int(np.linalg.matrix_rank(var[sub, sub]))


def estimate_kaplan_meier(
    data: pd.DataFrame,
    *,
    time: str,
    event: str,
    arm: str,
    reference_arm: str | None = None,
    strata: Sequence[str] = (),
    conf_type: ConfType = "log-log",
    landmarks: Sequence[float] = (),
    alpha: float = 0.05,
) -> SurvivalResult:
    """Estimate Kaplan-Meier curves per arm, medians, landmark survival and log-rank tests.

    Parameters
    ----------
    data
        One row per subject.
    time, event
        Follow-up time (>= 0) and event indicator (1 event, 0 censored).
    arm, reference_arm
        Arm column; the reference arm is listed first.
    strata
        Factors for the stratified log-rank test (R: ``survdiff(... + strata(...))``).
    conf_type
        survfit's ``"log"`` or ``"log-log"`` pointwise CIs (Greenwood variance).
    landmarks
        Times at which survival and its CI are reported (``summary(fit, times)``).
    alpha
        Two-sided CI level is ``1 - alpha``.

    Returns
    -------
    SurvivalResult
        Curves at every distinct time, medians with CIs (survfit's quantile rule),
        landmark estimates, and tests ``logrank`` and (with strata)
        ``stratified_logrank``.
    """
    if conf_type not in ("log", "log-log"):
        raise AnalysisError(f"conf_type must be 'log' or 'log-log', got {conf_type!r}")
    strata = column_names(strata)
    frame, arms, n_dropped = _prepare(data, time, event, arm, reference_arm, (), strata)
    z = float(stats.norm.ppf(1 - alpha / 2))
    t_all = frame[time].to_numpy(dtype=float)
    e_all = frame[event].to_numpy(dtype=float)
    arm_values = frame[arm].to_numpy()
    curves = tuple(
        _kaplan_meier(a, t_all[arm_values == a], e_all[arm_values == a], conf_type, z)
        for a in arms
    )
    groups = np.array([arms.index(a) for a in arm_values], dtype=float)
    chisq, df = _logrank(t_all, e_all, groups, np.zeros(len(t_all)), len(arms))
    tests = [TestResult("logrank", chisq, float(stats.chi2.sf(chisq, df)), float(df))]
    if strata:
        labels = frame[strata].astype(str).agg("/".join, axis=1)
        codes = pd.factorize(labels)[0].astype(float)
        chisq_s, df_s = _logrank(t_all, e_all, groups, codes, len(arms))
        tests.append(
            TestResult("stratified_logrank", chisq_s, float(stats.chi2.sf(chisq_s, df_s)),
                       float(df_s))
        )
    warnings = [f"{n_dropped} row(s) with missing values were excluded"] if n_dropped else []
    return SurvivalResult(
        method="kaplan_meier",
        model=(
            f"Kaplan-Meier by {arm} (Greenwood variance, {conf_type} CIs as survfit "
            f"conf.type = \"{conf_type}\"); medians and CIs by survfit's quantile rule; "
            "log-rank test (survdiff)"
            + (f", stratified by {' x '.join(strata)}" if strata else "")
        ),
        n_by_arm={c.arm: int(np.sum(arm_values == c.arm)) for c in curves},
        events_by_arm={c.arm: int(sum(c.n_events)) for c in curves},
        curves=curves,
        medians=tuple(_median(c) for c in curves),
        landmarks=tuple(_landmark(c, float(t)) for t in landmarks for c in curves),
        tests=tuple(tests),
        warnings=tuple(warnings),
    )


def pooled_kaplan_meier(
    data: pd.DataFrame,
    *,
    time: str,
    event: str,
    label: str,
    conf_type: ConfType = "log-log",
    alpha: float = 0.05,
) -> tuple[SurvivalCurve, MedianSurvival]:
    """One Kaplan-Meier curve (and its median) of every subject together, under `label`: the
    overall event rate a blinded data review may look at (no comparison of arms)."""
    frame = data[[time, event]].dropna()
    if frame.empty:
        raise AnalysisError("no subject with follow-up time")
    z = float(stats.norm.ppf(1 - alpha / 2))
    curve = _kaplan_meier(
        label, frame[time].to_numpy(dtype=float), frame[event].to_numpy(dtype=float),
        conf_type, z,
    )
    return curve, _median(curve)


def _efron_terms(
    beta: FloatArray, x: FloatArray, times: FloatArray, events: FloatArray, strata: FloatArray
) -> tuple[float, FloatArray, FloatArray]:
    """Return the Efron log partial likelihood, its gradient and Hessian at ``beta``."""
    with np.errstate(all="ignore"):  # a diverging fit yields non-finite values, checked later
        return _efron_sums(beta, x, times, events, strata)


def _efron_sums(
    beta: FloatArray, x: FloatArray, times: FloatArray, events: FloatArray, strata: FloatArray
) -> tuple[float, FloatArray, FloatArray]:
    """Accumulate the Efron terms over strata and distinct event times in O(n log n).

    Within a stratum the rows are sorted by time once; the risk-set sums at every time are
    suffix cumulative sums (``rs*[start]`` = the sum over rows with time >= t), the tied
    deaths' sums come from one ``reduceat`` over the event rows grouped by time, and the
    Efron terms of the k-th of d tied deaths (k = 0..d-1) are one vectorised expression over
    all event rows: no pass over the data per event time.
    """
    p = x.shape[1]
    loglik = 0.0
    grad = np.zeros(p)
    hess = np.zeros((p, p))
    for s in np.unique(strata):
        in_s = strata == s
        order = np.argsort(times[in_s], kind="stable")
        t, e, xs = times[in_s][order], events[in_s][order], x[in_s][order]
        eta = xs @ beta
        w = np.exp(eta)
        wx = w[:, None] * xs
        wxx = wx[:, :, None] * xs[:, None, :]
        rs0 = np.cumsum(w[::-1])[::-1]
        rs1 = np.cumsum(wx[::-1], axis=0)[::-1]
        rs2 = np.cumsum(wxx[::-1], axis=0)[::-1]
        dead = np.flatnonzero(e == 1)  # sorted by time: tied deaths are contiguous
        if dead.size == 0:
            continue
        td = t[dead]
        first = np.flatnonzero(np.r_[True, td[1:] != td[:-1]])  # first death of each time
        d = np.diff(np.r_[first, dead.size])  # deaths per distinct time
        start = np.searchsorted(t, td[first], side="left")  # first row at risk
        d0 = np.add.reduceat(w[dead], first)
        d1 = np.add.reduceat(wx[dead], first, axis=0)
        d2 = np.add.reduceat(wxx[dead], first, axis=0)
        group = np.repeat(np.arange(first.size), d)  # each death's time index
        frac = (np.arange(dead.size) - first[group]) / d[group]  # k / d
        den = rs0[start][group] - frac * d0[group]
        m1 = rs1[start][group] - frac[:, None] * d1[group]
        m2 = rs2[start][group] - frac[:, None, None] * d2[group]
        loglik += float(eta[dead].sum() - np.log(den).sum())
        grad += xs[dead].sum(axis=0) - (m1 / den[:, None]).sum(axis=0)
        hess -= (m2 / den[:, None, None]).sum(axis=0) - np.einsum(
            "ni,nj,n->ij", m1, m1, 1.0 / den**2
        )
    return loglik, grad, hess


def fit_cox(
    data: pd.DataFrame,
    *,
    time: str,
    event: str,
    arm: str,
    reference_arm: str | None = None,
    covariates: Sequence[str] = (),
    factors: Sequence[str] = (),
    strata: Sequence[str] = (),
    alpha: float = 0.05,
    max_iterations: int = 50,
) -> EndpointResult:
    """Fit a Cox proportional-hazards model with Efron ties; hazard ratios vs reference.

    Parameters
    ----------
    data, time, event, arm, reference_arm, alpha
        As for :func:`estimate_kaplan_meier`.
    covariates, factors
        Numeric and categorical (treatment-coded) adjustment covariates.
    strata
        Factors giving separate baseline hazards (R: ``strata(...)``).
    max_iterations
        Newton-Raphson iteration limit.

    Returns
    -------
    EndpointResult
        Hazard ratios of each arm vs reference with Wald CIs and z tests (R:
        ``coxph(..., ties = "efron")``), the ``likelihood_ratio``, ``score`` (at beta = 0;
        the log-rank test for one binary covariate without ties) and ``wald`` tests of the
        whole model (R ``summary(fit)$logtest``, ``$sctest``, ``$waldtest``), coefficients
        and log-likelihoods in ``parameters``.
    """
    covariates, factors, strata = (
        column_names(covariates), column_names(factors), column_names(strata)
    )
    frame, arms, n_dropped = _prepare(
        data, time, event, arm, reference_arm, covariates, [*factors, *strata]
    )
    design = build_cell_design(
        frame, [arm], [(a,) for a in arms], covariates=covariates, factors=factors
    )
    x = design.matrix[:, 1:]  # drop the reference arm: no intercept in a Cox model
    check_full_rank(x, design.names[1:])
    x = x - x.mean(axis=0)
    t = frame[time].to_numpy(dtype=float)
    e = frame[event].to_numpy(dtype=float)
    if e.sum() == 0:
        raise AnalysisError("no events: a Cox model cannot be fitted")
    if strata:
        labels = frame[strata].astype(str).agg("/".join, axis=1)
        s_codes = pd.factorize(labels)[0].astype(float)
    else:
        s_codes = np.zeros(len(t))
    beta = np.zeros(x.shape[1])
    loglik0, grad, hess = _efron_terms(beta, x, t, e, s_codes)
    loglik = loglik0
    try:  # score test at beta = 0 (= the log-rank test for one binary covariate, no ties)
        score = float(grad @ np.linalg.solve(-hess, grad))
    except np.linalg.LinAlgError:
        score = math.nan
    converged = False
    warnings = [f"{n_dropped} row(s) with missing values were excluded"] if n_dropped else []
    for _ in range(max_iterations):
        try:
            step = np.linalg.solve(-hess, grad)
        except np.linalg.LinAlgError:
            break
        shrink = 1.0
        while shrink > 1e-6:
            trial = beta + shrink * step
            ll_new, g_new, h_new = _efron_terms(trial, x, t, e, s_codes)
            if np.isfinite(ll_new) and ll_new >= loglik - 1e-12:
                break
            shrink /= 2
        beta, converged_step = trial, abs(ll_new - loglik) < 1e-12 * (abs(ll_new) + 1)
        loglik, grad, hess = ll_new, g_new, h_new
        if converged_step and np.max(np.abs(shrink * step)) < 1e-10:
            converged = True
            break
    if not converged:
        warnings.append(
            "Cox model did not converge; estimates may be infinite (monotone likelihood)"
        )
    if np.max(np.abs(beta)) > 15:
        warnings.append("a log hazard ratio exceeds 15: possible monotone likelihood")
    if not np.all(np.isfinite(beta)) or not np.isfinite(loglik):
        raise AnalysisError("Cox model diverged (monotone likelihood: an arm without events?)")
    try:
        cov = np.linalg.inv(-hess)
    except np.linalg.LinAlgError as exc:
        raise AnalysisError(
            "Cox information matrix is singular: a covariate is constant within strata "
            "or an arm has no events"
        ) from exc
    z = float(stats.norm.ppf(1 - alpha / 2))
    effects = []
    for i, a in enumerate(arms[1:]):
        b = float(beta[i])
        se = math.sqrt(cov[i, i]) if cov[i, i] > 0 else math.nan
        effects.append(
            EffectEstimate(
                contrast=f"{a} / {arms[0]}",
                estimate=safe_exp(b),
                se=se,
                ci_low=safe_exp(b - z * se),
                ci_high=safe_exp(b + z * se),
                p_value=float(2 * stats.norm.sf(abs(b / se))) if se > 0 else None,
                scale="hazard_ratio",
            )
        )
    lrt = 2 * (loglik - loglik0)
    wald = float(beta @ np.linalg.solve(cov, beta))
    n_par = float(len(beta))
    arm_values = frame[arm].to_numpy()
    terms = [arm, *covariates, *factors] + [f"strata({s})" for s in strata]
    return EndpointResult(
        method="cox",
        model=(
            f"Cox proportional hazards: Surv({time}, {event}) ~ {' + '.join(terms)}; "
            "Efron ties; hazard ratios with Wald CIs and z tests"
        ),
        n_by_arm={a: int(np.sum(arm_values == a)) for a in arms},
        effects=tuple(effects),
        tests=(
            TestResult("likelihood_ratio", lrt, float(stats.chi2.sf(lrt, n_par)), n_par),
            TestResult("score", score, float(stats.chi2.sf(score, n_par)), n_par),
            TestResult("wald", wald, float(stats.chi2.sf(wald, n_par)), n_par),
        ),
        warnings=tuple(warnings),
        parameters={
            "loglik": loglik,
            "loglik_null": loglik0,
            "n_events": float(e.sum()),
            **{f"coef_{n}": float(b) for n, b in zip(design.names[1:], beta, strict=True)},
        },
    )
