"""Survival estimators (analysis.estimators.survival) against R's survival package."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose
from reference_data import read_dataset, read_reference

from analysis.estimators.survival import estimate_kaplan_meier, fit_cox
from analysis.results import AnalysisError

CASES = read_reference("survival")["cases"]
IDS = [c["file"] for c in CASES]


def _nan(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("conf_type", ["log", "log-log"])
def test_kaplan_meier_matches_survfit(case: dict[str, Any], conf_type: str) -> None:
    """tests/reference/survival.R: survfit(Surv(time, event) ~ 1, conf.type = conf_type) per arm;
    quantile(fit, 0.5); summary(fit, times = landmarks); survdiff(... ~ arm [+ strata(stratum)])."""
    result = estimate_kaplan_meier(
        read_dataset(case["file"]), time="time", event="event", arm="arm",
        reference_arm=case["reference"], strata=["stratum"], conf_type=conf_type,  # type: ignore[arg-type]
        landmarks=case["landmarks"],
    )
    refs = case["km_log" if conf_type == "log" else "km_loglog"]
    for curve, median, ref in zip(result.curves, result.medians, refs, strict=True):
        assert curve.arm == ref["arm"]
        assert_allclose(curve.time, ref["time"], rtol=1e-12)
        assert list(curve.n_at_risk) == ref["n_risk"]
        assert list(curve.n_events) == ref["n_event"]
        assert list(curve.n_censored) == ref["n_censor"]
        assert_allclose(curve.survival, ref["surv"], rtol=1e-10)
        assert_allclose(curve.std_err, _nan(ref["std_err"]), rtol=1e-8)
        assert_allclose(curve.ci_low, _nan(ref["lower"]), rtol=1e-8)
        assert_allclose(curve.ci_high, _nan(ref["upper"]), rtol=1e-8)
        assert_allclose(
            _nan([median.median, median.ci_low, median.ci_high]),
            _nan([ref["median"], ref["median_low"], ref["median_high"]]),
            rtol=1e-10,
        )
        marks = [m for m in result.landmarks if m.arm == curve.arm]
        assert_allclose([m.survival for m in marks], ref["landmark_surv"], rtol=1e-10)
        assert_allclose([m.std_err for m in marks], ref["landmark_se"], rtol=1e-8)
        assert_allclose([m.ci_low for m in marks], ref["landmark_lower"], rtol=1e-8)
        assert_allclose([m.ci_high for m in marks], ref["landmark_upper"], rtol=1e-8)
    logrank = result.tests[0]
    assert logrank.statistic == pytest.approx(case["logrank"], rel=1e-8)
    assert logrank.p_value == pytest.approx(case["logrank_p"], abs=1e-8)
    stratified = result.tests[1]
    assert stratified.statistic == pytest.approx(case["strat_logrank"], rel=1e-8)
    assert stratified.p_value == pytest.approx(case["strat_logrank_p"], abs=1e-8)


def _cox_arguments(rhs: str) -> dict[str, list[str]]:
    terms = [t.strip() for t in rhs.split("+")][1:]
    return {
        "covariates": [t for t in terms if t == "age"],
        "factors": [t for t in terms if t == "stratum"],
        "strata": [t[7:-1] for t in terms if t.startswith("strata(")],
    }


COX = [(c, cox) for c in CASES for cox in c["cox"]]


@pytest.mark.parametrize("case,cox", COX, ids=[f"{c['file']}: {x['rhs']}" for c, x in COX])
def test_cox_matches_coxph(case: dict[str, Any], cox: dict[str, Any]) -> None:
    """tests/reference/survival.R: coxph(Surv(time, event) ~ <rhs>, ties = "efron")."""
    result = fit_cox(
        read_dataset(case["file"]), time="time", event="event", arm="arm",
        reference_arm=case["reference"], **_cox_arguments(cox["rhs"]),
    )
    eff = result.effects[0]
    assert result.warnings == ()
    assert eff.scale == "hazard_ratio"
    assert_allclose([eff.estimate, eff.se, eff.ci_low, eff.ci_high],
                    [cox["hr"], cox["se"], cox["ci_low"], cox["ci_high"]], rtol=1e-6)
    assert eff.p_value == pytest.approx(cox["p_value"], abs=1e-6)
    assert result.parameters["loglik"] == pytest.approx(cox["loglik"][1], rel=1e-9)
    assert result.tests[0].statistic == pytest.approx(cox["lrt"], rel=1e-6)


def test_survival_rejects_bad_event_codes() -> None:
    """Event codes other than 0/1 and negative times raise AnalysisError."""
    frame = pd.DataFrame({"t": [1.0, 2, 3, 4], "e": [0, 1, 2, 1], "arm": list("abab")})
    with pytest.raises(AnalysisError, match="0 \\(censored\\) or 1"):
        estimate_kaplan_meier(frame, time="t", event="e", arm="arm")
    with pytest.raises(AnalysisError, match="negative"):
        fit_cox(frame.assign(t=-1.0, e=1), time="t", event="e", arm="arm")


def test_median_not_reached_is_none() -> None:
    """With survival staying above 0.5 the median and its upper limit are None."""
    frame = pd.DataFrame(
        {"t": [1.0, 2, 3, 4, 5, 6], "e": [1, 0, 0, 0, 0, 0], "arm": list("aaabbb")}
    )
    result = estimate_kaplan_meier(frame, time="t", event="e", arm="arm")
    assert result.medians[0].median is None
    assert result.to_dict()["medians"][0]["median"] is None
