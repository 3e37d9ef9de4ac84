"""Estimators added by issue #17, against R (tests/reference/issue17.R → issue17.json, the
tolerances of the existing reference tests) and the worked examples of the estimands reference
(§7.1 Y-1, §7.3 C-1, §7.4 G-1): Yates' chi-square, Cox score / likelihood-ratio / Wald tests,
the GEE model-based (naive) SE, one effect-label convention and the ci_method filter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.estimators.binary import compare_proportions, fit_cmh, fit_logistic, yates_chi_square
from analysis.estimators.gee import fit_gee
from analysis.estimators.survival import fit_cox
from analysis.results import AnalysisError
from tests.analysis.reference_data import read_dataset, read_reference
from tests.analysis.test_survival import _cox_arguments

REF = read_reference("issue17")


@pytest.mark.parametrize("case", REF["yates"], ids=lambda c: c["file"])
def test_yates_chi_square_matches_r_chisq_test(case: dict) -> None:  # type: ignore[type-arg]
    result = compare_proportions(read_dataset(case["file"]), outcome="resp", arm="arm",
                                 reference_arm=case["reference"])
    test = next(t for t in result.tests if t.name.startswith("pearson_chi2_yates"))
    assert test.statistic == pytest.approx(case["statistic"], rel=1e-9)
    assert test.p_value == pytest.approx(case["p_value"], rel=1e-9)


def test_yates_worked_example_y1() -> None:
    statistic, p = yates_chi_square(np.array([[15, 5], [8, 12]]))
    assert statistic == pytest.approx(3.682864, rel=1e-6) == REF["yates_y1"]["statistic"]
    assert p == pytest.approx(0.054974, abs=5e-7)
    assert yates_chi_square(np.array([[5, 5], [5, 6]])) == (0.0, 1.0)  # |ad - bc| < N/2


@pytest.mark.parametrize("case", REF["cox"], ids=lambda c: c["rhs"])
def test_cox_score_lr_and_wald_tests_match_r(case: dict) -> None:  # type: ignore[type-arg]
    file = "survival_a.csv" if case["reference"] == "control" else "survival_b.csv"
    result = fit_cox(read_dataset(file), time="time", event="event", arm="arm",
                     reference_arm=case["reference"], **_cox_arguments(case["rhs"]))
    assert result.test("score").statistic == pytest.approx(case["score"], rel=1e-6)
    assert result.test("score").p_value == pytest.approx(case["score_p"], rel=1e-6)
    assert result.test("likelihood_ratio").statistic == pytest.approx(case["lrt"], rel=1e-6)
    assert result.test("wald").p_value == pytest.approx(case["wald_p"], rel=1e-6)
    assert result.test("score").df == case["df"]


def test_cox_worked_example_c1_score_test_is_the_log_rank_test() -> None:
    frame = pd.DataFrame({
        "time": [6, 10, 15, 22, 30, 3, 5, 8, 12, 18],
        "event": [1, 0, 1, 0, 1, 1, 1, 1, 0, 1],
        "arm": ["ACT"] * 5 + ["PBO"] * 5,
    })
    result = fit_cox(frame, time="time", event="event", arm="arm", reference_arm="PBO")
    c1 = REF["cox_c1"]
    assert result.test("score").statistic == pytest.approx(2.009076, rel=1e-6)
    assert result.test("score").statistic == pytest.approx(c1["score"], rel=1e-9)
    assert result.test("likelihood_ratio").statistic == pytest.approx(1.949748, rel=1e-6)
    assert result.test("wald").p_value == pytest.approx(0.178698, rel=1e-5)
    assert result.effect("ACT / PBO").estimate == pytest.approx(0.306764, rel=1e-5)


@pytest.mark.parametrize("case", REF["gee"], ids=lambda c: f"{c['file']} {c['covariates']}")
def test_gee_naive_se_matches_geepack(case: dict) -> None:  # type: ignore[type-arg]
    result = fit_gee(read_dataset(case["file"]), outcome="chg", arm="arm", cluster="subject",
                     reference_arm=case["reference"], covariates=case["covariates"])
    contrast = f"active - {case['reference']}"
    robust = result.effect(contrast, ci_method="wald_robust")
    naive = result.effect(contrast, ci_method="wald_naive")
    assert robust.se == pytest.approx(case["se_robust"], rel=1e-4)
    assert naive.se == pytest.approx(case["se_naive"], rel=1e-4)
    assert naive.estimate == robust.estimate == pytest.approx(case["estimate"], rel=1e-6)


def test_gee_worked_example_g1_naive_and_robust() -> None:
    """G-1: 6 clusters x 2 visits, independence-like data; geepack's scale = 26/12."""
    rows = []
    for k, (arm, values) in enumerate([(0, (1, 3)), (0, (2, 2)), (0, (4, 6)),
                                       (1, (5, 7)), (1, (3, 5)), (1, (6, 4))]):
        rows += [{"subject": f"c{k}", "arm": "b" if arm else "a", "y": v} for v in values]
    result = fit_gee(pd.DataFrame(rows), outcome="y", arm="arm", cluster="subject",
                     reference_arm="a")
    robust = result.effect("b - a", ci_method="wald_robust")
    naive = result.effect("b - a", ci_method="wald_naive")
    assert robust.estimate == pytest.approx(2.0)
    assert robust.se**2 == pytest.approx(0.888889, rel=1e-5)
    assert result.parameters["working_correlation"] == pytest.approx(3 / 13)
    assert naive.se**2 == pytest.approx(0.888889, rel=1e-5)  # exchangeable, geepack alpha


def test_one_label_convention_and_the_ci_method_filter() -> None:
    data = read_dataset("binary_a.csv")
    logistic = fit_logistic(data, outcome="resp", arm="arm", reference_arm="control",
                            profile_ci=True)
    assert {e.contrast for e in logistic.effects} == {"active / control"}
    wald = logistic.effect("active / control", ci_method="wald")
    profile = logistic.effect("active / control", ci_method="profile_likelihood")
    assert wald.estimate == profile.estimate and wald.ci_low != profile.ci_low
    with pytest.raises(AnalysisError, match="with ci_method 'sato'"):
        logistic.effect("active / control", ci_method="sato")
    cmh = fit_cmh(data, outcome="resp", arm="arm", stratum="stratum", reference_arm="control")
    assert [e.contrast for e in cmh.effects] == ["active / control", "active - control"]
    proportions = compare_proportions(data, outcome="resp", arm="arm", reference_arm="control")
    assert {e.contrast for e in proportions.effects} == {"active - control"}


# ------------------------------------------------------------------ MMRM denominator df


def test_between_within_df_worked_example_d1() -> None:
    from analysis.estimators.mmrm import between_within_df

    assert between_within_df(55, 20, 2, 4) == (17, 31)  # contrast of arm at week 12: 17
    from scipy import stats

    assert 2 * stats.t.sf(2.2, 17) == pytest.approx(0.041925, abs=5e-7)
    assert 2 * stats.t.sf(2.2, 48) == pytest.approx(0.032654, abs=5e-7)  # residual 55 - 7


@pytest.mark.parametrize("ddf", ["residual", "between_within", "asymptotic"])
def test_mmrm_df_options(ddf: str) -> None:
    from scipy import stats

    from analysis.estimators.mmrm import fit_mmrm

    data = read_dataset("mmrm_a.csv")
    kwargs = {"outcome": "chg", "arm": "arm", "visit": "visit", "subject": "subject",
              "reference_arm": "control", "baseline": "base", "covariance": "UN"}
    satterthwaite = fit_mmrm(data, **kwargs)  # type: ignore[arg-type]
    result = fit_mmrm(data, ddf=ddf, **kwargs)  # type: ignore[arg-type]
    complete = data.dropna(subset=["chg"])
    n_obs, n_subjects = len(complete), complete["subject"].nunique()
    k, n_arms = complete["visit"].nunique(), complete["arm"].nunique()
    expected = {
        "residual": n_obs - (n_arms * k + k),  # cells arm x visit + baseline x visit
        "between_within": min(n_subjects - (n_arms - 1 + 1) - 1,
                              n_obs - n_subjects - (k - 1) * (n_arms + 1)),
        "asymptotic": None,
    }[ddf]
    for eff in result.effects:
        same = satterthwaite.effect(eff.contrast, eff.visit)
        assert eff.estimate == pytest.approx(same.estimate) and eff.se == pytest.approx(same.se)
        assert eff.df == expected and eff.ci_method == ddf
        if expected is None:
            z = stats.norm.ppf(0.975)
            assert eff.ci_high - eff.estimate == pytest.approx(z * eff.se)
        else:
            t = stats.t.ppf(0.975, expected)
            assert eff.ci_high - eff.estimate == pytest.approx(t * eff.se)


# ------------------------------------------------------------------ Firth (separation)


def test_firth_worked_example_f1_closed_form_and_profile() -> None:
    from analysis.estimators.binary import firth_profile, fit_firth_model

    x = np.column_stack([np.ones(20), np.r_[np.ones(10), np.zeros(10)]])
    y = np.r_[np.ones(10), np.ones(3), np.zeros(7)]  # ACT 10/10, PBO 3/10: separation
    fit = fit_firth_model(x, y)
    assert fit.beta[1] == pytest.approx(np.log(45), rel=1e-9)  # add 1/2 to every cell
    assert fit.beta[0] == pytest.approx(np.log(3.5 / 7.5), rel=1e-9)
    assert fit.loglik == pytest.approx(-6.611801, abs=5e-7)
    assert np.sqrt(np.diag(fit.cov)) == pytest.approx([0.678935, 1.663044], abs=5e-7)
    assert fit_firth_model(x, y, {1: 0.0}).loglik == pytest.approx(-12.118014, abs=5e-7)
    low, high, p = firth_profile(x, y, fit, 1, 0.05)
    assert (low, high) == pytest.approx((1.346790, 8.770175), abs=5e-6)
    assert p == pytest.approx(0.0009050, abs=5e-8)
    low, high, p = firth_profile(x, y, fit, 0, 0.05)
    assert (low, high) == pytest.approx((-2.177092, 0.450123), abs=5e-6)
    assert p == pytest.approx(0.222461, abs=5e-6)


def test_firth_worked_example_f2_continuous_covariate() -> None:
    from analysis.estimators.binary import firth_profile, fit_firth_model

    xs = np.array([0.5, 1.1, 1.6, 2.0, 2.3, 2.9, 3.2, 3.8, 4.1, 4.7])
    x = np.column_stack([np.ones(10), xs])
    y = np.array([0, 0, 0, 1, 0, 1, 0, 1, 1, 1.0])
    fit = fit_firth_model(x, y)
    assert fit.beta == pytest.approx([-2.913255, 1.110852], abs=5e-6)
    assert fit.loglik == pytest.approx(-3.690509, abs=5e-7)
    assert np.sqrt(np.diag(fit.cov)) == pytest.approx([2.028804, 0.717505], abs=5e-6)
    low, high, p = firth_profile(x, y, fit, 1, 0.05)
    assert (low, high, p) == pytest.approx((0.034558, 3.094746, 0.041902), abs=5e-6)
    low, high, p = firth_profile(x, y, fit, 0, 0.05)
    assert (low, high, p) == pytest.approx((-8.390816, 0.166459, 0.066073), abs=5e-6)


def test_logistic_falls_back_to_firth_under_separation() -> None:
    """Issue #17: complete separation gave OR ~ 1e32 counted as p = 1."""
    frame = pd.DataFrame({"arm": ["ACT"] * 10 + ["PBO"] * 10,
                          "resp": [1] * 10 + [1] * 3 + [0] * 7})
    result = fit_logistic(frame, outcome="resp", arm="arm", reference_arm="PBO")
    effect = result.effect("ACT / PBO")
    assert effect.ci_method == "firth_profile_penalized_likelihood"
    assert effect.estimate == pytest.approx(45.0, rel=1e-9)
    assert (effect.ci_low, effect.ci_high) == pytest.approx((3.845, 6439.3), rel=1e-3)
    assert effect.p_value == pytest.approx(0.0009050, abs=5e-8)
    assert any("Firth" in w for w in result.warnings) and "Firth" in result.model
    # without separation the maximum-likelihood fit stays
    ml = fit_logistic(read_dataset("binary_a.csv"), outcome="resp", arm="arm",
                      reference_arm="control")
    assert ml.effects[0].ci_method == "wald" and "Firth" not in ml.model
