"""ANCOVA (analysis.estimators.ancova) against R lm + emmeans."""

from __future__ import annotations

import random
import statistics
from fractions import Fraction
from typing import Any

import pandas as pd
import pytest
from numpy.testing import assert_allclose
from reference_data import read_dataset, read_reference

from analysis.estimators.ancova import fit_ancova
from analysis.report_builder import fmt
from analysis.results import AnalysisError, sample_mean, sample_sd

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


def test_an_arm_whose_decimals_average_to_zero_has_mean_zero_not_float_noise() -> None:
    """HbA1c changes of -0.3, 0.1 and 0.2 average to 0 in the data's decimals, but their binary
    forms sum to 2.8e-17: the arm's observed mean is 0.0 (the report prints 0.00), not
    0.000000000000000009, whose 28 characters the report could not fit in table 14.2.1.1 (a
    run failed on such data). Equal values have SD 0.0. The other arm keeps its mean and SD."""
    frame = pd.DataFrame({
        "arm": ["a"] * 6 + ["b"] * 6,
        "chg": [-0.3, 0.1, 0.2, -0.3, 0.1, 0.2, -1.1, -0.4, 0.6, -2.3, 0.9, -0.5],
    })  # fmt: skip
    assert sum(frame["chg"][:6]) != 0.0 and frame["chg"][:6].mean() != 0.0  # the noise
    result = fit_ancova(frame, outcome="chg", arm="arm", reference_arm="b")
    arms = {a.arm: a for a in result.arms}
    assert arms["a"].mean == 0.0 and fmt(arms["a"].mean, 2) == "0.00"
    assert arms["b"].mean == pytest.approx(statistics.fmean(frame["chg"][6:]), abs=1e-15)
    assert arms["b"].sd == pytest.approx(statistics.stdev(frame["chg"][6:]), rel=1e-12)
    same = fit_ancova(
        pd.DataFrame({"arm": ["a"] * 3 + ["b"] * 3, "chg": [1.1] * 3 + [0.7, 0.2, 1.3]}),
        outcome="chg", arm="arm", reference_arm="b",
    )  # fmt: skip
    assert {a.arm: a.sd for a in same.arms}["a"] == 0.0


def test_sample_mean_and_sd_agree_with_exact_arithmetic() -> None:
    """On data without a zero sum the noise-free mean and SD are the usual ones (exact
    rational arithmetic, statistics.mean/stdev, to 1e-12); none for no values (mean) or one
    (SD); a sum that is zero only after rounding to binary is zero."""
    rng = random.Random(21)
    for _ in range(50):
        xs = [round(rng.gauss(5, 3), rng.choice([1, 2, 4])) for _ in range(rng.randint(2, 40))]
        assert sample_mean(xs) == pytest.approx(float(statistics.mean(map(Fraction, xs))),
                                                rel=1e-12, abs=1e-15)  # fmt: skip
        assert sample_sd(xs) == pytest.approx(statistics.stdev(xs), rel=1e-12, abs=1e-15)
    assert sample_mean([]) is None and sample_sd([4.2]) is None
    assert sample_mean([0.1, 0.2, -0.3]) == 0.0 and sample_mean([1e-20, -1e-20]) == 0.0
    assert sample_mean([1e-20, 2e-20]) == pytest.approx(1.5e-20)  # tiny but not noise
    # missing values left out, as pandas' mean and std leave them out
    with_missing = pd.Series([1.5, float("nan"), 2.5, 4.0])
    assert sample_mean(with_missing) == pytest.approx(float(with_missing.mean()), rel=1e-15)
    assert sample_sd(with_missing) == pytest.approx(float(with_missing.std()), rel=1e-12)
    assert sample_mean([float("nan")]) is None and sample_sd([float("nan"), 1.0]) is None
