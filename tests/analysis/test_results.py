"""Result objects: frozen and strictly JSON-serialisable for every estimator."""

from __future__ import annotations

import dataclasses
import json

import pytest
from reference_data import read_dataset

from analysis.estimators import (
    compare_proportions,
    estimate_kaplan_meier,
    fit_ancova,
    fit_cmh,
    fit_cox,
    fit_gee,
    fit_logistic,
    fit_random_intercept,
)
from analysis.multiplicity import adjust_holm
from analysis.power import compute_sample_size_binary
from analysis.results import AnalysisError, EndpointResult
from analysis.subgroups import estimate_subgroup_effects


def _all_results() -> list[object]:
    anc, binary, surv, eyes = (
        read_dataset("ancova_a.csv"), read_dataset("binary_a.csv"),
        read_dataset("survival_a.csv"), read_dataset("gee_a.csv"),
    )
    return [
        fit_ancova(anc, outcome="chg", arm="arm", covariates=["base"], strata=["stratum"]),
        fit_logistic(binary, outcome="resp", arm="arm", covariates="base"),
        compare_proportions(binary, outcome="resp", arm="arm"),
        fit_cmh(binary, outcome="resp", arm="arm", stratum="stratum"),
        estimate_kaplan_meier(surv, time="time", event="event", arm="arm", landmarks=[12]),
        fit_cox(surv, time="time", event="event", arm="arm", strata=["stratum"]),
        fit_gee(eyes, outcome="chg", arm="arm", cluster="subject"),
        fit_random_intercept(eyes, outcome="chg", arm="arm", cluster="subject"),
        estimate_subgroup_effects(anc, outcome="chg", arm="arm", subgroup="sex"),
        adjust_holm([("a", 0.01), ("b", 0.04)]),
        compute_sample_size_binary(p_control=0.2, p_treatment=0.4),
    ]


def test_every_result_serialises_to_strict_json() -> None:
    """to_dict() of every result type passes json.dumps(allow_nan=False) and round-trips."""
    for result in _all_results():
        payload = result.to_dict()  # type: ignore[attr-defined]
        assert json.loads(json.dumps(payload, allow_nan=False)) == payload


def test_results_are_frozen() -> None:
    """Results cannot be modified after the estimator returns them."""
    result = _all_results()[0]
    assert isinstance(result, EndpointResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.model = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.n_by_arm["active"] = 0  # type: ignore[index]
    with pytest.raises(AnalysisError, match="no effect"):
        result.effect("nope")
