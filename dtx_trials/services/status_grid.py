"""The record-status grid: participants × scheduled visits × forms, one status per cell.

A page of the grid costs a fixed number of statements whatever the number of participants:
one COUNT, one page of participants (LIMIT/OFFSET on a stable order) and one read of the
records of that page's participants, each with whether an unresolved query is on it. The
columns come from the active protocol's schedule, which is the same for every arm, so the grid
carries nothing that correlates with the allocation and blinded roles see the same grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from dtx_trials.models import DataQuery, FormRecord, Participant, Trial, Visit
from dtx_trials.services.access import Actor, visible_sites
from dtx_trials.services.errors import ValidationError
from dtx_trials.services.listing import (
    DEFAULT_PER_PAGE,
    PARTICIPANT_STATUSES,
    Page,
    participants_query,
)
from protocols.model import Protocol

# the cell statuses, from nothing entered to locked; "queried" is a record with a query that is
# not closed (open or answered) and is not locked yet
CELL_STATUSES = (
    "empty",
    "draft",
    "submitted",
    "queried",
    "verified",
    "signed",
    "frozen",
    "locked",
)
# a cell holding several records (a repeating form) shows the one that needs work first
_URGENCY = {
    s: i
    for i, s in enumerate(
        ("queried", "draft", "submitted", "verified", "signed", "frozen", "locked")
    )
}
UNRESOLVED_QUERY = ("open", "answered")


@dataclass(frozen=True)
class GridColumn:
    visit_code: str
    form_code: str


@dataclass(frozen=True)
class GridRow:
    participant: Participant
    site_code: str
    cells: tuple[str, ...]  # one status per column, in column order


def grid_columns(protocol: Protocol) -> list[GridColumn]:
    """Every (scheduled visit, form) pair of the schedule, in schedule order."""
    return [
        GridColumn(visit.id, form_code)
        for visit in protocol.schedule.visits
        for form_code in visit.forms
    ]


def cell_status(record_status: str, unresolved_query: bool) -> str:
    if record_status != "locked" and unresolved_query:
        return "queried"
    return record_status


def _choice(value: str | None, name: str, allowed: Sequence[str]) -> str | None:
    if value in (None, ""):
        return None
    if value not in allowed:
        raise ValidationError(f"invalid {name}", {name: [f"one of {', '.join(allowed)}"]})
    return value


def _queried() -> object:
    return exists().where(
        DataQuery.form_record_id == FormRecord.id, DataQuery.status.in_(UNRESOLVED_QUERY)
    )


def status_grid_page(
    session: Session,
    actor: Actor,
    trial: Trial,
    protocol: Protocol,
    *,
    search: str | None = None,
    site_code: str | None = None,
    status: str | None = None,
    record_status: str | None = None,
    page: int = 1,
    per_page: int = DEFAULT_PER_PAGE,
) -> tuple[list[GridColumn], Page[GridRow]]:
    """One page of the grid at the sites the actor may read forms of.

    ``search`` matches part of the subject code; ``status`` is the participant's status;
    ``record_status`` keeps participants with at least one scheduled record in that cell status
    (``empty`` is not a filter: nearly every participant has a form still to come)."""
    status = _choice(status, "status", PARTICIPANT_STATUSES)
    record_status = _choice(record_status, "record", CELL_STATUSES[1:])
    columns = grid_columns(protocol)
    sites = visible_sites(actor, "form.read", trial.id)
    stmt = participants_query(trial, sites, site_code, status, search)
    if record_status:
        scheduled = (
            select(FormRecord.id)
            .join(Visit, Visit.id == FormRecord.visit_id)
            .where(
                FormRecord.participant_id == Participant.id,
                Visit.is_unscheduled.is_(False),
            )
        )
        if record_status == "queried":
            scheduled = scheduled.where(FormRecord.status != "locked", _queried())  # type: ignore[arg-type]
        elif record_status == "locked":
            scheduled = scheduled.where(FormRecord.status == "locked")
        else:
            scheduled = scheduled.where(
                FormRecord.status == record_status,
                ~_queried(),  # type: ignore[operator]
            )
        stmt = stmt.where(scheduled.exists())
    stmt = stmt.order_by(Participant.subject_code.asc(), Participant.id.asc())
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    rows = list(session.execute(stmt.offset((page - 1) * per_page).limit(per_page)))
    index = {(c.visit_code, c.form_code): i for i, c in enumerate(columns)}
    found: dict[tuple[int, int], str] = {}
    ids = [p.id for p, _ in rows]
    if ids and columns:
        for participant_id, visit_code, form_code, record_status_, queried in session.execute(
            select(
                FormRecord.participant_id,
                Visit.visit_code,
                FormRecord.form_code,
                FormRecord.status,
                _queried(),  # type: ignore[arg-type]
            )
            .join(Visit, Visit.id == FormRecord.visit_id)
            .where(FormRecord.participant_id.in_(ids), Visit.is_unscheduled.is_(False))
        ):
            column = index.get((visit_code, form_code))
            if column is None:  # a form an earlier protocol version scheduled here
                continue
            shown = cell_status(record_status_, bool(queried))
            key = (participant_id, column)
            if key not in found or _URGENCY[shown] < _URGENCY[found[key]]:
                found[key] = shown
    items = [
        GridRow(
            participant=p,
            site_code=code,
            cells=tuple(found.get((p.id, i), "empty") for i in range(len(columns))),
        )
        for p, code in rows
    ]
    return columns, Page(items=items, page=page, per_page=per_page, total=total)
