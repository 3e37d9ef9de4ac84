"""Typed exceptions of the randomization core; every message is fit to show a user."""


class RandomizationError(Exception):
    """Base class of every error the randomization core raises on bad input or state."""


class DesignError(RandomizationError):
    """A design definition (method, arms, ratio or parameters) is invalid."""


class AllocationInputError(RandomizationError):
    """The inputs of one allocation (stratum key, factor levels, sequence number) are invalid."""


class AllocationUnavailable(RandomizationError):
    """An uploaded allocation list has no free slot left in the requested stratum."""


class StateError(RandomizationError):
    """A randomization state is malformed or does not match the requested operation."""


class AllocationListError(RandomizationError):
    """An uploaded allocation list (CSV) is malformed; the message names the line."""


class SimulationError(RandomizationError):
    """A simulation request (size, factors, stratification) is invalid."""
