"""A stateful randomizer for notebooks and simulations: the pure core with its bookkeeping done.

`allocate` and `void` are pure functions of (design, state, secret, model, seq_no, stratum,
factors, draw version); a `Randomizer` holds those for you and threads the state, the next
sequence number and the stratum key from one call to the next::

    from randomization import Randomizer, build_design

    design = build_design("minimization", ["A", "B"], [1, 1],
                          {"factors": [{"name": "sex"}, {"name": "site"}], "p": 0.8})
    r = Randomizer(design, seed=7)
    r.allocate({"sex": "f", "site": "S1"}).arm        # 'A' or 'B', reproducible for seed 7
    r.allocate({"sex": "m", "site": "S2"}).evidence   # scores, preferred set, P, u

It gives exactly the allocations the platform gives for the same secret, model label, draw
version and inputs (the shell calls the same `allocate`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from randomization.designs import Design, allocate, future_slots, void
from randomization.draws import RNG_ALGORITHM, secret_from_seed
from randomization.errors import AllocationInputError
from randomization.state import AllocationResult, RandomizationState
from randomization.strata import SITE_FACTOR, stratum_key


class Randomizer:
    """A randomization model: design, secret, model label and draw version, plus its state.

    Parameters
    ----------
    design:
        A design from `build_design`.
    secret, seed:
        The trial secret (bytes, at least 16), or an integer seed from which one is derived
        (`secret_from_seed`, for tests and simulations); exactly one of the two.
    model:
        The model label mixed into every draw (the platform uses the trial code).
    stratify_by:
        Factor names whose levels form the stratum key, in protocol order; `site` means the
        participant's site (taken from ``factors["site"]``) and always comes first in the key.
        Empty for an unstratified model (and for minimization, which balances its factors).
    algorithm:
        The draw version (`randomization.draws.RNG_ALGORITHMS`); new models use the current one.
    state:
        Resume from a stored state (default: a model with no allocation yet); the next
        sequence number follows the state's last one.
    """

    def __init__(
        self,
        design: Design,
        *,
        secret: bytes | None = None,
        seed: int | None = None,
        model: str = "model",
        stratify_by: Sequence[str] = (),
        algorithm: str = RNG_ALGORITHM,
        state: RandomizationState | None = None,
    ) -> None:
        if (secret is None) == (seed is None):
            raise AllocationInputError("give exactly one of secret and seed")
        self.design = design
        self.secret = secret if secret is not None else secret_from_seed(int(seed or 0))
        self.model = model
        self.algorithm = algorithm
        if isinstance(stratify_by, str) or len(set(stratify_by)) != len(stratify_by):
            raise AllocationInputError("stratify_by must be a list of distinct factor names")
        self._by_site = SITE_FACTOR in stratify_by
        self._factor_order = tuple(f for f in stratify_by if f != SITE_FACTOR)
        self.stratify_by = tuple(stratify_by)
        self._keys: dict[tuple[str | None, ...], str] = {}
        self.state = state if state is not None else RandomizationState()
        self.results: list[AllocationResult] = []

    @property
    def next_seq_no(self) -> int:
        """Return the sequence number the next allocation will get."""
        return self.state.last_seq_no + 1

    def stratum_of(self, factors: Mapping[str, str]) -> str:
        """Return the canonical stratum key of a participant with these factor levels."""
        signature = tuple(factors.get(name) for name in self.stratify_by)
        key = self._keys.get(signature)
        if key is None:
            for name, level in zip(self.stratify_by, signature):
                if not level:
                    raise AllocationInputError(
                        f"cannot randomize: stratification factor {name} missing"
                    )
            key = stratum_key(
                factors[SITE_FACTOR] if self._by_site else None,
                [(name, factors[name]) for name in self._factor_order],
            )
            self._keys[signature] = key
        return key

    def allocate(self, factors: Mapping[str, str] | None = None) -> AllocationResult:
        """Allocate the next participant, whose factor levels (and site) are `factors`."""
        levels = dict(factors or {})
        result, self.state = allocate(
            self.design,
            self.state,
            secret=self.secret,
            model=self.model,
            seq_no=self.next_seq_no,
            stratum_key=self.stratum_of(levels),
            factors=levels,
            algorithm=self.algorithm,
        )
        self.results.append(result)
        return result

    def void(self, result: AllocationResult) -> None:
        """Void an allocation: its slot stays used, its counts stop counting (spec §1.2, §1.5)."""
        self.state = void(self.design, self.state, result)

    def future(self, factors: Mapping[str, str], n: int) -> list[str]:
        """Return the next n arms of a stratum without consuming them (fixed-sequence designs)."""
        return future_slots(
            self.design, self.state, self.secret, self.model, self.stratum_of(factors), n
        )
