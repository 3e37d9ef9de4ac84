"""Load a protocol YAML document into a validated ``Protocol``.

Every problem is reported at once, each as ``file:line:col: path: message`` (1-based line and
column of the offending key or value), through ``ProtocolError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path as FilePath

from .builder import build_protocol
from .document import Issue, Reporter, SourceMap, read_document
from .model import Protocol
from .structure import PROTOCOL
from .validation import validate_protocol

__all__ = [
    "LIBRARY_DIR",
    "Issue",
    "LoadResult",
    "ProtocolError",
    "library_protocol_paths",
    "load_protocol",
    "load_protocol_report",
    "load_protocol_text",
    "validate_protocol_text",
]

#: The example protocols shipped with the package (cognitive impairment, myopia, diabetes).
LIBRARY_DIR = FilePath(__file__).resolve().parent / "library"


class ProtocolError(Exception):
    """A protocol document has errors; ``issues`` lists every error (warnings are not errors)."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]


@dataclass(frozen=True)
class LoadResult:
    """A protocol (None when it has errors) with every issue found, errors and warnings."""

    protocol: Protocol | None
    issues: tuple[Issue, ...]

    @property
    def errors(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity == "error")

    @property
    def warnings(self) -> tuple[Issue, ...]:
        return tuple(i for i in self.issues if i.severity == "warning")


def load_protocol_report(text: str, source_name: str = "protocol.yaml") -> LoadResult:
    """Parse and validate ``text``; never raise for bad input, return the issues instead."""
    reporter = Reporter(SourceMap(source_name))
    data = read_document(text, PROTOCOL, reporter)
    if data is None:
        return LoadResult(None, tuple(reporter.issues))
    protocol = build_protocol(data)
    reporter.is_cross_checking = True
    validate_protocol(protocol, reporter)
    issues = tuple(sorted(reporter.issues, key=lambda i: (i.line, i.column, i.path, i.message)))
    has_errors = any(i.severity == "error" for i in issues)
    return LoadResult(None if has_errors else protocol, issues)


def validate_protocol_text(text: str, name: str = "protocol.yaml") -> list[Issue]:
    """Return every error and warning of the protocol document ``text`` (empty when clean)."""
    return list(load_protocol_report(text, name).issues)


def load_protocol_text(text: str, source_name: str = "protocol.yaml") -> Protocol:
    """Return the Protocol described by ``text``; raise ProtocolError listing every error."""
    result = load_protocol_report(text, source_name)
    if result.protocol is None:
        raise ProtocolError(list(result.errors))
    return result.protocol


def load_protocol(path: str | FilePath) -> Protocol:
    """Read and load the protocol file at ``path``; raise ProtocolError on any error."""
    file_path = FilePath(path)
    try:
        text = file_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProtocolError([Issue(str(path), 1, 1, "", f"cannot read file: {exc}")]) from exc
    return load_protocol_text(text, str(path))


def library_protocol_paths() -> dict[str, FilePath]:
    """Return the shipped example protocol files by name (file stem), sorted by name."""
    return {path.stem: path for path in sorted(LIBRARY_DIR.glob("*.yaml"))}
