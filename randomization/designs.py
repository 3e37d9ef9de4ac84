"""Allocation designs and the pure allocate / void / replay entry points (spec §1).

A design is a frozen dataclass built by `build_design(method, arms, ratio, params)`. Every
design is applied independently within the stratum key the caller passes (`stratum_key()`;
`all` when the model is unstratified), so "stratified" is not a separate design.

Which allocations count: slot-based designs (simple, permuted_block, list) walk a fixed,
secret-keyed sequence per stratum, and a voided allocation retires its slot for good. Dynamic
designs (minimization, efron, big_stick, block_urn) decide from the counts of *active*
allocations: a void removes the allocation from the counts (spec §1.5) but never its seq_no.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import ClassVar, NamedTuple

from randomization.draws import (
    RNG_ALGORITHM,
    RNG_ALGORITHM_V1,
    RNG_ALGORITHMS,
    choose_index,
    randbelow,
    shuffle_in_place,
)
from randomization.errors import (
    AllocationInputError,
    AllocationUnavailable,
    DesignError,
    StateError,
)
from randomization.state import AllocationResult, RandomizationState, ReplayInput, StratumState
from randomization.strata import UNSTRATIFIED, check_stratum_key, stratum_key

__all__ = [
    "METHODS",
    "UNSTRATIFIED",
    "BigStickDesign",
    "BlockUrnDesign",
    "Design",
    "EfronDesign",
    "ListDesign",
    "MaximalDesign",
    "MinimizationDesign",
    "MinimizationFactor",
    "PermutedBlockDesign",
    "SimpleDesign",
    "allocate",
    "build_design",
    "future_slots",
    "replay",
    "stratification_warnings",
    "stratum_key",
    "void",
]


class _Context(NamedTuple):
    secret: bytes
    model: str
    seq_no: int
    stratum_key: str
    factors: Mapping[str, str]
    stratum: StratumState
    n_allocations: int
    algorithm: str


class _Choice(NamedTuple):
    arm_index: int
    evidence: dict[str, object]
    block: tuple[int, int, int] | None = None
    # The design's probability of each arm for this allocation given everything it knew
    # (None for an uploaded list, whose next arm is fixed by the table, not by chance).
    probabilities: tuple[Fraction, ...] | None = None


def _fraction_text(values: Sequence[Fraction], arms: Sequence[str]) -> dict[str, str]:
    return {arm: str(v) for arm, v in zip(arms, values)}


def _fraction_float(values: Sequence[Fraction], arms: Sequence[str]) -> dict[str, float]:
    return {arm: float(v) for arm, v in zip(arms, values)}


def _coin(
    design: Design,
    ctx: _Context,
    probabilities: Sequence[Fraction],
    evidence: dict[str, object],
    *,
    per_stratum: bool = False,
) -> _Choice:
    """Draw the design's coin against `probabilities` and record the draw.

    Minimization (and every coin under `hmac-sha256-v1`) draws the trial-level stream
    `coin|{model}` at seq_no; under v2 the per-stratum designs draw `coin|{model}|{stratum}` at
    the stratum's k-th slot, so a stratum's sequence does not depend on other strata.
    """
    if per_stratum and ctx.algorithm != RNG_ALGORITHM_V1:
        label, index = f"coin|{ctx.model}|{ctx.stratum_key}", ctx.stratum.n_slots + 1
    else:
        label, index = f"coin|{ctx.model}", ctx.seq_no
    k, u = choose_index(probabilities, ctx.secret, label, index)
    evidence["probabilities"] = _fraction_text(probabilities, design.arms)
    evidence["probabilities_float"] = _fraction_float(probabilities, design.arms)
    evidence["u"] = u
    evidence["draw_label"] = f"{label}|{index}"
    return _Choice(k, evidence, probabilities=tuple(probabilities))


@dataclass(frozen=True)
class Design(ABC):
    """Common interface: arms in protocol order, the gcd-reduced ratio and design warnings."""

    arms: tuple[str, ...]
    ratio: tuple[int, ...]
    warnings: tuple[str, ...] = ()

    method: ClassVar[str] = ""
    has_fixed_sequence: ClassVar[bool] = False

    @property
    def ratio_sum(self) -> int:
        """Return W, the sum of the reduced ratio."""
        return sum(self.ratio)

    @functools.cached_property
    def target_probabilities(self) -> tuple[Fraction, ...]:
        """Return ρ_k = w_k / W for every arm."""
        total = self.ratio_sum
        return tuple(Fraction(w, total) for w in self.ratio)

    @abstractmethod
    def choose(self, ctx: _Context) -> _Choice:
        """Return the arm for the allocation described by `ctx`."""

    def check_factors(self, factors: Mapping[str, str]) -> None:
        """Raise AllocationInputError if the factor levels cannot be used by this design.

        Only minimization reads factor levels; the other designs accept any levels as given.
        """
        return None


@dataclass(frozen=True)
class SimpleDesign(Design):
    """Complete randomization: P(arm k) = ρ_k, stream `simple|{model}|{stratum}`, k-th draw."""

    method: ClassVar[str] = "simple"
    has_fixed_sequence: ClassVar[bool] = True

    @functools.cached_property
    def _target_text(self) -> dict[str, str]:
        return _fraction_text(self.target_probabilities, self.arms)

    @functools.cached_property
    def _target_float(self) -> dict[str, float]:
        return _fraction_float(self.target_probabilities, self.arms)

    def slot_arm(self, secret: bytes, model: str, key: str, slot: int) -> tuple[int, float]:
        """Return (arm index, u) of the stratum's `slot`-th allocation (1-based)."""
        return choose_index(self.target_probabilities, secret, f"simple|{model}|{key}", slot)

    def choose(self, ctx: _Context) -> _Choice:
        """Draw the next simple-randomization slot of the stratum."""
        slot = ctx.stratum.n_slots + 1
        k, u = self.slot_arm(ctx.secret, ctx.model, ctx.stratum_key, slot)
        return _Choice(
            k,
            {
                "slot": slot,
                "probabilities": dict(self._target_text),
                "probabilities_float": dict(self._target_float),
                "u": u,
                "draw_label": f"simple|{ctx.model}|{ctx.stratum_key}|{slot}",
            },
            probabilities=self.target_probabilities,
        )


@functools.lru_cache(maxsize=4096)
def _block(
    secret: bytes, model: str, key: str, block_index: int, sizes: tuple[int, ...],
    ratio: tuple[int, ...],
) -> tuple[int, ...]:
    """Return the arm indices of one permuted block (pure, so it is safe to cache)."""
    prefix = f"pbd|{model}|{key}|{block_index}"
    size = sizes[0]
    if len(sizes) > 1:
        size = sizes[randbelow(len(sizes), secret, f"{prefix}|size", 0)]
    multiplicity = size // sum(ratio)
    items = [k for k, w in enumerate(ratio) for _ in range(w * multiplicity)]
    shuffle_in_place(items, secret, f"{prefix}|shuffle")
    return tuple(items)


@functools.lru_cache(maxsize=4096)
def _remaining_share(
    block: tuple[int, ...], position: int, n_arms: int
) -> tuple[Fraction, ...]:
    """Return P(next arm) given the block and the slots used: what remains of the block.

    An observer who knows the block's size knows this vector; the allocation is deterministic
    when one arm is left.
    """
    remaining = block[position:]
    return tuple(Fraction(remaining.count(a), len(remaining)) for a in range(n_arms))


@dataclass(frozen=True)
class PermutedBlockDesign(Design):
    """Permuted blocks: one size gives fixed blocks, several are drawn uniformly (§1.2-1.3)."""

    block_sizes: tuple[int, ...] = ()

    method: ClassVar[str] = "permuted_block"
    has_fixed_sequence: ClassVar[bool] = True

    def block_arms(self, secret: bytes, model: str, key: str, block_index: int) -> tuple[int, ...]:
        """Return the arm indices of block `block_index` (1-based) of a stratum."""
        return _block(secret, model, key, block_index, self.block_sizes, self.ratio)

    def slot(
        self, secret: bytes, model: str, key: str, n_slots: int, block: tuple[int, int, int]
    ) -> tuple[int, tuple[int, int, int]]:
        """Return (arm index, (block index, block start, block size)) of slot n_slots + 1."""
        block_index, block_start, block_size = block
        if block_index == 0 or n_slots - block_start >= block_size:
            block_index, block_start = block_index + 1, n_slots
            arms = self.block_arms(secret, model, key, block_index)
            block_size = len(arms)
        else:
            arms = self.block_arms(secret, model, key, block_index)
        return arms[n_slots - block_start], (block_index, block_start, block_size)

    def choose(self, ctx: _Context) -> _Choice:
        """Take the stratum's next slot, opening a new block when the current one is used up."""
        st = ctx.stratum
        k, block = self.slot(
            ctx.secret, ctx.model, ctx.stratum_key, st.n_slots,
            (st.block_index, st.block_start, st.block_size),
        )
        evidence: dict[str, object] = {
            "slot": st.n_slots + 1,
            "block_index": block[0],
            "block_size": block[2],
            "position": st.n_slots - block[1] + 1,
        }
        arms = self.block_arms(ctx.secret, ctx.model, ctx.stratum_key, block[0])
        probabilities = _remaining_share(arms, st.n_slots - block[1], len(self.arms))
        return _Choice(k, evidence, block, probabilities)


@dataclass(frozen=True)
class ListDesign(Design):
    """An uploaded allocation table: per stratum, slots are consumed in upload order."""

    table: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    method: ClassVar[str] = "list"
    has_fixed_sequence: ClassVar[bool] = True

    def slot_arm(self, key: str, slot: int) -> int:
        """Return the arm index of the stratum's `slot`-th row (1-based) or raise if exhausted."""
        rows = self.table.get(key, ())
        if slot > len(rows):
            raise AllocationUnavailable(
                f"no allocation available in stratum {key} "
                f"({len(rows)} slot(s) uploaded, all used)"
            )
        return self.arms.index(rows[slot - 1])

    def choose(self, ctx: _Context) -> _Choice:
        """Take the stratum's next uploaded row."""
        slot = ctx.stratum.n_slots + 1
        return _Choice(self.slot_arm(ctx.stratum_key, slot), {"slot": slot})


@dataclass(frozen=True)
class MinimizationFactor:
    """A minimization factor: its weight v_f ≥ 0 and, if declared, its admissible levels."""

    name: str
    weight: Fraction
    levels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MinimizationDesign(Design):
    """Pocock–Simon minimization with the preferred-set rule of spec §1.5, steps 1–5."""

    factors: tuple[MinimizationFactor, ...] = ()
    imbalance: str = "range"
    p: Fraction = Fraction(4, 5)
    burn_in: int = 0
    overall_weight: Fraction = Fraction(0)

    method: ClassVar[str] = "minimization"

    def check_factors(self, factors: Mapping[str, str]) -> None:
        """Require a declared level for every minimization factor."""
        for factor in self.factors:
            level = factors.get(factor.name)
            if level is None or level == "":
                raise AllocationInputError(
                    f"cannot randomize: minimization factor {factor.name} missing"
                )
            if factor.levels is not None and level not in factor.levels:
                raise AllocationInputError(
                    f"cannot randomize: {level!r} is not a level of factor {factor.name} "
                    f"(expected one of {', '.join(factor.levels)})"
                )

    @functools.cached_property
    def _integer_weights(self) -> tuple[tuple[int, ...], int]:
        """Return the weights (v_1..v_F, v_0) scaled to integers, and the scale D."""
        weights = [f.weight for f in self.factors] + [self.overall_weight]
        scale = math.lcm(*(w.denominator for w in weights))
        return tuple(int(w * scale) for w in weights), scale

    def _spread(self, scaled: Sequence[int]) -> int:
        """Return d for integer scaled counts: range, or K(K−1) × the sample variance."""
        if self.imbalance == "range":
            return max(scaled) - min(scaled)
        n_arms = len(scaled)
        total = sum(scaled)
        return n_arms * sum(s * s for s in scaled) - total * total

    def _integer_scores(
        self, marginal_counts: Sequence[Sequence[int]], overall_counts: Sequence[int]
    ) -> list[int]:
        # Exact integer arithmetic: G(a) times a constant (D, and K(K−1) for variance), so that
        # comparisons between arms are exact and cheap.
        n_arms = len(self.arms)
        lcm = math.lcm(*self.ratio)
        scale = [lcm // w for w in self.ratio]
        weights, _ = self._integer_weights
        terms = list(zip(weights, marginal_counts))
        if weights[-1]:
            terms.append((weights[-1], overall_counts))
        scores = [0] * n_arms
        for weight, counts in terms:
            if not weight:
                continue
            base = [c * f for c, f in zip(counts, scale)]
            for a in range(n_arms):
                scaled = list(base)
                scaled[a] += scale[a]
                scores[a] += weight * self._spread(scaled)
        return scores

    def _score_denominator(self) -> int:
        n_arms = len(self.arms)
        factor = 1 if self.imbalance == "range" else n_arms * (n_arms - 1)
        return self._integer_weights[1] * factor

    def imbalance_scores(
        self, marginal_counts: Sequence[Sequence[int]], overall_counts: Sequence[int] = ()
    ) -> tuple[Fraction, ...]:
        """Return G(a) for each candidate arm from the counts at the participant's levels.

        G(a) = Σ_f v_f·d_f(a) + v_0·d_0(a), d_f the range or sample variance over arms of the
        ratio-scaled counts c'·L/w_k; d_0 is the spread of the stratum's overall counts (the
        optional overall-total term; v_0 = 0 by default).
        """
        denominator = self._score_denominator()
        scores = self._integer_scores(marginal_counts, overall_counts or (0,) * len(self.arms))
        return tuple(Fraction(g, denominator) for g in scores)

    def probabilities(
        self, scores: Sequence[Fraction | int]
    ) -> tuple[tuple[Fraction, ...], list[int]]:
        """Return (P, preferred set M) from the imbalance scores (steps 3–4)."""
        best = min(scores)
        preferred = tuple(a for a, g in enumerate(scores) if g == best)
        return _preferred_probabilities(self.p, self.ratio, preferred), list(preferred)

    def choose(self, ctx: _Context) -> _Choice:
        """Allocate by the random element over the preferred set (by the ratio in burn-in/first)."""
        zeros = (0,) * len(self.arms)
        marginal_counts = [
            ctx.stratum.marginals.get(f.name, {}).get(ctx.factors[f.name], zeros)
            for f in self.factors
        ]
        evidence: dict[str, object] = {
            "factor_counts": {
                f.name: {"level": ctx.factors[f.name], "counts": dict(zip(self.arms, counts))}
                for f, counts in zip(self.factors, marginal_counts)
            },
        }
        if ctx.n_allocations < self.burn_in:
            evidence["rule"] = "burn_in"
            return _coin(self, ctx, self.target_probabilities, evidence)
        if not any(ctx.stratum.counts):
            # Participant 1 is the all-tie case of step 4 (allocated by the ratio); with unequal
            # ratios the scaled scores alone would not tie, and the ARP figures of §1.5 assume it.
            evidence["rule"] = "first_participant"
            return _coin(self, ctx, self.target_probabilities, evidence)
        scores = self._integer_scores(marginal_counts, ctx.stratum.counts)
        probabilities, preferred = self.probabilities(scores)
        denominator = self._score_denominator()
        evidence["rule"] = "minimization"
        evidence["imbalance_scores"] = {
            arm: str(Fraction(g, denominator)) for arm, g in zip(self.arms, scores)
        }
        evidence["preferred"] = [self.arms[a] for a in preferred]
        return _coin(self, ctx, probabilities, evidence)


@functools.lru_cache(maxsize=256)
def _preferred_probabilities(
    p: Fraction, ratio: tuple[int, ...], preferred: tuple[int, ...]
) -> tuple[Fraction, ...]:
    """Return P: ratio-weighted p over the preferred set, 1 − p over the rest (step 4)."""
    if len(preferred) == len(ratio):
        total = sum(ratio)
        return tuple(Fraction(w, total) for w in ratio)
    in_weight = sum(ratio[a] for a in preferred)
    out_weight = sum(ratio) - in_weight
    return tuple(
        p * w / in_weight if a in preferred else (1 - p) * w / out_weight
        for a, w in enumerate(ratio)
    )


def _difference(counts: Sequence[int]) -> int:
    return counts[0] - counts[1]


@dataclass(frozen=True)
class EfronDesign(Design):
    """Efron's biased coin: φ = ½ if d = 0, p if d < 0, 1 − p if d > 0 (two arms, 1:1)."""

    p: Fraction = Fraction(2, 3)

    method: ClassVar[str] = "efron"

    def choose(self, ctx: _Context) -> _Choice:
        """Favour the trailing arm of the stratum with probability p."""
        d = _difference(ctx.stratum.counts)
        phi = Fraction(1, 2) if d == 0 else (self.p if d < 0 else 1 - self.p)
        evidence: dict[str, object] = {"counts": dict(zip(self.arms, ctx.stratum.counts)), "d": d}
        return _coin(self, ctx, (phi, 1 - phi), evidence, per_stratum=True)


@dataclass(frozen=True)
class BigStickDesign(Design):
    """Big stick design: φ = ½ while |d| < b, forced to the trailing arm at |d| = b."""

    b: int = 2

    method: ClassVar[str] = "big_stick"

    def choose(self, ctx: _Context) -> _Choice:
        """Toss a fair coin unless the stratum's imbalance has reached b."""
        d = _difference(ctx.stratum.counts)
        forced = Fraction(0) if d > 0 else Fraction(1)
        phi = Fraction(1, 2) if abs(d) < self.b else forced
        evidence: dict[str, object] = {"counts": dict(zip(self.arms, ctx.stratum.counts)), "d": d}
        return _coin(self, ctx, (phi, 1 - phi), evidence, per_stratum=True)


@dataclass(frozen=True)
class BlockUrnDesign(Design):
    """Block urn design (Zhao & Weng 2011), any number of arms and ratio."""

    lam: int = 2

    method: ClassVar[str] = "block_urn"

    def urn_probabilities(self, counts: Sequence[int]) -> tuple[tuple[Fraction, ...], int]:
        """Return (P, κ): P_k = (w_k(λ+κ) − N_k) / (W(λ+κ) − n), κ = min_k ⌊N_k / w_k⌋."""
        kappa = min(n // w for n, w in zip(counts, self.ratio))
        total = self.ratio_sum * (self.lam + kappa) - sum(counts)
        return (
            tuple(Fraction(w * (self.lam + kappa) - n, total) for n, w in zip(counts, self.ratio)),
            kappa,
        )

    def choose(self, ctx: _Context) -> _Choice:
        """Draw from the urn of the stratum's active counts."""
        probabilities, kappa = self.urn_probabilities(ctx.stratum.counts)
        evidence: dict[str, object] = {
            "counts": dict(zip(self.arms, ctx.stratum.counts)),
            "kappa": kappa,
        }
        return _coin(self, ctx, probabilities, evidence, per_stratum=True)


@functools.lru_cache(maxsize=64)
def _admissible_completions(b: int, n: int) -> tuple[tuple[int, ...], ...]:
    """Return C[j][d + b]: the admissible completions from j allocations at imbalance d.

    C(n, 0) = 1, C(n, d) = 0 otherwise, C(j, d) = C(j+1, d+1) + C(j+1, d-1) for |d| <= b
    (spec §1.6, maximal procedure), in exact integers.
    """
    table = [[0] * (2 * b + 1) for _ in range(n + 1)]
    table[n][b] = 1
    for j in range(n - 1, -1, -1):
        for d in range(-b, b + 1):
            up = table[j + 1][d + 1 + b] if d + 1 <= b else 0
            down = table[j + 1][d - 1 + b] if d - 1 >= -b else 0
            table[j][d + b] = up + down
    return tuple(tuple(row) for row in table)


@dataclass(frozen=True)
class MaximalDesign(Design):
    """Berger's maximal procedure: every block of `block_length` allocations of a stratum is
    drawn uniformly from all sequences with |D_j| <= b throughout and D = 0 at the block's end
    (Berger, Ivanova & Knoll 2003; spec §1.6), two arms 1:1.

    Sequential form: φ = C(j+1, d+1) / C(j, d), j the position in the block and d = N_A − N_B.
    After a void the active counts can describe a position no admissible sequence passes
    through; the allocation then goes to the trailing arm (a fair coin at d = 0).
    """

    b: int = 1
    block_length: int = 2

    method: ClassVar[str] = "maximal"

    def probability_first(self, counts: Sequence[int]) -> tuple[Fraction, int, int]:
        """Return (φ = P(first arm), position j in the block, d) for the stratum's counts."""
        d = _difference(counts)
        j = sum(counts) % self.block_length
        table = _admissible_completions(self.b, self.block_length)
        total = table[j][d + self.b] if abs(d) <= self.b else 0
        if total == 0:
            return (Fraction(1, 2) if d == 0 else Fraction(int(d < 0))), j, d
        up = table[j + 1][d + 1 + self.b] if d + 1 <= self.b else 0
        return Fraction(up, total), j, d

    def choose(self, ctx: _Context) -> _Choice:
        """Draw the next allocation of the stratum's current maximal-procedure block."""
        phi, position, d = self.probability_first(ctx.stratum.counts)
        evidence: dict[str, object] = {
            "counts": dict(zip(self.arms, ctx.stratum.counts)),
            "d": d,
            "block_position": position + 1,
        }
        return _coin(self, ctx, (phi, 1 - phi), evidence, per_stratum=True)


MAX_BLOCK_SIZE = 1000

METHODS = (
    "simple", "permuted_block", "minimization", "efron", "big_stick", "block_urn", "maximal",
    "list",
)


# ---------------------------------------------------------------- building designs from params


def _check_keys(method: str, params: Mapping[str, object], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise DesignError(
            f"{method}: unknown parameter(s) {', '.join(map(str, unknown))} (allowed: {expected})"
        )


def _int_param(method: str, params: Mapping[str, object], key: str, minimum: int) -> int:
    if key not in params:
        raise DesignError(f"{method}: parameter {key} is required")
    value = params[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise DesignError(f"{method}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _fraction(method: str, key: str, value: object) -> Fraction:
    """Convert an int, float, decimal or fraction string to an exact Fraction."""
    if isinstance(value, bool):
        raise DesignError(f"{method}: {key} must be a number, got {value!r}")
    try:
        if isinstance(value, Fraction | int):
            return Fraction(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(value)
            return Fraction(repr(value))  # 0.8 means 4/5, not the binary float's expansion
        if isinstance(value, str):
            return Fraction(value.strip())
    except (ValueError, ZeroDivisionError) as exc:
        raise DesignError(f"{method}: {key} must be a number, got {value!r}") from exc
    raise DesignError(f"{method}: {key} must be a number, got {value!r}")


def _probability_param(
    method: str, params: Mapping[str, object], key: str, default: Fraction, low: Fraction,
) -> Fraction:
    value = _fraction(method, key, params.get(key, default))
    if not low < value <= 1:
        raise DesignError(f"{method}: {key} must be in ({low}, 1], got {params.get(key)!r}")
    return value


def _string_list(method: str, key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise DesignError(f"{method}: {key} must be a list of strings, got {value!r}")
    items = tuple(value)
    if not all(isinstance(item, str) and item for item in items):
        raise DesignError(f"{method}: {key} must be a list of non-empty strings, got {value!r}")
    return items


def _arms_and_ratio(
    method: str, arms: Sequence[str], ratio: Sequence[int]
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    arm_codes = _string_list(method, "arms", arms)
    if len(arm_codes) < 2:
        raise DesignError(f"{method}: at least two arms are required, got {len(arm_codes)}")
    if len(set(arm_codes)) != len(arm_codes):
        raise DesignError(f"{method}: arm codes must be unique, got {', '.join(arm_codes)}")
    if isinstance(ratio, str) or not isinstance(ratio, Sequence):
        raise DesignError(f"{method}: ratio must be a list of positive integers, got {ratio!r}")
    weights = tuple(ratio)
    if len(weights) != len(arm_codes):
        raise DesignError(
            f"{method}: ratio has {len(weights)} entries but there are {len(arm_codes)} arms"
        )
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in weights):
        raise DesignError(f"{method}: ratio must be positive integers, got {list(weights)!r}")
    divisor = math.gcd(*weights)
    return arm_codes, tuple(w // divisor for w in weights)


def _require_two_arms_equal(method: str, ratio: tuple[int, ...]) -> None:
    if ratio != (1, 1):
        raise DesignError(f"{method}: needs exactly two arms with ratio 1:1")


def _build_permuted_block(
    arms: tuple[str, ...], ratio: tuple[int, ...], params: Mapping[str, object]
) -> Design:
    method = "permuted_block"
    _check_keys(method, params, {"block_sizes"})
    if "block_sizes" not in params:
        raise DesignError(f"{method}: parameter block_sizes is required")
    sizes = params["block_sizes"]
    if (
        isinstance(sizes, str)
        or not isinstance(sizes, Sequence)
        or not sizes
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)
    ):
        raise DesignError(
            f"{method}: block_sizes must be a non-empty list of positive integers, got {sizes!r}"
        )
    if len(set(sizes)) != len(sizes):
        raise DesignError(f"{method}: block_sizes has duplicates: {list(sizes)!r}")
    total = sum(ratio)
    for size in sizes:
        if size > MAX_BLOCK_SIZE:
            raise DesignError(f"{method}: block size {size} exceeds {MAX_BLOCK_SIZE}")
        if size % total:
            raise DesignError(f"block size {size} is not a multiple of ratio sum {total}")
    return PermutedBlockDesign(arms, ratio, block_sizes=tuple(sorted(sizes)))


def _build_factor(method: str, index: int, spec: object) -> MinimizationFactor:
    where = f"factors[{index}]"
    if not isinstance(spec, Mapping):
        raise DesignError(f"{method}: {where} must be a mapping with name, weight, levels")
    unknown = sorted(set(map(str, spec)) - {"name", "weight", "levels"})
    if unknown:
        raise DesignError(f"{method}: {where} has unknown key(s) {', '.join(unknown)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name or "|" in name or "=" in name:
        raise DesignError(f"{method}: {where}.name must be a non-empty string without | or =")
    weight = _fraction(method, f"{where}.weight", spec.get("weight", 1))
    if weight < 0:
        raise DesignError(f"{method}: {where}.weight must be >= 0, got {spec.get('weight')!r}")
    levels = None
    if spec.get("levels") is not None:
        levels = _string_list(method, f"{where}.levels", spec["levels"])
        if not levels or len(set(levels)) != len(levels):
            raise DesignError(f"{method}: {where}.levels must be non-empty and unique")
    return MinimizationFactor(name, weight, levels)


def _build_minimization(
    arms: tuple[str, ...], ratio: tuple[int, ...], params: Mapping[str, object]
) -> Design:
    method = "minimization"
    _check_keys(method, params, {"factors", "imbalance", "p", "burn_in", "overall_weight"})
    specs = params.get("factors")
    if isinstance(specs, str | Mapping) or not isinstance(specs, Sequence) or not specs:
        raise DesignError(f"{method}: factors must be a non-empty list")
    factors = tuple(_build_factor(method, i, spec) for i, spec in enumerate(specs))
    names = [f.name for f in factors]
    if len(set(names)) != len(names):
        raise DesignError(f"{method}: factor names must be unique, got {', '.join(names)}")
    overall_weight = _fraction(method, "overall_weight", params.get("overall_weight", 0))
    if overall_weight < 0:
        raise DesignError(f"{method}: overall_weight must be >= 0")
    if not any(f.weight > 0 for f in factors) and not overall_weight:
        raise DesignError(f"{method}: at least one factor weight must be > 0")
    imbalance = params.get("imbalance", "range")
    if imbalance not in ("range", "variance"):
        raise DesignError(f"{method}: imbalance must be 'range' or 'variance', got {imbalance!r}")
    p = _probability_param(method, params, "p", Fraction(4, 5), Fraction(0))
    burn_in = _int_param(method, params, "burn_in", 0) if "burn_in" in params else 0
    warnings: tuple[str, ...] = ()
    if p == 1:
        warnings = (
            "minimization: p = 1 makes every allocation deterministic; ICH E9 asks for a "
            "random element in dynamic allocation",
        )
    return MinimizationDesign(
        arms, ratio, warnings, factors=factors, imbalance=str(imbalance), p=p, burn_in=burn_in,
        overall_weight=overall_weight,
    )


def _build_list(
    arms: tuple[str, ...], ratio: tuple[int, ...], params: Mapping[str, object]
) -> Design:
    method = "list"
    _check_keys(method, params, {"table"})
    table = params.get("table")
    if not isinstance(table, Mapping) or not table:
        raise DesignError(f"{method}: table must be a non-empty mapping stratum -> list of arms")
    rows: dict[str, tuple[str, ...]] = {}
    for key, arm_list in table.items():
        if not isinstance(key, str):
            raise DesignError(f"{method}: stratum keys must be strings, got {key!r}")
        try:
            check_stratum_key(key)
        except AllocationInputError as exc:
            raise DesignError(f"{method}: {exc}") from exc
        slots = _string_list(method, f"table[{key}]", arm_list)
        undeclared = sorted(set(slots) - set(arms))
        if undeclared:
            raise DesignError(
                f"{method}: stratum {key} uses undeclared arm(s) {', '.join(undeclared)}"
            )
        rows[key] = slots
    return ListDesign(arms, ratio, table=rows)


def build_design(
    method: str, arms: Sequence[str], ratio: Sequence[int], params: Mapping[str, object]
) -> Design:
    """Validate a design definition and return the frozen design; raise DesignError if invalid."""
    if method not in METHODS:
        raise DesignError(f"unknown randomization method {method!r} (one of {', '.join(METHODS)})")
    if not isinstance(params, Mapping):
        raise DesignError(f"{method}: parameters must be a mapping, got {params!r}")
    arm_codes, reduced = _arms_and_ratio(method, arms, ratio)
    if method == "simple":
        _check_keys(method, params, set())
        return SimpleDesign(arm_codes, reduced)
    if method == "permuted_block":
        return _build_permuted_block(arm_codes, reduced, params)
    if method == "minimization":
        return _build_minimization(arm_codes, reduced, params)
    if method == "list":
        return _build_list(arm_codes, reduced, params)
    if method == "efron":
        _check_keys(method, params, {"p"})
        _require_two_arms_equal(method, reduced)
        p = _probability_param(method, params, "p", Fraction(2, 3), Fraction(1, 2))
        warnings = ("efron: p = 1 makes the design deterministic",) if p == 1 else ()
        return EfronDesign(arm_codes, reduced, warnings, p=p)
    if method == "big_stick":
        _check_keys(method, params, {"b"})
        _require_two_arms_equal(method, reduced)
        return BigStickDesign(arm_codes, reduced, b=_int_param(method, params, "b", 1))
    if method == "maximal":
        _check_keys(method, params, {"b", "block_length"})
        _require_two_arms_equal(method, reduced)
        b = _int_param(method, params, "b", 1)
        length = _int_param(method, params, "block_length", 2)
        if length % 2 or length > MAX_BLOCK_SIZE:
            raise DesignError(
                f"{method}: block_length must be even and at most {MAX_BLOCK_SIZE}, got {length}"
            )
        return MaximalDesign(arm_codes, reduced, b=b, block_length=length)
    _check_keys(method, params, {"lambda"})
    return BlockUrnDesign(arm_codes, reduced, lam=_int_param(method, params, "lambda", 1))


def stratification_warnings(design: Design, planned_n: int, n_strata: int) -> list[str]:
    """Return warnings when blocks are too large for the expected fill of each stratum.

    Spec §6.6: blocks balance only within a stratum, so with planned n / #strata below twice
    the largest block most strata end mid-block and balance degrades toward simple
    randomization; minimization is suggested instead.
    """
    if not isinstance(planned_n, int) or not isinstance(n_strata, int) or n_strata < 1:
        raise DesignError("planned_n and n_strata must be positive integers")
    if isinstance(design, PermutedBlockDesign):
        block = max(design.block_sizes)
    elif isinstance(design, BlockUrnDesign):
        block = design.lam * design.ratio_sum
    elif isinstance(design, MaximalDesign):
        block = design.block_length
    else:
        return []
    if n_strata > 1 and planned_n < 2 * block * n_strata:
        per_stratum = planned_n / n_strata
        return [
            f"{n_strata} strata for {planned_n} participants leave about {per_stratum:.1f} per "
            f"stratum, under twice the block size {block}: overall and marginal balance will "
            "approach simple randomization; consider fewer strata or minimization"
        ]
    return []


# ---------------------------------------------------------------- allocating


def _check_allocation_inputs(
    design: Design, state: RandomizationState, secret: bytes, model: str, seq_no: int,
    key: str, factors: Mapping[str, str], algorithm: str,
) -> None:
    # Exact-type fast paths first: this runs once per allocation, also in simulations.
    if algorithm not in RNG_ALGORITHMS:
        raise AllocationInputError(
            f"unknown draw algorithm {algorithm!r} (one of {', '.join(RNG_ALGORITHMS)})"
        )
    if type(secret) is not bytes or len(secret) < 16:
        raise AllocationInputError("the trial secret must be at least 16 bytes")
    if type(model) is not str or not model or "|" in model:
        raise AllocationInputError(f"model must be a non-empty string without '|', got {model!r}")
    if type(seq_no) is not int or seq_no <= state.last_seq_no:
        raise AllocationInputError(
            f"seq_no must be an integer above the last one ({state.last_seq_no}), got {seq_no!r}"
        )
    if key not in state.strata:
        check_stratum_key(key)
    if type(factors) is not dict and not isinstance(factors, Mapping):
        raise AllocationInputError("factors must map factor names to level strings")
    for name, level in factors.items():
        if type(name) is not str or type(level) is not str:
            raise AllocationInputError("factors must map factor names to level strings")
    design.check_factors(factors)


def _add_marginals(
    design: Design,
    marginals: Mapping[str, Mapping[str, tuple[int, ...]]],
    factors: Mapping[str, str],
    arm_index: int,
    step: int,
) -> Mapping[str, Mapping[str, tuple[int, ...]]]:
    if not isinstance(design, MinimizationDesign):
        return marginals
    zeros = (0,) * len(design.arms)
    updated = dict(marginals)
    for factor in design.factors:
        level = factors[factor.name]
        levels = dict(updated.get(factor.name, {}))
        counts = list(levels.get(level, zeros))
        counts[arm_index] += step
        if counts[arm_index] < 0:
            raise StateError(f"marginal count of {factor.name}={level} would become negative")
        levels[level] = tuple(counts)
        updated[factor.name] = levels
    return updated


def allocate(
    design: Design,
    state: RandomizationState,
    *,
    secret: bytes,
    model: str,
    seq_no: int,
    stratum_key: str,
    factors: Mapping[str, str],
    algorithm: str = RNG_ALGORITHM,
) -> tuple[AllocationResult, RandomizationState]:
    """Allocate one participant; return the result and the next state (inputs are unchanged).

    `seq_no` is the trial-level sequence number (strictly increasing); `stratum_key` the
    canonical key of the participant's stratum; `factors` the factor levels as used;
    `algorithm` the draw version the randomization model recorded when it started
    (`randomization.draws`; new models use the current one).
    """
    _check_allocation_inputs(
        design, state, secret, model, seq_no, stratum_key, factors, algorithm
    )
    n_arms = len(design.arms)
    stratum = state.strata.get(stratum_key)
    if stratum is None:
        stratum = StratumState(counts=(0,) * n_arms)
    elif len(stratum.counts) != n_arms:
        raise StateError(f"state of stratum {stratum_key} does not match {n_arms} arms")
    ctx = _Context(
        secret, model, seq_no, stratum_key, factors, stratum, state.n_allocations, algorithm
    )
    choice = design.choose(ctx)
    counts = list(stratum.counts)
    counts[choice.arm_index] += 1
    block = choice.block or (stratum.block_index, stratum.block_start, stratum.block_size)
    strata = dict(state.strata)
    strata[stratum_key] = StratumState(
        n_slots=stratum.n_slots + 1,
        counts=tuple(counts),
        block_index=block[0],
        block_start=block[1],
        block_size=block[2],
        marginals=_add_marginals(design, stratum.marginals, factors, choice.arm_index, 1),
    )
    result = AllocationResult(
        arm=design.arms[choice.arm_index],
        stratum_key=stratum_key,
        factors=dict(factors),
        method=design.method,
        seq_no=seq_no,
        evidence=choice.evidence,
        probabilities=choice.probabilities,
    )
    new_state = RandomizationState(
        last_seq_no=seq_no,
        n_allocations=state.n_allocations + 1,
        strata=strata,
        voided_seq_nos=state.voided_seq_nos,
    )
    return result, new_state


def void(
    design: Design, state: RandomizationState, result: AllocationResult
) -> RandomizationState:
    """Return the state after voiding `result`: its slot stays retired, its counts are removed."""
    if result.seq_no > state.last_seq_no or result.seq_no in state.voided_seq_nos:
        raise StateError(f"allocation {result.seq_no} is not an active allocation of this state")
    stratum = state.strata.get(result.stratum_key)
    if stratum is None or result.arm not in design.arms:
        raise StateError(f"allocation {result.seq_no} does not belong to this state and design")
    k = design.arms.index(result.arm)
    if stratum.counts[k] < 1:
        raise StateError(f"allocation {result.seq_no}: no active {result.arm} to void")
    try:
        design.check_factors(result.factors)
    except AllocationInputError as exc:
        raise StateError(f"allocation {result.seq_no}: {exc}") from exc
    counts = list(stratum.counts)
    counts[k] -= 1
    strata = dict(state.strata)
    strata[result.stratum_key] = StratumState(
        n_slots=stratum.n_slots,
        counts=tuple(counts),
        block_index=stratum.block_index,
        block_start=stratum.block_start,
        block_size=stratum.block_size,
        marginals=_add_marginals(design, stratum.marginals, result.factors, k, -1),
    )
    return RandomizationState(
        last_seq_no=state.last_seq_no,
        n_allocations=state.n_allocations,
        strata=strata,
        voided_seq_nos=tuple(sorted((*state.voided_seq_nos, result.seq_no))),
    )


def replay(
    design: Design,
    secret: bytes,
    model: str,
    inputs: Sequence[ReplayInput],
    *,
    algorithm: str = RNG_ALGORITHM,
) -> list[AllocationResult]:
    """Recompute every allocation of a trial from its stored inputs, in seq_no order.

    Voids are applied just before the allocation numbered `voided_before_seq`, as in the trial.
    An input whose `design` is set (an amendment changed the model) is replayed with that
    design, and so is its void; `design` serves the others.
    """
    state = RandomizationState()
    results: list[AllocationResult] = []
    pending: list[tuple[int, Design, AllocationResult]] = []
    for item in inputs:
        due = [(d, r) for before, d, r in pending if before <= item.seq_no]
        pending = [entry for entry in pending if entry[0] > item.seq_no]
        for used, voided in due:
            state = void(used, state, voided)
        used_design = item.design or design
        result, state = allocate(
            used_design, state, secret=secret, model=model, seq_no=item.seq_no,
            stratum_key=item.stratum_key, factors=item.factors, algorithm=algorithm,
        )
        results.append(result)
        if item.voided_before_seq is not None:
            if item.voided_before_seq <= item.seq_no:
                raise AllocationInputError(
                    f"allocation {item.seq_no} cannot be voided before seq_no "
                    f"{item.voided_before_seq}"
                )
            pending.append((item.voided_before_seq, used_design, result))
    return results


def future_slots(
    design: Design,
    state: RandomizationState,
    secret: bytes,
    model: str,
    stratum_key: str,
    n: int,
) -> list[str]:
    """Return the next n arms of a stratum without consuming them (simple, permuted_block, list).

    For an uploaded list, fewer than n arms are returned when the list runs out.
    """
    if not design.has_fixed_sequence:
        raise DesignError(
            f"{design.method}: allocations depend on the trial's history; only simple, "
            "permuted_block and list designs have future slots"
        )
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise AllocationInputError(f"n must be a non-negative integer, got {n!r}")
    check_stratum_key(stratum_key)
    stratum = state.strata.get(stratum_key, StratumState())
    arms: list[str] = []
    if isinstance(design, PermutedBlockDesign):
        block = (stratum.block_index, stratum.block_start, stratum.block_size)
        for offset in range(n):
            k, block = design.slot(secret, model, stratum_key, stratum.n_slots + offset, block)
            arms.append(design.arms[k])
    elif isinstance(design, SimpleDesign):
        for slot in range(stratum.n_slots + 1, stratum.n_slots + n + 1):
            arms.append(design.arms[design.slot_arm(secret, model, stratum_key, slot)[0]])
    elif isinstance(design, ListDesign):
        rows = design.table.get(stratum_key, ())
        arms.extend(rows[stratum.n_slots : stratum.n_slots + n])
    return arms
