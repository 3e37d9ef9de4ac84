"""Adherence to a DTx device stream: a protocol's `AdherenceRule` applied to daily values.

Pure: observations come in as ``(day, value)`` pairs already placed on the participant's local
calendar day; the window comes in as two dates. Values of one day are summed (streams with an
adherence rule count minutes or sessions, so a day's dose is its total). Days inside the window
without any observation count as zero: a missing day is a day without use.

Metrics (``AdherenceRule.metric``):

* ``fraction_of_days_meeting_minimum`` — days whose total reaches ``daily_minimum`` divided by
  the days of the window (any observation counts when ``daily_minimum`` is not set);
* ``mean_per_day`` — the window's total divided by the days of the window;
* ``total`` — the window's total.

The participant is adherent when the metric reaches ``threshold`` and the rule's optional
``condition`` (evaluated by the caller over form data) is not false. An empty window (end
before start) has no value and is not adherent.
"""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from protocols.model import AdherenceRule

__all__ = [
    "AdherenceResult",
    "StreamAdherenceResult",
    "daily_totals",
    "evaluate_stream_adherence",
    "summarise_adherence",
]


@dataclass(frozen=True)
class StreamAdherenceResult:
    """One stream's adherence for one participant over one window."""

    stream: str
    metric: str
    value: float | None
    threshold: float
    is_adherent: bool
    window_start_on: datetime.date
    window_end_on: datetime.date
    n_days: int
    n_days_meeting_minimum: int | None
    condition_met: bool | None
    defines_per_protocol: bool


@dataclass(frozen=True)
class AdherenceResult:
    """All adherence rules of a protocol for one participant."""

    subject_code: str
    streams: tuple[StreamAdherenceResult, ...]

    @property
    def is_adherent(self) -> bool:
        """True when every stream with a rule is adherent (False when there is none)."""
        return bool(self.streams) and all(s.is_adherent for s in self.streams)

    @property
    def meets_per_protocol(self) -> bool:
        """True when every rule that defines the per-protocol set is met."""
        return all(s.is_adherent for s in self.streams if s.defines_per_protocol)


def daily_totals(observations: Iterable[tuple[datetime.date, float]]) -> dict[datetime.date, float]:
    """Sum the values of each calendar day."""
    totals: dict[datetime.date, float] = defaultdict(float)
    for day, value in observations:
        totals[day] += value
    return dict(totals)


def evaluate_stream_adherence(
    stream: str,
    rule: AdherenceRule,
    totals: Mapping[datetime.date, float],
    window_start_on: datetime.date,
    window_end_on: datetime.date,
    *,
    condition_met: bool | None = None,
) -> StreamAdherenceResult:
    """Apply one adherence rule to a stream's daily totals over the window (both ends included).

    Parameters
    ----------
    stream : the stream id, copied into the result.
    rule : the protocol's rule for the stream.
    totals : day -> total value of that day (see `daily_totals`); days outside are ignored.
    window_start_on, window_end_on : the window's first and last day.
    condition_met : the rule's ``condition`` over form data, or None when it has none or it
        cannot be decided yet; only False makes the participant non-adherent.

    Returns
    -------
    StreamAdherenceResult with the metric's value (None for an empty window).
    """
    n_days = (window_end_on - window_start_on).days + 1
    in_window = [v for day, v in totals.items() if window_start_on <= day <= window_end_on]
    n_meeting: int | None = None
    value: float | None
    if n_days <= 0:
        n_days = 0
        value = None
    elif rule.metric == "fraction_of_days_meeting_minimum":
        minimum = rule.daily_minimum
        n_meeting = sum(1 for v in in_window if (v >= minimum if minimum is not None else True))
        value = n_meeting / n_days
    elif rule.metric == "mean_per_day":
        value = sum(in_window) / n_days
    else:
        value = float(sum(in_window))
    is_adherent = value is not None and value >= rule.threshold and condition_met is not False
    return StreamAdherenceResult(
        stream=stream,
        metric=rule.metric,
        value=value,
        threshold=rule.threshold,
        is_adherent=is_adherent,
        window_start_on=window_start_on,
        window_end_on=window_end_on,
        n_days=n_days,
        n_days_meeting_minimum=n_meeting,
        condition_met=condition_met,
        defines_per_protocol=rule.defines_per_protocol,
    )


def summarise_adherence(
    subject_code: str, streams: Iterable[StreamAdherenceResult]
) -> AdherenceResult:
    """Collect one participant's stream results, ordered by stream id."""
    return AdherenceResult(subject_code, tuple(sorted(streams, key=lambda s: s.stream)))
