"""The canonical stratum key: `site=S01|moca_band=lt22`, or `all` for an unstratified model.

Format: `name=level` pairs joined by `|`, the site first (as `site=<site id>`) when the model
stratifies by site, then the stratification factors in the protocol's order. Names and levels are
non-empty and contain neither `|` nor `=` nor surrounding whitespace, so the key parses back
unambiguously and can be embedded in draw labels.
"""

from __future__ import annotations

from collections.abc import Sequence

from randomization.errors import AllocationInputError

UNSTRATIFIED = "all"
SITE_FACTOR = "site"


def _check_token(kind: str, value: str) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise AllocationInputError(f"stratum {kind} must be a non-empty string, got {value!r}")
    if "|" in value or "=" in value:
        raise AllocationInputError(f"stratum {kind} {value!r} must not contain '|' or '='")


def stratum_key(site: str | None, levels: Sequence[tuple[str, str]]) -> str:
    """Return the canonical stratum key of a site (or None) and ordered (factor, level) pairs."""
    pairs: list[tuple[str, str]] = []
    if site is not None:
        pairs.append((SITE_FACTOR, site))
    pairs.extend(levels)
    if not pairs:
        return UNSTRATIFIED
    seen: set[str] = set()
    for name, level in pairs:
        _check_token("factor name", name)
        _check_token(f"level of {name!r}", level)
        if name in seen:
            raise AllocationInputError(f"stratification factor {name!r} appears twice")
        seen.add(name)
    return "|".join(f"{name}={level}" for name, level in pairs)


def parse_stratum_key(key: str) -> list[tuple[str, str]]:
    """Return the (factor, level) pairs of a canonical stratum key (`all` gives [])."""
    if key == UNSTRATIFIED:
        return []
    pairs: list[tuple[str, str]] = []
    for part in key.split("|"):
        name, sep, level = part.partition("=")
        if not sep:
            raise AllocationInputError(f"malformed stratum key {key!r}: {part!r} is not name=level")
        pairs.append((name, level))
    if stratum_key(None, pairs) != key:
        raise AllocationInputError(f"malformed stratum key {key!r}")
    return pairs


def check_stratum_key(key: str) -> None:
    """Raise AllocationInputError unless `key` is a canonical stratum key."""
    if not isinstance(key, str):
        raise AllocationInputError(f"stratum key must be a string, got {type(key).__name__}")
    parse_stratum_key(key)
