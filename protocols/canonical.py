"""Canonical form of a protocol: a plain dict in the YAML document's own shape, with every
default made explicit, serialised as sorted, compact JSON; its SHA-256 identifies a version.

``from_canonical_dict`` goes back through the loader, so a canonical dict is validated exactly
like a hand-written document and ``canonical_json(from_canonical_dict(d))`` is stable.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from .loader import load_protocol_text
from .model import Protocol
from .structure import PROTOCOL, Kind, ListOf, Obj

#: Document keys whose model attribute has another name: (object name, key) -> attribute.
_ATTRIBUTE_NAMES = {
    ("Sites", "initial"): "initial_sites",
    ("Level", "otherwise"): "is_otherwise",
    ("Transition", "from"): "source",
    ("Transition", "to"): "target",
}


def _plain(value: Any, kind: Kind) -> Any:
    if isinstance(kind, Obj):
        result: dict[str, Any] = {}
        for prop in kind.props:
            attribute = _ATTRIBUTE_NAMES.get((kind.name, prop.name), prop.name)
            item = getattr(value, attribute)
            if item is not None:
                result[prop.name] = _plain(item, prop.kind)
        if kind.extra is not None:  # a label's other languages
            result.update(dict(getattr(value, "others", ())))
        return result
    if isinstance(kind, ListOf):
        return [_plain(item, kind.item) for item in value]
    return value


def to_canonical_dict(protocol: Protocol) -> dict[str, Any]:
    """Return the protocol as plain data in document shape, all defaults explicit."""
    data = _plain(protocol, PROTOCOL)
    assert isinstance(data, dict)
    return data


def canonical_json(protocol: Protocol) -> str:
    """Return the canonical JSON text: sorted keys, no insignificant whitespace, UTF-8 text."""
    return json.dumps(
        to_canonical_dict(protocol), sort_keys=True, ensure_ascii=False, separators=(",", ":"),
        allow_nan=False,
    )


def protocol_sha256(protocol: Protocol) -> str:
    """Return the hex SHA-256 of the canonical JSON (the identity of a protocol version)."""
    return hashlib.sha256(canonical_json(protocol).encode("utf-8")).hexdigest()


def from_canonical_dict(data: dict[str, Any], source_name: str = "canonical") -> Protocol:
    """Rebuild a Protocol from canonical (or any document-shaped) data; raise ProtocolError."""
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=True)
    return load_protocol_text(text, source_name)
