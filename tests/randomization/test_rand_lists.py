"""Allocation lists: export equals what allocate hands out; CSV upload errors name the line."""

from __future__ import annotations

import pytest
from rand_helpers import allocate_sequence

from randomization.designs import build_design
from randomization.draws import secret_from_seed
from randomization.errors import AllocationListError, DesignError
from randomization.lists import (
    format_allocation_list,
    generate_allocation_list,
    parse_allocation_list,
    parse_allocation_list_rows,
)

STRATA = ["site=S1|sex=f", "site=S1|sex=m"]


def test_generated_list_is_what_allocate_hands_out() -> None:
    design = build_design("permuted_block", ["A", "B", "C"], [2, 1, 1], {"block_sizes": [4, 8]})
    rows = generate_allocation_list(design, secret_from_seed(1), "m1", STRATA, 12)
    assert len(rows) == 24
    for key in STRATA:
        results, _ = allocate_sequence(design, [(key, {})] * 12)
        listed = [row for row in rows if row.stratum == key]
        assert [row.arm for row in listed] == [r.arm for r in results]
        assert [row.block_index for row in listed] == [r.evidence["block_index"] for r in results]
        assert [row.slot for row in listed] == list(range(1, 13))


def test_generated_list_round_trips_through_csv_into_a_list_design() -> None:
    design = build_design("simple", ["A", "B"], [2, 1], {})
    rows = generate_allocation_list(design, secret_from_seed(2), "m1", STRATA, 10)
    table = parse_allocation_list(format_allocation_list(rows))
    assert table == {key: [r.arm for r in rows if r.stratum == key] for key in STRATA}
    uploaded = build_design("list", ["A", "B"], [2, 1], {"table": table})
    results, _ = allocate_sequence(uploaded, [(STRATA[1], {})] * 10)
    assert [r.arm for r in results] == table[STRATA[1]]


def test_dynamic_designs_have_no_list() -> None:
    design = build_design("efron", ["A", "B"], [1, 1], {})
    with pytest.raises(DesignError):
        generate_allocation_list(design, secret_from_seed(1), "m", STRATA, 4)


def test_parse_keeps_upload_order_and_randomization_numbers() -> None:
    text = (
        "Stratum,Arm,Randomization_Number\n"
        "site=S1,B,R-003\n"
        "site=S2,A,R-001\n"
        "\n"
        "site=S1,A,R-002\n"
    )
    rows = parse_allocation_list_rows(text)
    assert [(r.stratum, r.slot, r.arm, r.randomization_number, r.line_no) for r in rows] == [
        ("site=S1", 1, "B", "R-003", 2),
        ("site=S2", 1, "A", "R-001", 3),
        ("site=S1", 2, "A", "R-002", 5),
    ]
    assert parse_allocation_list(text) == {"site=S1": ["B", "A"], "site=S2": ["A"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: the allocation list is empty"),
        ("stratum\nall\n", "line 1: missing column 'arm'"),
        ("stratum,arm,kit\nall,A,1\n", "line 1: unknown column(s) 'kit'"),
        ("stratum,arm\n", "header but no rows"),
        ("stratum,arm\nall,A\nall,\n", "line 3: arm is empty"),
        ("stratum,arm\nall,A,extra\n", "line 2: expected 2 fields, got 3"),
        ("stratum,arm\nsite:S1,A\n", "line 2: malformed stratum key"),
        ("stratum,arm,randomization_number\nall,A,7\nall,B,7\n",
         "line 3: randomization_number 7 already used on line 2"),
        ("stratum,arm,randomization_number\nall,A,\n", "line 2: randomization_number is empty"),
        ('stratum,arm\nall,"A\n', "line"),
    ],
)
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(AllocationListError) as info:
        parse_allocation_list(text)
    assert message in str(info.value)
