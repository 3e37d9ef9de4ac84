"""Monte-Carlo operating characteristics of a design (spec §2.1), for choosing a design.

Each run enrols n participants whose factor levels (and site) are drawn independently and
equiprobably, allocates them with `allocate` exactly as a live trial would, and records:

- final imbalance |D_n| of the whole trial, and the largest imbalance max_j |D_j| along the way;
- per-stratum final imbalance (mean over the strata used, and the worst stratum);
- marginal imbalance within each factor level (mean over levels used, and the worst level);
- the fraction of participants on each arm;
- correct guesses under the convergence strategy, within the participant's stratum.

Imbalance is |N_A − N_B| for two arms at 1:1 and the Euclidean distance √Σ(N_k − nρ_k)² to
the expected counts otherwise. Every figure is a mean over runs with its Monte-Carlo standard
error (SD / √runs) and the worst value seen in any run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from randomization.designs import Design, MinimizationDesign, allocate
from randomization.draws import secret_from_seed
from randomization.errors import SimulationError
from randomization.state import RandomizationState
from randomization.strata import SITE_FACTOR, stratum_key


@dataclass(frozen=True, slots=True)
class MetricEstimate:
    """A metric over runs: its mean, Monte-Carlo standard error and worst (largest) value."""

    mean: float
    se: float
    worst: float

    def to_json(self) -> dict[str, float]:
        """Return {"mean", "se", "worst"}."""
        return {"mean": self.mean, "se": self.se, "worst": self.worst}


@dataclass(frozen=True)
class SimulationResult:
    """The §2.1 metrics of one design for n participants over `runs` simulated trials."""

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
    n_strata: MetricEstimate

    def to_json(self) -> dict[str, object]:
        """Return a JSON-serialisable summary."""
        metrics = {
            name: getattr(self, name).to_json()
            for name in (
                "final_imbalance", "max_imbalance", "stratum_imbalance_mean",
                "stratum_imbalance_max", "marginal_imbalance_mean", "marginal_imbalance_max",
                "correct_guess", "n_strata",
            )
        }
        return {
            "method": self.method,
            "n": self.n,
            "runs": self.runs,
            "seed": self.seed,
            "metrics": metrics,
            "arm_fractions": {arm: m.to_json() for arm, m in self.arm_fractions.items()},
            "target_fractions": dict(self.target_fractions),
        }


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
        if isinstance(levels, str) or not levels or len(set(levels)) != len(levels):
            raise SimulationError(f"factor {factor} needs a non-empty list of distinct levels")
    if site_levels is not None and (
        isinstance(site_levels, str) or not site_levels or len(set(site_levels)) != len(site_levels)
    ):
        raise SimulationError("site_levels must be a non-empty list of distinct site ids")
    available = set(factor_levels) | ({SITE_FACTOR} if site_levels else set())
    if len(set(stratify_by)) != len(stratify_by):
        raise SimulationError("stratify_by lists a factor twice")
    for name in stratify_by:
        if name not in available:
            raise SimulationError(f"stratify_by names unknown factor {name!r}")
    if isinstance(design, MinimizationDesign):
        for spec in design.factors:
            if spec.name not in available:
                raise SimulationError(f"minimization factor {spec.name!r} has no levels given")
            declared = spec.levels
            given = site_levels if spec.name == SITE_FACTOR else factor_levels[spec.name]
            if declared is not None and not set(given or ()) <= set(declared):
                raise SimulationError(f"levels of {spec.name!r} are not all declared")


def simulate(
    design: Design,
    n: int,
    runs: int,
    *,
    factor_levels: Mapping[str, Sequence[str]],
    site_levels: Sequence[str] | None,
    stratify_by: Sequence[str],
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Simulate `runs` trials of n participants and return the §2.1 metrics with MC SEs.

    Factor levels and sites are drawn equiprobably (Python's `random.random`, stable for a seed);
    allocations use a secret derived from `seed` and the model label `sim{run}`.
    `progress`, if given, is called with the number of completed runs after each run.
    """
    _check_request(design, n, runs, factor_levels, site_levels, stratify_by)
    secret = secret_from_seed(seed)
    rng = random.Random(seed)
    n_arms = len(design.arms)
    total_weight = design.ratio_sum
    imbalance = _Imbalance(design.ratio)
    factor_names = list(factor_levels)
    choices: list[tuple[str, Sequence[str]]] = [(f, factor_levels[f]) for f in factor_names]
    if site_levels:
        choices.append((SITE_FACTOR, site_levels))
    by_site = SITE_FACTOR in stratify_by
    strata_order = [f for f in stratify_by if f != SITE_FACTOR]
    key_cache: dict[tuple[str, ...], str] = {}
    arm_index = {arm: k for k, arm in enumerate(design.arms)}

    per_run: dict[str, list[float]] = {
        name: [] for name in (
            "final", "max", "stratum_mean", "stratum_max", "marginal_mean", "marginal_max",
            "guess", "n_strata",
        )
    }
    fractions: list[list[float]] = [[] for _ in range(n_arms)]
    for run in range(runs):
        model = f"sim{run}"
        state = RandomizationState()
        overall = [0] * n_arms
        stratum_counts: dict[str, list[int]] = {}
        marginal_counts: dict[tuple[str, str], list[int]] = {}
        worst = 0.0
        correct = 0.0
        for j in range(1, n + 1):
            factors = {name: levels[int(rng.random() * len(levels))] for name, levels in choices}
            signature = tuple(factors[name] for name in stratify_by)
            key = key_cache.get(signature)
            if key is None:
                key = stratum_key(
                    factors[SITE_FACTOR] if by_site else None,
                    [(name, factors[name]) for name in strata_order],
                )
                key_cache[signature] = key
            counts = stratum_counts.get(key)
            if counts is None:
                counts = stratum_counts[key] = [0] * n_arms
            result, state = allocate(
                design, state, secret=secret, model=model, seq_no=j, stratum_key=key,
                factors=factors,
            )
            arm = arm_index[result.arm]
            correct += _guess_credit(counts, arm, design.ratio, total_weight)
            counts[arm] += 1
            overall[arm] += 1
            for name, level in factors.items():
                marginal_counts.setdefault((name, level), [0] * n_arms)[arm] += 1
            current = imbalance(overall)
            if current > worst:
                worst = current
        strata_values = [imbalance(c) for c in stratum_counts.values()]
        marginal_values = [imbalance(c) for c in marginal_counts.values()] or [0.0]
        per_run["final"].append(imbalance(overall))
        per_run["max"].append(worst)
        per_run["stratum_mean"].append(math.fsum(strata_values) / len(strata_values))
        per_run["stratum_max"].append(max(strata_values))
        per_run["marginal_mean"].append(math.fsum(marginal_values) / len(marginal_values))
        per_run["marginal_max"].append(max(marginal_values))
        per_run["guess"].append(correct / n)
        per_run["n_strata"].append(float(len(stratum_counts)))
        for k in range(n_arms):
            fractions[k].append(overall[k] / n)
        if progress is not None:
            progress(run + 1)
    return SimulationResult(
        method=design.method,
        n=n,
        runs=runs,
        seed=seed,
        arms=design.arms,
        final_imbalance=_estimate(per_run["final"]),
        max_imbalance=_estimate(per_run["max"]),
        stratum_imbalance_mean=_estimate(per_run["stratum_mean"]),
        stratum_imbalance_max=_estimate(per_run["stratum_max"]),
        marginal_imbalance_mean=_estimate(per_run["marginal_mean"]),
        marginal_imbalance_max=_estimate(per_run["marginal_max"]),
        arm_fractions={arm: _estimate(fractions[k]) for k, arm in enumerate(design.arms)},
        target_fractions={
            arm: float(p) for arm, p in zip(design.arms, design.target_probabilities)
        },
        correct_guess=_estimate(per_run["guess"]),
        n_strata=_estimate(per_run["n_strata"]),
    )
