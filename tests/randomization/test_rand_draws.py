"""HMAC-SHA256 draws (spec §1.0): formula, version stability, exact choice, Fisher–Yates."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from fractions import Fraction

import pytest

from randomization.draws import (
    RNG_ALGORITHM,
    RNG_ALGORITHMS,
    choose_index,
    randbelow,
    secret_from_seed,
    shuffle_in_place,
    u64,
    uniform,
    uniform_bits,
)
from randomization.errors import RandomizationError

SECRET = secret_from_seed(0)


def test_u64_is_the_spec_formula_and_pinned() -> None:
    digest = hmac.new(SECRET, b"coin|m|1", hashlib.sha256).digest()
    assert u64(SECRET, "coin|m", 1) == int.from_bytes(digest[:8], "big")
    # Pinned values: a change here breaks replay of every active trial (v1 and v2 share the
    # draw functions; they differ only in which label a biased coin draws).
    assert SECRET.hex().startswith("a6e04b1d69cb8209")
    assert u64(SECRET, "coin|m", 1) == 753100784174701340
    assert uniform(SECRET, "coin|m", 1) == (753100784174701340 >> 11) / 2**53
    assert RNG_ALGORITHM == "hmac-sha256-v2"
    assert RNG_ALGORITHMS == ("hmac-sha256-v1", "hmac-sha256-v2")


def test_pinned_fisher_yates_permutation() -> None:
    items = list(range(6))
    shuffle_in_place(items, SECRET, "pbd|m|all|1|shuffle")
    assert items == [2, 5, 0, 3, 4, 1]


def test_shuffle_matches_hand_written_fisher_yates() -> None:
    items = list("AABBCC")
    expected = list(items)
    for j in range(5, 0, -1):
        r = randbelow(j + 1, SECRET, "lbl", j)
        expected[j], expected[r] = expected[r], expected[j]
    shuffle_in_place(items, SECRET, "lbl")
    assert items == expected
    assert sorted(items) == list("AABBCC")


def test_uniform_in_unit_interval() -> None:
    values = [uniform(SECRET, "u", i) for i in range(2000)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert 0.45 < sum(values) / len(values) < 0.55


def test_randbelow_uses_rejection_on_i_dot_t() -> None:
    m = 2**63 + 1  # limit = 2**63 + 1 ... rejection happens for about half of the draws
    limit = 2**64 - (2**64 % m)
    rejected = next(i for i in range(200) if u64(SECRET, "r", f"{i}.0") >= limit)
    t = 0
    while u64(SECRET, "r", f"{rejected}.{t}") >= limit:
        t += 1
    assert t >= 1
    assert randbelow(m, SECRET, "r", rejected) == u64(SECRET, "r", f"{rejected}.{t}") % m


def test_randbelow_is_roughly_uniform() -> None:
    counts = Counter(randbelow(3, SECRET, "r3", i) for i in range(3000))
    assert set(counts) == {0, 1, 2}
    assert all(900 < c < 1100 for c in counts.values())


def test_randbelow_rejects_bad_modulus() -> None:
    with pytest.raises(RandomizationError):
        randbelow(0, SECRET, "r", 1)


def test_choose_index_uses_exact_cumulative_comparison() -> None:
    probabilities = [Fraction(1, 3), Fraction(0), Fraction(2, 3)]
    for i in range(500):
        k, u = choose_index(probabilities, SECRET, "c", i)
        v = uniform_bits(SECRET, "c", i)
        assert u == v / 2**53
        expected = 0 if v * 3 < 1 * 2**53 else 2
        assert k == expected
        assert k != 1


def test_choose_index_rejects_invalid_probabilities() -> None:
    with pytest.raises(RandomizationError, match="sum to 1"):
        choose_index([Fraction(1, 2), Fraction(1, 3)], SECRET, "c", 1)
    with pytest.raises(RandomizationError):
        choose_index([Fraction(3, 2), Fraction(-1, 2)], SECRET, "c", 1)


def test_secret_from_seed_is_stable_and_distinct() -> None:
    assert secret_from_seed(5) == secret_from_seed(5)
    assert secret_from_seed(5) != secret_from_seed(6)
    assert len(secret_from_seed(5)) == 32
