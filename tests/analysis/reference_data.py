"""Readers for the reference JSON written by tests/reference/*.R and the CSVs they read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

REFERENCE = Path(__file__).resolve().parents[1] / "reference"


def read_reference(name: str) -> Any:
    """Return the parsed JSON that tests/reference/<name>.R wrote."""
    return json.loads((REFERENCE / f"{name}.json").read_text())


def read_dataset(file: str) -> pd.DataFrame:
    """Return a reference dataset from tests/reference/data/."""
    return pd.read_csv(REFERENCE / "data" / file)
