"""ANCOVA (analysis.estimators.ancova) against R lm + emmeans."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from numpy.testing import assert_allclose
from reference_data import read_dataset, read_reference

from analysis.estimators.ancova import fit_ancova
from analysis.results import AnalysisError

CASES = read_reference("ancova")["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["r_call"] + " " + c["file"] for c in CASES])
def test_ancova_matches_r(case: dict[str, Any]) -> None:
    """tests/reference/ancova.R: lm(chg ~ arm + covariates + strata); emmeans(fit, ~ arm);
    contrast(emm, "trt.vs.ctrl", adjust = "none"); drop1(fit, test = "F")."""
    result = fit_ancova(
        read_dataset(case["file"]),
        outcome="chg",
        arm="arm",
        reference_arm=case["reference"],
        covariates=case["covariates"],
        strata=case["strata"],
    )
    for ref in case["lsmeans"]:
        lsm = result.ls_mean(ref["arm"])
        assert_allclose(
            [lsm.estimate, lsm.se, lsm.ci_low, lsm.ci_high, lsm.df],
            [ref["estimate"], ref["se"], ref["ci_low"], ref["ci_high"], ref["df"]],
            rtol=1e-6,
        )
    for ref in case["contrasts"]:
        eff = result.effect(ref["contrast"])
        assert_allclose(
            [eff.estimate, eff.se, eff.ci_low, eff.ci_high, eff.df],
            [ref["estimate"], ref["se"], ref["ci_low"], ref["ci_high"], ref["df"]],
            rtol=1e-6,
        )
        assert eff.p_value == pytest.approx(ref["p_value"], abs=1e-6)
    f_test = result.tests[0]
    assert f_test.statistic == pytest.approx(case["f_arm"], rel=1e-6)
    assert f_test.p_value == pytest.approx(case["f_arm_p"], abs=1e-6)
    assert f_test.df == case["f_arm_df"]
    assert result.parameters["residual_sd"] == pytest.approx(case["sigma"], rel=1e-6)


def test_ancova_counts_excluded_rows() -> None:
    """Rows with a missing outcome are excluded and reported in warnings and n_by_arm."""
    frame = read_dataset("ancova_a.csv")
    result = fit_ancova(frame, outcome="chg", arm="arm", reference_arm="control")
    n_missing = int(frame["chg"].isna().sum())
    assert sum(result.n_by_arm.values()) == len(frame) - n_missing
    assert result.warnings == (f"{n_missing} row(s) with missing values were excluded",)


def test_ancova_rejects_empty_cell() -> None:
    """A stratum level present in no analysed row cannot make the design rank deficient."""
    frame = pd.DataFrame(
        {"arm": ["a", "b"] * 4, "y": [1.0, 2, 3, 4, 5, 6, 7, 8], "x": [1.0] * 8}
    )
    with pytest.raises(AnalysisError, match="rank deficient"):
        fit_ancova(frame, outcome="y", arm="arm", covariates=["x"])
    with pytest.raises(AnalysisError, match="not in data"):
        fit_ancova(frame, outcome="nope", arm="arm")
