"""JSON Schema (draft 2020-12) of the protocol YAML format, generated from ``structure``.

Editors use it for completion and inline checks (e.g. the YAML language server's
``# yaml-language-server: $schema=...`` comment). It covers shape, types, enums and ranges;
cross-references (ids, expressions, coverage) are only checked by the loader.
"""

from __future__ import annotations

import json
from typing import Any

from .structure import (
    EXTRA_LANGUAGE_LEAF,
    PROTOCOL,
    Bool,
    Enum,
    Int,
    Kind,
    ListOf,
    Num,
    NumOrStr,
    Obj,
    Str,
)

SCHEMA_ID = "https://dtx-trials.org/schemas/protocol.schema.json"


def _describe(schema: dict[str, Any], description: str) -> dict[str, Any]:
    if description:
        schema["description"] = description
    return schema


def _kind_schema(kind: Kind, definitions: dict[str, Any], description: str = "") -> dict[str, Any]:
    if isinstance(kind, Obj):
        if kind.name not in definitions:
            definitions[kind.name] = {}  # reserve the name first: objects may recur
            definitions[kind.name] = _object_schema(kind, definitions)
        return _describe({"$ref": f"#/$defs/{kind.name}"}, description)
    text = description or getattr(kind, "description", "")
    if isinstance(kind, Str):
        schema: dict[str, Any] = {"type": "string"}
        if kind.min_length:
            schema["minLength"] = kind.min_length
        if kind.pattern:
            schema["pattern"] = kind.pattern
        if kind.is_expression:
            text = f"{text} (expression language: [field], [visit][field], [field(code)])"
        return _describe(schema, text)
    if isinstance(kind, Int):
        schema = {"type": "integer"}
        if kind.minimum is not None:
            schema["minimum"] = kind.minimum
        if kind.maximum is not None:
            schema["maximum"] = kind.maximum
        return _describe(schema, text)
    if isinstance(kind, Num):
        schema = {"type": "number"}
        if kind.minimum is not None:
            schema["exclusiveMinimum" if kind.exclusive_minimum else "minimum"] = kind.minimum
        if kind.maximum is not None:
            schema["maximum"] = kind.maximum
        return _describe(schema, text)
    if isinstance(kind, Bool):
        return _describe({"type": "boolean"}, text)
    if isinstance(kind, Enum):
        return _describe({"type": "string", "enum": list(kind.values)}, text)
    if isinstance(kind, NumOrStr):
        return _describe({"type": ["number", "string"]}, text)
    schema = {"type": "array", "items": _kind_schema(kind.item, definitions)}
    if kind.min_items:
        schema["minItems"] = kind.min_items
    return _describe(schema, text)


def _object_schema(kind: Obj, definitions: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            p.name: _kind_schema(p.kind, definitions, p.description) for p in kind.props
        },
        "additionalProperties": False,
    }
    if kind.extra is not None and kind.extra_pattern:
        schema["patternProperties"] = {kind.extra_pattern: _kind_schema(kind.extra, definitions)}
    for alias, name in kind.aliases:
        schema["properties"][alias] = _kind_schema(
            kind.prop(name).kind, definitions, f"the same as {name}"  # type: ignore[union-attr]
        )
    required = [p.name for p in kind.props if p.required]
    if required:
        schema["required"] = required
    return _describe(schema, kind.description)


def schema_leaves(kind: Obj = PROTOCOL, prefix: str = "") -> tuple[str, ...]:
    """Return the path of every leaf key of the document, e.g. ``arms[].ratio``.

    A leaf is a key whose value is not an object: a scalar, or a list of scalars (written
    with ``[]``, like ``randomization.block_sizes[]``). Objects are walked into, lists of
    objects with ``[]`` (``forms[].fields[].min``).
    """
    paths: list[str] = []
    for prop in kind.props:
        item: Kind = prop.kind
        path = f"{prefix}{prop.name}"
        if isinstance(item, ListOf):
            path += "[]"
            item = item.item
        if isinstance(item, Obj):
            paths.extend(schema_leaves(item, path + "."))
        else:
            paths.append(path)
    if kind.extra is not None:  # a label's further languages, one leaf per label
        paths.append(f"{prefix}{EXTRA_LANGUAGE_LEAF}")
    return tuple(paths)


_LABELS = ("en", "zh", EXTRA_LANGUAGE_LEAF)


def _texts(*paths: str) -> dict[str, str]:
    return {f"{path}.{lang}": "text shown to people" for path in paths for lang in _LABELS}


#: Keys that describe rather than decide: the platform stores, shows and exports them, but no
#: behaviour depends on their value (every other key has an effect, proven by
#: tests/dtx_trials/test_protocol_key_effects.py, or is refused by the validator).
DESCRIPTIVE_KEYS: dict[str, str] = {
    "phase": "identification: printed on reports and exports (FHIR ResearchStudy.phase)",
    "therapeutic_area": "identification: printed on reports",
    "registry_id": "identification: the public registry number, for people",
    "version": "identification: the sponsor's version label (versions are identified by hash)",
    "sites.initial[].name": "text shown to people",
    "arms[].name.<language>": "text shown to people in that language, only where the arm "
    "may be shown (as the English and Chinese names)",
    "product.name.<language>": "the product's name in that language, for people (the report's "
    "title page prints the English or Chinese name, each probed)",
    "indication.<language>": "the indication in that language, for people (the report's title "
    "page prints the English or Chinese text, each probed)",
    "device_streams[].kind": "what the stream measures, for people (unit and range are checked)",
    "device_streams[].cadence": "expected frequency, for people (nothing checks data timing)",
    "forms[].fields[].unit": "text shown beside the input and in exports",
    "sample_size.power": "the sample-size justification, for reviewers",
    "sample_size.alpha": "the sample-size justification (tests use the endpoint's alpha)",
    "sample_size.dropout": "the sample-size justification, for reviewers",
    **_texts(
        "title", "description", "arms[].description", "randomization.factors[].label",
        "randomization.factors[].levels[].label", "eligibility[].text",
        "schedule.visits[].label", "forms[].title", "forms[].fields[].label",
        "forms[].fields[].help", "forms[].fields[].choices[].label",
        "forms[].fields[].checks[].message", "forms[].fields[].slider_labels[]",
        "forms[].checks[].message", "device_streams[].label", "endpoints[].name",
        "endpoints[].estimand.population", "endpoints[].estimand.variable",
        "intercurrent_events[].description", "endpoints[].estimand.summary",
        "endpoints[].analysis.sensitivity[].description", "endpoints[].analysis.subgroups[].label",
        "endpoints[].analysis.subgroups[].levels[].label", "sample_size.assumptions",
        "consents[].title", "consents[].body", "consents[].comprehension[].text",
        "safety.alerts[].message",
        "consents[].comprehension[].choices[].label",
    ),
}


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of a protocol document (a fresh dict on every call)."""
    definitions: dict[str, Any] = {}
    root = _object_schema(PROTOCOL, definitions)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "dtx-trials protocol",
        **root,
        "$defs": dict(sorted(definitions.items())),
    }


def json_schema_text() -> str:
    """Return the JSON Schema as indented JSON text, ready to write to a file."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
