"""Reference-based multiple imputation and Rubin's rules against the hand-derived worked
examples of /work/shared/reference/estimands-and-missing-data.md (MI-1..MI-4 and MI-7 were
checked there against rbmi's own R functions; TP-1 by scipy), and the imputation-model crash
of issue #17 (design columns from the levels of the missing rows only)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.estimators.ancova import fit_ancova
from analysis.imputation import conditional_distribution, rubin_rules, strategy_distribution
from analysis.results import AnalysisError
from analysis.sensitivity import impute_and_pool, tipping_point

AR1 = np.array([[1, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 1]])
MU_ACT, MU_REF = [1, 2, 3], [0.5, 1, 1.5]


@pytest.mark.parametrize(("strategy", "marginal", "conditional"), [
    ("mar", (1, 2, 3), (2.25, 3.125)),
    ("jr", (1, 1, 1.5), (1.25, 1.625)),
    ("cr", (0.5, 1, 1.5), (1.5, 1.75)),
    ("cir", (1, 1.5, 2), (1.75, 2.125)),
    ("lmcf", (1, 1, 1), (1.25, 1.125)),
])
def test_mi1_strategies(strategy: str, marginal: tuple[float, ...],
                        conditional: tuple[float, ...]) -> None:
    mean, sigma = strategy_distribution(MU_ACT, MU_REF, AR1, AR1, 2, strategy)
    assert mean.tolist() == pytest.approx(marginal)
    cmean, ccov = conditional_distribution(mean, sigma, [1.5, None, None])
    assert cmean.tolist() == pytest.approx(conditional)
    assert ccov == pytest.approx(np.array([[0.75, 0.375], [0.375, 0.9375]]))


def test_mi2_jump_to_reference_covariance() -> None:
    _, sigma = strategy_distribution([0, 0], [0, 0], np.array([[4.0, 1], [1, 2]]),
                                     np.array([[1.0, 0.5], [0.5, 1]]), 2, "jr")
    assert sigma == pytest.approx(np.array([[4, 2], [2, 1.75]]))
    assert sigma[1, 0] / sigma[0, 0] == pytest.approx(0.5)
    assert sigma[1, 1] - sigma[1, 0] ** 2 / sigma[0, 0] == pytest.approx(0.75)


@pytest.mark.parametrize(("strategy", "expected"), [
    ("jr", (2.25, 1.625)), ("cir", (2.25, 2.625)), ("lmcf", (2.25, 2.125))])
def test_mi3_intermittent_gap_before_the_event(strategy: str,
                                               expected: tuple[float, ...]) -> None:
    mean, sigma = strategy_distribution(MU_ACT, MU_REF, AR1, AR1, 3, strategy)
    assert conditional_distribution(mean, sigma, [1.5, None, None])[0].tolist() == \
        pytest.approx(expected)


def test_mi4_an_observed_post_event_value_is_conditioned_on() -> None:
    mean, sigma = strategy_distribution(MU_ACT, MU_REF, AR1, AR1, 2, "jr")
    cmean, ccov = conditional_distribution(mean, sigma, [1.5, None, 2.0])
    assert cmean.tolist() == pytest.approx([1.4]) and ccov == pytest.approx(np.array([[0.6]]))


def test_event_before_the_first_visit_makes_jr_and_cir_copy_reference() -> None:
    for strategy in ("jr", "cir"):
        mean, sigma = strategy_distribution(MU_ACT, MU_REF, AR1 * 2, AR1, 1, strategy)
        assert mean.tolist() == MU_REF and sigma.tolist() == AR1.tolist()
    with pytest.raises(AnalysisError):
        strategy_distribution(MU_ACT, MU_REF, AR1, AR1, 1, "lmcf")


def test_mi7_rubin_rules_with_barnard_rubin_df() -> None:
    estimates, ses = [1.10, 0.95, 1.20, 1.05, 0.90], [0.40, 0.42, 0.41, 0.39, 0.40]
    pooled = rubin_rules(estimates, ses, 97)
    assert pooled.estimate == pytest.approx(1.04)
    assert pooled.within == pytest.approx(0.16332)
    assert pooled.between == pytest.approx(0.01425)
    assert pooled.total == pytest.approx(0.18042)
    assert pooled.fmi == pytest.approx(0.094779, abs=5e-7)
    assert pooled.df == pytest.approx(72.11436, rel=1e-6)
    assert rubin_rules(estimates, ses).df == pytest.approx(445.2840, rel=1e-6)
    with pytest.raises(AnalysisError):
        rubin_rules([1.0], [0.1])


def test_tp1_pooling_at_delta_zero() -> None:
    """TP-1: three fixed imputations of two post-event ACT values, two-sample t (nu_com 14)."""
    act = [5, 7, 6, 8, 9, 7]
    ctl = [3, 4, 2, 5, 4, 3, 4, 3]
    estimates, ses = [], []
    for imputed in ((6.0, 7.0), (5.0, 8.0), (6.5, 5.5)):
        frame = pd.DataFrame({"arm": ["act"] * 8 + ["ctl"] * 8,
                              "y": [*act, *imputed, *ctl]})
        effect = fit_ancova(frame, outcome="y", arm="arm", reference_arm="ctl").effects[0]
        estimates.append(effect.estimate)
        ses.append(effect.se)
        assert effect.df == 14
    assert estimates == pytest.approx([3.375, 3.375, 3.25])
    assert ses == pytest.approx([0.548944, 0.610547, 0.566947], rel=1e-5)
    pooled = rubin_rules(estimates, ses, 14)
    assert pooled.within == pytest.approx(0.3318452, rel=1e-6)
    assert pooled.between == pytest.approx(0.0052083, rel=1e-4)
    assert pooled.total == pytest.approx(0.3387897, rel=1e-6)
    assert pooled.df == pytest.approx(12.069, abs=5e-4)
    p = 2 * stats.t.sf(pooled.estimate / math.sqrt(pooled.total), pooled.df)
    assert p == pytest.approx(9.30e-05, rel=1e-2)


def _frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    arm = np.where(np.arange(n) % 2 == 0, "act", "pbo")
    site = np.array(["s1", "s2", "s3"])[np.arange(n) % 3]
    baseline = rng.normal(10, 2, n)
    y = baseline + np.where(arm == "act", 2.0, 0.0) + rng.normal(0, 1, n)
    return pd.DataFrame({"arm": arm, "site": site, "baseline": baseline, "y": y})


def test_missing_rows_from_some_levels_only_do_not_crash() -> None:
    """Issue #17: missing values only at site s1 and only in one arm built a 4-column design
    for the missing rows against a 7-column model ('matmul ... size 7 is different from 4')."""
    frame = _frame()
    frame["site"] = np.array(["s1", "s2", "s3", "s4", "s5"])[np.arange(len(frame)) % 5]
    gone = (frame["site"] == "s1") & (frame["arm"] == "act")
    frame.loc[gone, "y"] = np.nan
    for strategy in ("mar", "j2r", "cr", "cir"):
        pooled = impute_and_pool(frame, outcome="y", arm="arm", reference_arm="pbo",
                                 covariates=["baseline"], strata=["site"], strategy=strategy,
                                 n_imputations=5, seed=1)  # type: ignore[arg-type]
        assert pooled[0].n_imputed == int(gone.sum()) and math.isfinite(pooled[0].estimate)


def test_no_missing_data_gives_the_complete_data_estimate() -> None:
    frame = _frame()
    pooled = impute_and_pool(frame, outcome="y", arm="arm", reference_arm="pbo",
                             covariates=["baseline"], n_imputations=5, seed=1)[0]
    direct = fit_ancova(frame, outcome="y", arm="arm", reference_arm="pbo",
                        covariates=["baseline"]).effects[0]
    assert pooled.estimate == pytest.approx(direct.estimate, rel=1e-12)
    assert pooled.se == pytest.approx(direct.se, rel=1e-12)
    nu = float(direct.df or 0)
    assert pooled.df == pytest.approx(nu * (nu + 1) / (nu + 3))  # B = 0: nu_obs (rbmi's rule)


def test_reference_based_imputation_pulls_towards_the_reference_and_delta_is_linear() -> None:
    frame = _frame(80)
    gone = (frame["arm"] == "act") & (np.arange(80) % 4 == 0)  # 20 active values missing
    frame.loc[gone, "y"] = np.nan
    args = {"outcome": "y", "arm": "arm", "reference_arm": "pbo", "n_imputations": 40,
            "seed": 5}
    mar = impute_and_pool(frame, strategy="mar", **args)[0]  # type: ignore[arg-type]
    j2r = impute_and_pool(frame, strategy="j2r", **args)[0]  # type: ignore[arg-type]
    assert j2r.estimate < mar.estimate
    # no covariates: every imputed active value enters the difference in means with weight
    # 1/n_act, so shifting the 20 imputed values by delta moves the estimate by 20/40 delta
    results, _ = tipping_point(frame, deltas=[0.0, -1.0, -2.0], **args)  # type: ignore[arg-type]
    assert results[1].estimate - results[0].estimate == pytest.approx(-0.5, abs=1e-9)
    assert results[2].estimate - results[0].estimate == pytest.approx(-1.0, abs=1e-9)
