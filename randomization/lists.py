"""Allocation lists: export the first slots of each stratum, and parse uploaded tables (CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from randomization.designs import Design, ListDesign, PermutedBlockDesign, SimpleDesign
from randomization.errors import AllocationInputError, AllocationListError, DesignError
from randomization.strata import check_stratum_key

REQUIRED_COLUMNS = ("stratum", "arm")
# Columns our own export writes; accepted and ignored on upload so an export can be re-imported.
OPTIONAL_COLUMNS = ("randomization_number", "slot", "block_index", "block_size")


@dataclass(frozen=True, slots=True)
class AllocationListRow:
    """One slot of a stratum's sequence; block fields are set for permuted-block designs only."""

    stratum: str
    slot: int
    arm: str
    block_index: int | None = None
    block_size: int | None = None
    randomization_number: str | None = None
    line_no: int | None = None


def generate_allocation_list(
    design: Design,
    secret: bytes,
    model: str,
    strata: Sequence[str],
    n_per_stratum: int,
) -> list[AllocationListRow]:
    """Return the first n_per_stratum slots of each stratum, exactly as `allocate` will use them.

    Only designs with a fixed per-stratum sequence have a list (simple, permuted_block, list);
    an uploaded list yields fewer rows where it has fewer slots.
    """
    if not design.has_fixed_sequence:
        raise DesignError(f"{design.method}: allocations depend on history; no list exists")
    if not isinstance(n_per_stratum, int) or isinstance(n_per_stratum, bool) or n_per_stratum < 0:
        raise AllocationInputError(f"n_per_stratum must be >= 0, got {n_per_stratum!r}")
    rows: list[AllocationListRow] = []
    for key in strata:
        check_stratum_key(key)
        if isinstance(design, PermutedBlockDesign):
            block = (0, 0, 0)
            for n_slots in range(n_per_stratum):
                k, block = design.slot(secret, model, key, n_slots, block)
                rows.append(
                    AllocationListRow(key, n_slots + 1, design.arms[k], block[0], block[2])
                )
        elif isinstance(design, SimpleDesign):
            for slot in range(1, n_per_stratum + 1):
                k, _ = design.slot_arm(secret, model, key, slot)
                rows.append(AllocationListRow(key, slot, design.arms[k]))
        elif isinstance(design, ListDesign):
            for slot, arm in enumerate(design.table.get(key, ())[:n_per_stratum], start=1):
                rows.append(AllocationListRow(key, slot, arm))
    return rows


def format_allocation_list(rows: Sequence[AllocationListRow]) -> str:
    """Return the rows as CSV; `parse_allocation_list` reads it back.

    Columns: stratum, slot, arm, block_index, block_size, and randomization_number when any row
    has one.
    """
    has_numbers = any(row.randomization_number for row in rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["stratum", "slot", "arm", "block_index", "block_size"]
    writer.writerow([*header, "randomization_number"] if has_numbers else header)
    for row in rows:
        cells: list[object] = [
            row.stratum,
            row.slot,
            row.arm,
            "" if row.block_index is None else row.block_index,
            "" if row.block_size is None else row.block_size,
        ]
        if has_numbers:
            cells.append(row.randomization_number or "")
        writer.writerow(cells)
    return out.getvalue()


def parse_allocation_list_rows(csv_text: str) -> list[AllocationListRow]:
    """Parse an uploaded table (columns stratum, arm[, randomization_number]) in upload order.

    Raise AllocationListError naming the line of the first problem.
    """
    if not isinstance(csv_text, str):
        raise AllocationListError("the allocation list must be text")
    reader = csv.reader(io.StringIO(csv_text.lstrip("\ufeff")), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise AllocationListError("line 1: the allocation list is empty")
        columns = [c.strip().lower() for c in header]
        unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        if unknown:
            raise AllocationListError(
                f"line 1: unknown column(s) {', '.join(repr(c) for c in unknown)} "
                f"(expected stratum, arm[, randomization_number])"
            )
        for required in REQUIRED_COLUMNS:
            if required not in columns:
                raise AllocationListError(f"line 1: missing column {required!r}")
        if len(set(columns)) != len(columns):
            raise AllocationListError("line 1: duplicate column names")
        rows: list[AllocationListRow] = []
        slots: dict[str, int] = {}
        numbers: dict[str, int] = {}
        for cells in reader:
            row = _parse_row(cells, columns, reader.line_num, slots, numbers)
            if row is not None:
                rows.append(row)
    except csv.Error as exc:
        raise AllocationListError(f"line {reader.line_num}: {exc}") from exc
    if not rows:
        raise AllocationListError("the allocation list has a header but no rows")
    return rows


def _parse_row(
    cells: list[str], columns: list[str], line_no: int, slots: dict[str, int],
    numbers: dict[str, int],
) -> AllocationListRow | None:
    if not any(cell.strip() for cell in cells):
        return None
    if len(cells) != len(columns):
        raise AllocationListError(
            f"line {line_no}: expected {len(columns)} fields, got {len(cells)}"
        )
    record = dict(zip(columns, (cell.strip() for cell in cells)))
    stratum = record["stratum"] or "all"
    try:
        check_stratum_key(stratum)
    except AllocationInputError as exc:
        raise AllocationListError(f"line {line_no}: {exc}") from exc
    if not record["arm"]:
        raise AllocationListError(f"line {line_no}: arm is empty")
    number = record.get("randomization_number") or None
    if "randomization_number" in record:
        if number is None:
            raise AllocationListError(f"line {line_no}: randomization_number is empty")
        if number in numbers:
            raise AllocationListError(
                f"line {line_no}: randomization_number {number} already used on line "
                f"{numbers[number]}"
            )
        numbers[number] = line_no
    slots[stratum] = slots.get(stratum, 0) + 1
    return AllocationListRow(
        stratum, slots[stratum], record["arm"], randomization_number=number, line_no=line_no
    )


def parse_allocation_list(csv_text: str) -> dict[str, list[str]]:
    """Return stratum -> arms in upload order, the `table` parameter of a `list` design."""
    table: dict[str, list[str]] = {}
    for row in parse_allocation_list_rows(csv_text):
        table.setdefault(row.stratum, []).append(row.arm)
    return table
