"""The request edge: size limits and input hygiene, applied once for every route.

Whatever a client sends is checked here before a view or a service sees it:

- **Body size** is capped while the body is read, so a chunked upload with no Content-Length
  stops at the cap too (413): 1 MiB by default, more for the few routes that take documents or
  batches (``BODY_LIMITS``).
- **Text** anywhere in the request (path segments, query, form fields, file names, JSON keys and
  values) may not hold NUL, an unpaired UTF-16 surrogate or another control character
  (``ecrf.text``): PostgreSQL, UTF-8 and XML cannot carry them. 422 naming the field.
- **JSON** bodies are parsed here with their nesting capped at ``MAX_JSON_DEPTH`` levels,
  integers within 64 bits (the request schemas narrow them to the 32-bit columns) and only
  finite numbers (no ``NaN``/``Infinity``, no ``1e999``). 400 for a body that is not JSON at
  all, 422 with the path of the offending value otherwise.
- **Redirect targets** taken from a request are same-origin paths only (``same_origin_path``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload
from urllib.parse import urlsplit

from flask import Flask, g, request

from dtx_trials.services.errors import DomainError, ValidationError
from ecrf.text import shown_safely, text_problem

MiB = 1024 * 1024
DEFAULT_BODY_LIMIT = 1 * MiB
MAX_PROTOCOL_BYTES = 2 * MiB
# Endpoints that take more than DEFAULT_BODY_LIMIT (a multipart upload carries some overhead).
BODY_LIMITS = {
    "devices.DeviceData": 32 * MiB,
    "protocols.Validate": MAX_PROTOCOL_BYTES,
    "protocols.Versions": MAX_PROTOCOL_BYTES,
    "trial_pages.upload_protocol": MAX_PROTOCOL_BYTES + 64 * 1024,
    "participants.AllocationList": 4 * MiB,
}
MAX_JSON_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NDJSON = "application/x-ndjson"
_MAX_REPORTED = 20
REFUSED = "the request holds values that cannot be accepted"


class MalformedJSON(DomainError):
    """The body is not JSON at all (400, like a syntax error anywhere else)."""

    status = 400
    code = "malformed_json"


class _NumberOutOfRange:
    """A JSON number the parser kept as text: too long for a 64-bit integer, or NaN/Infinity."""

    def __init__(self, text: str) -> None:
        self.text = text


def _parse_int(text: str) -> int | _NumberOutOfRange:
    if len(text.lstrip("-")) > 19:  # never hand a 5,000-digit string to int()
        return _NumberOutOfRange(text)
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else _NumberOutOfRange(text)


def parse_json(raw: bytes) -> Any:
    """Parse a JSON document, refusing what our storage cannot take (see the module doc).

    Raises ``MalformedJSON`` (400) or ``ValidationError`` (422, errors keyed by the path of each
    offending key or value under ``json``).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedJSON("the body is not UTF-8", {"json": ["not UTF-8 text"]}) from exc
    if _has_plain_strings(raw):
        try:
            document = _DECODER.decode(text)
        except (ValueError, RecursionError):
            pass  # the checked parse below says why, in its words
        else:
            if _is_plain(document):
                return document
    return _parse_checked(text)


def _parse_checked(text: str) -> Any:
    try:
        document = json.loads(text, parse_int=_parse_int, parse_constant=_NumberOutOfRange)
    except RecursionError as exc:
        raise ValidationError(
            "the JSON body is nested too deeply",
            {"json": [f"nested deeper than {MAX_JSON_DEPTH} levels"]},
        ) from exc
    except ValueError as exc:
        raise MalformedJSON(
            "the body is not valid JSON", {"json": [f"invalid JSON: {exc}"]}
        ) from exc
    problems = dict(_json_problems(document))
    if problems:
        raise ValidationError(REFUSED, _nest("json", problems))
    return document


# The fast path of parse_json and of NDJSON (a 10,000-record device batch is parsed by the C
# scanner and checked in one pass, not walked value by value with a text check per string).
# JSON text carries a character `text_problem` refuses only as an escape (a backslash) or as
# itself: a control character is one byte of its own in UTF-8, U+FFFE/U+FFFF are EF BF BE/BF
# there, and a surrogate cannot be valid UTF-8. A text with none of these has only storable
# strings and keys; what is left to check is depth, integers within 64 bits and finite floats
# (`_is_plain`: the parser's hooks turn long integers, NaN and Infinity into _NumberOutOfRange).
# Anything else goes through the checked parse, which reports it.
_UNSAFE_BYTES = bytes(range(0x09)) + b"\x0b\x0c" + bytes(range(0x0e, 0x20)) + b"\\"
_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_constant=_NumberOutOfRange)


def _has_plain_strings(raw: bytes) -> bool:
    """True when no string or key of this JSON text (valid UTF-8) can fail `text_problem`."""
    return (
        len(raw.translate(None, _UNSAFE_BYTES)) == len(raw)
        and b"\xef\xbf\xbe" not in raw
        and b"\xef\xbf\xbf" not in raw
    )


def _is_plain(document: Any) -> bool:
    """True when a document parsed by ``_DECODER`` from a text with plain strings breaks no rule
    of ``_json_problems``; False sends it to the checked parse."""
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:
        value, depth = stack.pop()
        kind = type(value)
        if kind is dict:
            items: Iterable[Any] = value.values()
        elif kind is list:
            items = value
        else:
            items = (value,)
            depth -= 1
        if depth >= MAX_JSON_DEPTH:
            return False
        for item in items:
            kind = type(item)
            if kind is str or kind is bool or item is None:
                continue
            if kind is int:
                if not INT64_MIN <= item <= INT64_MAX:
                    return False
            elif kind is float:
                if not math.isfinite(item):
                    return False
            elif kind is dict or kind is list:
                stack.append((item, depth + 1))
            else:
                return False
    return True


def _json_problems(document: Any) -> Iterator[tuple[tuple[str, ...], str]]:
    """Yield (path, message) for each value of a parsed document that breaks the rules."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(document, ())]
    found = 0
    while stack and found < _MAX_REPORTED:
        value, path = stack.pop()
        message = None
        if len(path) > MAX_JSON_DEPTH:
            message = f"nested deeper than {MAX_JSON_DEPTH} levels"
        elif isinstance(value, str):
            message = text_problem(value)
        elif isinstance(value, _NumberOutOfRange):
            message = (
                "number out of range (integers within ±2**63, finite numbers only): "
                f"{value.text[:24]}"
            )
        elif isinstance(value, float) and not math.isfinite(value):
            message = "number out of range (finite numbers only)"
        elif isinstance(value, dict):
            for key, item in value.items():
                key_problem = text_problem(key)
                if key_problem is not None:
                    found += 1
                    yield (*path, shown_safely(key)), f"key {key_problem}"
                else:
                    stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(value))
        if message is not None:
            found += 1
            yield path, message


def _nest(location: str, problems: dict[tuple[str, ...], str]) -> dict[str, Any]:
    """Turn {("values", "ae_term"): msg} into {"json": {"values": {"ae_term": [msg]}}}."""
    root: dict[str, Any] = {}
    for path, message in problems.items():
        node = root.setdefault(location, {})
        if not path:
            root[location] = [message]
            continue
        if not isinstance(node, dict):
            continue
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node.setdefault(path[-1], []).append(message)
    return root


def _text_items(location: str, items: Iterable[tuple[str, str]]) -> dict[tuple[str, ...], str]:
    problems: dict[tuple[str, ...], str] = {}
    for name, value in items:
        name_problem = text_problem(name)
        if name_problem is not None:
            problems[(shown_safely(name),)] = f"name {name_problem}"
        elif (problem := text_problem(value)) is not None:
            problems[(name,)] = problem
    return problems


def _set_body_limit() -> None:
    limit = BODY_LIMITS.get(request.endpoint or "", DEFAULT_BODY_LIMIT)
    request.max_content_length = limit
    request.max_form_memory_size = limit  # a protocol pasted into the page's text area


def _check_request_input() -> None:
    if request.endpoint is None:
        return  # an unknown path stays a 404
    errors: dict[str, Any] = {}
    views = ((k, v) for k, v in (request.view_args or {}).items() if isinstance(v, str))
    for location, items in (
        ("path", views),
        ("query", request.args.items(multi=True)),
        ("form", request.form.items(multi=True) if _has_form() else ()),
        ("files", ((k, f.filename or "") for k, f in request.files.items(multi=True))
         if _has_form() else ()),
    ):
        problems = _text_items(location, items)
        if problems:
            errors.update(_nest(location, problems))
    if errors:
        raise ValidationError(REFUSED, errors)
    if request.is_json and request.content_length != 0:
        raw = request.get_data(cache=True)
        if raw:
            g.json_body = parse_json(raw)
    elif request.mimetype == NDJSON:
        g.ndjson_records = ndjson_batch(request.get_data(cache=True))


def _has_form() -> bool:
    return request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data")


class Unparsable:
    """Stands for an NDJSON line that is not JSON (the device service rejects that record)."""


def _ndjson_records(raw: bytes) -> Iterator[object]:
    """Parse an NDJSON body line by line (blank lines skipped); a line that is not JSON becomes
    ``Unparsable``, a line with a value we cannot store fails the request with its line number."""
    try:
        text = raw.decode("utf-8") if _has_plain_strings(raw) else None
    except UnicodeDecodeError:
        text = None
    if text is None:
        for number, line in enumerate(raw.split(b"\n"), start=1):
            if line.strip():
                yield _ndjson_record(number, line)
        return
    # parse_json's fast path line by line: the whole body has plain strings, so each line has;
    # the scanner must take the whole line (as json.loads would), else the line is parsed again
    # by parse_json, which says what is wrong with it
    scan = _DECODER.scan_once
    for number, line_text in enumerate(text.split("\n"), start=1):
        value = line_text.strip(_JSON_SPACE)  # no \x0b or \x0c here: bytes.strip() agrees
        if not value:
            continue
        try:
            record, end = scan(value, 0)
        except (StopIteration, ValueError, RecursionError):
            end = -1
        if end != len(value) or not _is_plain(record):
            record = _ndjson_record(number, line_text.encode())
        yield record


_JSON_SPACE = " \t\n\r"


def ndjson_batch(raw: bytes) -> Sequence[object]:
    """The records of an NDJSON body, as `_ndjson_records` gives them; a body none of whose
    lines can fail the request is parsed only as its records are read (`DeferredNDJSON`), so
    the device ingest parses each line while PostgreSQL loads the rows before it."""
    text = _never_refused(raw)
    if text is None:
        return list(_ndjson_records(raw))
    lines = [line for line in text.split("\n") if line.strip(_JSON_SPACE)]
    return DeferredNDJSON(lines)


# `_never_refused`: a 19-digit run (an integer that may not fit in 64 bits), an exponent of
# three digits or more (a float that may overflow: with at most 18 digits before the point
# and at most 2 after the "e" a number is below 1e117), and NaN/Infinity (constants)
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789E", b"000000000e")
_LONG_RUN = b"0" * 19
_BIG_EXPONENT = b"e000"  # after the "+" signs are deleted
_OPENERS_AND_NEWLINES = bytes(b for b in range(256) if b not in b"{[\n")


def _never_refused(raw: bytes) -> str | None:
    """The text of an NDJSON body no line of which `_ndjson_record` can refuse (422), or None.

    Conservative and cheap (whole-body byte scans, no parse): strings with nothing
    `text_problem` refuses (as `_has_plain_strings`), every number within 64 bits or finite
    (see above), and at most ``MAX_JSON_DEPTH`` brackets opened on any line (so no line nests
    deeper). Such a body's lines are records or `Unparsable`, whatever order they are read in;
    anything else (also anything merely looking like a problem, such as "NaN" inside a string)
    is parsed up front by `_ndjson_records`, which names the line."""
    if not _has_plain_strings(raw) or b"NaN" in raw or b"Infinity" in raw:
        return None
    numbers = raw.translate(_DIGITS_TO_ZERO, b"+")
    if _LONG_RUN in numbers or _BIG_EXPONENT in numbers:
        return None
    openers = raw.translate(None, _OPENERS_AND_NEWLINES)
    if (
        len(openers) - openers.count(b"\n") > MAX_JSON_DEPTH
        and max(map(len, openers.split(b"\n"))) > MAX_JSON_DEPTH
    ):
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class DeferredNDJSON(Sequence[object]):
    """The records of an NDJSON body that `_never_refused` passed, each parsed when read: the
    record `_ndjson_records` would give (a plain JSON value, or `Unparsable`).

    Its numbers are 64-bit integers or finite floats, so the C scanner without hooks gives the
    values the hooked one gives; a line the scanner does not take whole is not JSON."""

    __slots__ = ("_lines",)

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines  # the non-blank lines, in order

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, index: int) -> object: ...

    @overload
    def __getitem__(self, index: slice) -> list[object]: ...

    def __getitem__(self, index: int | slice) -> object:
        if isinstance(index, slice):
            return [_deferred_record(line) for line in self._lines[index]]
        return _deferred_record(self._lines[index])

    def __iter__(self) -> Iterator[object]:
        return map(_deferred_record, self._lines)


_PLAIN_SCAN = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _deferred_record(line: str) -> object:
    value = line.strip(_JSON_SPACE)
    try:
        record, end = _PLAIN_SCAN(value, 0)
    except (StopIteration, ValueError):
        return Unparsable()
    return record if end == len(value) else Unparsable()


def _ndjson_record(number: int, line: bytes) -> object:
    try:
        return parse_json(line)
    except MalformedJSON:
        return Unparsable()
    except ValidationError as exc:
        raise ValidationError(
            exc.message, {"ndjson": {f"line {number}": exc.errors["json"]}}
        ) from exc


def same_origin_path(target: str | None, default: str = "/") -> str:
    """Return ``target`` if it is a path on this site, else ``default`` (no open redirects).

    Browsers drop tabs and newlines and read a backslash as a slash, so ``/\\t/evil.example``
    would leave the site: any whitespace, control character or backslash is refused outright.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return default
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 or ch == "\\" for ch in target):
        return default
    parts = urlsplit(target)
    return default if parts.scheme or parts.netloc else target


def init_app(app: Flask) -> None:
    """Install the edge: the body limit before every other hook, the input check after the
    authentication hooks (an anonymous caller learns nothing from validation errors)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _set_body_limit)
    app.before_request(_check_request_input)
