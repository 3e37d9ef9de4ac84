"""Property tests: invariances every estimator must respect, on random data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_data import read_dataset

from analysis.estimators import estimate_kaplan_meier, fit_ancova, fit_mmrm


def _trial(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = np.array(["control", "active"] * (n // 2))
    return pd.DataFrame(
        {
            "arm": arm,
            "stratum": rng.choice(["a", "b", "c"], n),
            "base": rng.normal(10, 2, n),
            "y": rng.normal(0, 1, n) - 0.5 * (arm == "active"),
        }
    )


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(20, 80), st.floats(-100, 100))
def test_ancova_effect_is_shift_invariant(seed: int, n: int, shift: float) -> None:
    """Adding a constant to the outcome moves LS means, not the treatment effect."""
    frame = _trial(seed, 2 * (n // 2))
    kwargs = {"outcome": "y", "arm": "arm", "reference_arm": "control",
              "covariates": ["base"], "strata": ["stratum"]}
    a = fit_ancova(frame, **kwargs)  # type: ignore[arg-type]
    b = fit_ancova(frame.assign(y=frame["y"] + shift), **kwargs)  # type: ignore[arg-type]
    assert b.effects[0].estimate == pytest.approx(a.effects[0].estimate, abs=1e-8)
    assert b.effects[0].se == pytest.approx(a.effects[0].se, rel=1e-8)
    assert b.ls_means[0].estimate == pytest.approx(a.ls_means[0].estimate + shift, abs=1e-8)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(20, 80))
def test_ancova_swapping_reference_flips_the_effect(seed: int, n: int) -> None:
    """The active - control difference is minus the control - active difference."""
    frame = _trial(seed, 2 * (n // 2))
    a = fit_ancova(frame, outcome="y", arm="arm", reference_arm="control", covariates=["base"])
    b = fit_ancova(frame, outcome="y", arm="arm", reference_arm="active", covariates=["base"])
    assert b.effects[0].estimate == pytest.approx(-a.effects[0].estimate, abs=1e-10)
    assert b.effects[0].p_value == pytest.approx(a.effects[0].p_value, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 60), st.sampled_from(["log", "log-log"]))
def test_kaplan_meier_is_monotone_and_inside_its_ci(seed: int, n: int, conf_type: str) -> None:
    """Survival never increases, stays in [0, 1], and lies inside its CI where defined."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "time": np.ceil(rng.exponential(10, 2 * n)),
            "event": rng.integers(0, 2, 2 * n),
            "arm": ["a", "b"] * n,
        }
    )
    result = estimate_kaplan_meier(frame, time="time", event="event", arm="arm",
                                   conf_type=conf_type)  # type: ignore[arg-type]
    for curve in result.curves:
        surv = np.array(curve.survival)
        assert np.all(np.diff(surv) <= 0) and np.all((surv >= 0) & (surv <= 1))
        low, high = np.array(curve.ci_low), np.array(curve.ci_high)
        ok = ~np.isnan(low)
        assert np.all(low[ok] <= surv[ok] + 1e-12) and np.all(surv[ok] <= high[ok] + 1e-12)


def test_mmrm_visit_order_orders_the_output() -> None:
    """Visits come out in visit_order; an unknown visit there is fine, a missing one is not."""
    frame = read_dataset("mmrm_b.csv")
    base = {"outcome": "chg", "arm": "arm", "visit": "visit", "subject": "subject",
            "reference_arm": "placebo", "covariance": "CS"}
    result = fit_mmrm(frame, **base, visit_order=["V1", "V2", "V3", "V4"])  # type: ignore[arg-type]
    assert result.covariance_labels == ("V1", "V2", "V3")
    from analysis.results import AnalysisError

    with pytest.raises(AnalysisError, match="not in visit_order"):
        fit_mmrm(frame, **base, visit_order=["V1", "V2"])  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 100_000), st.integers(4, 30))
def test_estimators_fail_only_with_analysis_error_on_tiny_data(seed: int, n: int) -> None:
    """On tiny random trials every estimator returns strict-JSON results or AnalysisError."""
    import json

    from analysis.estimators import (
        compare_proportions,
        fit_cmh,
        fit_cox,
        fit_gee,
        fit_logistic,
        fit_random_intercept,
    )
    from analysis.results import AnalysisError
    from analysis.subgroups import estimate_subgroup_effects

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "arm": rng.choice(["a", "b"], n), "s": rng.choice(["x", "y"], n),
            "g": rng.choice(["m", "f"], n), "x": rng.normal(size=n), "y": rng.normal(size=n),
            "r": rng.integers(0, 2, n), "t": np.ceil(rng.exponential(5, n)),
            "e": rng.integers(0, 2, n), "c": rng.integers(0, n // 2 + 1, n),
        }
    )
    calls = [
        lambda: fit_ancova(frame, outcome="y", arm="arm", covariates=["x"], strata=["s"]),
        lambda: fit_logistic(frame, outcome="r", arm="arm", covariates=["x"], profile_ci=True),
        lambda: compare_proportions(frame, outcome="r", arm="arm"),
        lambda: fit_cmh(frame, outcome="r", arm="arm", stratum="s"),
        lambda: estimate_kaplan_meier(frame, time="t", event="e", arm="arm", strata=["s"]),
        lambda: fit_cox(frame, time="t", event="e", arm="arm", covariates=["x"], strata=["s"]),
        lambda: fit_gee(frame, outcome="y", arm="arm", cluster="c"),
        lambda: fit_random_intercept(frame, outcome="y", arm="arm", cluster="c"),
        lambda: estimate_subgroup_effects(frame, outcome="r", arm="arm", subgroup="g",
                                          method="logistic"),
    ]
    for call in calls:
        try:
            result = call()
        except AnalysisError:
            continue
        json.dumps(result.to_dict(), allow_nan=False)
