"""The test suite (``make test``); `absent` is the one rule for a missing tool or service."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def absent(what: str) -> NoReturn:
    """A tool or service a test needs is absent: a failure under CI=true (.ci/run installs and
    starts them), a skip on a developer's machine."""
    if IN_CI:
        pytest.fail(f"{what} under CI=true")
    pytest.skip(what)
