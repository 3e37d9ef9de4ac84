"""Monte-Carlo operating characteristics of a design (spec §2.1), for choosing a design.

Each run enrols n participants whose factor levels (and site) are drawn independently, each
factor with its own level prevalences (equiprobable unless given), allocates them through a
`Randomizer` exactly as a live trial would, and records per run:

- final imbalance |D_n| of the whole trial, and the largest imbalance max_j |D_j| along the way;
- per-stratum final imbalance (mean over the strata used, and the worst stratum);
- marginal imbalance within each factor level (mean over levels used, and the worst level);
- the number of participants on each arm;
- correct guesses under the convergence strategy (Blackwell & Hodges 1957), within the
  participant's stratum: the selection-bias metric, to compare with chance, 1/k for k arms;
- deterministic allocations: those the design made with probability 1 given its state (the
  last slots of a permuted block, a big stick at its bound, ...);
- exact-balance steps: allocations after which every arm is exactly at its target share.

Imbalance is |N_A − N_B| for two arms at 1:1 and the Euclidean distance √Σ(N_k − nρ_k)² to
the expected counts otherwise. The summary gives each figure as a mean over runs with its
Monte-Carlo standard error (SD / √runs) and the worst value seen; `runs_detail` keeps every
run's own figures.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from randomization.designs import Design, ListDesign, MinimizationDesign
from randomization.errors import SimulationError
from randomization.randomizer import Randomizer
from randomization.strata import SITE_FACTOR


@dataclass(frozen=True, slots=True)
class MetricEstimate:
    """A metric over runs: its mean, Monte-Carlo standard error and worst (largest) value."""

    mean: float
    se: float
    worst: float

    def to_json(self) -> dict[str, float]:
        """Return {"mean", "se", "worst"}."""
        return {"mean": self.mean, "se": self.se, "worst": self.worst}


@dataclass(frozen=True, slots=True)
class RunResult:
    """The figures of one simulated trial of n participants."""

    final_imbalance: float
    max_imbalance: float
    stratum_imbalance_mean: float
    stratum_imbalance_max: float
    marginal_imbalance_mean: float
    marginal_imbalance_max: float
    arm_counts: tuple[int, ...]
    correct_guesses: float
    deterministic: int | None  # None for an uploaded list (no probabilities)
    balanced_steps: int
    n_strata: int
    level_counts: Mapping[str, Mapping[str, int]]  # participants per factor level (and site)

    def to_json(self) -> dict[str, object]:
        """Return the run's figures as a dict."""
        out = {name: getattr(self, name) for name in RUN_FIELDS}
        out["arm_counts"] = list(self.arm_counts)
        out["level_counts"] = {f: dict(levels) for f, levels in self.level_counts.items()}
        return out


RUN_FIELDS = (
    "final_imbalance", "max_imbalance", "stratum_imbalance_mean", "stratum_imbalance_max",
    "marginal_imbalance_mean", "marginal_imbalance_max", "arm_counts", "correct_guesses",
    "deterministic", "balanced_steps", "n_strata", "level_counts",
)

SUMMARY_METRICS = (
    "final_imbalance", "max_imbalance", "stratum_imbalance_mean", "stratum_imbalance_max",
    "marginal_imbalance_mean", "marginal_imbalance_max", "correct_guess", "deterministic_rate",
    "exact_balance", "final_balance", "n_strata",
)


@dataclass(frozen=True)
class SimulationResult:
    """The §2.1 metrics of one design for n participants over `runs` simulated trials.

    `correct_guess` is the fraction of allocations a convergence-strategy guesser names
    correctly (selection bias; `chance_level` = 1/k is what an unpredictable design gives);
    `deterministic_rate` the fraction of allocations made with probability 1 (None for a list);
    `exact_balance` the fraction of allocations after which every arm is exactly at its target
    (spec §2.1's EB); `final_balance` the fraction of runs ending with every arm within one
    participant of its target n·ρ_k.
    """

    method: str
    n: int
    runs: int
    seed: int
    arms: tuple[str, ...]
    final_imbalance: MetricEstimate
    max_imbalance: MetricEstimate
    stratum_imbalance_mean: MetricEstimate
    stratum_imbalance_max: MetricEstimate
    marginal_imbalance_mean: MetricEstimate
    marginal_imbalance_max: MetricEstimate
    arm_fractions: Mapping[str, MetricEstimate]
    target_fractions: Mapping[str, float]
    correct_guess: MetricEstimate
    chance_level: float
    deterministic_rate: MetricEstimate | None
    exact_balance: MetricEstimate
    final_balance: MetricEstimate
    n_strata: MetricEstimate
    runs_detail: tuple[RunResult, ...] = ()

    def to_json(self, *, per_run: bool = False) -> dict[str, object]:
        """Return a JSON-serialisable summary (with every run's figures when `per_run`)."""
        metrics = {
            name: None if getattr(self, name) is None else getattr(self, name).to_json()
            for name in SUMMARY_METRICS
        }
        summary: dict[str, object] = {
            "method": self.method,
            "n": self.n,
            "runs": self.runs,
            "seed": self.seed,
            "chance_level": self.chance_level,
            "metrics": metrics,
            "arm_fractions": {arm: m.to_json() for arm, m in self.arm_fractions.items()},
            "target_fractions": dict(self.target_fractions),
        }
        if per_run:
            summary["per_run"] = [run.to_json() for run in self.runs_detail]
        return summary


def _estimate(values: Sequence[float]) -> MetricEstimate:
    runs = len(values)
    mean = math.fsum(values) / runs
    variance = math.fsum((v - mean) ** 2 for v in values) / (runs - 1)
    return MetricEstimate(mean, math.sqrt(variance / runs), max(values))


class _Imbalance:
    """Imbalance of a count vector: |N_A − N_B| for 1:1, else Euclidean distance to nρ."""

    def __init__(self, ratio: tuple[int, ...]) -> None:
        self.ratio = ratio
        self.total = sum(ratio)
        self.is_two_equal = ratio == (1, 1)

    def __call__(self, counts: Sequence[int]) -> float:
        if self.is_two_equal:
            return float(abs(counts[0] - counts[1]))
        n = sum(counts)
        square = sum((c * self.total - n * w) ** 2 for c, w in zip(counts, self.ratio))
        return math.sqrt(square) / self.total

    def is_within_one(self, counts: Sequence[int]) -> bool:
        """Return whether every arm is within one participant of its target n·ρ_k."""
        n = sum(counts)
        return all(abs(c * self.total - n * w) < self.total for c, w in zip(counts, self.ratio))


def _guess_credit(counts: list[int], arm: int, ratio: tuple[int, ...], total: int) -> float:
    """Return the convergence-strategy credit: 1/|T| if `arm` is in the guessed set T, else 0.

    T holds the arms with the smallest N_k − mρ_k (scaled by W to stay in integers) before the
    allocation, m being the number allocated so far in the stratum.
    """
    if len(counts) == 2:  # the common case, without building lists
        m = counts[0] + counts[1]
        first = counts[0] * total - m * ratio[0]
        second = counts[1] * total - m * ratio[1]
        if first == second:
            return 0.5
        return 1.0 if (first < second) == (arm == 0) else 0.0
    m = sum(counts)
    deviations = [c * total - m * w for c, w in zip(counts, ratio)]
    lowest = min(deviations)
    n_guessed = deviations.count(lowest)
    return 1.0 / n_guessed if deviations[arm] == lowest else 0.0


def _distinct_levels(levels: object) -> bool:
    return (
        isinstance(levels, Sequence)
        and not isinstance(levels, str)
        and bool(levels)
        and len(set(levels)) == len(levels)
    )


def _check_request(
    design: Design, n: int, runs: int, factor_levels: Mapping[str, Sequence[str]],
    site_levels: Sequence[str] | None, stratify_by: Sequence[str],
) -> None:
    for name, value, minimum in (("n", n, 1), ("runs", runs, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise SimulationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    for factor, levels in factor_levels.items():
        if factor == SITE_FACTOR:
            raise SimulationError("pass sites as site_levels, not as a factor named 'site'")
        if not _distinct_levels(levels):
            raise SimulationError(f"factor {factor} needs a non-empty list of distinct levels")
    if site_levels is not None and not _distinct_levels(site_levels):
        raise SimulationError("site_levels must be a non-empty list of distinct site ids")
    available = set(factor_levels) | ({SITE_FACTOR} if site_levels else set())
    if len(set(stratify_by)) != len(stratify_by):
        raise SimulationError("stratify_by lists a factor twice")
    for name in stratify_by:
        if name not in available:
            raise SimulationError(f"stratify_by names unknown factor {name!r}")
    if isinstance(design, ListDesign):
        raise SimulationError("an uploaded list cannot be simulated: it has a fixed length")
    if isinstance(design, MinimizationDesign):
        for spec in design.factors:
            if spec.name not in available:
                raise SimulationError(f"minimization factor {spec.name!r} has no levels given")
            declared = spec.levels
            given = site_levels if spec.name == SITE_FACTOR else factor_levels[spec.name]
            if declared is not None and not set(given or ()) <= set(declared):
                raise SimulationError(f"levels of {spec.name!r} are not all declared")


def _cumulative(
    name: str, levels: Sequence[str], prevalences: Mapping[str, Mapping[str, float]]
) -> list[float] | None:
    """Return the cumulative prevalences of a factor's levels, or None when equiprobable."""
    given = prevalences.get(name)
    if given is None:
        return None
    unknown = sorted(set(given) - set(levels))
    if unknown:
        raise SimulationError(f"prevalence of {name}: unknown level(s) {', '.join(unknown)}")
    missing = [level for level in levels if level not in given]
    if missing:
        raise SimulationError(f"prevalence of {name}: no value for level(s) {', '.join(missing)}")
    values = [given[level] for level in levels]
    if not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in values):
        raise SimulationError(f"prevalences of {name} must be finite numbers >= 0")
    if abs(math.fsum(values) - 1) > 1e-9:
        raise SimulationError(f"prevalences of {name} must sum to 1, got {math.fsum(values):g}")
    cumulative, running = [], 0.0
    for value in values:
        running += value
        cumulative.append(running)
    return cumulative


def simulate(
    design: Design,
    n: int,
    runs: int,
    *,
    factor_levels: Mapping[str, Sequence[str]],
    site_levels: Sequence[str] | None,
    stratify_by: Sequence[str],
    seed: int,
    prevalences: Mapping[str, Mapping[str, float]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Simulate `runs` trials of n participants and return the §2.1 metrics with MC SEs.

    `prevalences` maps a factor (or `site`) to the probability of each of its levels (they must
    sum to 1); factors not named there are equiprobable. Levels are drawn with Python's
    `random.random` (stable for a seed); allocations use a `Randomizer` with the secret derived
    from `seed` and the model label `sim{run}`. `progress`, if given, is called with the number
    of completed runs after each run.
    """
    _check_request(design, n, runs, factor_levels, site_levels, stratify_by)
    prevalences = prevalences or {}
    choices: list[tuple[str, Sequence[str]]] = [(f, factor_levels[f]) for f in factor_levels]
    if site_levels:
        choices.append((SITE_FACTOR, site_levels))
    unknown = sorted(set(prevalences) - {name for name, _ in choices})
    if unknown:
        raise SimulationError(f"prevalences given for unknown factor(s) {', '.join(unknown)}")
    drawers = [
        (name, levels, _cumulative(name, levels, prevalences)) for name, levels in choices
    ]
    rng = random.Random(seed)
    n_arms = len(design.arms)
    total_weight = design.ratio_sum
    imbalance = _Imbalance(design.ratio)
    arm_index = {arm: k for k, arm in enumerate(design.arms)}
    has_probabilities = not isinstance(design, ListDesign)

    details: list[RunResult] = []
    for run in range(runs):
        randomizer = Randomizer(design, seed=seed, model=f"sim{run}", stratify_by=stratify_by)
        overall = [0] * n_arms
        stratum_counts: dict[str, list[int]] = {}
        marginal_counts: dict[tuple[str, str], list[int]] = {}
        worst = 0.0
        correct = 0.0
        deterministic = 0
        balanced = 0
        for _ in range(n):
            factors = {}
            for name, levels, cumulative in drawers:
                u = rng.random()
                if cumulative is None:
                    factors[name] = levels[int(u * len(levels))]
                else:
                    index = bisect.bisect_right(cumulative, u * cumulative[-1])
                    factors[name] = levels[min(index, len(levels) - 1)]
            result = randomizer.allocate(factors)
            counts = stratum_counts.get(result.stratum_key)
            if counts is None:
                counts = stratum_counts[result.stratum_key] = [0] * n_arms
            arm = arm_index[result.arm]
            correct += _guess_credit(counts, arm, design.ratio, total_weight)
            if result.probabilities is not None and max(result.probabilities) == 1:
                deterministic += 1
            counts[arm] += 1
            overall[arm] += 1
            for name, level in factors.items():
                marginal_counts.setdefault((name, level), [0] * n_arms)[arm] += 1
            current = imbalance(overall)
            if current > worst:
                worst = current
            if current == 0:  # every arm exactly at its target share
                balanced += 1
        level_counts: dict[str, dict[str, int]] = {name: {} for name, _, _ in drawers}
        for (name, level), counts in marginal_counts.items():
            level_counts[name][level] = sum(counts)
        strata_values = [imbalance(c) for c in stratum_counts.values()]
        marginal_values = [imbalance(c) for c in marginal_counts.values()] or [0.0]
        details.append(
            RunResult(
                final_imbalance=imbalance(overall),
                max_imbalance=worst,
                stratum_imbalance_mean=math.fsum(strata_values) / len(strata_values),
                stratum_imbalance_max=max(strata_values),
                marginal_imbalance_mean=math.fsum(marginal_values) / len(marginal_values),
                marginal_imbalance_max=max(marginal_values),
                arm_counts=tuple(overall),
                correct_guesses=correct,
                deterministic=deterministic if has_probabilities else None,
                balanced_steps=balanced,
                n_strata=len(stratum_counts),
                level_counts=level_counts,
            )
        )
        if progress is not None:
            progress(run + 1)
    return _summarise(design, n, runs, seed, imbalance, details)


def _summarise(
    design: Design, n: int, runs: int, seed: int, imbalance: _Imbalance,
    details: Sequence[RunResult],
) -> SimulationResult:
    def metric(name: str) -> MetricEstimate:
        return _estimate([float(getattr(run, name)) for run in details])

    has_probabilities = details[0].deterministic is not None
    return SimulationResult(
        method=design.method,
        n=n,
        runs=runs,
        seed=seed,
        arms=design.arms,
        final_imbalance=metric("final_imbalance"),
        max_imbalance=metric("max_imbalance"),
        stratum_imbalance_mean=metric("stratum_imbalance_mean"),
        stratum_imbalance_max=metric("stratum_imbalance_max"),
        marginal_imbalance_mean=metric("marginal_imbalance_mean"),
        marginal_imbalance_max=metric("marginal_imbalance_max"),
        arm_fractions={
            arm: _estimate([run.arm_counts[k] / n for run in details])
            for k, arm in enumerate(design.arms)
        },
        target_fractions={
            arm: float(p) for arm, p in zip(design.arms, design.target_probabilities)
        },
        correct_guess=_estimate([run.correct_guesses / n for run in details]),
        chance_level=float(Fraction(1, len(design.arms))),
        deterministic_rate=(
            _estimate([(run.deterministic or 0) / n for run in details])
            if has_probabilities
            else None
        ),
        exact_balance=_estimate([run.balanced_steps / n for run in details]),
        final_balance=_estimate(
            [float(imbalance.is_within_one(run.arm_counts)) for run in details]
        ),
        n_strata=metric("n_strata"),
        runs_detail=tuple(details),
    )
