"""Frozen, JSON-serialisable results shared by every estimator.

Estimators return these types only; no statsmodels or lifelines object ever leaves
``analysis/estimators/``. Every type has ``to_dict()`` giving plain JSON values
(floats, ints, strings, lists, dicts; ``None`` for "not applicable").
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Literal

import numpy as np
import numpy.typing as npt

Scale = Literal[
    "difference",
    "odds_ratio",
    "hazard_ratio",
    "risk_difference",
    "risk_ratio",
    "mean",
    "proportion",
]

JSONValue = float | int | str | bool | None | list["JSONValue"] | dict[str, "JSONValue"]


class AnalysisError(ValueError):
    """Raise when an analysis cannot run on the data or parameters given."""


def _present(values: Iterable[float]) -> npt.NDArray[np.float64]:
    xs = np.asarray(values, dtype=np.float64)
    present: npt.NDArray[np.float64] = xs[~np.isnan(xs)]
    return present


def sample_mean(values: Iterable[float]) -> float | None:
    """The mean of the values (None for none), exactly 0.0 when their sum is zero but for the
    rounding of their binary forms: values entered with decimals are not exact in binary
    (-0.3 + 0.1 + 0.2 sums to 2.8e-17), so a mean that is zero in the data's own decimals would
    otherwise be reported as 0.000000000000000009 (or -0.0). The sum is correctly rounded
    (``math.fsum``) and each value's binary form is within half an epsilon of it, so a sum
    within an epsilon of the absolute values' sum cannot be told from zero. Missing values
    (NaN) are left out, as pandas' ``mean`` leaves them out."""
    xs = _present(values)
    if not len(xs):
        return None
    total = math.fsum(xs.tolist())
    if abs(total) <= sys.float_info.epsilon * float(np.abs(xs).sum()):
        return 0.0
    return total / len(xs)


def sample_sd(values: Iterable[float]) -> float | None:
    """The sample standard deviation (n - 1, numpy's two-pass; None below two values), exactly
    0.0 when every value is the same (a float mean of equal decimals is not always the value
    itself, so the deviations are not all zero). Missing values (NaN) are left out."""
    xs = _present(values)
    if len(xs) < 2:
        return None
    if xs.min() == xs.max():
        return 0.0
    return float(np.std(xs, ddof=1))


def _json(value: object) -> JSONValue:
    """Convert a result attribute into plain JSON (non-finite floats become None)."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        out: JSONValue = to_dict()
        return out
    raise TypeError(f"cannot serialise {type(value).__name__}")


class Serialisable:
    """Mixin giving frozen dataclasses a recursive ``to_dict``."""

    def to_dict(self) -> dict[str, JSONValue]:
        """Return the result as a JSON-serialisable dict."""
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _freeze_mapping(obj: object, name: str) -> None:
    """Replace a dict attribute of a frozen dataclass by a read-only view."""
    object.__setattr__(obj, name, MappingProxyType(dict(getattr(obj, name))))


@dataclass(frozen=True)
class EffectEstimate(Serialisable):
    """A between-arm (or model) contrast with its uncertainty.

    ``estimate``, ``ci_low`` and ``ci_high`` are on ``scale`` (ratios are not logged);
    ``se`` is on the scale the test was done on (log scale for ratios), ``df`` is the
    t degrees of freedom when a t reference distribution was used, else None.
    ``ci_method`` names the interval: ``wald`` (normal), ``t``, ``satterthwaite``,
    ``kenward_roger``, ``t_containment``, ``wald_robust``, ``profile_likelihood``,
    ``newcombe_hybrid_score``, ``robins_breslow_greenland`` or ``sato``.
    """

    contrast: str
    estimate: float
    se: float | None
    ci_low: float
    ci_high: float
    p_value: float | None
    df: float | None = None
    scale: Scale = "difference"
    visit: str | None = None
    ci_method: str = "wald"


@dataclass(frozen=True)
class LSMean(Serialisable):
    """A least-squares (estimated marginal) mean of one arm, optionally at one visit."""

    arm: str
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    df: float | None = None
    visit: str | None = None


@dataclass(frozen=True)
class ArmSummary(Serialisable):
    """Raw per-arm counts and summaries (n analysed, events, mean or proportion)."""

    arm: str
    n: int
    n_events: int | None = None
    mean: float | None = None
    sd: float | None = None
    proportion: float | None = None
    visit: str | None = None


@dataclass(frozen=True)
class TestResult(Serialisable):
    """A hypothesis test: statistic, its degrees of freedom and the p-value."""

    __test__ = False  # not a pytest test class

    name: str
    statistic: float
    p_value: float
    df: float | None = None


@dataclass(frozen=True)
class EndpointResult(Serialisable):
    """Everything an estimator found for one endpoint.

    ``model`` writes the model out in words and formula; ``n_by_arm`` counts the
    subjects analysed per arm; ``warnings`` lists non-convergence, separation and
    similar problems the reader must see; ``parameters`` holds named scalar
    by-products (variance components, log-likelihood, iterations).
    """

    method: str
    model: str
    n_by_arm: Mapping[str, int]
    effects: tuple[EffectEstimate, ...] = ()
    ls_means: tuple[LSMean, ...] = ()
    arms: tuple[ArmSummary, ...] = ()
    tests: tuple[TestResult, ...] = ()
    warnings: tuple[str, ...] = ()
    parameters: Mapping[str, float] = field(default_factory=dict)
    covariance: tuple[tuple[float, ...], ...] = ()
    covariance_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _freeze_mapping(self, "n_by_arm")
        _freeze_mapping(self, "parameters")

    def effect(
        self, contrast: str | None = None, visit: str | None = None,
        ci_method: str | None = None,
    ) -> EffectEstimate:
        """Return the effect with this contrast, visit and interval method (each filter
        optional; the first match). Contrasts read ``"A - B"`` for differences and
        ``"A / B"`` for ratios (odds, hazard ratios); one contrast may carry several
        intervals (e.g. ``wald`` and ``profile_likelihood``), told apart by ``ci_method``."""
        for eff in self.effects:
            if (
                (contrast is None or eff.contrast == contrast)
                and (visit is None or eff.visit == visit)
                and (ci_method is None or eff.ci_method == ci_method)
            ):
                return eff
        raise AnalysisError(
            f"no effect {contrast!r} at visit {visit!r}"
            + (f" with ci_method {ci_method!r}" if ci_method else "")
        )

    def ls_mean(self, arm: str, visit: str | None = None) -> LSMean:
        """Return the LS mean of ``arm`` (at ``visit``)."""
        for lsm in self.ls_means:
            if lsm.arm == arm and (visit is None or lsm.visit == visit):
                return lsm
        raise AnalysisError(f"no LS mean for arm {arm!r} at visit {visit!r}")

    def test(self, name: str) -> TestResult:
        """Return the test called ``name``."""
        for t in self.tests:
            if t.name == name:
                return t
        raise AnalysisError(f"no test {name!r}; have {[t.name for t in self.tests]}")


@dataclass(frozen=True)
class SurvivalCurve(Serialisable):
    """A Kaplan-Meier curve of one arm at its distinct event/censoring times."""

    arm: str
    conf_type: str
    time: tuple[float, ...]
    n_at_risk: tuple[int, ...]
    n_events: tuple[int, ...]
    n_censored: tuple[int, ...]
    survival: tuple[float, ...]
    std_err: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]


@dataclass(frozen=True)
class MedianSurvival(Serialisable):
    """Median survival of one arm with its CI (None where not reached)."""

    arm: str
    median: float | None
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class LandmarkSurvival(Serialisable):
    """Kaplan-Meier survival of one arm at a landmark time with its CI."""

    arm: str
    time: float
    survival: float
    std_err: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class SurvivalResult(Serialisable):
    """Kaplan-Meier curves, medians, landmarks and the log-rank test per arm."""

    method: str
    model: str
    n_by_arm: Mapping[str, int]
    events_by_arm: Mapping[str, int]
    curves: tuple[SurvivalCurve, ...]
    medians: tuple[MedianSurvival, ...]
    landmarks: tuple[LandmarkSurvival, ...]
    tests: tuple[TestResult, ...]
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _freeze_mapping(self, "n_by_arm")
        _freeze_mapping(self, "events_by_arm")


@dataclass(frozen=True)
class SubgroupLevel(Serialisable):
    """The treatment effect within one level of a subgroup factor (one forest-plot row)."""

    level: str
    n_by_arm: Mapping[str, int]
    effects: tuple[EffectEstimate, ...]

    def __post_init__(self) -> None:
        _freeze_mapping(self, "n_by_arm")


@dataclass(frozen=True)
class SubgroupResult(Serialisable):
    """Effects per subgroup level and the arm x subgroup interaction test."""

    subgroup: str
    method: str
    model: str
    levels: tuple[SubgroupLevel, ...]
    interaction: TestResult
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PowerResult(Serialisable):
    """Power, or the sample size reaching a target power, of a two-arm comparison.

    ``n_control`` and ``n_treatment`` are whole subjects (rounded up); ``n_control_exact``
    is the real-valued solution R's ``power.*.test`` reports.
    """

    method: str
    power: float
    n_control: int
    n_treatment: int
    n_control_exact: float
    alpha: float
    ratio: float
    sided: int

    @property
    def n_total(self) -> int:
        """Return the total number of subjects."""
        return self.n_control + self.n_treatment


@dataclass(frozen=True)
class MultiplicityDecision(Serialisable):
    """The multiplicity-adjusted outcome of one hypothesis."""

    endpoint: str
    p_value: float
    adjusted_p_value: float
    rejected: bool
    tested: bool


@dataclass(frozen=True)
class MultiplicityResult(Serialisable):
    """Decisions for an ordered family of hypotheses under one procedure."""

    procedure: str
    alpha: float
    decisions: tuple[MultiplicityDecision, ...]
    # the rejection path: each step's local levels and what was rejected (graphical, stepwise)
    path: tuple[Mapping[str, object], ...] = ()

    def decision(self, endpoint: str) -> MultiplicityDecision:
        """Return the decision for ``endpoint``."""
        for d in self.decisions:
            if d.endpoint == endpoint:
                return d
        raise AnalysisError(f"no endpoint {endpoint!r} in this family")
