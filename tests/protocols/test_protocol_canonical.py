"""Canonical JSON is stable and survives YAML -> model -> JSON -> model -> JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.canonical import (
    canonical_json,
    from_canonical_dict,
    protocol_sha256,
    to_canonical_dict,
)
from protocols.diff import diff_protocols
from protocols.loader import ProtocolError, load_protocol, load_protocol_text

MINIMAL = (Path(__file__).parent / "data" / "minimal.yaml").read_text(encoding="utf-8")

LIBRARY = sorted((Path(__file__).resolve().parents[2] / "protocols" / "library").glob("*.yaml"))


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_library_round_trip_is_identical(path: Path) -> None:
    protocol = load_protocol(path)
    text = canonical_json(protocol)
    again = from_canonical_dict(json.loads(text))
    assert again == protocol
    assert canonical_json(again) == text
    assert protocol_sha256(again) == protocol_sha256(protocol)


def test_canonical_json_is_sorted_and_compact() -> None:
    text = canonical_json(load_protocol_text(MINIMAL))
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert data["arms"][0] == {"code": "active", "is_control": False, "name":
                               {"en": "Active", "zh": "试验组"}, "ratio": 1}
    assert data["randomization"]["imbalance"] == "range"  # defaults are explicit


def test_hash_ignores_yaml_formatting_but_not_content() -> None:
    reformatted = MINIMAL.replace("sample_size: {n: 100}", "sample_size:\n  n: 100\n# comment")
    assert protocol_sha256(load_protocol_text(reformatted)) == protocol_sha256(
        load_protocol_text(MINIMAL))
    changed = MINIMAL.replace("sample_size: {n: 100}", "sample_size: {n: 101}")
    assert protocol_sha256(load_protocol_text(changed)) != protocol_sha256(
        load_protocol_text(MINIMAL))


def test_from_canonical_dict_validates() -> None:
    data = to_canonical_dict(load_protocol_text(MINIMAL))
    data["arms"][1]["code"] = "active"
    with pytest.raises(ProtocolError, match="duplicate arm code 'active'"):
        from_canonical_dict(data)


_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1,
    max_size=12,
)
_ident = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)


@st.composite
def small_protocols(draw: st.DrawFn) -> dict[str, object]:
    """Draw a small valid document: labels, arms with ratios, numeric fields with ranges."""
    ratios = draw(st.lists(st.integers(1, 3), min_size=2, max_size=3))
    total = sum(ratios)
    field_ids = draw(st.lists(_ident, min_size=1, max_size=4, unique=True))
    fields = []
    for field_id in field_ids:
        low = draw(st.integers(-50, 50) | st.floats(-50, 50, allow_nan=False).map(
            lambda x: round(x, 2)))
        fields.append({
            "id": field_id, "type": "decimal", "label": {"en": draw(_text),
                                                         "zh": draw(_text)},
            "min": low, "max": low + draw(st.integers(0, 100)),
            "required": draw(st.booleans()), "unit": draw(st.none() | _text),
        })
    return {
        "code": "HYP-1", "title": {"en": draw(_text)}, "phase": "pilot",
        "therapeutic_area": draw(_text), "version": draw(_text),
        "arms": [{"code": f"arm_{k}", "name": {"en": draw(_text)}, "ratio": r}
                 for k, r in enumerate(ratios)],
        "randomization": {"method": "permuted_block",
                          "block_sizes": [total * m for m in draw(
                              st.lists(st.integers(1, 3), min_size=1, max_size=2, unique=True))]},
        "schedule": {"visits": [{"id": "v1", "label": {"en": "Visit"}, "day": 0,
                                 "forms": ["f1"]}]},
        "forms": [{"id": "f1", "title": {"en": draw(_text)}, "fields": fields}],
        "sample_size": {"n": draw(st.integers(1, 10_000)),
                        "power": draw(st.none() | st.floats(0.5, 0.99))},
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_protocols())
def test_generated_protocols_round_trip(document: dict[str, object]) -> None:
    protocol = from_canonical_dict(document)
    text = canonical_json(protocol)
    again = from_canonical_dict(json.loads(text))
    assert again == protocol
    assert canonical_json(again) == text
    assert diff_protocols(protocol, again) == []
