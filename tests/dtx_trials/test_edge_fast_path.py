"""The request edge's fast path (plain JSON parsed by the C scanner and checked in one pass)
gives what the checked parse gives, value for value and error for error, for JSON bodies and
for NDJSON batches: hostile strings, numbers no column can hold, deep nesting, broken lines."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtx_trials.edge import (
    DeferredNDJSON,
    MalformedJSON,
    Unparsable,
    _ndjson_record,
    _ndjson_records,
    _parse_checked,
    ndjson_batch,
    parse_json,
)
from dtx_trials.services.errors import ValidationError

HOSTILE = ["\x00", "\x01", "\x0b", "\x1f", "\ufffe", "\uffff", "\\", '"', "\u2028", "\x85", "é"]
NUMBERS = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", "9223372036854775807",
           "9223372036854775808", "-9223372036854775809", "1" * 25, "-0", "0.5", "1E2"]


def _text() -> st.SearchStrategy[str]:
    return st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=3)), max_size=4).map(
        "".join
    )


def _token(value: Any) -> str:
    """JSON text of a value; str values in NUMBERS are written as raw number tokens."""
    if isinstance(value, tuple):
        return value[0]
    if isinstance(value, dict):
        return "{" + ",".join(f"{_token(k)}:{_token(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_token(v) for v in value) + "]"
    # escape some hostile characters, write others raw (both are JSON a client can send)
    return json.dumps(value, ensure_ascii=isinstance(value, str) and len(value) % 2 == 0)


documents = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _text(),
        st.sampled_from(NUMBERS).map(lambda n: (n,)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_text(), inner, max_size=3)
    ),
    max_leaves=12,
)  # fmt: skip


def _outcome(parse: Any, raw: bytes) -> tuple[str, Any]:
    try:
        value = parse(raw)
    except (MalformedJSON, ValidationError) as exc:
        return type(exc).__name__, (exc.message, exc.errors)
    return "ok", _comparable(value)


def _comparable(value: Any) -> Any:
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    if isinstance(value, Unparsable):
        return "<unparsable>"
    return json.dumps(value)  # tells 1 from 1.0 and 0.0 from -0.0


def _checked(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return parse_json(raw)  # the one refusal both paths share
    return _parse_checked(text)


def _ndjson_checked(raw: bytes) -> list[object]:
    """NDJSON as parsed before the fast path: each non-blank line through parse_json's checks."""
    return [_ndjson_record(n, line) for n, line in enumerate(raw.split(b"\n"), start=1)
            if line.strip()]  # fmt: skip


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@settings(max_examples=150, deadline=None)
@given(documents, st.integers(0, 40), st.sampled_from(["", " ", "\ufeff", "x", ","]))
def test_json_body_fast_path_equals_checked_parse(doc: Any, depth: int, extra: str) -> None:
    raw = ("[" * depth + _token(doc) + "]" * depth).encode("utf-8", "surrogatepass")
    assert _outcome(parse_json, raw) == _outcome(_checked, raw)
    tampered = (extra + raw.decode("utf-8", "surrogatepass")).encode("utf-8", "surrogatepass")
    assert _outcome(parse_json, tampered) == _outcome(_checked, tampered)


def _ndjson_lines(*edge_cases: str) -> st.SearchStrategy[list[str]]:
    """Up to 8 NDJSON lines: JSON documents (objects or not) and hand-picked hostile lines."""
    shared = ["", "  ", "\r", "{not json", "{}{}", '{"a":1},{"b":2}', "[1", "2]", "\xa0",
              '{"a":1e308}', '{"a":1E+309}', '{"a":-9223372036854775808}', "{" * 33 + "}" * 33]
    return st.lists(
        st.one_of(
            st.dictionaries(_text(), documents, max_size=6).map(_token),
            documents.map(_token),
            st.sampled_from([*shared, *edge_cases]),
        ),
        max_size=8,
    )


@settings(max_examples=150, deadline=None)
@given(_ndjson_lines(_deep(33), _deep(3000), "\x0b", "\ufeff{}", '{"a":[[{}]]}',
                     '{"t":"2026-01-01T00:00:00+00:00"}'))
def test_ndjson_fast_path_equals_checked_lines(lines: list[str]) -> None:
    raw = "\n".join(lines).encode("utf-8", "surrogatepass")
    assert _outcome(lambda r: list(_ndjson_records(r)), raw) == _outcome(_ndjson_checked, raw)


@settings(max_examples=150, deadline=None)
@given(_ndjson_lines(_deep(32), _deep(33), '{"a":1.5e-400}', '{"a":123456789012345678}',
                     '{"x":"NaN"}'))
def test_ndjson_batch_is_the_checked_lines_and_defers_only_what_cannot_fail(
    lines: list[str],
) -> None:
    """`ndjson_batch` gives the records of the checked line-by-line parse; it leaves the parse
    for later (while the ingest writes rows) only for a body no line of which is refused, so
    a refusal still comes before anything else the request does."""
    raw = "\n".join(lines).encode("utf-8", "surrogatepass")
    batch = _outcome(lambda r: list(ndjson_batch(r)), raw)
    assert batch == _outcome(_ndjson_checked, raw)
    try:
        deferred = isinstance(ndjson_batch(raw), DeferredNDJSON)
    except ValidationError:
        deferred = False
    if deferred:
        assert batch[0] == "ok"
        records = ndjson_batch(raw)
        assert len(records) == len(batch[1])
        assert _comparable([records[i] for i in range(len(records))]) == batch[1]


def test_a_plain_device_batch_is_deferred_and_a_hostile_one_is_not() -> None:
    plain = b'{"subject":"S-1","time":"2026-01-01T00:00:00+00:00","value":5}\n\n{"x":1.5}'
    assert isinstance(ndjson_batch(plain), DeferredNDJSON)
    assert len(ndjson_batch(plain)) == 2
    for hostile in (b'{"v":1e400}', b'{"v":NaN}', b'{"v":12345678901234567890}',
                    b'{"v":"a\\u0000"}', _deep(40).encode()):
        with pytest.raises(ValidationError) as refused:  # at the edge, naming the line
            ndjson_batch(plain + b"\n\n" + hostile)
        assert list(refused.value.errors["ndjson"]) == ["line 5"]
    for harmless in (b'{"v":1e300}', b'{"v":"NaN"}', b'{"v":1234567890123456789.5}',
                     _deep(33).encode()):
        records = ndjson_batch(plain + b"\n" + harmless)
        assert not isinstance(records, DeferredNDJSON)  # looks like a problem: parsed at once
        assert len(records) == 3
