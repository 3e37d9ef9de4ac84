"""Property tests (hypothesis): parameter validation raises only DesignError; PBD bounds and
replay hold for random ratios, block sizes, seeds and interleavings."""

from __future__ import annotations

from fractions import Fraction
from math import gcd

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rand_helpers import allocate_sequence

from randomization.designs import METHODS, Design, allocate, build_design, replay, void
from randomization.draws import secret_from_seed
from randomization.errors import AllocationListError, DesignError, StateError
from randomization.lists import parse_allocation_list
from randomization.state import RandomizationState, ReplayInput

PARAM_NAMES = ["block_sizes", "factors", "imbalance", "p", "burn_in", "b", "lambda", "table"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 20), st.floats(allow_nan=True),
    st.text(max_size=6), st.sampled_from(["2/3", "0.8", "1", "range", "variance", "x/0"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["name", "weight", "levels", "all", "s=1"]), inner,
                        max_size=3),
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.one_of(st.sampled_from(METHODS), st.text(max_size=5)),
    arms=st.one_of(st.lists(st.text(max_size=3), max_size=4), scalars),
    ratio=st.one_of(st.lists(st.one_of(st.integers(-2, 6), scalars), max_size=4), scalars),
    params=st.dictionaries(st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=4)), values,
                           max_size=4),
)
def test_build_design_raises_only_design_error(
    method: str, arms: object, ratio: object, params: dict[str, object]
) -> None:
    try:
        design = build_design(method, arms, ratio, params)  # type: ignore[arg-type]
    except DesignError as exc:
        assert str(exc)
    else:
        assert isinstance(design, Design) and design.method == method
        assert gcd(*design.ratio) == 1


@st.composite
def block_designs(draw: st.DrawFn) -> tuple[Design, int]:
    n_arms = draw(st.integers(2, 4))
    ratio = draw(st.lists(st.integers(1, 4), min_size=n_arms, max_size=n_arms))
    reduced_sum = sum(ratio) // gcd(*ratio)
    multiples = draw(st.sets(st.integers(1, 3), min_size=1, max_size=3))
    sizes = [m * reduced_sum for m in multiples]
    arms = [f"ARM{k}" for k in range(n_arms)]
    return build_design("permuted_block", arms, ratio, {"block_sizes": sizes}), max(multiples)


@settings(max_examples=60, deadline=None)
@given(spec=block_designs(), seed=st.integers(0, 10**6), n=st.integers(1, 80))
def test_pbd_deviation_bound_holds_for_any_ratio_and_sizes(
    spec: tuple[Design, int], seed: int, n: int
) -> None:
    design, lam_max = spec
    results, _ = allocate_sequence(design, [("all", {})] * n, seed=seed)
    total = design.ratio_sum
    counts = [0] * len(design.arms)
    for j, result in enumerate(results, start=1):
        counts[design.arms.index(result.arm)] += 1
        for k, w in enumerate(design.ratio):
            bound = Fraction(lam_max * w * (total - w), total)
            assert abs(counts[k] - Fraction(j * w, total)) <= bound
        if result.evidence["position"] == result.evidence["block_size"]:
            assert all(c * total == j * w for c, w in zip(counts, design.ratio))


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(["simple", "permuted_block", "efron", "big_stick", "block_urn",
                            "minimization"]),
    strata=st.lists(st.sampled_from(["s=1", "s=2", "s=3"]), min_size=1, max_size=40),
    voids=st.sets(st.integers(1, 40), max_size=5),
    seed=st.integers(0, 1000),
)
def test_replay_reproduces_any_trial(
    method: str, strata: list[str], voids: set[int], seed: int
) -> None:
    params: dict[str, dict[str, object]] = {
        "simple": {}, "permuted_block": {"block_sizes": [2, 4]}, "efron": {},
        "big_stick": {"b": 2}, "block_urn": {"lambda": 2},
        "minimization": {"factors": [{"name": "s"}, {"name": "g"}], "p": 0.75},
    }
    design = build_design(method, ["A", "B"], [1, 1], params[method])
    secret = secret_from_seed(seed)
    state = RandomizationState()
    stored = []
    for seq_no, key in enumerate(strata, start=1):
        factors = {"s": key[-1], "g": "xy"[seq_no % 2]}
        result, state = allocate(design, state, secret=secret, model="m1", seq_no=seq_no,
                                 stratum_key=key, factors=factors)
        stored.append(result)
        if seq_no in voids:
            state = void(design, state, result)
    inputs = [
        ReplayInput(r.seq_no, r.stratum_key, r.factors,
                    voided_before_seq=r.seq_no + 1 if r.seq_no in voids else None)
        for r in stored
    ]
    assert replay(design, secret, "m1", inputs) == stored


@settings(max_examples=150, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=80),
        st.lists(
            st.lists(st.sampled_from(["stratum", "arm", "randomization_number", "all", "A",
                                      "s=1", "x|y", "", '"', "7", "slot"]), max_size=4),
            max_size=5,
        ).map(lambda rows: "\n".join(",".join(row) for row in rows)),
    )
)
def test_parse_allocation_list_raises_only_its_error(text: str) -> None:
    try:
        table = parse_allocation_list(text)
    except AllocationListError as exc:
        assert "line" in str(exc) or "rows" in str(exc) or "text" in str(exc)
    else:
        assert table and all(arms for arms in table.values())


@settings(max_examples=150, deadline=None)
@given(data=st.dictionaries(
    st.sampled_from(["format", "last_seq_no", "n_allocations", "voided_seq_nos", "strata"]),
    values, max_size=5,
))
def test_state_from_json_raises_only_state_error(data: dict[str, object]) -> None:
    try:
        state = RandomizationState.from_json(data)
    except StateError as exc:
        assert str(exc)
    else:
        assert RandomizationState.from_json(state.to_json()) == state
