"""Subgroup effects and interaction tests against R lm/glm + emmeans + anova."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.testing import assert_allclose
from reference_data import read_dataset, read_reference

from analysis.results import AnalysisError
from analysis.subgroups import estimate_subgroup_effects

CASES = read_reference("subgroups")["cases"]
NUMERIC = {"base", "age"}


@pytest.mark.parametrize("case", CASES, ids=[c["r_call"] for c in CASES])
def test_subgroups_match_r(case: dict[str, Any]) -> None:
    """tests/reference/subgroups.R: lm/glm(outcome ~ arm * subgroup + covariates);
    contrast(emmeans(fit, ~ arm | subgroup), "trt.vs.ctrl", adjust = "none");
    anova(reduced, fit) (F for lm, LRT for glm)."""
    logistic = case["family"] == "binomial"
    result = estimate_subgroup_effects(
        read_dataset(case["file"]),
        outcome=case["outcome"], arm="arm", subgroup=case["subgroup"],
        reference_arm=case["reference"],
        covariates=[c for c in case["covariates"] if c in NUMERIC],
        strata=[c for c in case["covariates"] if c not in NUMERIC],
        method="logistic" if logistic else "ancova",
    )
    for ref in case["effects"]:
        level = next(lv for lv in result.levels if lv.level == ref["level"])
        label = ref["contrast"].replace(" - ", " / ") if logistic else ref["contrast"]
        eff = next(e for e in level.effects if e.contrast == label)
        transform = np.exp if logistic else (lambda v: v)
        assert_allclose(
            [eff.estimate, eff.ci_low, eff.ci_high],
            [transform(ref["estimate"]), transform(ref["ci_low"]), transform(ref["ci_high"])],
            rtol=1e-6,
        )
        assert eff.se == pytest.approx(ref["se"], rel=1e-6)
        assert eff.p_value == pytest.approx(ref["p_value"], abs=1e-6)
    inter = case["interaction"]
    assert result.interaction.statistic == pytest.approx(inter["statistic"], rel=1e-6)
    assert result.interaction.p_value == pytest.approx(inter["p_value"], abs=1e-6)
    assert result.interaction.df == inter["df"]


def test_subgroup_must_have_two_levels() -> None:
    """A subgroup with one level, or equal to a stratum, raises AnalysisError."""
    frame = read_dataset("ancova_a.csv").assign(one="x")
    with pytest.raises(AnalysisError, match="single level"):
        estimate_subgroup_effects(frame, outcome="chg", arm="arm", subgroup="one")
    with pytest.raises(AnalysisError, match="must differ"):
        estimate_subgroup_effects(frame, outcome="chg", arm="arm", subgroup="stratum",
                                  strata=["stratum"])
