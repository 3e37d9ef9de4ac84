"""Read a YAML protocol document into plain data, checking it against ``structure``.

Every problem is collected (never the first only) together with the 1-based line and column of
the offending key or value. Invalid or missing values are replaced by placeholders so that the
rest of the document can still be built and cross-checked.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from ecrf.text import text_problem

from .structure import RETIRED_KEYS, Bool, Enum, Int, Kind, ListOf, Num, NumOrStr, Obj, Str

PathPart = str | int
Path = tuple[PathPart, ...]


@dataclass(frozen=True)
class Issue:
    """One problem found in a protocol document (``line``/``column`` are 1-based)."""

    file: str
    line: int
    column: int
    path: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        location = f"{self.file}:{self.line}:{self.column}"
        return f"{location}: {self.path or '<document>'}: {prefix}{self.message}"


def format_path(path: Path) -> str:
    """Render ``("forms", 2, "fields", 0, "type")`` as ``forms[2].fields[0].type``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def suggest(word: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str:
    """Return ``' (did you mean 'x'?)'`` for the closest candidate, or an empty string."""
    close = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass
class SourceMap:
    """Where each value (and each mapping key) of the document sits in the text."""

    file: str
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    scalar_styles: dict[Path, str | None] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Return the mark of the value at ``path`` (or its key), else of the nearest parent."""
        probe = path
        while True:
            table = self.keys if key and probe in self.keys else self.values
            if probe in table:
                return table[probe]
            if not probe:
                return (1, 1)
            probe = probe[:-1]


@dataclass
class Reporter:
    """Collects issues against a source map."""

    sources: SourceMap
    issues: list[Issue] = field(default_factory=list)
    #: Objects holding an invalid or missing value, and the invalid values themselves: checks of
    #: a later phase stay silent about them, since a placeholder stands in for the real value.
    tainted_objects: set[Path] = field(default_factory=set)
    bad_values: set[Path] = field(default_factory=set)
    is_cross_checking: bool = False

    def error(self, path: Path, message: str, *, key: bool = False,
              column_offset: int | None = None) -> None:
        if self.is_cross_checking and self._is_tainted(path):
            return
        self._add(path, message, "error", key=key, column_offset=column_offset)

    def value_error(self, path: Path, message: str) -> None:
        """Report an invalid value; cross-checks of its object are then suppressed."""
        self.bad_values.add(path)
        if path:
            self.tainted_objects.add(path[:-1])
        self._add(path, message, "error", key=False, column_offset=None)

    def missing_error(self, path: Path, message: str) -> None:
        """Report a missing required key of the object at ``path``."""
        self.tainted_objects.add(path)
        self._add(path, message, "error", key=False, column_offset=None)

    def _is_tainted(self, path: Path) -> bool:
        if any(path[: len(bad)] == bad for bad in self.bad_values):
            return True
        return any(path[: len(obj)] == obj and len(path) <= len(obj) + 1
                   for obj in self.tainted_objects)

    def warning(self, path: Path, message: str) -> None:
        self._add(path, message, "warning", key=False, column_offset=None)

    def _add(self, path: Path, message: str, severity: str, *, key: bool,
             column_offset: int | None) -> None:
        line, column = self.sources.locate(path, key=key)
        if column_offset is not None:
            column += column_offset
        self.issues.append(
            Issue(self.sources.file, line, column, format_path(path), message, severity)
        )

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def placeholder(kind: Kind) -> Any:
    """Return the stand-in value used where a value is missing or invalid."""
    if isinstance(kind, Str):
        return ""
    if isinstance(kind, Int):
        return 0
    if isinstance(kind, Num):
        return 0.0
    if isinstance(kind, Bool):
        return False
    if isinstance(kind, Enum):
        return kind.values[0]
    if isinstance(kind, NumOrStr):
        return None
    if isinstance(kind, ListOf):
        return []
    return {p.name: placeholder(p.kind) for p in kind.props if p.required}


_TYPE_NAMES = {
    bool: "a boolean", int: "an integer", float: "a number", str: "a string",
    type(None): "null", dt.date: "a date", dt.datetime: "a datetime",
}


def _describe(node: yaml.Node, value: object) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


class DocumentReader:
    """Turns a composed YAML node tree into plain data, reporting structural problems."""

    def __init__(self, loader: yaml.SafeLoader, reporter: Reporter) -> None:
        self._loader = loader
        self._reporter = reporter
        self._sources = reporter.sources

    def read(self, node: yaml.Node, kind: Kind, path: Path) -> Any:
        """Return the plain value of ``node`` checked against ``kind``."""
        is_block = isinstance(node, yaml.CollectionNode) and not node.flow_style
        # A block list or mapping is best pointed at by its key line, not its first item.
        self._sources.values[path] = (
            self._sources.keys[path] if is_block and path in self._sources.keys else _mark(node)
        )
        if isinstance(kind, Obj):
            return self._read_object(node, kind, path)
        if isinstance(kind, ListOf):
            return self._read_list(node, kind, path)
        return self._read_scalar(node, kind, path)

    def _scalar(self, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            return None
        try:
            return self._loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError):
            return node.value  # e.g. 2024-13-45 looks like a date but is none

    def _read_scalar(self, node: yaml.Node, kind: Kind, path: Path) -> Any:
        value = self._scalar(node)
        if isinstance(node, yaml.ScalarNode):
            # Columns inside a scalar map 1:1 to the text only when it sits on one line.
            single_line = node.start_mark.line == node.end_mark.line
            self._sources.scalar_styles[path] = node.style if single_line else "|"
        is_scalar = isinstance(node, yaml.ScalarNode)
        if isinstance(kind, Str):
            if is_scalar and isinstance(value, (int, float, dt.date)) and not isinstance(
                value, bool
            ):
                value = node.value  # an unquoted 1.0 or 2024-01-01 is meant as text here
            if not isinstance(value, str):
                return self._wrong(path, "a string", node, value, kind)
            if (problem := text_problem(value)) is not None:
                self._reporter.value_error(path, problem)
                return placeholder(kind)
            if len(value) < kind.min_length:
                self._reporter.value_error(path, "must not be empty")
                return placeholder(kind)
            if kind.pattern and not _matches(kind.pattern, value):
                self._reporter.value_error(
                    path, f"'{value}' is not a valid identifier (pattern {kind.pattern})"
                )
            return value
        if isinstance(kind, Bool):
            if not isinstance(value, bool):
                return self._wrong(path, "true or false", node, value, kind)
            return value
        if isinstance(kind, Int):
            if not isinstance(value, int) or isinstance(value, bool):
                return self._wrong(path, "an integer", node, value, kind)
            if kind.minimum is not None and value < kind.minimum:
                self._reporter.value_error(path, f"must be at least {kind.minimum}, got {value}")
            if kind.maximum is not None and value > kind.maximum:
                self._reporter.value_error(path, f"must be at most {kind.maximum}, got {value}")
            return value
        if isinstance(kind, Num):
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                return self._wrong(path, "a number", node, value, kind)
            return self._check_range(path, float(value), kind)
        if isinstance(kind, NumOrStr):
            if isinstance(value, (dt.date, dt.datetime)):
                return value.isoformat()
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                return self._wrong(path, "a number or an ISO date/time", node, value, kind)
            if isinstance(value, str) and (problem := text_problem(value)) is not None:
                self._reporter.value_error(path, problem)
                return placeholder(kind)
            return value
        assert isinstance(kind, Enum)
        if not isinstance(value, str) or not is_scalar:
            return self._wrong(path, f"one of {', '.join(kind.values)}", node, value, kind)
        if value not in kind.values:
            self._reporter.value_error(
                path,
                f"'{value}' is not one of {', '.join(kind.values)}{suggest(value, kind.values)}",
            )
            return placeholder(kind)
        return value

    def _check_range(self, path: Path, value: float, kind: Num) -> float:
        low, high = kind.minimum, kind.maximum
        if low is not None and (value <= low if kind.exclusive_minimum else value < low):
            bound = f"greater than {low:g}" if kind.exclusive_minimum else f"at least {low:g}"
            self._reporter.value_error(path, f"must be {bound}, got {value:g}")
        elif high is not None and value > high:
            self._reporter.value_error(path, f"must be at most {high:g}, got {value:g}")
        return value

    def _wrong(self, path: Path, expected: str, node: yaml.Node, value: object,
               kind: Kind) -> Any:
        self._reporter.value_error(path, f"expected {expected}, got {_describe(node, value)}")
        return placeholder(kind)

    def _read_list(self, node: yaml.Node, kind: ListOf, path: Path) -> list[Any]:
        if not isinstance(node, yaml.SequenceNode):
            return list(self._wrong(path, "a list", node, self._scalar(node), kind))
        items = [self.read(child, kind.item, (*path, i)) for i, child in enumerate(node.value)]
        if len(items) < kind.min_items:
            noun = "item" if kind.min_items == 1 else "items"
            self._reporter.value_error(path, f"needs at least {kind.min_items} {noun}")
        return items

    def _read_object(self, node: yaml.Node, kind: Obj, path: Path) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):
            return dict(self._wrong(path, "a mapping", node, self._scalar(node), kind))
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        names = [p.name for p in kind.props]
        for key_node, value_node in node.value:
            key = self._scalar(key_node)
            if isinstance(key, str) and (problem := text_problem(key)) is not None:
                self._sources.values[(*path, "?")] = _mark(key_node)
                self._reporter.error((*path, "?"), f"key {problem}")
                continue
            if not isinstance(key, str):
                self._sources.values[(*path, str(key))] = _mark(key_node)
                self._reporter.error((*path, str(key)), "keys must be strings")
                continue
            key = dict(kind.aliases).get(key, key)  # zh-Hans is written zh
            key_path = (*path, key)
            if key in first_seen:
                self._sources.keys.setdefault(key_path, _mark(key_node))
                line, column = _mark(key_node)
                self._reporter.issues.append(
                    Issue(self._sources.file, line, column, format_path(key_path),
                          f"duplicate key '{key}' (first defined at line {first_seen[key]})")
                )
                continue
            first_seen[key] = _mark(key_node)[0]
            self._sources.keys[key_path] = _mark(key_node)
            prop = kind.prop(key)
            if prop is None and kind.extra is not None and _matches(kind.extra_pattern or "", key):
                if not _is_null(value_node):
                    result[key] = self.read(value_node, kind.extra, key_path)
                continue
            if prop is None:
                self._sources.values[key_path] = _mark(key_node)
                hint = suggest(key, names)
                if (kind.name, key) in RETIRED_KEYS:
                    hint = f" ({RETIRED_KEYS[(kind.name, key)]})"
                if key == "<<":
                    hint = " (YAML merge keys are not supported; repeat the keys or use an alias)"
                if not hint and node.flow_style and _is_null(value_node) and " " in key:
                    hint = " (a comma inside {...} starts a new key: quote the text)"
                self._reporter.error(
                    key_path, f"unknown key '{key}' in {kind.name}{hint}", key=True
                )
                continue
            if not prop.required and _is_null(value_node):
                continue  # an empty optional value means the same as leaving the key out
            result[key] = self.read(value_node, prop.kind, key_path)
        for prop in kind.props:
            if prop.required and prop.name not in result and prop.name not in first_seen:
                self._reporter.missing_error(
                    path, f"missing required key '{prop.name}' in {kind.name}"
                )
                result[prop.name] = placeholder(prop.kind)
            elif prop.required and prop.name not in result:
                result[prop.name] = placeholder(prop.kind)
        return result


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value) is not None


# Bounds on what a document may cost to read. Aliases let a 1 KB text stand for a tree of
# billions of nodes (a "billion laughs" bomb) or a cycle; deep nesting exhausts the recursion of
# the composer and of the reader. A real protocol (the library's are ~1,500 lines, depth < 12,
# no aliases) sits far inside every one of these.
MAX_ALIASES = 100
MAX_DEPTH = 64
MAX_NODES = 200_000
PARSE_SECONDS = 5.0


class DocumentLimitError(yaml.MarkedYAMLError):
    """The document exceeds one of the bounds above."""


class _BoundedLoader(yaml.SafeLoader):
    """A safe loader that counts aliases, bounds nesting and keeps to a time budget while it
    composes (the checks run before each node, so the limits hold during parsing)."""

    def __init__(self, text: str, seconds: float) -> None:
        super().__init__(text)
        self._deadline = time.monotonic() + seconds
        self._seconds = seconds
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise DocumentLimitError(problem=f"more than {MAX_ALIASES} aliases",
                                         problem_mark=mark)
        if self._depth >= MAX_DEPTH:
            raise DocumentLimitError(problem=f"nested deeper than {MAX_DEPTH} levels",
                                     problem_mark=mark)
        if time.monotonic() > self._deadline:
            raise DocumentLimitError(
                problem=f"the document took more than {self._seconds:g} s to read",
                problem_mark=mark,
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_expansion(root: yaml.Node) -> None:
    """Refuse a composed document whose aliases expand past ``MAX_NODES`` nodes or
    ``MAX_DEPTH`` levels, or refer to an enclosing node (a cycle). Iterative and memoised, so
    the check costs the size of the text, not of the expansion."""
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, is_done = stack.pop()
        key = id(node)
        if is_done:
            children = [sizes[id(child)] for child in _children(node)]
            size = 1 + sum(n for n, _ in children)
            depth = 1 + max((d for _, d in children), default=0)
            open_nodes.discard(key)
            if size > MAX_NODES:
                raise DocumentLimitError(
                    problem=f"aliases expand to more than {MAX_NODES:,} values",
                    problem_mark=node.start_mark,
                )
            if depth > MAX_DEPTH:
                raise DocumentLimitError(
                    problem=f"aliases expand deeper than {MAX_DEPTH} levels",
                    problem_mark=node.start_mark,
                )
            sizes[key] = (size, depth)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise DocumentLimitError(
                problem="an alias refers to a node that contains it (a recursive structure)",
                problem_mark=node.start_mark,
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def read_document(
    text: str, kind: Obj, reporter: Reporter, *, seconds: float = PARSE_SECONDS
) -> dict[str, Any] | None:
    """Compose ``text`` and read it against ``kind``; None when the YAML itself is broken or
    exceeds the bounds above (reported with its line like any other problem)."""
    try:
        loader = _BoundedLoader(text, seconds)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        reporter.issues.append(Issue(reporter.sources.file, line, column, "",
                                     f"unacceptable character #x{exc.character:04x}"))
        return None
    try:
        root = loader.get_single_node()
        if root is not None:
            check_expansion(root)
    except DocumentLimitError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reporter.issues.append(Issue(reporter.sources.file, line, column, "",
                                     f"document refused: {exc.problem}"))
        return None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        reporter.issues.append(
            Issue(reporter.sources.file, line, column, "", f"YAML syntax error: {problem}")
        )
        return None
    except yaml.YAMLError as exc:
        reporter.issues.append(
            Issue(reporter.sources.file, 1, 1, "", f"YAML syntax error: {exc}")
        )
        return None
    finally:
        loader.dispose()
    if root is None:
        reporter.issues.append(Issue(reporter.sources.file, 1, 1, "", "the document is empty"))
        return None
    reader = DocumentReader(loader, reporter)
    data = reader.read(root, kind, ())
    return data if isinstance(data, dict) else None
