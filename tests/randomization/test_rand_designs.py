"""Hard (every-run) properties of every design, spec §2.2, and the allocate/void/replay contract."""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from itertools import accumulate

import pytest
from rand_helpers import allocate_sequence

from randomization.designs import (
    BlockUrnDesign,
    MinimizationDesign,
    allocate,
    build_design,
    future_slots,
    replay,
    stratification_warnings,
    void,
)
from randomization.draws import secret_from_seed
from randomization.errors import (
    AllocationInputError,
    AllocationUnavailable,
    DesignError,
    StateError,
)
from randomization.state import RandomizationState, ReplayInput
from randomization.strata import parse_stratum_key, stratum_key

ARMS2 = ["A", "B"]


def _arms_of(results: list) -> list[str]:  # type: ignore[type-arg]
    return [r.arm for r in results]


def _same_stratum(n: int, key: str = "all") -> list[tuple[str, dict[str, str]]]:
    return [(key, {})] * n


# ------------------------------------------------------------------ build_design validation


@pytest.mark.parametrize(
    ("method", "arms", "ratio", "params", "message"),
    [
        ("permuted_block", ARMS2, [2, 1], {"block_sizes": [4]},
         "block size 4 is not a multiple of ratio sum 3"),
        ("permuted_block", ARMS2, [4, 2], {"block_sizes": [3, 4]},
         "block size 4 is not a multiple of ratio sum 3"),
        ("permuted_block", ARMS2, [1, 1], {}, "block_sizes is required"),
        ("permuted_block", ARMS2, [1, 1], {"block_sizes": [2, 2]}, "duplicates"),
        ("simple", ["A"], [1], {}, "at least two arms"),
        ("simple", ["A", "A"], [1, 1], {}, "unique"),
        ("simple", ARMS2, [1], {}, "ratio has 1 entries"),
        ("simple", ARMS2, [1, 0], {}, "positive integers"),
        ("simple", ARMS2, [1, 1], {"p": 1}, "unknown parameter"),
        ("coin_toss", ARMS2, [1, 1], {}, "unknown randomization method"),
        ("efron", ARMS2, [2, 1], {}, "ratio 1:1"),
        ("efron", ARMS2, [1, 1], {"p": 0.5}, "p must be in (1/2, 1]"),
        ("big_stick", ARMS2, [1, 1], {}, "b is required"),
        ("big_stick", ARMS2, [1, 1], {"b": 0}, "b must be an integer >= 1"),
        ("block_urn", ARMS2, [1, 1], {"lambda": True}, "lambda must be an integer"),
        ("minimization", ARMS2, [1, 1], {"factors": []}, "factors must be a non-empty list"),
        ("minimization", ARMS2, [1, 1], {"factors": [{"name": "sex", "weight": 0}]},
         "at least one factor weight"),
        ("minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}], "p": 0}, "p must be in"),
        ("minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}], "imbalance": "sd"},
         "imbalance must be"),
        ("minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}, {"name": "sex"}]},
         "unique"),
        ("list", ARMS2, [1, 1], {"table": {"all": ["A", "C"]}}, "undeclared arm(s) C"),
        ("list", ARMS2, [1, 1], {"table": {"site=1|bad": ["A"]}}, "malformed stratum key"),
    ],
)
def test_build_design_rejects_with_clear_message(
    method: str, arms: list[str], ratio: list[int], params: dict[str, object], message: str
) -> None:
    with pytest.raises(DesignError) as info:
        build_design(method, arms, ratio, params)
    assert message in str(info.value)


def test_ratio_is_reduced_by_gcd() -> None:
    design = build_design("permuted_block", ARMS2, [4, 2], {"block_sizes": [6, 3]})
    assert design.ratio == (2, 1)
    assert design.block_sizes == (3, 6)  # type: ignore[attr-defined]


def test_minimization_p_one_is_allowed_but_flagged() -> None:
    design = build_design("minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}], "p": 1})
    assert design.warnings and "deterministic" in design.warnings[0]
    plain = build_design("minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}]})
    assert plain.warnings == ()


def test_probabilities_are_exact_decimals() -> None:
    design = build_design(
        "minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}], "p": 0.8}
    )
    assert isinstance(design, MinimizationDesign)
    assert design.p == Fraction(4, 5)


# ------------------------------------------------------------------ stratum keys


def test_stratum_key_format() -> None:
    assert stratum_key("S01", [("moca_band", "lt22")]) == "site=S01|moca_band=lt22"
    assert stratum_key(None, [("sex", "f"), ("age", "ge65")]) == "sex=f|age=ge65"
    assert stratum_key(None, []) == "all"
    assert parse_stratum_key("site=S01|moca_band=lt22") == [("site", "S01"), ("moca_band", "lt22")]
    for bad in [("S|1", []), (None, [("a", "")]), (None, [("a", "x"), ("a", "y")])]:
        with pytest.raises(AllocationInputError):
            stratum_key(bad[0], bad[1])  # type: ignore[arg-type]


# ------------------------------------------------------------------ permuted blocks


def _check_pbd_bounds(design, results, lam_max: int) -> None:  # type: ignore[no-untyped-def]
    """|N_k(j) − jρ_k| ≤ λ_max·w_k·(W − w_k)/W at every j (per stratum)."""
    total = design.ratio_sum
    counts = [0] * len(design.arms)
    for j, result in enumerate(results, start=1):
        counts[design.arms.index(result.arm)] += 1
        for k, w in enumerate(design.ratio):
            deviation = abs(Fraction(counts[k]) - Fraction(j * w, total))
            assert deviation <= Fraction(lam_max * w * (total - w), total)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pbd_fixed_blocks_are_balanced_and_bounded(seed: int) -> None:
    design = build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [4]})
    results, _ = allocate_sequence(design, _same_stratum(40), seed=seed)
    arms = _arms_of(results)
    for start in range(0, 40, 4):
        assert Counter(arms[start:start + 4]) == {"A": 2, "B": 2}
    d = list(accumulate(1 if a == "A" else -1 for a in arms))
    assert max(abs(x) for x in d) <= 2
    assert all(d[j - 1] == 0 for j in range(4, 41, 4))
    assert [r.evidence["position"] for r in results[:8]] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert [r.evidence["block_index"] for r in results[:8]] == [1, 1, 1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_pbd_two_to_one_block_six_bound(seed: int) -> None:
    design = build_design("permuted_block", ARMS2, [2, 1], {"block_sizes": [6]})
    results, _ = allocate_sequence(design, _same_stratum(60), seed=seed)
    n_a = 0
    for j, result in enumerate(results, start=1):
        n_a += result.arm == "A"
        assert abs(Fraction(n_a) - Fraction(2 * j, 3)) <= Fraction(4, 3)
        if j % 6 == 0:
            assert n_a == 2 * j // 3
    _check_pbd_bounds(design, results, lam_max=2)


def test_pbd_random_sizes_balance_at_drawn_block_ends() -> None:
    design = build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [2, 4, 6]})
    results, _ = allocate_sequence(design, _same_stratum(300), seed=9)
    sizes = Counter(r.evidence["block_size"] for r in results if r.evidence["position"] == 1)
    assert set(sizes) == {2, 4, 6}
    d = 0
    for result in results:
        d += 1 if result.arm == "A" else -1
        assert abs(d) <= 3
        if result.evidence["position"] == result.evidence["block_size"]:
            assert d == 0
    _check_pbd_bounds(design, results, lam_max=3)


def test_pbd_three_arms_unequal_ratio() -> None:
    design = build_design("permuted_block", ["A", "B", "C"], [2, 1, 1], {"block_sizes": [4, 8]})
    results, _ = allocate_sequence(design, _same_stratum(200), seed=4)
    _check_pbd_bounds(design, results, lam_max=2)


# ------------------------------------------------------------------ reproducibility and strata


def _mixed_inputs(n: int) -> list[tuple[str, dict[str, str]]]:
    keys = ["site=S1|sex=f", "site=S1|sex=m", "site=S2|sex=f"]
    return [(keys[(j * 7) % 3], {"sex": keys[(j * 7) % 3][-1], "site": "S1"}) for j in range(n)]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("simple", {}),
        ("permuted_block", {"block_sizes": [2, 4]}),
        ("efron", {"p": "2/3"}),
        ("big_stick", {"b": 2}),
        ("block_urn", {"lambda": 2}),
        ("minimization", {"factors": [{"name": "sex", "weight": 2}, {"name": "site"}],
                          "imbalance": "variance", "p": 0.75, "burn_in": 3}),
    ],
)
def test_same_secret_and_inputs_reproduce_everything(
    method: str, params: dict[str, object]
) -> None:
    design = build_design(method, ARMS2, [1, 1], params)
    first, state1 = allocate_sequence(design, _mixed_inputs(30), seed=3)
    again, state2 = allocate_sequence(design, _mixed_inputs(30), seed=3)
    assert first == again and state1 == state2
    other, _ = allocate_sequence(design, _mixed_inputs(30), seed=4)
    assert _arms_of(first) != _arms_of(other)
    for result in first:
        json.dumps(result.evidence)


def test_state_json_round_trip_continues_identically() -> None:
    design = build_design(
        "minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}, {"name": "site"}]}
    )
    inputs = _mixed_inputs(20)
    whole, final = allocate_sequence(design, inputs)
    head, middle = allocate_sequence(design, inputs[:11])
    restored = RandomizationState.from_json(json.loads(json.dumps(middle.to_json())))
    assert restored == middle
    tail, final2 = allocate_sequence(design, inputs[11:], state=restored, first_seq_no=12)
    assert head + tail == whole and final2 == final


def test_malformed_state_json_raises_state_error() -> None:
    with pytest.raises(StateError):
        RandomizationState.from_json({"format": 1, "strata": {}})
    with pytest.raises(StateError):
        RandomizationState.from_json(
            {"format": 1, "last_seq_no": -1, "n_allocations": 0, "voided_seq_nos": [],
             "strata": {}}
        )


@pytest.mark.parametrize(
    ("method", "params"),
    [("simple", {}), ("permuted_block", {"block_sizes": [2, 4, 6]}),
     ("list", {"table": {"s=1": ["A", "B", "B", "A", "A", "B"], "s=2": ["B", "A"] * 3}})],
)
def test_stratum_sequence_does_not_depend_on_interleaving(
    method: str, params: dict[str, object]
) -> None:
    design = build_design(method, ARMS2, [1, 1], params)
    blocks = [("s=1", {})] * 6 + [("s=2", {})] * 6
    alternating = [("s=1", {}), ("s=2", {})] * 6
    first, _ = allocate_sequence(design, blocks)
    second, _ = allocate_sequence(design, alternating)
    for key in ("s=1", "s=2"):
        assert [r.arm for r in first if r.stratum_key == key] == [
            r.arm for r in second if r.stratum_key == key
        ]


def test_seq_no_must_increase() -> None:
    design = build_design("simple", ARMS2, [1, 1], {})
    _, state = allocate_sequence(design, _same_stratum(3))
    with pytest.raises(AllocationInputError, match="seq_no"):
        allocate(design, state, secret=secret_from_seed(1), model="m1", seq_no=3,
                 stratum_key="all", factors={})


def test_short_secret_and_bad_stratum_key_are_rejected() -> None:
    design = build_design("simple", ARMS2, [1, 1], {})
    with pytest.raises(AllocationInputError, match="secret"):
        allocate(design, RandomizationState(), secret=b"short", model="m", seq_no=1,
                 stratum_key="all", factors={})
    with pytest.raises(AllocationInputError, match="stratum key"):
        allocate(design, RandomizationState(), secret=secret_from_seed(1), model="m", seq_no=1,
                 stratum_key="S01", factors={})


# ------------------------------------------------------------------ voiding and replay


def test_void_retires_pbd_slot() -> None:
    design = build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [4]})
    planned, _ = allocate_sequence(design, _same_stratum(8))
    results, state = allocate_sequence(design, _same_stratum(3))
    state = void(design, state, results[1])
    rest, _ = allocate_sequence(design, _same_stratum(5), state=state, first_seq_no=4)
    assert _arms_of(results + rest) == _arms_of(planned)
    with pytest.raises(StateError):
        void(design, state, results[1])


def test_replay_reproduces_trial_with_voids() -> None:
    design = build_design(
        "minimization", ["A", "B", "C"], [2, 1, 1],
        {"factors": [{"name": "sex", "levels": ["f", "m"]}, {"name": "site"}], "p": 0.9},
    )
    secret = secret_from_seed(11)
    inputs = _mixed_inputs(25)
    state = RandomizationState()
    stored = []
    replay_inputs = []
    voided_when: dict[int, int] = {}
    for seq_no, (key, factors) in enumerate(inputs, start=1):
        result, state = allocate(design, state, secret=secret, model="m", seq_no=seq_no,
                                 stratum_key=key, factors=factors)
        stored.append(result)
        if seq_no in (4, 9):
            state = void(design, state, result)
            voided_when[seq_no] = seq_no + 1
        if seq_no == 15:
            state = void(design, state, stored[1])  # voided later than its allocation
            voided_when[2] = 16
    for result in stored:
        replay_inputs.append(
            ReplayInput(result.seq_no, result.stratum_key, result.factors,
                        voided_before_seq=voided_when.get(result.seq_no))
        )
    assert replay(design, secret, "m", replay_inputs) == stored
    wrong = [ReplayInput(r.seq_no, r.stratum_key, r.factors) for r in stored]
    assert replay(design, secret, "m", wrong) != stored


# ------------------------------------------------------------------ future slots and lists


@pytest.mark.parametrize(
    ("method", "params"),
    [("simple", {}), ("permuted_block", {"block_sizes": [2, 4, 6]}),
     ("list", {"table": {"all": ["A", "B", "B", "A", "A", "B", "A", "B", "B", "A"]}})],
)
def test_future_slots_predict_allocations_without_consuming(
    method: str, params: dict[str, object]
) -> None:
    design = build_design(method, ARMS2, [1, 1], params)
    secret = secret_from_seed(1)
    _, state = allocate_sequence(design, _same_stratum(3))
    upcoming = future_slots(design, state, secret, "m1", "all", 7)
    rest, _ = allocate_sequence(design, _same_stratum(7), state=state, first_seq_no=4)
    assert upcoming == _arms_of(rest)
    assert future_slots(design, state, secret, "m1", "all", 7) == upcoming


def test_future_slots_refused_for_dynamic_designs() -> None:
    design = build_design("big_stick", ARMS2, [1, 1], {"b": 3})
    with pytest.raises(DesignError, match="only simple, permuted_block and list"):
        future_slots(design, RandomizationState(), secret_from_seed(1), "m", "all", 3)


def test_list_is_consumed_in_upload_order_and_exhaustion_is_an_error() -> None:
    design = build_design("list", ARMS2, [1, 1], {"table": {"site=S1": ["B", "B", "A"]}})
    results, state = allocate_sequence(design, _same_stratum(3, "site=S1"))
    assert _arms_of(results) == ["B", "B", "A"]
    assert [r.evidence["slot"] for r in results] == [1, 2, 3]
    with pytest.raises(AllocationUnavailable, match="no allocation available in stratum site=S1"):
        allocate_sequence(design, _same_stratum(1, "site=S1"), state=state, first_seq_no=4)
    with pytest.raises(AllocationUnavailable, match="site=S2"):
        allocate_sequence(design, _same_stratum(1, "site=S2"))
    voided = void(design, state, results[0])
    with pytest.raises(AllocationUnavailable):
        allocate_sequence(design, _same_stratum(1, "site=S1"), state=voided, first_seq_no=4)


# ------------------------------------------------------------------ biased coins and urn


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_big_stick_bound_and_forcing(seed: int) -> None:
    design = build_design("big_stick", ARMS2, [1, 1], {"b": 2})
    results, _ = allocate_sequence(design, _same_stratum(300), seed=seed)
    d = 0
    n_forced = 0
    for result in results:
        before = d
        assert result.evidence["d"] == before
        probabilities = result.evidence["probabilities"]
        if abs(before) == 2:
            n_forced += 1
            trailing = "B" if before > 0 else "A"
            assert result.arm == trailing and probabilities[trailing] == "1"  # type: ignore[index]
        else:
            assert probabilities == {"A": "1/2", "B": "1/2"}
        d += 1 if result.arm == "A" else -1
        assert abs(d) <= 2
    assert n_forced > 0


def test_efron_probabilities_follow_the_sign_of_d() -> None:
    design = build_design("efron", ARMS2, [1, 1], {"p": "2/3"})
    results, _ = allocate_sequence(design, _same_stratum(200), seed=5)
    for result in results:
        d = result.evidence["d"]
        expected = "1/2" if d == 0 else ("2/3" if d < 0 else "1/3")  # type: ignore[operator]
        assert result.evidence["probabilities"]["A"] == expected  # type: ignore[index]


@pytest.mark.parametrize("seed", [1, 2])
def test_block_urn_two_arms_bound_and_trailing_probability(seed: int) -> None:
    lam = 3
    design = build_design("block_urn", ARMS2, [1, 1], {"lambda": lam})
    results, _ = allocate_sequence(design, _same_stratum(300), seed=seed)
    d = 0
    for result in results:
        if d != 0:
            trailing = "B" if d > 0 else "A"
            expected = Fraction(lam, 2 * lam - abs(d))
            assert Fraction(result.evidence["probabilities"][trailing]) == expected  # type: ignore[index,arg-type]
        d += 1 if result.arm == "A" else -1
        assert abs(d) <= lam


def test_block_urn_reproduces_zhao_weng_table_1() -> None:
    """Zhao & Weng 2011 Table 1 (b = 6, λ = 3): P(A) along the history ABAABBBBABABA.

    The history is reconstructed from the spec's probability row: it is the one sequence whose
    BUD probabilities give 0.5, 0.4, 0.5, 0.4, 0.25, 0.4, 0.5, 0.6, 0.75, 0.6, 0.75, 0.6, 0.75, 0.6.
    """
    design = build_design("block_urn", ARMS2, [1, 1], {"lambda": 3})
    assert isinstance(design, BlockUrnDesign)
    history = "ABAABBBBABABA"
    counts = [0, 0]
    observed = []
    for arm in history + "?":
        observed.append(design.urn_probabilities(counts)[0][0])
        if arm != "?":
            counts["AB".index(arm)] += 1
    row = ["0.5", "0.4", "0.5", "0.4", "0.25", "0.4", "0.5", "0.6", "0.75", "0.6", "0.75", "0.6"]
    expected = [Fraction(x) for x in [*row, "0.75", "0.6"]]
    assert observed == expected


def test_block_urn_any_ratio_stays_within_lambda_sets() -> None:
    lam = 2
    design = build_design("block_urn", ["A", "B", "C"], [3, 2, 1], {"lambda": lam})
    results, _ = allocate_sequence(design, _same_stratum(400), seed=8)
    counts = [0, 0, 0]
    for result in results:
        probabilities = [Fraction(p) for p in result.evidence["probabilities"].values()]  # type: ignore[attr-defined]
        assert sum(probabilities) == 1 and min(probabilities) >= 0
        counts[design.arms.index(result.arm)] += 1
        kappa = min(c // w for c, w in zip(counts, design.ratio))
        assert all(c <= w * (lam + kappa) for c, w in zip(counts, design.ratio))


# ------------------------------------------------------------------ minimization


def _minimization(p: object = 0.8, **extra: object) -> MinimizationDesign:
    params: dict[str, object] = {
        "factors": [{"name": "sex", "levels": ["f", "m"]}, {"name": "age", "weight": 2}],
        "p": p, **extra,
    }
    design = build_design("minimization", ["A", "B", "C"], [2, 1, 1], params)
    assert isinstance(design, MinimizationDesign)
    return design


def _participants(n: int) -> list[tuple[str, dict[str, str]]]:
    return [("all", {"sex": "fm"[(j * 5) % 2 if j % 3 else 0], "age": "xyz"[(j * 7) % 3]})
            for j in range(n)]


def test_minimization_hand_computed_scores() -> None:
    design = _minimization()
    # Prior counts at the participant's levels: sex=f (A,B,C) = (2,1,0), age=x = (0,0,1).
    # Scaled by L/w = (1,2,2): A → sex (3,2,0) range 3, age (1,0,2) range 2, G = 3 + 2·2 = 7;
    # B → sex (2,4,0) 4, age (0,2,2) 2, G = 8; C → sex (2,2,2) 0, age (0,0,4) 4, G = 8.
    scores = design.imbalance_scores([(2, 1, 0), (0, 0, 1)])
    assert scores == (Fraction(7), Fraction(8), Fraction(8))
    probabilities, preferred = design.probabilities(scores)
    assert preferred == [0]
    assert probabilities == (Fraction(4, 5), Fraction(1, 10), Fraction(1, 10))
    tie_b_c = design.probabilities((Fraction(9), Fraction(8), Fraction(8)))
    assert tie_b_c == ((Fraction(1, 5), Fraction(2, 5), Fraction(2, 5)), [1, 2])
    variance = build_design(
        "minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}], "imbalance": "variance"}
    )
    assert isinstance(variance, MinimizationDesign)
    # Sample variance over arms: (4, 1) gives 9/2, (3, 2) gives 1/2.
    assert variance.imbalance_scores([(3, 1)]) == (Fraction(9, 2), Fraction(1, 2))


def test_minimization_preferred_set_gets_exactly_p_and_ties_follow_ratio() -> None:
    design = _minimization(p="7/10")
    results, _ = allocate_sequence(design, _participants(60))
    assert results[0].evidence["rule"] == "first_participant"
    assert results[0].evidence["probabilities"] == {"A": "1/2", "B": "1/4", "C": "1/4"}
    for result in results[1:]:
        preferred = result.evidence["preferred"]
        probabilities = {a: Fraction(p) for a, p in result.evidence["probabilities"].items()}  # type: ignore[attr-defined]
        mass = sum(probabilities[a] for a in preferred)  # type: ignore[attr-defined]
        assert mass == (1 if len(preferred) == 3 else Fraction(7, 10))  # type: ignore[arg-type]


def test_minimization_p_one_always_picks_a_minimiser() -> None:
    design = _minimization(p=1)
    results, _ = allocate_sequence(design, _participants(80), seed=2)
    assert all(r.arm in r.evidence["preferred"] for r in results[1:])  # type: ignore[operator]


def test_minimization_weight_zero_factor_has_no_influence() -> None:
    base = build_design("minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}]})
    padded = build_design(
        "minimization", ARMS2, [1, 1],
        {"factors": [{"name": "sex"}, {"name": "age", "weight": 0}]},
    )
    inputs = _participants(100)
    plain, _ = allocate_sequence(base, inputs, seed=6)
    with_zero, _ = allocate_sequence(padded, inputs, seed=6)
    assert _arms_of(plain) == _arms_of(with_zero)
    assert [r.evidence["probabilities"] for r in plain] == [
        r.evidence["probabilities"] for r in with_zero
    ]


def test_minimization_excludes_voided_allocations_from_counts() -> None:
    design = _minimization()
    inputs = [("all", {"sex": "f", "age": "x"})] * 5
    results, state = allocate_sequence(design, inputs)
    state = void(design, state, results[2])
    voided_arm = results[2].arm
    next_result, _ = allocate_sequence(design, inputs[:1], state=state, first_seq_no=6)
    counts = next_result[0].evidence["factor_counts"]["sex"]["counts"]  # type: ignore[index]
    active = Counter(r.arm for i, r in enumerate(results) if i != 2)
    assert counts == {arm: active[arm] for arm in design.arms}
    assert sum(counts.values()) == 4 and active[voided_arm] == counts[voided_arm]  # type: ignore[attr-defined]


def test_minimization_burn_in_uses_the_ratio() -> None:
    design = _minimization(burn_in=5)
    results, _ = allocate_sequence(design, _participants(8))
    assert [r.evidence["rule"] for r in results] == ["burn_in"] * 5 + ["minimization"] * 3
    assert all(r.evidence["probabilities"] == {"A": "1/2", "B": "1/4", "C": "1/4"}
               for r in results[:5])


def test_minimization_requires_declared_factor_levels() -> None:
    design = _minimization()
    with pytest.raises(AllocationInputError, match="minimization factor age missing"):
        allocate_sequence(design, [("all", {"sex": "f"})])
    with pytest.raises(AllocationInputError, match="not a level of factor sex"):
        allocate_sequence(design, [("all", {"sex": "x", "age": "y"})])


def test_minimization_overall_term() -> None:
    """v_0 adds the spread of the stratum's overall counts; v_0 = 0 changes nothing."""
    plain = _minimization()
    zero = _minimization(overall_weight=0)
    inputs = _participants(40)
    assert allocate_sequence(plain, inputs)[0] == allocate_sequence(zero, inputs)[0]
    overall = _minimization(overall_weight="1/2")
    assert isinstance(overall, MinimizationDesign)
    # Factor terms as in the hand-computed test (7, 8, 8); overall counts (1, 1, 1) scaled
    # (1, 2, 2): A → (2,2,2) 0, B → (1,4,2) 3, C → (1,2,4) 3; G += ½·spread.
    scores = overall.imbalance_scores([(2, 1, 0), (0, 0, 1)], (1, 1, 1))
    assert scores == (Fraction(7), Fraction(19, 2), Fraction(19, 2))
    with pytest.raises(DesignError, match="overall_weight"):
        _minimization(overall_weight=-1)


@pytest.mark.parametrize(
    ("method", "params", "bound"),
    [("big_stick", {"b": 2}, 2), ("block_urn", {"lambda": 1}, 1)],
)
def test_biased_coins_bound_imbalance_within_each_stratum(
    method: str, params: dict[str, object], bound: int
) -> None:
    """Biased coins run per stratum: the MTI holds in every stratum whatever the interleaving
    (that the sequence itself does not depend on it is tested in test_rand_draw_versions.py).
    """
    design = build_design(method, ARMS2, [1, 1], params)
    keys = ["s=1", "s=2", "s=3"]
    inputs = [(keys[(j * j + j // 4) % 3], {}) for j in range(240)]
    results, state = allocate_sequence(design, inputs, seed=12)
    d = dict.fromkeys(keys, 0)
    for result in results:
        d[result.stratum_key] += 1 if result.arm == "A" else -1
        assert abs(d[result.stratum_key]) <= bound
    assert {key: s.counts[0] - s.counts[1] for key, s in state.strata.items()} == d


def test_stratification_warning_when_strata_are_sparse() -> None:
    """Spec §6.6: warn when planned n / #strata < 2 × the largest block."""
    pbd = build_design("permuted_block", ARMS2, [1, 1], {"block_sizes": [4, 6]})
    assert stratification_warnings(pbd, 100, 60) and "60 strata" in stratification_warnings(
        pbd, 100, 60
    )[0]
    assert stratification_warnings(pbd, 120, 10) == []
    assert stratification_warnings(pbd, 100, 1) == []
    minimization = build_design("minimization", ARMS2, [1, 1], {"factors": [{"name": "sex"}]})
    assert stratification_warnings(minimization, 100, 60) == []
    with pytest.raises(DesignError):
        stratification_warnings(pbd, 100, 0)
