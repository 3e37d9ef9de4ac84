"""Statistical properties by simulation (spec §1.3, §1.5, §2.1, §2.4), tolerances from MC error.

Every check compares a Monte-Carlo mean with an exact or published value within 4 standard errors
(combining our SE with the published one where the reference is itself a simulation).
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from itertools import permutations

import pytest
from rand_helpers import allocate_sequence

from randomization.designs import build_design
from randomization.errors import SimulationError
from randomization.simulate import simulate

ARMS2 = ["A", "B"]
NO_FACTORS: dict[str, list[str]] = {}


def _within(observed: float, expected: float, se: float, *, reference_se: float = 0.0) -> bool:
    return abs(observed - expected) <= 4 * math.sqrt(se**2 + reference_se**2)


def test_simple_two_to_one_binomial_counts() -> None:
    """N_A ~ Bin(90, 2/3): mean 60, SD √(90·2/9) = 4.472."""
    design = build_design("simple", ARMS2, [2, 1], {})
    result = simulate(design, 90, 400, factor_levels=NO_FACTORS, site_levels=None,
                      stratify_by=[], seed=21)
    fraction = result.arm_fractions["A"]
    assert _within(90 * fraction.mean, 60, 90 * fraction.se)
    sd = 90 * fraction.se * math.sqrt(400)
    assert abs(sd - math.sqrt(20)) <= 4 * math.sqrt(20) / math.sqrt(2 * 400)
    assert result.target_fractions == {"A": 2 / 3, "B": 1 / 3}


def test_simple_one_to_one_imbalance_and_guessing() -> None:
    """E|D_100| = 100·C(100, 50)/2^100 (spec §1.1); any guessing strategy is right half the time."""
    design = build_design("simple", ARMS2, [1, 1], {})
    result = simulate(design, 100, 300, factor_levels=NO_FACTORS, site_levels=None,
                      stratify_by=[], seed=22)
    expected = 100 * math.comb(100, 50) / 2**100
    assert _within(result.final_imbalance.mean, expected, result.final_imbalance.se)
    assert _within(result.correct_guess.mean, 0.5, result.correct_guess.se)


def _block_correct_guesses(size: int) -> list[Fraction]:
    """Expected correct convergence-strategy guesses at each position of a 1:1 block (exact)."""
    sequences = sorted(set(permutations("A" * (size // 2) + "B" * (size // 2))))
    expected = []
    for position in range(size):
        total = Fraction(0)
        for sequence in sequences:
            d = sum(1 if arm == "A" else -1 for arm in sequence[:position])
            if d == 0:
                total += Fraction(1, 2)
            elif (sequence[position] == "A") == (d < 0):
                total += 1
        expected.append(total / len(sequences))
    return expected


def _expected_correct(n: int, sizes: tuple[int, ...]) -> Fraction:
    """E[#correct] in the first n allocations with block sizes drawn uniformly from `sizes`."""
    per_block = {size: _block_correct_guesses(size) for size in sizes}
    memo: dict[int, Fraction] = {0: Fraction(0)}
    for m in range(1, n + 1):
        memo[m] = sum(
            (sum(per_block[size][:m], Fraction(0)) + memo[max(m - size, 0)]
             for size in sizes), Fraction(0)
        ) / len(sizes)
    return memo[n]


def test_spec_correct_guess_constants_are_exact() -> None:
    """Spec §1.3: fixed 4 gives 17/24 = 0.7083; uniform {2,4,6} gives 253/360 = 0.7028 per slot."""
    assert sum(_block_correct_guesses(4)) / 4 == Fraction(17, 24)
    totals = [sum(_block_correct_guesses(size)) for size in (2, 4, 6)]
    assert sum(totals) / 12 == Fraction(253, 360)


def test_pbd_fixed_four_correct_guess() -> None:
    design = build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [4]})
    result = simulate(design, 100, 150, factor_levels=NO_FACTORS, site_levels=None,
                      stratify_by=[], seed=23)
    assert _within(result.correct_guess.mean, 17 / 24, result.correct_guess.se)
    assert result.final_imbalance.worst == 0 and result.max_imbalance.worst <= 2


def test_pbd_random_sizes_correct_guess() -> None:
    """For a finite n the expectation is the exact renewal sum, which tends to 253/360."""
    design = build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [2, 4, 6]})
    n = 60
    result = simulate(design, n, 300, factor_levels=NO_FACTORS, site_levels=None,
                      stratify_by=[], seed=24)
    expected = float(_expected_correct(n, (2, 4, 6)) / n)
    assert abs(expected - 253 / 360) < 0.01
    assert _within(result.correct_guess.mean, expected, result.correct_guess.se)
    assert result.max_imbalance.worst <= 3


def test_minimization_preferred_set_frequency_is_p() -> None:
    design = build_design(
        "minimization", ARMS2, [1, 1],
        {"factors": [{"name": "sex"}, {"name": "age"}], "p": 0.7},
    )
    inputs = [("all", {"sex": "fm"[(j * j) % 7 % 2], "age": "xyz"[(j * 5 + j // 3) % 3]})
              for j in range(1500)]
    results, _ = allocate_sequence(design, inputs, seed=25)
    decided = [r for r in results if r.evidence["rule"] == "minimization"
               and len(r.evidence["preferred"]) == 1]  # type: ignore[arg-type]
    hits = sum(r.arm in r.evidence["preferred"] for r in decided)  # type: ignore[operator]
    frequency = hits / len(decided)
    assert len(decided) > 500
    assert _within(frequency, 0.7, math.sqrt(0.7 * 0.3 / len(decided)))


def test_minimization_unequal_ratio_is_not_arp_as_the_spec_reports() -> None:
    """Spec §1.5 (R = 20 000, 2:1, two binary factors, p = 0.8): P(T_j = A) at j = 1, 3 is
    0.668, 0.604 (not 2/3).

    Covariates enumerate every level combination equally often (bits of the run number).
    """
    design = build_design(
        "minimization", ARMS2, [2, 1], {"factors": [{"name": "f1"}, {"name": "f2"}], "p": 0.8}
    )
    runs = 2500
    hits = [0, 0, 0]
    for run in range(runs):
        inputs = [("all", {"f1": "ab"[(run >> (2 * j)) & 1], "f2": "ab"[(run >> (2 * j + 1)) & 1]})
                  for j in range(3)]
        results, _ = allocate_sequence(design, inputs, seed=26, model=f"r{run}")
        for j, result in enumerate(results):
            hits[j] += result.arm == "A"
    for j, published in ((0, 0.668), (2, 0.604)):
        frequency = hits[j] / runs
        se = math.sqrt(frequency * (1 - frequency) / runs)
        assert _within(frequency, published, se, reference_se=0.0033)


STRATIFIED_FACTORS = {"sex": ["f", "m"], "age": ["a1", "a2", "a3"]}
SITES = [f"S{i:02d}" for i in range(10)]


def test_stratified_blocks_versus_minimization_match_the_spec() -> None:
    """Spec §1.0: 60 strata, n = 100: PBD(4) E|D| 5.70, max marginal 6.96; P–S 1.42 / 3.87."""
    pbd = build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [4]})
    blocked = simulate(pbd, 100, 200, factor_levels=STRATIFIED_FACTORS, site_levels=SITES,
                       stratify_by=["site", "sex", "age"], seed=27)
    assert _within(blocked.final_imbalance.mean, 5.70, blocked.final_imbalance.se,
                   reference_se=0.07)
    assert _within(blocked.marginal_imbalance_max.mean, 6.96, blocked.marginal_imbalance_max.se,
                   reference_se=0.07)
    assert blocked.stratum_imbalance_max.worst <= 2
    minimization = build_design(
        "minimization", ARMS2, [1, 1],
        {"factors": [{"name": "site"}, {"name": "sex"}, {"name": "age"}], "p": 0.8},
    )
    minimized = simulate(minimization, 100, 120, factor_levels=STRATIFIED_FACTORS,
                         site_levels=SITES, stratify_by=[], seed=28)
    assert _within(minimized.final_imbalance.mean, 1.42, minimized.final_imbalance.se,
                   reference_se=0.03)
    assert _within(minimized.marginal_imbalance_max.mean, 3.87,
                   minimized.marginal_imbalance_max.se, reference_se=0.03)
    assert minimized.n_strata.worst == 1


def test_big_stick_worst_imbalance_is_b_and_multi_arm_uses_distance() -> None:
    bsd = build_design("big_stick", ARMS2, [1, 1], {"b": 3})
    result = simulate(bsd, 80, 30, factor_levels=NO_FACTORS, site_levels=None,
                      stratify_by=[], seed=29)
    assert result.max_imbalance.worst == 3
    urn = build_design("block_urn", ["A", "B", "C"], [1, 1, 1], {"lambda": 1})
    three = simulate(urn, 30, 20, factor_levels=NO_FACTORS, site_levels=None,
                     stratify_by=[], seed=30)
    # λ = 1 with three arms is a permuted block of 3: balanced at every multiple of 3.
    assert three.final_imbalance.worst == 0
    assert three.max_imbalance.worst == pytest.approx(math.sqrt(2 / 3))


def test_progress_and_json_summary() -> None:
    design = build_design("efron", ARMS2, [1, 1], {})
    seen: list[int] = []
    result = simulate(design, 20, 5, factor_levels={"sex": ["f", "m"]}, site_levels=["S1", "S2"],
                      stratify_by=["site"], seed=31, progress=seen.append)
    assert seen == [1, 2, 3, 4, 5]
    summary = json.loads(json.dumps(result.to_json()))
    assert summary["method"] == "efron" and summary["runs"] == 5
    assert set(summary["metrics"]) >= {"final_imbalance", "correct_guess", "marginal_imbalance_max"}
    assert result.n_strata.worst <= 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"runs": 1}, "runs must be"),
        ({"stratify_by": ["region"]}, "unknown factor 'region'"),
        ({"factor_levels": {"sex": []}}, "non-empty list"),
        ({"site_levels": []}, "site_levels"),
    ],
)
def test_simulation_request_errors(kwargs: dict[str, object], message: str) -> None:
    design = build_design("simple", ARMS2, [1, 1], {})
    arguments: dict[str, object] = {
        "n": 10, "runs": 3, "factor_levels": {"sex": ["f", "m"]}, "site_levels": None,
        "stratify_by": [], "seed": 1, **kwargs,
    }
    n = arguments.pop("n")
    runs = arguments.pop("runs")
    with pytest.raises(SimulationError, match=message):
        simulate(design, n, runs, **arguments)  # type: ignore[arg-type]


def test_prevalences_weight_the_levels_drawn() -> None:
    """Sex f with prevalence 0.8: about 80% of participants, and every run reports its counts."""
    design = build_design("simple", ARMS2, [1, 1], {})
    result = simulate(design, 200, 40, factor_levels={"sex": ["f", "m"]}, site_levels=["S1"],
                      stratify_by=[], seed=40, prevalences={"sex": {"f": 0.8, "m": 0.2}})
    shares = [run.level_counts["sex"].get("f", 0) / 200 for run in result.runs_detail]
    mean = sum(shares) / len(shares)
    assert _within(mean, 0.8, math.sqrt(0.8 * 0.2 / 200 / 40))
    assert all(run.level_counts["site"] == {"S1": 200} for run in result.runs_detail)
    only_f = simulate(build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [4]}), 40, 5,
                      factor_levels={"sex": ["f", "m"]}, site_levels=None, stratify_by=["sex"],
                      seed=41, prevalences={"sex": {"f": 1.0, "m": 0.0}})
    assert only_f.n_strata.worst == 1 and only_f.final_imbalance.worst == 0


@pytest.mark.parametrize(
    ("prevalences", "message"),
    [
        ({"sex": {"f": 0.5, "m": 0.4}}, "must sum to 1"),
        ({"sex": {"f": 0.5, "x": 0.5}}, "unknown level"),
        ({"sex": {"f": 1.0}}, "no value for level"),
        ({"age": {"a": 1.0}}, "unknown factor"),
        ({"sex": {"f": 1.5, "m": -0.5}}, ">= 0"),
    ],
)
def test_prevalence_errors(prevalences: dict[str, dict[str, float]], message: str) -> None:
    with pytest.raises(SimulationError, match=message):
        simulate(build_design("simple", ARMS2, [1, 1], {}), 10, 2,
                 factor_levels={"sex": ["f", "m"]}, site_levels=None, stratify_by=[], seed=1,
                 prevalences=prevalences)


def test_deterministic_rate_balance_probability_and_chance() -> None:
    """Blocks of 2: every second allocation is forced (DA = ½) and the trial is balanced after
    every second one (EB = ½, final balance certain); simple randomization is never forced;
    chance is 1/k."""
    blocks = simulate(build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [2]}), 40, 6,
                      factor_levels=NO_FACTORS, site_levels=None, stratify_by=[], seed=42)
    assert blocks.deterministic_rate is not None
    assert (blocks.deterministic_rate.mean, blocks.deterministic_rate.se) == (0.5, 0.0)
    assert (blocks.exact_balance.mean, blocks.final_balance.mean) == (0.5, 1.0)
    assert blocks.chance_level == 0.5 and blocks.correct_guess.mean == 0.75
    coin = simulate(build_design("simple", ARMS2, [1, 1], {}), 40, 6, factor_levels=NO_FACTORS,
                    site_levels=None, stratify_by=[], seed=43)
    assert coin.deterministic_rate is not None and coin.deterministic_rate.worst == 0
    stick = simulate(build_design("big_stick", ARMS2, [1, 1], {"b": 1}), 40, 6,
                     factor_levels=NO_FACTORS, site_levels=None, stratify_by=[], seed=44)
    assert stick.deterministic_rate is not None and stick.deterministic_rate.mean == 0.5
    three = simulate(build_design("block_urn", ["A", "B", "C"], [1, 1, 1], {"lambda": 1}), 30, 3,
                     factor_levels=NO_FACTORS, site_levels=None, stratify_by=[], seed=45)
    assert three.chance_level == pytest.approx(1 / 3)
    # λ = 1, three arms: the last of every three is forced, balance after every third
    assert three.deterministic_rate is not None
    assert three.deterministic_rate.mean == pytest.approx(1 / 3)
    assert three.exact_balance.mean == pytest.approx(1 / 3)


def test_per_run_results_are_kept_and_serialised() -> None:
    design = build_design("maximal", ARMS2, [1, 1], {"b": 2, "block_length": 10})
    result = simulate(design, 20, 7, factor_levels={"sex": ["f", "m"]}, site_levels=None,
                      stratify_by=[], seed=46)
    assert len(result.runs_detail) == 7
    assert all(run.final_imbalance == 0 and run.max_imbalance <= 2 for run in result.runs_detail)
    summary = json.loads(json.dumps(result.to_json(per_run=True)))
    assert len(summary["per_run"]) == 7 and summary["chance_level"] == 0.5
    assert summary["per_run"][0]["arm_counts"] == [10, 10]
    assert "per_run" not in result.to_json()
    with pytest.raises(SimulationError, match="uploaded list"):
        simulate(build_design("list", ARMS2, [1, 1], {"table": {"all": ["A", "B"]}}), 2, 2,
                 factor_levels=NO_FACTORS, site_levels=None, stratify_by=[], seed=1)
