"""Shared helpers for the randomization core tests (pure: no app, no database).

A uniquely named module rather than conftest.py, so that `from rand_helpers import …` can never
pick up another package's conftest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from randomization.designs import Design, allocate
from randomization.draws import secret_from_seed
from randomization.state import AllocationResult, RandomizationState

Participant = tuple[str, Mapping[str, str]]


def allocate_sequence(
    design: Design,
    participants: Sequence[Participant],
    *,
    seed: int = 1,
    model: str = "m1",
    state: RandomizationState | None = None,
    first_seq_no: int = 1,
) -> tuple[list[AllocationResult], RandomizationState]:
    """Allocate (stratum_key, factors) pairs in order; return the results and the final state."""
    secret = secret_from_seed(seed)
    current = state if state is not None else RandomizationState()
    results = []
    for offset, (key, factors) in enumerate(participants):
        result, current = allocate(
            design, current, secret=secret, model=model, seq_no=first_seq_no + offset,
            stratum_key=key, factors=factors,
        )
        results.append(result)
    return results, current
