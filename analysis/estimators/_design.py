"""Input checks and fixed-effect design matrices shared by the estimators.

The design is parameterised by cell means (one indicator per arm, or per arm x visit,
no intercept) plus covariates and treatment-coded factor dummies. This spans the
same column space as R's ``arm * visit + base * visit + stratum`` so fitted values,
LS means and contrasts are identical, while LS-mean rows are trivial to write.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from analysis.results import AnalysisError

FloatArray = npt.NDArray[np.floating[Any]]


def require_columns(data: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise AnalysisError naming every column of ``columns`` missing from ``data``."""
    if not isinstance(data, pd.DataFrame):
        raise AnalysisError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise AnalysisError(f"columns not in data: {missing}; have {list(data.columns)}")


def require_numeric(data: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise AnalysisError if a column of ``columns`` is not numeric."""
    for col in columns:
        if not pd.api.types.is_numeric_dtype(data[col]) or pd.api.types.is_bool_dtype(
            data[col]
        ):
            raise AnalysisError(f"column {col!r} must be numeric, has dtype {data[col].dtype}")


def level_labels(values: pd.Series) -> pd.Series:
    """Return the values as strings (levels are compared and reported as text)."""
    return values.astype(str)


def order_arms(arms: pd.Series, reference: str | None) -> tuple[str, ...]:
    """Return arm levels with the reference first, the others in sorted order."""
    levels = sorted(set(arms.tolist()))
    if len(levels) < 2:
        raise AnalysisError(f"need at least two arms, found {levels}")
    if reference is None:
        reference = levels[0]
    if reference not in levels:
        raise AnalysisError(f"reference arm {reference!r} not among arms {levels}")
    return (reference, *[lev for lev in levels if lev != reference])


def sorted_levels(values: pd.Series) -> tuple[str, ...]:
    """Return the distinct levels of a factor in sorted order (first is the reference)."""
    return tuple(sorted(set(values.tolist())))


def drop_incomplete(
    data: pd.DataFrame, columns: Sequence[str]
) -> tuple[pd.DataFrame, int]:
    """Return the rows of ``data`` complete in ``columns`` and the number dropped."""
    complete = data.loc[data[list(columns)].notna().all(axis=1)].copy()
    return complete, len(data) - len(complete)


@dataclass(frozen=True)
class CellDesign:
    """A cell-means design: cells (arm or arm x visit), covariates, factor dummies.

    ``lsmean_row`` gives the row of the LS mean of one cell: covariates at their mean
    over the analysed rows and factor levels weighted equally, as emmeans does by
    default.
    """

    matrix: FloatArray
    names: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]
    covariate_means: FloatArray
    factor_weights: FloatArray
    by_cell_slopes: int

    def lsmean_row(self, cell: tuple[str, ...]) -> FloatArray:
        """Return the linear combination of coefficients giving the LS mean of ``cell``."""
        n_cells = len(self.cells)
        row = np.zeros(len(self.names))
        index = self.cells.index(cell)
        row[index] = 1.0
        offset = n_cells
        n_slopes = self.by_cell_slopes
        if n_slopes:
            # one slope per visit (the last element of the cell), each at the overall mean
            visits = sorted({c[-1] for c in self.cells}, key=[c[-1] for c in self.cells].index)
            n_visits = len(visits)
            for s in range(n_slopes):
                row[offset + s * n_visits + visits.index(cell[-1])] = self.covariate_means[s]
            offset += n_slopes * n_visits
        n_cov = len(self.covariate_means) - n_slopes
        row[offset : offset + n_cov] = self.covariate_means[n_slopes:]
        offset += n_cov
        row[offset:] = self.factor_weights
        return row


def build_cell_design(
    data: pd.DataFrame,
    cell_columns: Sequence[str],
    cell_levels: Sequence[tuple[str, ...]],
    by_visit_covariates: Sequence[str] = (),
    covariates: Sequence[str] = (),
    factors: Sequence[str] = (),
) -> CellDesign:
    """Build the cell-means design matrix for already cleaned ``data``.

    ``cell_columns`` hold string levels (arm, or arm and visit); ``by_visit_covariates``
    get one slope per level of the last cell column (baseline x visit); ``covariates``
    get one slope; ``factors`` are treatment-coded (first sorted level dropped).
    """
    n = len(data)
    keys = list(zip(*[data[c].tolist() for c in cell_columns], strict=True))
    index = {cell: i for i, cell in enumerate(cell_levels)}
    cols: list[FloatArray] = []
    names: list[str] = []
    cell_matrix = np.zeros((n, len(cell_levels)))
    at = np.fromiter((index[tuple(key)] for key in keys), dtype=np.intp, count=n)
    cell_matrix[np.arange(n), at] = 1.0  # one 1 per row, in its cell's column
    cols.append(cell_matrix)
    names.extend(":".join(cell) for cell in cell_levels)
    means: list[float] = []
    if by_visit_covariates:
        visit_col = cell_columns[-1]
        visits = list(dict.fromkeys(cell[-1] for cell in cell_levels))
        visit_values = data[visit_col].to_numpy()
        for cov in by_visit_covariates:
            x = data[cov].to_numpy(dtype=float)
            means.append(float(x.mean()))
            for v in visits:
                cols.append((x * (visit_values == v))[:, None])
                names.append(f"{cov}:{visit_col}{v}")
    for cov in covariates:
        x = data[cov].to_numpy(dtype=float)
        means.append(float(x.mean()))
        cols.append(x[:, None])
        names.append(cov)
    weights: list[float] = []
    for fac in factors:
        levels = sorted_levels(data[fac])
        values = data[fac].to_numpy()
        for lev in levels[1:]:
            cols.append((values == lev).astype(float)[:, None])
            names.append(f"{fac}{lev}")
            weights.append(1.0 / len(levels))
    matrix = np.hstack(cols) if cols else np.zeros((n, 0))
    return CellDesign(
        matrix=matrix,
        names=tuple(names),
        cells=tuple(tuple(c) for c in cell_levels),
        covariate_means=np.asarray(means, dtype=float),
        factor_weights=np.asarray(weights, dtype=float),
        by_cell_slopes=len(by_visit_covariates),
    )


def check_full_rank(matrix: FloatArray, names: Sequence[str]) -> None:
    """Raise AnalysisError if the design is rank deficient (an empty cell, a constant)."""
    rank = np.linalg.matrix_rank(matrix)
    if rank < matrix.shape[1]:
        empty = [nm for nm, col in zip(names, matrix.T, strict=True) if not np.any(col)]
        hint = f"; empty columns: {empty}" if empty else ""
        raise AnalysisError(
            f"design matrix is rank deficient ({rank} < {matrix.shape[1]} columns){hint}"
        )


def column_names(value: str | Sequence[str]) -> list[str]:
    """Return a list of column names; a single string is one name, not its characters."""
    if isinstance(value, str):
        return [value]
    names = list(value)
    if not all(isinstance(v, str) for v in names):
        raise AnalysisError(f"column names must be strings, got {names!r}")
    return names


def safe_exp(value: float) -> float:
    """Return exp(value), inf on overflow (diverging log-ratios under separation)."""
    return math.exp(value) if value < 709.0 else math.inf
