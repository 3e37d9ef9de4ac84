"""Intercurrent events found in the captured data, and the estimand strategies applied to them.

Pure functions over plain `TrialData`: `detect_events` finds, per participant, each event the
protocol declares (top-level ``intercurrent_events``) and its date; `governing_event` picks,
for one assessment, the estimand event whose strategy decides what happens to it (ICH E9(R1),
estimands-and-missing-data.md §1.3-1.4):

- an assessment is *post-event* when its date is strictly after the event date (an assessment
  on the event day is before it); a missing assessment is dated by its scheduled day;
- when several events precede an assessment, the precedence is composite > hypothetical >
  while on treatment > treatment policy.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from ecrf.expressions import ExpressionError, MemoEvaluator, truthy
from protocols.model import Endpoint, EstimandEvent, IntercurrentEvent, Protocol

#: Evaluators by expression text, shared by the calls over one data set (see `detect_events`).
Evaluators = MutableMapping[str, MemoEvaluator]

#: Strategy precedence when several events precede one assessment (first wins).
PRECEDENCE = ("composite", "hypothetical", "while_on_treatment", "treatment_policy")

#: What each strategy does to an assessment after the event, in words the report prints.
HANDLING = {
    "treatment_policy": "post-event data used as observed; missing values handled by the "
    "model under MAR",
    "hypothetical": "post-event values set to missing, then handled under MAR",
    "composite": "post-event outcome replaced by the stated composite value",
    "while_on_treatment": "data truncated at the event (last on-treatment value; survival: "
    "censored at the event)",
}


@dataclass(frozen=True)
class EventOccurrence:
    """One participant's first occurrence of one intercurrent event."""

    event: str
    on: datetime.date
    source: str  # where in the data it was found, for the listing


def _date(value: object) -> datetime.date | None:
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str) and len(value) >= 10:
        try:
            return datetime.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def evaluator(evaluators: Evaluators, text: str) -> MemoEvaluator:
    """Return the evaluator of ``text`` kept in ``evaluators`` (made on first use; a bad
    expression raises ExpressionError, as `ecrf.expressions.evaluate` would)."""
    found = evaluators.get(text)
    if found is None:
        found = evaluators[text] = MemoEvaluator(text)
    return found


def _holds(condition: str | None, values: Mapping[str, object],
           visits: Mapping[str, Mapping[str, object]] | None = None,
           evaluators: Evaluators | None = None) -> bool:
    if not condition:
        return True
    try:
        return truthy(evaluator({} if evaluators is None else evaluators, condition)(
            values, visits))
    except ExpressionError:
        return False


def _form_field(
    event: IntercurrentEvent,
    protocol: Protocol,
    visits: Mapping[str, Mapping[str, object]],
    visit_dates: Mapping[str, datetime.date],
    evaluators: Evaluators | None = None,
) -> EventOccurrence | None:
    order = [v.id for v in protocol.schedule.visits]
    found: list[EventOccurrence] = []
    for visit in order + [v for v in visits if v not in order]:
        values = visits.get(visit)
        if not values or not _holds(event.condition, values, visits, evaluators):
            continue
        on = _date(values.get(event.date_field or "")) if event.date_field else None
        source = f"{visit}.{event.date_field}" if on is not None else f"{visit} (visit date)"
        on = on or visit_dates.get(visit)
        if on is not None:
            found.append(EventOccurrence(event.id, on, source))
    return min(found, key=lambda o: o.on) if found else None


def _repeating_form(
    event: IntercurrentEvent, records: Sequence[Mapping[str, object]],
    evaluators: Evaluators | None = None,
) -> EventOccurrence | None:
    found: list[EventOccurrence] = []
    for k, record in enumerate(records, start=1):
        on = _date(record.get(event.date_field or ""))
        if on is not None and _holds(event.condition, record, None, evaluators):
            found.append(EventOccurrence(event.id, on, f"{event.form} record {k}"))
    return min(found, key=lambda o: o.on) if found else None


def inactivity_start(
    days: Mapping[datetime.date, float], start: datetime.date, end: datetime.date, length: int
) -> datetime.date | None:
    """Return the last day of use before the first run of ``length`` consecutive days without
    use (no value > 0) within [start, end]; ``start`` when the run begins at once; None when
    there is no such run.

    `inactivity_start_daily` (a walk over every calendar day) is the definition; this reads
    only the days of use, in date order: the run begins after the first gap of more than
    ``length`` days between consecutive uses (the day before ``start`` counts as a use), or
    after the last use when ``length`` days remain before ``end``."""
    if length < 1 or not set(map(type, days)) <= {datetime.date}:
        return inactivity_start_daily(days, start, end, length)  # keys the walk cannot read
    first, last = start.toordinal(), end.toordinal()
    previous = first - 1
    used = sorted([d for d, v in days.items() if v > 0])
    for day in map(datetime.date.toordinal, used):
        if day < first:
            continue
        if day > last or day - previous > length:
            break  # (gap) the day previous + length had no use and lies within [start, end]
        previous = day
    if previous + length > last:
        return None
    return datetime.date.fromordinal(max(previous, first))


def inactivity_start_daily(
    days: Mapping[datetime.date, float], start: datetime.date, end: datetime.date, length: int
) -> datetime.date | None:
    """The definition of `inactivity_start`, one calendar day at a time (kept for its tests)."""
    last_use = start - datetime.timedelta(days=1)
    day = start
    while day <= end:
        if days.get(day, 0.0) > 0:
            last_use = day
        elif (day - last_use).days >= length:
            return max(last_use, start)
        day += datetime.timedelta(days=1)
    return None


def detect_events(
    protocol: Protocol,
    *,
    visits: Mapping[str, Mapping[str, object]],
    visit_dates: Mapping[str, datetime.date],
    repeats: Mapping[str, Sequence[Mapping[str, object]]],
    device_days: Mapping[str, Mapping[datetime.date, float]],
    randomized_on: datetime.date | None,
    withdrawn_on: datetime.date | None,
    withdrawal_reason: str | None,
    cutoff_on: datetime.date | None = None,
    evaluators: Evaluators | None = None,
) -> dict[str, EventOccurrence]:
    """Return the participant's first occurrence of every declared event (absent: none seen).

    Occurrences after the cut-off, and any before randomization, are ignored (an intercurrent
    event happens after treatment starts). ``evaluators``, shared by the calls over one data
    set, evaluates each condition once per distinct input (`MemoEvaluator`)."""
    out: dict[str, EventOccurrence] = {}
    if randomized_on is None:
        return out
    seen_dates = [d for d in visit_dates.values()] + [
        d for stream in device_days.values() for d in stream
    ]
    end = max(seen_dates, default=randomized_on)
    if withdrawn_on is not None:
        end = min(end, withdrawn_on)
    if cutoff_on is not None:
        end = min(end, cutoff_on)
    for event in protocol.intercurrent_events:
        found: EventOccurrence | None = None
        if event.detected_by == "form_field":
            found = _form_field(event, protocol, visits, visit_dates, evaluators)
        elif event.detected_by == "repeating_form":
            found = _repeating_form(event, repeats.get(event.form or "", ()), evaluators)
        elif event.detected_by == "withdrawal":
            reason = (withdrawal_reason or "").lower()
            if withdrawn_on is not None and (
                not event.reasons or any(r.lower() in reason for r in event.reasons)
            ):
                found = EventOccurrence(event.id, withdrawn_on,
                                        f"withdrawal ({withdrawal_reason or 'no reason given'})")
        elif event.detected_by == "device_inactivity" and event.inactive_days:
            last = inactivity_start(
                device_days.get(event.stream or "", {}), randomized_on, end, event.inactive_days
            )
            if last is not None:
                found = EventOccurrence(
                    event.id, last, f"{event.stream}: no use for {event.inactive_days} days"
                )
        if found is None or found.on < randomized_on:
            continue
        if cutoff_on is not None and found.on > cutoff_on:
            continue
        out[event.id] = found
    return out


def governing_event(
    endpoint: Endpoint,
    occurrences: Mapping[str, EventOccurrence],
    assessed_on: datetime.date | None,
) -> tuple[EstimandEvent, EventOccurrence] | None:
    """Return the estimand event whose strategy decides an assessment dated ``assessed_on``
    (the event strictly before it, by strategy precedence, then the earliest), or None."""
    if assessed_on is None:
        return None
    candidates = [
        (item, occurrences[item.event])
        for item in endpoint.estimand.intercurrent_events
        if item.event in occurrences and occurrences[item.event].on < assessed_on
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda c: (PRECEDENCE.index(c[0].strategy), c[1].on))


def first_event(
    endpoint: Endpoint, occurrences: Mapping[str, EventOccurrence], strategies: Sequence[str]
) -> tuple[EstimandEvent, EventOccurrence] | None:
    """Return the earliest of the endpoint's events handled by one of ``strategies``."""
    candidates = [
        (item, occurrences[item.event])
        for item in endpoint.estimand.intercurrent_events
        if item.event in occurrences and item.strategy in strategies
    ]
    return min(candidates, key=lambda c: c[1].on) if candidates else None
