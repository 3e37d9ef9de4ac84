"""MMRM (analysis.estimators.mmrm) against nlme::gls + emmeans, and its behaviour."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from reference_data import read_dataset, read_reference

from analysis.estimators.mmrm import fit_mmrm
from analysis.results import AnalysisError

CASES = read_reference("mmrm")["cases"]


def _fit(case: dict[str, Any]) -> Any:
    return fit_mmrm(
        read_dataset(case["file"]),
        outcome="chg",
        arm="arm",
        visit="visit",
        subject="subject",
        reference_arm=case["reference"],
        baseline="base",
        strata=["stratum"] if case["strata"] else [],
        covariance=case["structure"],
    )


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{c['file']}-{c['structure']}-strata{c['strata']}" for c in CASES]
)
def test_mmrm_matches_r(case: dict[str, Any]) -> None:
    """tests/reference/mmrm.R: gls(chg ~ arm * visit + base * visit [+ stratum],
    correlation = corSymm | corCompSymm | corAR1 | corARMA(p = K - 1) (form = ~ visitnum | subject),
    weights = varIdent(form = ~ 1 | visit) for UN/CSH/ARH1/TOEPH, method = "REML");
    emmeans(fit, ~ arm | visit); contrast(emm, "trt.vs.ctrl", adjust = "none");
    Satterthwaite df from numDeriv Hessian of the dense REML criterion (see the script).
    """
    result = _fit(case)
    assert result.warnings == ()
    assert_allclose(np.array(result.covariance), np.array(case["sigma"]), rtol=1e-4)
    assert_allclose(result.parameters["minus2_reml_loglik"], case["minus2_reml"], rtol=1e-7)
    for ref in case["lsmeans"]:
        lsm = result.ls_mean(ref["arm"], ref["visit"])
        assert_allclose(lsm.estimate, ref["estimate"], rtol=1e-4, atol=1e-8)
        assert_allclose(lsm.se, ref["se"], rtol=1e-4)
        assert_allclose(lsm.df, ref["df"], rtol=1e-4)
    for ref in case["contrasts"]:
        eff = result.effect(ref["contrast"], ref["visit"])
        assert_allclose(eff.estimate, ref["estimate"], rtol=1e-4)
        assert_allclose(eff.se, ref["se"], rtol=1e-4)
        assert_allclose(eff.df, ref["df"], rtol=1e-4)
        assert_allclose(
            [eff.ci_low, eff.ci_high],
            [ref["ci_low"], ref["ci_high"]],
            rtol=1e-4,
            atol=1e-4 * eff.se,
        )
        assert eff.p_value == pytest.approx(ref["p_value"], abs=1e-4)
        if ref["df_emmeans"] is not None:
            # emmeans' own Satterthwaite for gls rests on nlme's coarse apVar Hessian
            assert_allclose(eff.df, ref["df_emmeans"], rtol=5e-3)


KR_CASES = [c for c in CASES if "kr_se" in c["contrasts"][0]]


@pytest.mark.parametrize(
    "case", KR_CASES, ids=[f"{c['file']}-{c['structure']}-strata{c['strata']}" for c in KR_CASES]
)
def test_mmrm_kenward_roger_matches_r_transcription(case: dict[str, Any]) -> None:
    """tests/reference/mmrm.R kenward_roger(): the gls fit above; linear Kenward-Roger with
    W = 2 solve(numDeriv::hessian(-2 l_R in Sigma's entries)) and dense per-subject P_i, Q_ij;
    Phi_A = Phi + 2 Phi (sum W_ij (Q_ij - P_i Phi P_j)) Phi; df = 2 / a'Wa."""
    result = fit_mmrm(
        read_dataset(case["file"]), outcome="chg", arm="arm", visit="visit", subject="subject",
        reference_arm=case["reference"], baseline="base",
        strata=["stratum"] if case["strata"] else [], covariance=case["structure"],
        ddf="kenward_roger",
    )
    assert "Kenward-Roger" in result.model
    for ref in case["lsmeans"]:
        lsm = result.ls_mean(ref["arm"], ref["visit"])
        assert_allclose([lsm.se, lsm.df], [ref["kr_se"], ref["kr_df"]], rtol=1e-4)
    for ref in case["contrasts"]:
        eff = result.effect(ref["contrast"], ref["visit"])
        assert_allclose([eff.se, eff.df], [ref["kr_se"], ref["kr_df"]], rtol=1e-4)
        assert_allclose(
            [eff.ci_low, eff.ci_high], [ref["kr_ci_low"], ref["kr_ci_high"]],
            rtol=1e-4, atol=1e-4 * eff.se,
        )
        assert eff.p_value == pytest.approx(ref["kr_p_value"], abs=1e-4)


def test_mmrm_kenward_roger_only_for_linear_structures() -> None:
    """Kenward-Roger with a non-linear structure (AR1) raises AnalysisError."""
    with pytest.raises(AnalysisError, match="Kenward-Roger"):
        fit_mmrm(
            read_dataset("mmrm_b.csv"), outcome="chg", arm="arm", visit="visit",
            subject="subject", covariance="AR1", ddf="kenward_roger",
        )


def _simulate(n_subjects: int, n_visits: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = rng.choice(["control", "active"], n_subjects)
    base = rng.normal(0, 1, n_subjects)
    cov = 0.5 + 0.5 * np.eye(n_visits)
    err = rng.multivariate_normal(np.zeros(n_visits), cov, n_subjects)
    visits = [f"V{j + 1}" for j in range(n_visits)]
    frame = pd.DataFrame(
        {
            "subject": np.repeat(np.arange(n_subjects), n_visits),
            "arm": np.repeat(arm, n_visits),
            "visit": np.tile(visits, n_subjects),
            "base": np.repeat(base, n_visits),
        }
    )
    effect = np.where(frame["arm"] == "active", -0.5, 0.0)
    frame["y"] = effect + 0.4 * frame["base"] + err.ravel()
    frame.loc[rng.random(len(frame)) < 0.15, "y"] = np.nan
    return frame


def test_mmrm_fits_ten_thousand_subjects() -> None:
    """10,000 subjects x 5 visits with intermittent missing values fit by UN (its speed against
    R is a benchmark: bench/mmrm.py)."""
    frame = _simulate(10_000, 5, seed=7)
    result = fit_mmrm(
        frame, outcome="y", arm="arm", visit="visit", subject="subject", baseline="base",
        reference_arm="control",
    )
    assert result.warnings == ()
    assert result.effect(visit="V5").estimate == pytest.approx(-0.5, abs=0.06)
    assert result.n_by_arm["active"] + result.n_by_arm["control"] == 10_000


def test_mmrm_shift_of_outcome_moves_ls_means_not_differences() -> None:
    """Adding a constant to the outcome shifts LS means by it and leaves contrasts alone."""
    frame = _simulate(300, 3, seed=3)
    shifted = frame.assign(y=frame["y"] + 10.0)
    kwargs: dict[str, Any] = {
        "outcome": "y", "arm": "arm", "visit": "visit", "subject": "subject",
        "baseline": "base", "covariance": "CSH",
    }
    a, b = fit_mmrm(frame, **kwargs), fit_mmrm(shifted, **kwargs)
    for ea, eb in zip(a.effects, b.effects, strict=True):
        assert eb.estimate == pytest.approx(ea.estimate, rel=1e-6, abs=1e-8)
        assert eb.se == pytest.approx(ea.se, rel=1e-6)
    assert b.ls_means[0].estimate == pytest.approx(a.ls_means[0].estimate + 10.0, rel=1e-6)


def test_mmrm_result_is_json_serialisable() -> None:
    """to_dict() gives plain JSON including the model text and covariance matrix."""
    import json

    result = _fit(CASES[0])
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["method"] == "mmrm"
    assert "Satterthwaite" in payload["model"]
    assert len(payload["covariance"]) == 4


def test_mmrm_rejects_bad_input() -> None:
    """Bad columns, duplicate rows and unknown structures raise AnalysisError."""
    frame = read_dataset("mmrm_a.csv")
    base: dict[str, Any] = {"outcome": "chg", "arm": "arm", "visit": "visit", "subject": "subject"}
    with pytest.raises(AnalysisError, match="not in data"):
        fit_mmrm(frame, **{**base, "outcome": "nope"})
    with pytest.raises(AnalysisError, match="more than one row"):
        fit_mmrm(pd.concat([frame, frame.iloc[:1]]), **base)
    with pytest.raises(AnalysisError, match="unknown covariance"):
        fit_mmrm(frame, **base, covariance="XYZ")  # type: ignore[arg-type]
    with pytest.raises(AnalysisError, match="reference arm"):
        fit_mmrm(frame, **base, reference_arm="nobody")
    with pytest.raises(AnalysisError, match="numeric"):
        fit_mmrm(frame.assign(chg="x"), **base)


@pytest.mark.parametrize("structure", ["UN", "CS", "CSH", "AR1", "ARH1", "TOEP", "TOEPH"])
def test_mmrm_analytic_gradient_matches_finite_differences(structure: str) -> None:
    """The analytic REML gradient equals central differences of the criterion."""
    from analysis.estimators._covariance import n_parameters
    from analysis.estimators.mmrm import _group_patterns, _RemlProblem

    frame = read_dataset("mmrm_a.csv").dropna(subset=["chg"])
    visits = {"W04": 0, "W08": 1, "W12": 2, "W16": 3}
    rng = np.random.default_rng(5)
    x = np.column_stack([np.ones(len(frame)), frame["base"], frame["arm"] == "active"])
    codes = pd.factorize(frame["subject"])[0].astype(float)
    position = frame["visit"].map(visits).to_numpy(dtype=float)
    patterns = _group_patterns(codes, position, x.astype(float), frame["chg"].to_numpy(float))
    problem = _RemlProblem(patterns, structure, 4, len(frame), 3)  # type: ignore[arg-type]
    theta = rng.normal(0, 0.2, n_parameters(structure, 4)) + np.r_[1.0, np.zeros(99)][
        : n_parameters(structure, 4)
    ]
    ev = problem.evaluate(theta)
    assert ev is not None
    numeric = np.empty_like(theta)
    for i in range(len(theta)):
        step = np.zeros_like(theta)
        step[i] = 1e-6
        plus, minus = problem.evaluate(theta + step), problem.evaluate(theta - step)
        assert plus is not None and minus is not None
        numeric[i] = (plus.objective - minus.objective) / 2e-6
    assert_allclose(ev.gradient, numeric, rtol=1e-5, atol=1e-4)


def test_mmrm_toeplitz_optimum_of_dense_likelihood() -> None:
    """Toeplitz fit: -2 l_R recomputed densely (subject by subject) at the fitted Sigma equals
    the reported criterion, and moving the lag-1 correlation either way increases it."""
    frame = read_dataset("mmrm_a.csv")
    result = fit_mmrm(
        frame, outcome="chg", arm="arm", visit="visit", subject="subject",
        reference_arm="control", baseline="base", covariance="TOEP",
    )
    data = frame.dropna(subset=["chg"]).sort_values(["subject", "visitnum"])
    visits = ["W04", "W08", "W12", "W16"]
    cols = [((data["arm"] == a) & (data["visit"] == v)).to_numpy(float)
            for a in ("control", "active") for v in visits]
    cols += [(data["base"] * (data["visit"] == v)).to_numpy(float) for v in visits]
    x = np.column_stack(cols)
    y = data["chg"].to_numpy(float)
    groups = [np.flatnonzero(data["subject"].to_numpy() == s) for s in data["subject"].unique()]
    pos = data["visitnum"].to_numpy(int) - 1

    def dense(sigma: np.ndarray) -> float:
        a = np.zeros((x.shape[1], x.shape[1]))
        b = np.zeros(x.shape[1])
        c = logdet = 0.0
        for rows in groups:
            v = sigma[np.ix_(pos[rows], pos[rows])]
            w = np.linalg.inv(v)
            a += x[rows].T @ w @ x[rows]
            b += x[rows].T @ w @ y[rows]
            c += y[rows] @ w @ y[rows]
            logdet += np.linalg.slogdet(v)[1]
        beta = np.linalg.solve(a, b)
        n, p = x.shape
        return float(logdet + np.linalg.slogdet(a)[1] + c - b @ beta + (n - p) * np.log(2 * np.pi))

    sigma = np.array(result.covariance)
    assert dense(sigma) == pytest.approx(result.parameters["minus2_reml_loglik"], rel=1e-10)
    lag1 = np.abs(np.subtract.outer(range(4), range(4))) == 1
    for delta in (-0.01, 0.01):
        assert dense(sigma + delta * sigma[0, 0] * lag1) > dense(sigma)


def test_mmrm_row_order_does_not_matter() -> None:
    """Shuffling the rows gives the same estimates, SEs and df."""
    frame = read_dataset("mmrm_b.csv")
    kwargs: dict[str, Any] = {
        "outcome": "chg", "arm": "arm", "visit": "visit", "subject": "subject",
        "reference_arm": "placebo", "baseline": "base",
    }
    a = fit_mmrm(frame, **kwargs)
    b = fit_mmrm(frame.sample(frac=1.0, random_state=3), **kwargs)
    for ea, eb in zip(a.effects, b.effects, strict=True):
        assert_allclose([eb.estimate, eb.se, eb.df], [ea.estimate, ea.se, ea.df], rtol=1e-6)


def test_mmrm_warns_when_covariance_is_degenerate() -> None:
    """Identical values at every visit (correlation 1) give warnings, not a crash."""
    rng = np.random.default_rng(1)
    n = 40
    frame = pd.DataFrame(
        {
            "s": np.repeat(np.arange(n), 3),
            "arm": np.repeat(rng.choice(["a", "b"], n), 3),
            "v": np.tile(["1", "2", "3"], n),
            "y": np.repeat(rng.normal(size=n), 3),
        }
    )
    result = fit_mmrm(frame, outcome="y", arm="arm", visit="v", subject="s", covariance="UN")
    assert any("did not converge" in w for w in result.warnings)
    assert any("residual df" in w for w in result.warnings)
