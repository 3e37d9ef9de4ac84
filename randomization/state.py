"""Frozen randomization state and allocation results, with their JSON round trip.

The state lives in the trial's row-locked randomization row. It keeps only per-stratum counters,
block positions and minimization marginal counts, so each allocation costs the same however long
the trial has run; it holds no future allocation (those are recomputed from the secret).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from randomization.errors import StateError

if TYPE_CHECKING:
    from randomization.designs import Design

STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class StratumState:
    """Counters of one stratum.

    `n_slots` counts allocations made in the stratum, voided ones included (a slot is retired,
    never reused); `counts` counts active (non-voided) allocations per arm in protocol order;
    `block_*` locate the current permuted block (`block_index` 0 before the first block);
    `marginals` maps minimization factor -> level -> active counts per arm.
    """

    n_slots: int = 0
    counts: tuple[int, ...] = ()
    block_index: int = 0
    block_start: int = 0
    block_size: int = 0
    marginals: Mapping[str, Mapping[str, tuple[int, ...]]] = field(default_factory=dict)

    @property
    def n_active(self) -> int:
        """The stratum's active (non-voided) allocations."""
        return sum(self.counts)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict; `from_json` restores an equal stratum."""
        return {
            "n_slots": self.n_slots,
            "counts": list(self.counts),
            "block": [self.block_index, self.block_start, self.block_size],
            "marginals": {
                f: {lvl: list(c) for lvl, c in levels.items()}
                for f, levels in self.marginals.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StratumState:
        """Rebuild a stratum from `to_json` output; raise StateError if it is malformed."""
        try:
            block_index, block_start, block_size = (_int(v) for v in data["block"])
            return cls(
                n_slots=_int(data["n_slots"]),
                counts=tuple(_int(c) for c in data["counts"]),
                block_index=block_index,
                block_start=block_start,
                block_size=block_size,
                marginals={
                    _str(f): {_str(lvl): tuple(_int(c) for c in cs) for lvl, cs in lv.items()}
                    for f, lv in dict(data["marginals"]).items()
                },
            )
        except StateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"malformed stratum state: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class RandomizationState:
    """Everything an allocation needs besides the design, the secret and its own inputs."""

    last_seq_no: int = 0
    n_allocations: int = 0
    strata: Mapping[str, StratumState] = field(default_factory=dict)
    voided_seq_nos: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict; `from_json` restores an equal state."""
        return {
            "format": STATE_FORMAT,
            "last_seq_no": self.last_seq_no,
            "n_allocations": self.n_allocations,
            "voided_seq_nos": list(self.voided_seq_nos),
            "strata": {key: s.to_json() for key, s in self.strata.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RandomizationState:
        """Rebuild a state from `to_json` output; raise StateError if it is malformed."""
        try:
            if data["format"] != STATE_FORMAT:
                raise StateError(f"unsupported randomization state format {data['format']!r}")
            strata = {
                _str(key): StratumState.from_json(s) for key, s in dict(data["strata"]).items()
            }
            return cls(
                last_seq_no=_int(data["last_seq_no"]),
                n_allocations=_int(data["n_allocations"]),
                strata=strata,
                voided_seq_nos=tuple(_int(v) for v in data["voided_seq_nos"]),
            )
        except StateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"malformed randomization state: {exc!r}") from exc


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StateError(f"expected a non-negative integer in the state, got {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise StateError(f"expected a string key in the state, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class AllocationResult:
    """One allocation: the arm and everything needed to explain and replay it.

    `evidence` is JSON-serialisable: for permuted blocks the block index, size and position; for
    lists the slot; for dynamic methods the counts, imbalance scores, preferred set, probability
    vector (exact fractions as strings and floats), the uniform draw u and the draw label.
    """

    arm: str
    stratum_key: str
    factors: Mapping[str, str]
    method: str
    seq_no: int
    evidence: Mapping[str, object]
    probabilities: tuple[Fraction, ...] | None = None

    @property
    def is_deterministic(self) -> bool | None:
        """Return whether the design left no chance (one arm had probability 1); None for lists."""
        if self.probabilities is None:
            return None
        return max(self.probabilities) == 1


@dataclass(frozen=True, slots=True)
class ReplayInput:
    """One stored allocation's inputs, in seq_no order, for `replay`.

    `voided_before_seq` is None for an active allocation; for a voided one it is the seq_no of the
    first allocation made after the void (the trial's next_seq when it was voided), so that the
    void takes effect in replay exactly when it did in the trial. `design` is the design the
    allocation was made with when it is not the one `replay` is given (an amended model).
    """

    seq_no: int
    stratum_key: str
    factors: Mapping[str, str] = field(default_factory=dict)
    voided_before_seq: int | None = None
    design: Design | None = None

    @property
    def is_voided(self) -> bool:
        """Return whether this allocation was voided."""
        return self.voided_before_seq is not None
