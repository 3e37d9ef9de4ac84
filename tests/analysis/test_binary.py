"""Binary estimators (analysis.estimators.binary) against R glm / prop.test / mantelhaen.test."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from reference_data import read_dataset, read_reference

from analysis.estimators.binary import compare_proportions, fit_cmh, fit_logistic
from analysis.results import AnalysisError

CASES = read_reference("binary")["cases"]
IDS = [f"{c['file']}-{'+'.join(c['covariates']) or 'none'}" for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_logistic_matches_r(case: dict[str, Any]) -> None:
    """tests/reference/binary.R: glm(resp ~ arm [+ base + stratum], family = binomial);
    confint.default(fit) for the Wald CI of the odds ratio; the profile-likelihood CI by
    uniroot on deviance(glm(resp ~ covariates, offset = b * arm)) (confint(fit) to 1e-4)."""
    covs = case["covariates"]
    result = fit_logistic(
        read_dataset(case["file"]),
        outcome="resp",
        arm="arm",
        reference_arm=case["reference"],
        covariates=[c for c in covs if c == "base"],
        strata=[c for c in covs if c == "stratum"],
        profile_ci=True,
    )
    ref = case["logistic"]
    eff, profile = result.effects
    assert profile.ci_method == "profile_likelihood"
    assert_allclose([profile.ci_low, profile.ci_high],
                    [ref["profile_low"], ref["profile_high"]], rtol=1e-8)
    assert profile.p_value == pytest.approx(ref["lrt_p"], abs=1e-8)
    # confint.glm interpolates a profile grid: agreement only to its own accuracy
    assert_allclose([profile.ci_low, profile.ci_high],
                    [ref["confint_glm_low"], ref["confint_glm_high"]], rtol=1e-4)
    assert result.warnings == ()
    assert eff.scale == "odds_ratio"
    assert_allclose([eff.estimate, eff.se], [ref["or"], ref["se"]], rtol=1e-6)
    assert_allclose([eff.ci_low, eff.ci_high], [ref["ci_low"], ref["ci_high"]], rtol=1e-6)
    assert eff.p_value == pytest.approx(ref["p_value"], abs=1e-6)
    assert result.parameters["deviance"] == pytest.approx(ref["deviance"], rel=1e-8)


@pytest.mark.parametrize("case", CASES[:2], ids=IDS[:2])
def test_proportions_match_r(case: dict[str, Any]) -> None:
    """tests/reference/binary.R: prop.test(x, n, correct = FALSE)$conf.int (Wilson) combined
    into Newcombe's hybrid score CI; fisher.test(table); chisq.test(table, correct = FALSE)."""
    result = compare_proportions(
        read_dataset(case["file"]), outcome="resp", arm="arm", reference_arm=case["reference"]
    )
    ref = case["proportions"]
    wald, newcombe = result.effects
    assert wald.ci_method == "wald" and newcombe.ci_method == "newcombe_hybrid_score"
    assert_allclose(
        [wald.estimate, wald.se, wald.ci_low, wald.ci_high],
        [ref["rd"], ref["wald_se"], ref["wald_low"], ref["wald_high"]],
        rtol=1e-6,
    )
    assert_allclose([newcombe.ci_low, newcombe.ci_high],
                    [ref["newcombe_low"], ref["newcombe_high"]], rtol=1e-6)
    label = f"{case['treatment']} - {case['reference']}"
    assert result.test(f"fisher_exact {label}").p_value == pytest.approx(ref["fisher_p"], abs=1e-6)
    chi = result.test(f"pearson_chi2 {label}")
    assert chi.statistic == pytest.approx(ref["chisq"], rel=1e-6)
    assert chi.p_value == pytest.approx(ref["chisq_p"], abs=1e-6)
    assert wald.p_value == pytest.approx(ref["wald_p"], abs=1e-6)


@pytest.mark.parametrize("case", CASES[:2], ids=IDS[:2])
@pytest.mark.parametrize("corrected", [False, True])
def test_cmh_matches_r(case: dict[str, Any], corrected: bool) -> None:
    """tests/reference/binary.R: mantelhaen.test(table(arm, resp, stratum), correct = ...);
    MH risk difference and Sato variance transcribed in R from Sato (1989)."""
    result = fit_cmh(
        read_dataset(case["file"]), outcome="resp", arm="arm", stratum="stratum",
        reference_arm=case["reference"], continuity_correction=corrected,
    )
    ref = case["cmh"]
    test = result.test("cmh")
    key = "_corrected" if corrected else ""
    assert test.statistic == pytest.approx(ref[f"statistic{key}"], rel=1e-6)
    assert test.p_value == pytest.approx(ref[f"p_value{key}"], abs=1e-6)
    odds, diff = result.effects
    assert_allclose([odds.estimate, odds.ci_low, odds.ci_high],
                    [ref["or"], ref["ci_low"], ref["ci_high"]], rtol=1e-6)
    assert_allclose([diff.estimate, diff.se], [ref["rd"], ref["rd_se"]], rtol=1e-6)


def test_logistic_warns_on_separation() -> None:
    """All responders in one arm and none in the other: a separation warning, no crash."""
    frame = pd.DataFrame({"arm": ["a"] * 10 + ["b"] * 10, "resp": [0] * 10 + [1] * 10})
    result = fit_logistic(frame, outcome="resp", arm="arm")
    assert any("separation" in w for w in result.warnings)


def test_binary_rejects_non_binary_outcome() -> None:
    """An outcome other than 0/1 raises AnalysisError naming the values."""
    frame = pd.DataFrame({"arm": ["a", "b", "a", "b"], "resp": [0, 1, 2, 1]})
    with pytest.raises(AnalysisError, match="must be 0/1"):
        compare_proportions(frame, outcome="resp", arm="arm")
    with pytest.raises(AnalysisError, match="exactly two arms"):
        fit_cmh(
            pd.DataFrame({"arm": list("abcabc"), "resp": [0, 1] * 3, "s": ["x"] * 6}),
            outcome="resp", arm="arm", stratum="s",
        )


def test_newcombe_interval_lies_within_bounds() -> None:
    """Newcombe's interval stays inside [-1, 1] even at 0% vs 100% response."""
    frame = pd.DataFrame({"arm": ["a"] * 5 + ["b"] * 5, "resp": [0] * 5 + [1] * 5})
    newcombe = compare_proportions(frame, outcome="resp", arm="arm").effects[1]
    assert -1.0 <= newcombe.ci_low <= newcombe.ci_high <= 1.0
    assert np.isclose(newcombe.estimate, 1.0)
