"""Pure allocation designs, versioned HMAC draws, allocation lists and simulation metrics.

Imports no other package of ours and nothing of Flask or SQLAlchemy. The public API:

- `build_design(method, arms, ratio, params)` → a frozen `Design` (raises `DesignError`);
- `allocate(design, state, *, secret, model, seq_no, stratum_key, factors, algorithm)`
  → (result, state);
- `void(design, state, result)` → state; `replay(design, secret, model, inputs)` → results;
- `Randomizer(design, seed=…)`: the same, stateful (state, sequence and stratum threaded);
- `future_slots(...)`, `stratum_key(site, levels)`, `RandomizationState.to_json/from_json`;
- `randomization.lists` (allocation lists) and `randomization.simulate` (operating metrics).
"""

from randomization.designs import (
    METHODS,
    Design,
    allocate,
    build_design,
    future_slots,
    replay,
    stratification_warnings,
    void,
)
from randomization.draws import RNG_ALGORITHM, RNG_ALGORITHMS, secret_from_seed
from randomization.errors import (
    AllocationInputError,
    AllocationListError,
    AllocationUnavailable,
    DesignError,
    RandomizationError,
    SimulationError,
    StateError,
)
from randomization.randomizer import Randomizer
from randomization.state import AllocationResult, RandomizationState, ReplayInput
from randomization.strata import UNSTRATIFIED, parse_stratum_key, stratum_key

__all__ = [
    "METHODS",
    "RNG_ALGORITHM",
    "RNG_ALGORITHMS",
    "UNSTRATIFIED",
    "AllocationInputError",
    "AllocationListError",
    "AllocationResult",
    "AllocationUnavailable",
    "Design",
    "DesignError",
    "RandomizationError",
    "RandomizationState",
    "Randomizer",
    "ReplayInput",
    "SimulationError",
    "StateError",
    "allocate",
    "build_design",
    "future_slots",
    "parse_stratum_key",
    "replay",
    "secret_from_seed",
    "stratification_warnings",
    "stratum_key",
    "void",
]
