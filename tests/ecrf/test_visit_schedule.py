"""Visit planning, windows and the next visit due."""

from __future__ import annotations

from datetime import date

import pytest

from ecrf.model import Label, Schedule, VisitDef
from ecrf.schedule import DueVisit, PlannedVisit, next_due, plan_visits, window_status

SCHEDULE = Schedule(
    visits=(
        VisitDef("screening", Label("Screening"), day=0, anchor="screening", forms=("demo",)),
        VisitDef("baseline", Label("Baseline"), day=0, anchor="randomization"),
        VisitDef("week4", Label("Week 4"), day=28, window_before=3, window_after=7),
        VisitDef("week12", Label("Week 12"), day=84, window_before=7, window_after=7),
    ),
    unscheduled_forms=("ae",),
)


def test_plan_visits_uses_each_visits_anchor() -> None:
    planned = plan_visits(
        SCHEDULE, {"screening": date(2024, 1, 1), "randomization": date(2024, 1, 10)}
    )
    assert planned == (
        PlannedVisit("screening", date(2024, 1, 1), date(2024, 1, 1), date(2024, 1, 1)),
        PlannedVisit("baseline", date(2024, 1, 10), date(2024, 1, 10), date(2024, 1, 10)),
        PlannedVisit("week4", date(2024, 2, 7), date(2024, 2, 4), date(2024, 2, 14)),
        PlannedVisit("week12", date(2024, 4, 3), date(2024, 3, 27), date(2024, 4, 10)),
    )


def test_visits_with_unknown_anchor_are_not_planned() -> None:
    planned = plan_visits(SCHEDULE, {"screening": date(2024, 1, 1)})
    assert [p.visit_id for p in planned] == ["screening"]


@pytest.mark.parametrize(
    ("actual_on", "status"),
    [
        (date(2024, 2, 3), "early"),
        (date(2024, 2, 4), "in_window"),
        (date(2024, 2, 7), "in_window"),
        (date(2024, 2, 14), "in_window"),
        (date(2024, 2, 15), "late"),
    ],
)
def test_window_status(actual_on: date, status: str) -> None:
    week4 = PlannedVisit("week4", date(2024, 2, 7), date(2024, 2, 4), date(2024, 2, 14))
    assert window_status(week4, actual_on) == status


def test_next_due_and_overdue() -> None:
    planned = plan_visits(
        SCHEDULE, {"screening": date(2024, 1, 1), "randomization": date(2024, 1, 10)}
    )
    done = {"screening", "baseline"}
    due = next_due(planned, done, date(2024, 2, 1))
    assert due == DueVisit("week4", date(2024, 2, 7), date(2024, 2, 4), date(2024, 2, 14), False)
    assert isinstance(due, PlannedVisit)
    overdue = next_due(planned, done, date(2024, 2, 15))
    assert overdue is not None and overdue.visit_id == "week4" and overdue.is_overdue
    assert next_due(planned, done | {"week4"}, date(2024, 2, 15)) == DueVisit(
        "week12", date(2024, 4, 3), date(2024, 3, 27), date(2024, 4, 10), False
    )
    assert next_due(planned, {p.visit_id for p in planned}, date(2024, 5, 1)) is None


def test_replan_after_a_reanchoring_visit() -> None:
    from dataclasses import replace

    from ecrf.schedule import days_outside_window, replan_after

    assert replan_after(SCHEDULE, "baseline", date(2024, 1, 13)) == ()
    visits = list(SCHEDULE.visits)
    visits[1] = replace(visits[1], reanchor=True)
    schedule = replace(SCHEDULE, visits=tuple(visits))
    # the screening visit (another anchor) and the baseline itself keep their plan
    assert replan_after(schedule, "baseline", date(2024, 1, 13)) == (
        PlannedVisit("week4", date(2024, 2, 10), date(2024, 2, 7), date(2024, 2, 17)),
        PlannedVisit("week12", date(2024, 4, 6), date(2024, 3, 30), date(2024, 4, 13)),
    )
    with pytest.raises(KeyError):
        replan_after(schedule, "week99", date(2024, 1, 13))
    week4 = PlannedVisit("week4", date(2024, 2, 7), date(2024, 2, 4), date(2024, 2, 14))
    assert days_outside_window(week4, date(2024, 2, 1)) == -3
    assert days_outside_window(week4, date(2024, 2, 4)) == 0
    assert days_outside_window(week4, date(2024, 2, 14)) == 0
    assert days_outside_window(week4, date(2024, 2, 16)) == 2
