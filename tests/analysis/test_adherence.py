"""Adherence metrics on small hand-checked data sets."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.adherence import daily_totals, evaluate_stream_adherence, summarise_adherence
from protocols.model import AdherenceRule

D0 = datetime.date(2026, 1, 1)


def day(n: int) -> datetime.date:
    return D0 + datetime.timedelta(days=n)


def test_daily_totals_sum_sessions_of_a_day() -> None:
    assert daily_totals([(day(0), 10), (day(0), 15.5), (day(2), 3)]) == {day(0): 25.5, day(2): 3}


def test_fraction_of_days_meeting_minimum_counts_missing_days_as_zero() -> None:
    rule = AdherenceRule(
        metric="fraction_of_days_meeting_minimum",
        threshold=0.7,
        daily_minimum=20,
        defines_per_protocol=True,
    )
    # 10-day window; days 0-6 reach 20 minutes, day 7 has 19, days 8-9 have nothing
    totals = {day(i): 25.0 for i in range(7)} | {day(7): 19.0, day(20): 60.0}
    result = evaluate_stream_adherence("training_minutes", rule, totals, day(0), day(9))
    assert result.n_days == 10
    assert result.n_days_meeting_minimum == 7
    assert result.value == pytest.approx(0.7)
    assert result.is_adherent and result.defines_per_protocol
    shorter = evaluate_stream_adherence("training_minutes", rule, totals, day(0), day(10))
    assert shorter.value == pytest.approx(7 / 11) and not shorter.is_adherent


def test_mean_per_day_and_total() -> None:
    totals = {day(0): 100.0, day(1): 50.0, day(3): 30.0}
    mean = evaluate_stream_adherence(
        "outdoor", AdherenceRule(metric="mean_per_day", threshold=45), totals, day(0), day(3)
    )
    assert mean.value == pytest.approx(45.0) and mean.is_adherent
    total = evaluate_stream_adherence(
        "outdoor", AdherenceRule(metric="total", threshold=200), totals, day(1), day(3)
    )
    assert total.value == pytest.approx(80.0) and not total.is_adherent


def test_minimum_unset_counts_any_use_and_condition_false_fails() -> None:
    rule = AdherenceRule(metric="fraction_of_days_meeting_minimum", threshold=0.5)
    totals = {day(0): 0.5, day(1): 1.0}
    met = evaluate_stream_adherence("app", rule, totals, day(0), day(3))
    assert met.value == pytest.approx(0.5) and met.is_adherent
    failed = evaluate_stream_adherence("app", rule, totals, day(0), day(3), condition_met=False)
    assert failed.value == pytest.approx(0.5) and not failed.is_adherent
    assert failed.condition_met is False


def test_empty_window_has_no_value() -> None:
    rule = AdherenceRule(metric="total", threshold=0)
    result = evaluate_stream_adherence("app", rule, {day(0): 5.0}, day(3), day(1))
    assert result.value is None and result.n_days == 0 and not result.is_adherent


def test_summary_needs_every_stream_and_per_protocol_rules() -> None:
    strict = AdherenceRule(metric="total", threshold=10, defines_per_protocol=True)
    loose = AdherenceRule(metric="total", threshold=1000)
    totals = {day(0): 20.0}
    summary = summarise_adherence(
        "S1-0001",
        [
            evaluate_stream_adherence("b", loose, totals, day(0), day(0)),
            evaluate_stream_adherence("a", strict, totals, day(0), day(0)),
        ],
    )
    assert [s.stream for s in summary.streams] == ["a", "b"]
    assert summary.meets_per_protocol and not summary.is_adherent
    assert not summarise_adherence("S1-0002", []).is_adherent


@given(
    st.dictionaries(
        st.integers(min_value=-5, max_value=40),
        st.floats(min_value=0, max_value=600, allow_nan=False),
        max_size=40,
    ),
    st.integers(min_value=0, max_value=30),
)
def test_fraction_is_between_zero_and_one(values: dict[int, float], length: int) -> None:
    rule = AdherenceRule(metric="fraction_of_days_meeting_minimum", threshold=0.5, daily_minimum=5)
    totals = {day(k): v for k, v in values.items()}
    result = evaluate_stream_adherence("s", rule, totals, day(0), day(length))
    assert result.value is not None and 0.0 <= result.value <= 1.0
    assert result.n_days == length + 1
    assert result.is_adherent == (result.value >= 0.5)
