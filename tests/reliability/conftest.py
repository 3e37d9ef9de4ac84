"""Reliability suites (issue #9): worker crashes under load, PostgreSQL restarts, schemathesis
over the OpenAPI document, and the security scan.

``make test`` (and so CI) runs them at reduced sizes; ``make reliability`` runs them at full
size (``DTX_RELIABILITY=full``). Each suite records its figures (requests, faults injected,
writes verified, errors) with the ``figures`` fixture; they are printed as one table per suite
at the end of the pytest run, whether the suite passed or failed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from typing import TypeVar

import pytest

from tests import absent

IS_FULL = os.environ.get("DTX_RELIABILITY", "").lower() == "full"
T = TypeVar("T")

_FIGURES: dict[str, list[tuple[str, str]]] = {}


def scaled(reduced: T, full: T) -> T:
    """Return the full-size value under ``make reliability``, the reduced one otherwise."""
    return full if IS_FULL else reduced


class Figures:
    """The figures one suite prints at the end of the run (in the order recorded)."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.rows = _FIGURES.setdefault(suite, [])

    def add(self, name: str, value: object) -> None:
        is_count = isinstance(value, int) and not isinstance(value, bool)
        text = f"{value:,}" if is_count else str(value)
        self.rows.append((name, text))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    """Figures of this test, printed under its name at the end of the run."""
    name = request.node.name
    size = "full" if IS_FULL else "reduced"
    yield Figures(f"{name} ({size} size)")


def require_server_stack() -> str:
    """Return TEST_DATABASE_URL; skip (fail under CI=true) without PostgreSQL or gunicorn."""
    url = os.environ.get("TEST_DATABASE_URL")
    missing = [] if url else ["TEST_DATABASE_URL"]
    if importlib.util.find_spec("gunicorn") is None:
        missing.append("gunicorn")
    if missing:
        absent(f"this reliability suite needs {' and '.join(missing)}")
    return str(url)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for suite, rows in _FIGURES.items():
        terminalreporter.write_line(f"{suite}:")
        width = max((len(name) for name, _ in rows), default=0)
        for name, value in rows:
            terminalreporter.write_line(f"  {name.ljust(width)}  {value}")
