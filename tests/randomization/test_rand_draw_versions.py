"""Draw versions (spec §1.0 (i)-(ii)), the maximal procedure (§1.6, §2.2) and the stateful
Randomizer.

Under `hmac-sha256-v2` a biased coin applied per stratum draws its own stratum's stream, so
the stratum's sequence is the same whatever the interleaving with other strata; a model that
started under `hmac-sha256-v1` keeps the trial-level stream and replays exactly as before.
"""

from __future__ import annotations

import itertools
from collections import Counter
from fractions import Fraction

import pytest
from rand_helpers import allocate_sequence

from randomization import Randomizer
from randomization.designs import MaximalDesign, allocate, build_design, replay
from randomization.draws import RNG_ALGORITHM, RNG_ALGORITHM_V1, choose_index, secret_from_seed
from randomization.errors import AllocationInputError, DesignError
from randomization.state import RandomizationState, ReplayInput

ARMS2 = ["A", "B"]
COINS = [
    ("efron", {"p": Fraction(2, 3)}),
    ("big_stick", {"b": 2}),
    ("block_urn", {"lambda": 2}),
    ("maximal", {"b": 2, "block_length": 8}),
]


def _run(design: object, order: list[str], algorithm: str, seed: int = 3) -> list[tuple[str, str]]:
    secret = secret_from_seed(seed)
    state = RandomizationState()
    out = []
    for seq_no, key in enumerate(order, start=1):
        result, state = allocate(
            design, state, secret=secret, model="T", seq_no=seq_no,  # type: ignore[arg-type]
            stratum_key=key, factors={}, algorithm=algorithm,
        )
        out.append((key, result.arm))
    return out


def _per_stratum(allocations: list[tuple[str, str]]) -> dict[str, list[str]]:
    sequences: dict[str, list[str]] = {}
    for key, arm in allocations:
        sequences.setdefault(key, []).append(arm)
    return sequences


@pytest.mark.parametrize(("method", "params"), COINS)
def test_v2_biased_coins_do_not_depend_on_other_strata(
    method: str, params: dict[str, object]
) -> None:
    """§1.0 (ii) and §2.2 'stratification': same stratum sequence whatever the interleaving."""
    design = build_design(method, ARMS2, [1, 1], params)
    grouped = ["s=1"] * 24 + ["s=2"] * 24
    interleaved = ["s=1", "s=2"] * 24
    skewed = ["s=2"] * 5 + ["s=1", "s=1", "s=2"] * 8 + ["s=1"] * 8 + ["s=2"] * 11
    runs = [_per_stratum(_run(design, order, RNG_ALGORITHM)) for order in
            (grouped, interleaved, skewed)]
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize(("method", "params"), COINS[:3])
def test_v1_biased_coins_still_draw_the_trial_level_stream(
    method: str, params: dict[str, object]
) -> None:
    """A model that started under v1 keeps its draws: the coin of allocation seq_no is
    `coin|{model}|{seq_no}`, so its strata do depend on the interleaving (the defect v2 fixes),
    and every stored v1 allocation replays exactly."""
    design = build_design(method, ARMS2, [1, 1], params)
    grouped = ["s=1"] * 24 + ["s=2"] * 24
    interleaved = ["s=1", "s=2"] * 24
    v1 = [_per_stratum(_run(design, order, RNG_ALGORITHM_V1)) for order in (grouped, interleaved)]
    assert v1[0] != v1[1]
    secret = secret_from_seed(3)
    state = RandomizationState()
    for seq_no, key in enumerate(interleaved, start=1):
        result, state = allocate(
            design, state, secret=secret, model="T", seq_no=seq_no, stratum_key=key,
            factors={}, algorithm=RNG_ALGORITHM_V1,
        )
        assert result.evidence["draw_label"] == f"coin|T|{seq_no}"
        probabilities = [Fraction(p) for p in result.evidence["probabilities"].values()]  # type: ignore[attr-defined]
        k, u = choose_index(probabilities, secret, "coin|T", seq_no)
        assert (ARMS2[k], u) == (result.arm, result.evidence["u"])
    inputs = [ReplayInput(seq_no=j, stratum_key=key) for j, key in enumerate(interleaved, 1)]
    assert [r.arm for r in replay(design, secret, "T", inputs, algorithm=RNG_ALGORITHM_V1)] == [
        arm for _, arm in _run(design, interleaved, RNG_ALGORITHM_V1)
    ]
    v2 = [r.arm for r in replay(design, secret, "T", inputs, algorithm=RNG_ALGORITHM)]
    assert v2 != [arm for _, arm in _run(design, interleaved, RNG_ALGORITHM_V1)]


def test_v2_label_is_the_stratum_stream_at_its_kth_slot_voids_included() -> None:
    design = build_design("efron", ARMS2, [1, 1], {"p": Fraction(2, 3)})
    r = Randomizer(design, seed=5, model="T", stratify_by=["site"])
    first = r.allocate({"site": "S1"})
    r.allocate({"site": "S2"})
    r.void(first)
    third = r.allocate({"site": "S1"})
    assert first.evidence["draw_label"] == "coin|T|site=S1|1"
    assert third.evidence["draw_label"] == "coin|T|site=S1|2"  # slot 1 stays used
    assert third.seq_no == 3


def test_minimization_keeps_the_trial_level_coin_in_both_versions() -> None:
    design = build_design("minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}]})
    inputs = [("all", {"sex": "fm"[j % 2]}) for j in range(20)]
    v2, _ = allocate_sequence(design, inputs)
    assert all(r.evidence["draw_label"] == f"coin|m1|{r.seq_no}" for r in v2)
    secret = secret_from_seed(1)
    state = RandomizationState()
    for seq_no, (key, factors) in enumerate(inputs, start=1):
        result, state = allocate(
            design, state, secret=secret, model="m1", seq_no=seq_no, stratum_key=key,
            factors=factors, algorithm=RNG_ALGORITHM_V1,
        )
        assert result == v2[seq_no - 1]


def test_unknown_draw_version_is_refused() -> None:
    design = build_design("simple", ARMS2, [1, 1], {})
    with pytest.raises(AllocationInputError, match="unknown draw algorithm"):
        allocate(design, RandomizationState(), secret=secret_from_seed(1), model="m",
                 seq_no=1, stratum_key="all", factors={}, algorithm="hmac-sha256-v9")


# ------------------------------------------------------------------ maximal procedure


def _admissible(n: int, b: int) -> list[tuple[int, ...]]:
    """Every ±1 sequence of length n with |D_j| <= b throughout and D_n = 0, by brute force."""
    out = []
    for steps in itertools.product((1, -1), repeat=n):
        partial = list(itertools.accumulate(steps))
        if partial[-1] == 0 and all(abs(d) <= b for d in partial):
            out.append(steps)
    return out


@pytest.mark.parametrize(("n", "b"), [(4, 1), (6, 2), (8, 2), (8, 3)])
def test_maximal_procedure_is_uniform_over_admissible_sequences(n: int, b: int) -> None:
    """§1.6/§2.2: the sequential φ = C(j+1, d+1)/C(j, d) gives every admissible block the same
    probability 1/#admissible (checked exactly, by multiplying the φ's along each sequence)."""
    design = build_design("maximal", ARMS2, [1, 1], {"b": b, "block_length": n})
    assert isinstance(design, MaximalDesign)
    sequences = _admissible(n, b)
    for steps in sequences:
        probability = Fraction(1)
        counts = [0, 0]
        for step in steps:
            phi, _, _ = design.probability_first(counts)
            probability *= phi if step == 1 else 1 - phi
            counts[0 if step == 1 else 1] += 1
        assert probability == Fraction(1, len(sequences))


def test_maximal_procedure_bounds_and_reaches_every_sequence() -> None:
    """|D_j| <= b, D = 0 at each block end, and every admissible block occurs."""
    n, b = 6, 2
    design = build_design("maximal", ARMS2, [1, 1], {"b": b, "block_length": n})
    seen: Counter[tuple[str, ...]] = Counter()
    for seed in range(150):
        results, _ = allocate_sequence(design, [("all", {})] * (3 * n), seed=seed)
        d = 0
        for j, result in enumerate(results, start=1):
            d += 1 if result.arm == "A" else -1
            assert abs(d) <= b
            if j % n == 0:
                assert d == 0
        seen[tuple(r.arm for r in results[:n])] += 1
    assert len(seen) == len(_admissible(n, b)) == 18  # C(6,3) less AAABBB and BBBAAA


def test_maximal_procedure_parameters() -> None:
    with pytest.raises(DesignError, match="even"):
        build_design("maximal", ARMS2, [1, 1], {"b": 2, "block_length": 7})
    with pytest.raises(DesignError, match="1:1"):
        build_design("maximal", ARMS2, [2, 1], {"b": 2, "block_length": 6})
    with pytest.raises(DesignError, match="block_length is required"):
        build_design("maximal", ARMS2, [1, 1], {"b": 2})


# ------------------------------------------------------------------ Randomizer


def test_randomizer_gives_the_pure_core_allocations() -> None:
    design = build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [4]})
    r = Randomizer(design, seed=9, model="m1", stratify_by=["site", "sex"])
    people = [{"site": "S1", "sex": "f"}, {"sex": "m", "site": "S2"}, {"site": "S1", "sex": "f"}]
    results = [r.allocate(p) for p in people]
    expected, state = allocate_sequence(
        design, [("site=S1|sex=f", people[0]), ("site=S2|sex=m", people[1]),
                 ("site=S1|sex=f", people[2])], seed=9,
    )
    assert results == expected and r.state == state and r.next_seq_no == 4
    assert r.future({"site": "S1", "sex": "f"}, 2) == [
        r.allocate({"site": "S1", "sex": "f"}).arm, r.allocate({"site": "S1", "sex": "f"}).arm
    ]
    with pytest.raises(AllocationInputError, match="stratification factor sex missing"):
        r.allocate({"site": "S1"})
    with pytest.raises(AllocationInputError, match="exactly one of secret and seed"):
        Randomizer(design)


def test_deterministic_allocations_are_flagged() -> None:
    """The last slot of a 1:1 block of 2 is forced; a big stick at its bound is forced."""
    pbd = build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [2]})
    results, _ = allocate_sequence(pbd, [("all", {})] * 10)
    assert [r.is_deterministic for r in results] == [False, True] * 5
    assert [r.probabilities for r in results[:2]] == [
        (Fraction(1, 2), Fraction(1, 2)),
        (Fraction(0), Fraction(1)) if results[0].arm == "A" else (Fraction(1), Fraction(0)),
    ]
    listed = build_design("list", ARMS2, [1, 1], {"table": {"all": ["A", "B"]}})
    assert allocate_sequence(listed, [("all", {})])[0][0].is_deterministic is None


def test_pbd_probabilities_are_what_remains_of_the_block() -> None:
    """2:1:1 in blocks of 4: P(arm) is the arm's share of the block's unused slots, so the last
    slot of every block is forced, and the third too when both A's are still to come."""
    design = build_design("permuted_block", ["A", "B", "C"], [2, 1, 1], {"block_sizes": [4]})
    results, _ = allocate_sequence(design, [("all", {})] * 64, seed=2)
    for j, result in enumerate(results):
        used = results[j - j % 4 : j]
        remaining = Counter({"A": 2, "B": 1, "C": 1})
        remaining.subtract(r.arm for r in used)
        assert result.probabilities == tuple(
            Fraction(remaining[a], 4 - j % 4) for a in ("A", "B", "C")
        )
    forced = [j for j, r in enumerate(results) if r.is_deterministic]
    assert set(range(3, 64, 4)) <= set(forced)
    assert all(results[j + 1].arm == results[j].arm == "A" for j in forced if j % 4 == 2)
