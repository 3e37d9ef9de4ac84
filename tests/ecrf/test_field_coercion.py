"""Coercion of submitted values (HTML text or typed JSON) into stored values."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecrf.fields import FieldValueError, coerce_value, is_blank
from ecrf.model import FIELD_TYPES, Choice, FieldDef, FieldType, Label


def make(type_: FieldType, **kwargs: object) -> FieldDef:
    return FieldDef(id="f", type=type_, label=Label("F"), **kwargs)  # type: ignore[arg-type]


CHOICES = (Choice("1", Label("One")), Choice("2", Label("Two")), Choice("99", Label("Other")))


@pytest.mark.parametrize(
    ("field", "raw", "stored"),
    [
        (make("integer"), "12", 12),
        (make("integer"), " -3 ", -3),
        (make("integer"), 7, 7),
        (make("integer"), 7.0, 7),
        (make("integer", min=0, max=10), "10", 10),
        (make("decimal"), "1.50", 1.5),
        (make("decimal"), ".5", 0.5),
        (make("decimal"), 2, 2),
        (make("decimal", decimals=1), "72.5", 72.5),
        (make("decimal", decimals=1), "72.50", 72.5),
        (make("decimal", min=0.5, max=1.5), 1.5, 1.5),
        (make("slider"), "55", 55),
        (make("slider", min=-5, max=5), -5, -5),
        (make("slider", decimals=1), "2.5", 2.5),
        (make("text"), "  hello  ", "hello"),
        (make("text"), 42, "42"),
        (make("text", max_length=3), "abc", "abc"),
        (make("date"), "2024-02-29", "2024-02-29"),
        (make("date"), datetime.date(2024, 1, 2), "2024-01-02"),
        (make("date", min="2024-01-01", max="2024-12-31"), "2024-12-31", "2024-12-31"),
        (make("datetime"), "2024-01-02T03:04", "2024-01-02T03:04:00+00:00"),
        (make("datetime"), "2024-01-02 03:04:05Z", "2024-01-02T03:04:05+00:00"),
        (make("datetime"), "2024-01-02T03:04:05+08:00", "2024-01-02T03:04:05+08:00"),
        (make("datetime"), "2024-01-02T03:04:05.123-05:30", "2024-01-02T03:04:05-05:30"),
        (
            make("datetime"),
            datetime.datetime(2024, 1, 2, 3, 4, 5),
            "2024-01-02T03:04:05+00:00",
        ),
        (make("datetime", min="2024-01-02"), "2024-01-02T00:00Z", "2024-01-02T00:00:00+00:00"),
        (make("time"), "08:30", "08:30"),
        (make("time"), "23:59:59", "23:59:59"),
        (make("time", min="08:00", max="18:00"), "18:00", "18:00"),
        (make("yesno"), True, "1"),
        (make("yesno"), False, "0"),
        (make("yesno"), "1", "1"),
        (make("yesno"), 0, "0"),
        (make("yesno"), "Yes", "1"),
        (make("yesno"), "no", "0"),
        (make("yesno"), "TRUE", "1"),
        (make("single_choice", choices=CHOICES), "2", "2"),
        (make("single_choice", choices=CHOICES), 99, "99"),
        (make("multiple_choice", choices=CHOICES), ["99", "1", "1"], ["1", "99"]),
        (make("multiple_choice", choices=CHOICES), "2,1", ["1", "2"]),
        (make("multiple_choice", choices=CHOICES), [], []),
        (make("multiple_choice", choices=CHOICES), 2, ["2"]),
        (make("file"), "uploads/abc123", "uploads/abc123"),
        (make("signature"), "sig:42", "sig:42"),
    ],
)
def test_valid_values_are_stored(field: FieldDef, raw: object, stored: object) -> None:
    value = coerce_value(field, raw)
    assert value == stored and type(value) is type(stored)


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        (make("integer"), "1.5", "must be a whole number"),
        (make("integer"), 1.5, "must be a whole number"),
        (make("integer"), "abc", "must be a number"),
        (make("integer"), True, "must be a number"),
        (make("integer"), [1], "must be a number"),
        (make("integer", min=0), "-1", "must be at least 0"),
        (make("integer", max=10), 11, "must be at most 10"),
        (make("decimal"), float("nan"), "must be a finite number"),
        (make("decimal"), "1e5", "must be a number"),
        (make("decimal"), "1,5", "must be a number"),
        (make("decimal", decimals=1), "72.55", "at most 1 decimal place(s)"),
        (make("decimal", min=0.5), 0.4, "must be at least 0.5"),
        (make("slider"), 101, "must be at most 100"),
        (make("slider"), -1, "must be at least 0"),
        (make("slider"), "2.5", "must be a whole number"),
        (make("text"), {"a": 1}, 'expected a value or {"missing": code}'),
        (make("text"), ["a"], "must be text"),
        (make("text", max_length=3), "abcd", "at most 3 characters"),
        (make("date"), "2023-02-29", "not a valid calendar date"),
        (make("date"), "20240101", "must be a date YYYY-MM-DD"),
        (make("date"), "01/02/2024", "must be a date YYYY-MM-DD"),
        (make("date"), 20240101, "must be a date YYYY-MM-DD"),
        (make("date", min="2024-01-01"), "2023-12-31", "must be on or after 2024-01-01"),
        (make("date", max="2024-01-01"), "2024-01-02", "must be on or before 2024-01-01"),
        (make("datetime"), "2024-01-02", "must be a date and time"),
        (make("datetime"), "2024-01-02T25:00", "must be a date and time"),
        (make("datetime"), "2024-01-02T10:00+24:00", "must be a date and time"),
        (make("datetime", max="2024-01-02"), "2024-01-03T00:00Z", "must be on or before"),
        (make("time"), "8:30", "must be a time"),
        (make("time"), "24:00", "not a valid time of day"),
        (make("time", min="08:00"), "07:59", "must be at or after 08:00"),
        (make("yesno"), "maybe", "must be yes or no"),
        (make("yesno"), 2, "must be yes or no"),
        (make("single_choice", choices=CHOICES), "3", "'3' is not one of the choices"),
        (make("single_choice", choices=CHOICES), ["1"], "must be a choice code"),
        (make("multiple_choice", choices=CHOICES), ["1", "5"], "'5' is not one of the choices"),
        (make("file"), 12, "must be the reference of an uploaded file"),
        (make("calculated"), "1", "field is calculated"),
        (make("calculated"), None, "field is calculated"),
        (make("descriptive"), "x", "field is descriptive"),
    ],
)
def test_invalid_values_are_rejected(field: FieldDef, raw: object, message: str) -> None:
    with pytest.raises(FieldValueError) as info:
        coerce_value(field, raw)
    assert message in info.value.message
    assert info.value.field_id == "f"
    assert str(info.value) == f"f: {info.value.message}"


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_blank_input_is_stored_as_none(raw: object) -> None:
    assert coerce_value(make("integer", required=True), raw) is None


def test_missing_codes_only_when_allowed() -> None:
    allowing = make("integer", allow_missing_codes=("not_done", "unknown"))
    assert coerce_value(allowing, {"missing": "unknown"}) == {"missing": "unknown"}
    with pytest.raises(FieldValueError, match="not allowed"):
        coerce_value(allowing, {"missing": "not_applicable"})
    with pytest.raises(FieldValueError, match=r"allowed: none"):
        coerce_value(make("integer"), {"missing": "unknown"})
    with pytest.raises(FieldValueError, match="expected a value"):
        coerce_value(allowing, {"missing": "unknown", "extra": 1})


def test_is_blank() -> None:
    assert [is_blank(v) for v in (None, "", [], (), 0, "0", {"missing": "unknown"})] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]


_field_types = st.sampled_from(FIELD_TYPES)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=5,
)


@settings(max_examples=300, deadline=None)
@given(_field_types, _json, st.integers(0, 3) | st.none())
def test_coercion_raises_only_field_value_error(
    type_: FieldType, raw: object, decimals: int | None
) -> None:
    field = make(
        type_,
        choices=CHOICES,
        decimals=decimals,
        min=0 if type_ in ("integer", "decimal") else None,
        max_length=20,
        allow_missing_codes=("unknown",),
    )
    try:
        coerce_value(field, raw)
    except FieldValueError as error:
        assert error.field_id == "f" and error.message
