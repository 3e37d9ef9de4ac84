"""Per-eye GEE and random-intercept LMM against geepack::geeglm and nlme::lme."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from numpy.testing import assert_allclose
from reference_data import read_dataset, read_reference

from analysis.estimators.gee import fit_gee, fit_random_intercept
from analysis.results import AnalysisError

CASES = read_reference("gee")["cases"]
IDS = [f"{c['file']}: {c['formula']}" for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gee_matches_geepack(case: dict[str, Any]) -> None:
    """tests/reference/gee.R: geeglm(chg ~ arm [+ base + age], id = subject,
    corstr = "exchangeable", control = geese.control(epsilon = 1e-12)); robust san.se."""
    result = fit_gee(
        read_dataset(case["file"]), outcome="chg", arm="arm", cluster="subject",
        reference_arm=case["reference"], covariates=case["covariates"],
    )
    ref = case["gee"]
    eff = result.effects[0]
    assert_allclose([eff.estimate, eff.se], [ref["estimate"], ref["se"]], rtol=1e-4)
    assert eff.p_value == pytest.approx(ref["p_value"], abs=1e-4)
    assert result.parameters["working_correlation"] == pytest.approx(ref["alpha"], rel=1e-4)
    assert result.parameters["scale"] == pytest.approx(ref["scale"], rel=1e-4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_random_intercept_matches_lme(case: dict[str, Any]) -> None:
    """tests/reference/gee.R: lme(chg ~ arm [+ base + age], random = ~ 1 | subject,
    method = "REML"); intervals(fit, which = "fixed")."""
    result = fit_random_intercept(
        read_dataset(case["file"]), outcome="chg", arm="arm", cluster="subject",
        reference_arm=case["reference"], covariates=case["covariates"],
    )
    ref = case["lme"]
    eff = result.effects[0]
    assert result.warnings == ()
    assert_allclose(
        [eff.estimate, eff.se, eff.ci_low, eff.ci_high],
        [ref["estimate"], ref["se"], ref["ci_low"], ref["ci_high"]],
        rtol=1e-4,
    )
    assert eff.df == ref["df"]
    assert eff.p_value == pytest.approx(ref["p_value"], abs=1e-4)
    assert_allclose(
        [result.parameters["sd_cluster"], result.parameters["sd_residual"]],
        [ref["sd_cluster"], ref["sd_residual"]],
        rtol=1e-4,
    )


def test_random_intercept_needs_clusters() -> None:
    """One row per cluster leaves nothing to correlate: AnalysisError."""
    frame = pd.DataFrame({"y": [1.0, 2, 3, 4], "arm": list("abab"), "id": [1, 2, 3, 4]})
    with pytest.raises(AnalysisError, match="one row"):
        fit_random_intercept(frame, outcome="y", arm="arm", cluster="id")


def test_gee_warns_with_few_clusters() -> None:
    """Few clusters trigger the small-sample warning on the sandwich SE."""
    frame = read_dataset("gee_a.csv")
    small = frame[frame["subject"].isin(frame["subject"].unique()[:20])]
    result = fit_gee(small, outcome="chg", arm="arm", cluster="subject")
    assert any("clusters" in w for w in result.warnings)
