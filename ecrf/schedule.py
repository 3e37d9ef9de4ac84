"""Visit schedule: planned dates and windows from anchor dates, window status, the next visit due.

A visit is planned ``day`` days after its anchor date (screening, enrollment or randomization);
its window runs from ``window_before`` days before to ``window_after`` days after that date, both
ends included. Visits whose anchor date is not known yet (e.g. before randomization) are not
planned.
"""

from __future__ import annotations

import datetime
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ecrf.model import EproWindow, Schedule

__all__ = [
    "DueVisit",
    "OpenQuestionnaire",
    "PlannedVisit",
    "WindowStatus",
    "days_outside_window",
    "epro_windows",
    "next_due",
    "plan_visits",
    "reminder_due",
    "replan_after",
    "window_status",
]

WindowStatus = Literal["early", "in_window", "late"]


@dataclass(frozen=True)
class PlannedVisit:
    """A visit's planned date and its window (inclusive)."""

    visit_id: str
    planned_on: datetime.date
    window_start_on: datetime.date
    window_end_on: datetime.date


@dataclass(frozen=True)
class DueVisit(PlannedVisit):
    """The next visit due; overdue once its window has closed without it being done."""

    is_overdue: bool = False


def plan_visits(
    schedule: Schedule, anchors: Mapping[str, datetime.date]
) -> tuple[PlannedVisit, ...]:
    """Return the planned visits whose anchor date is known, in schedule order."""
    planned: list[PlannedVisit] = []
    for visit in schedule.visits:
        anchor_on = anchors.get(visit.anchor)
        if anchor_on is None:
            continue
        planned_on = anchor_on + datetime.timedelta(days=visit.day)
        planned.append(
            PlannedVisit(
                visit_id=visit.id,
                planned_on=planned_on,
                window_start_on=planned_on - datetime.timedelta(days=visit.window_before),
                window_end_on=planned_on + datetime.timedelta(days=visit.window_after),
            )
        )
    return tuple(planned)


def window_status(planned: PlannedVisit, actual_on: datetime.date) -> WindowStatus:
    """Classify an actual visit date against the planned window."""
    if actual_on < planned.window_start_on:
        return "early"
    if actual_on > planned.window_end_on:
        return "late"
    return "in_window"


def days_outside_window(planned: PlannedVisit, actual_on: datetime.date) -> int:
    """Return how many days ``actual_on`` lies before (negative) or after the window; 0 inside."""
    if actual_on < planned.window_start_on:
        return (actual_on - planned.window_start_on).days
    if actual_on > planned.window_end_on:
        return (actual_on - planned.window_end_on).days
    return 0


def replan_after(
    schedule: Schedule, visit_id: str, actual_on: datetime.date
) -> tuple[PlannedVisit, ...]:
    """Return the later visits re-planned from the actual date of ``visit_id``.

    Only a visit declared ``reanchor`` re-plans: its actual date minus its day offset becomes the
    anchor date of every later visit sharing its anchor. Otherwise nothing changes (empty).
    """
    ids = [visit.id for visit in schedule.visits]
    if visit_id not in ids:
        raise KeyError(visit_id)
    position = ids.index(visit_id)
    visit = schedule.visits[position]
    if not visit.reanchor:
        return ()
    anchor_on = actual_on - datetime.timedelta(days=visit.day)
    later = {v.id for v in schedule.visits[position + 1 :] if v.anchor == visit.anchor}
    return tuple(
        p for p in plan_visits(schedule, {visit.anchor: anchor_on}) if p.visit_id in later
    )


def next_due(
    planned: Iterable[PlannedVisit], done: Collection[str], today: datetime.date
) -> DueVisit | None:
    """Return the earliest planned visit not yet done (flagged overdue after its window), or None.

    ``done`` holds the ids of visits that took place or were recorded as missed.
    """
    pending = sorted(
        (visit for visit in planned if visit.visit_id not in done),
        key=lambda visit: visit.planned_on,
    )
    if not pending:
        return None
    first = pending[0]
    return DueVisit(
        visit_id=first.visit_id,
        planned_on=first.planned_on,
        window_start_on=first.window_start_on,
        window_end_on=first.window_end_on,
        is_overdue=today > first.window_end_on,
    )


@dataclass(frozen=True)
class OpenQuestionnaire:
    """A questionnaire window of one participant, with its dates (both ends included)."""

    form: str
    visit: str
    opens_on: datetime.date
    closes_on: datetime.date
    remind_after_hours: int | None
    occurrence: int = 1  # the n-th window of a repeating schedule (stored as repeat_index)

    def is_open(self, today: datetime.date) -> bool:
        return self.opens_on <= today <= self.closes_on

    def is_closed(self, today: datetime.date) -> bool:
        return today > self.closes_on


def epro_windows(
    windows: Iterable[EproWindow], visit_dates: Mapping[str, datetime.date]
) -> tuple[OpenQuestionnaire, ...]:
    """Return the questionnaire windows whose visit has a date (actual, else planned); a
    repeating window (``every_days`` × ``times``) gives one window per occurrence."""
    out: list[OpenQuestionnaire] = []
    for window in windows:
        on = visit_dates.get(window.visit)
        if on is None:
            continue
        step = window.every_days or 0
        for k in range(window.times or 1):
            shift = k * step
            out.append(
                OpenQuestionnaire(
                    form=window.form,
                    visit=window.visit,
                    opens_on=on + datetime.timedelta(days=window.opens + shift),
                    closes_on=on + datetime.timedelta(days=window.closes + shift),
                    remind_after_hours=window.remind_after_hours,
                    occurrence=k + 1,
                )
            )
    return tuple(out)


def reminder_due(
    window: OpenQuestionnaire, link_sent_at: datetime.datetime, now: datetime.datetime
) -> bool:
    """Whether an unanswered link sent at ``link_sent_at`` is due a reminder at ``now``."""
    if window.remind_after_hours is None:
        return False
    return now >= link_sent_at + datetime.timedelta(hours=window.remind_after_hours)
