"""Versioned, keyed random draws: HMAC-SHA256 over a label, as fixed by spec §1.0.

Every random number the core uses is a pure function of the trial secret K, a label and an
index, so any allocation can be recomputed bit-for-bit on any machine and any future release:

    u64(label, i)          = first 8 bytes (big-endian) of HMAC_SHA256(K, f"{label}|{i}")
    uniform(label, i)      = (u64(label, i) >> 11) / 2**53              a 53-bit float in [0, 1)
    randbelow(m, label, i) = v % m for the first t = 0, 1, ... whose v = u64(label, f"{i}.{t}")
                             is below 2**64 - (2**64 % m)  (rejection sampling, no modulo bias)

Labels used by the designs (spec §1.0; `i` is the index passed to the functions above):

    pbd|{model}|{stratum_key}|{block_index}|size     i = 0, randbelow(len(sizes)) picks the size
    pbd|{model}|{stratum_key}|{block_index}|shuffle  i = j, randbelow(j + 1) for j = B-1 .. 1
    simple|{model}|{stratum_key}                     i = k, the k-th allocation of the stratum
    coin|{model}                                     i = seq_no, minimization (trial-level)
    coin|{model}|{stratum_key}                       i = k, biased coins (v2, see below)

Block indices, k and seq_no start at 1; k counts every allocation of the stratum, voided ones
included, so a voided allocation's draw is never used again.

Two versions exist; a randomization model records the one it started with and keeps it for
life, so that every allocation it ever made replays bit-for-bit:

- `hmac-sha256-v1`: the biased coins (efron, big_stick, block_urn) drew the trial-level
  `coin|{model}` stream at i = seq_no, so a stratum's sequence changed with how enrolments in
  other strata interleaved with it (contrary to spec §1.0 (ii)). Trials randomized under v1
  keep it.
- `hmac-sha256-v2` (current): the biased coins (and the maximal procedure) draw their own
  stratum's stream `coin|{model}|{stratum_key}` at i = k. Everything else is unchanged.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Sequence
from fractions import Fraction

from randomization.errors import RandomizationError

RNG_ALGORITHM_V1 = "hmac-sha256-v1"
RNG_ALGORITHM_V2 = "hmac-sha256-v2"
#: The algorithm new randomization models start with.
RNG_ALGORITHM = RNG_ALGORITHM_V2
#: Every algorithm this release can replay.
RNG_ALGORITHMS = (RNG_ALGORITHM_V1, RNG_ALGORITHM_V2)

_TWO_64 = 1 << 64
_TWO_53 = 1 << 53


def u64(secret: bytes, label: str, i: int | str) -> int:
    """Return the unsigned 64-bit draw for (label, i) under the trial secret."""
    digest = hmac.digest(secret, f"{label}|{i}".encode(), "sha256")
    return int.from_bytes(digest[:8], "big")


def uniform_bits(secret: bytes, label: str, i: int | str) -> int:
    """Return the 53-bit integer v behind `uniform`, so that uniform = v / 2**53 exactly."""
    return u64(secret, label, i) >> 11


def uniform(secret: bytes, label: str, i: int | str) -> float:
    """Return a uniform float in [0, 1) with 53 random bits."""
    return uniform_bits(secret, label, i) / _TWO_53


def randbelow(m: int, secret: bytes, label: str, i: int | str) -> int:
    """Return a uniform integer in [0, m) by rejection sampling on `f"{i}.{t}"`."""
    if m < 1:
        raise RandomizationError(f"randbelow needs m >= 1, got {m}")
    limit = _TWO_64 - (_TWO_64 % m)
    t = 0
    while True:
        v = u64(secret, label, f"{i}.{t}")
        if v < limit:
            return v % m
        t += 1


@functools.lru_cache(maxsize=1024)
def _cumulative_bounds(probabilities: tuple[Fraction, ...]) -> tuple[tuple[int, int], ...]:
    """Return (numerator, denominator) of each cumulative sum S_k, after validating P."""
    if any(p < 0 for p in probabilities) or sum(probabilities, Fraction(0)) != 1:
        raise RandomizationError(
            "probabilities must be non-negative and sum to 1, got "
            + ", ".join(str(p) for p in probabilities)
        )
    bounds = []
    cumulative = Fraction(0)
    for p in probabilities:
        cumulative += p
        bounds.append((cumulative.numerator, cumulative.denominator))
    return tuple(bounds)


def choose_index(
    probabilities: Sequence[Fraction], secret: bytes, label: str, i: int | str
) -> tuple[int, float]:
    """Pick index k with probability P_k; return (k, u) where u is the uniform draw used.

    The first k with u < P_1 + ... + P_k is chosen, comparing exactly (`v * den < num * 2**53`)
    so that floating-point rounding can never flip a choice.
    """
    bounds = _cumulative_bounds(tuple(probabilities))
    v = uniform_bits(secret, label, i)
    for k, (num, den) in enumerate(bounds):
        if v * den < num * _TWO_53:
            return k, v / _TWO_53
    raise RandomizationError("no arm chosen: probabilities do not cover [0, 1)")  # unreachable


def shuffle_in_place(items: list[int], secret: bytes, label: str) -> None:
    """Permute `items` uniformly by Fisher–Yates with randbelow(j + 1, label, j), j = B-1 .. 1."""
    for j in range(len(items) - 1, 0, -1):
        r = randbelow(j + 1, secret, label, j)
        items[j], items[r] = items[r], items[j]


def secret_from_seed(seed: int) -> bytes:
    """Derive a 32-byte secret from an integer seed (tests and simulation only, never a trial)."""
    return hashlib.sha256(f"dtx-trials-seed|{seed}".encode()).digest()
