"""Paged, searchable lists (participants, queries) for the staff pages and the API.

Every list is read one page at a time with a stable order (the sort key, then the row id),
a LIMIT/OFFSET on an indexed order and one COUNT; the caller never loads the whole table.
Bad arguments raise ``ValidationError`` with the argument's name as the field path.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dtx_trials.db import utcnow
from dtx_trials.models import DataQuery, FormRecord, Participant, Site, Trial, Visit
from dtx_trials.services.access import Actor, visible_sites
from dtx_trials.services.errors import ValidationError
from ecrf.schedule import DueVisit, PlannedVisit, next_due

T = TypeVar("T")

DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 500
PARTICIPANT_STATUSES = (
    "screening",
    "consented",
    "eligible",
    "enrolled",
    "randomized",
    "screen_failed",
    "withdrawn",
    "completed",
)
# a participant who left the trial (or never entered it) has no visit due, so none overdue
FOLLOWED_STATUSES = frozenset({"screening", "consented", "eligible", "enrolled", "randomized"})
QUERY_STATUSES = ("open", "answered", "closed")
# open queries by age (days since raised): label, lowest age, highest age (inclusive; None = ∞)
AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-7", 0, 7),
    ("8-14", 8, 14),
    ("15-30", 15, 30),
    ("31+", 31, None),
)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: the rows and where they sit in the whole."""

    items: list[T]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def first_index(self) -> int:
        return 0 if not self.items else (self.page - 1) * self.per_page + 1

    @property
    def last_index(self) -> int:
        return (self.page - 1) * self.per_page + len(self.items)


@dataclass(frozen=True)
class ParticipantRow:
    participant: Participant
    site_code: str
    due: DueVisit | None


@dataclass(frozen=True)
class QueryRow:
    query: DataQuery
    record: FormRecord
    participant: Participant
    site_code: str
    visit_code: str | None
    age_days: int


def page_args(args: Mapping[str, Any]) -> tuple[int, int]:
    """Return (page, per_page) from request arguments, or raise with the bad one's name."""
    page = _int_arg(args, "page", 1, 1, 1_000_000)
    per_page = _int_arg(args, "per_page", DEFAULT_PER_PAGE, 1, MAX_PER_PAGE)
    return page, per_page


def _int_arg(args: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValidationError(f"invalid {name}", {name: ["must be a whole number"]}) from None
    if not low <= value <= high:
        raise ValidationError(f"invalid {name}", {name: [f"must be between {low} and {high}"]})
    return value


def _choice(value: str | None, name: str, allowed: Sequence[str]) -> str | None:
    if value in (None, ""):
        return None
    if value not in allowed:
        raise ValidationError(f"invalid {name}", {name: [f"one of {', '.join(allowed)}"]})
    return value


def like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _paged(
    session: Session, stmt: Any, page: int, per_page: int, count: Any = None
) -> tuple[list[Any], int]:
    """One page of ``stmt``'s rows and the number of all of them (``count``, when given, is a
    COUNT with only the joins the filters need)."""
    if count is None:
        count = select(func.count()).select_from(stmt.order_by(None).subquery())
    total = session.scalar(count) or 0
    rows = list(session.execute(stmt.offset((page - 1) * per_page).limit(per_page)))
    return rows, total


PARTICIPANT_SORTS = {
    "subject_code": (Participant.subject_code,),
    "status": (Participant.status, Participant.subject_code),
    "site": (Site.code, Participant.subject_code),
    "screened_at": (Participant.screened_at, Participant.id),
}


def participants_query(
    trial: Trial,
    sites: Any,
    site_code: str | None,
    status: str | None,
    search: str | None,
) -> Any:
    """Participants of a trial with their site code, at ``sites`` (None: all), filtered by
    site code, status and part of the subject code (case-insensitive)."""
    stmt = (
        select(Participant, Site.code)
        .join(Site, Site.id == Participant.site_id)
        .where(Participant.trial_id == trial.id)
    )
    if sites is not None:
        stmt = stmt.where(Participant.site_id.in_(sites))
    if site_code:
        stmt = stmt.where(Site.code == site_code)
    if status:
        stmt = stmt.where(Participant.status == status)
    if search and search.strip():
        stmt = stmt.where(
            func.lower(Participant.subject_code).like(
                like_pattern(search.strip().lower()), escape="\\"
            )
        )
    return stmt


def participants_page(
    session: Session,
    actor: Actor,
    trial: Trial,
    *,
    search: str | None = None,
    site_code: str | None = None,
    status: str | None = None,
    sort: str | None = None,
    descending: bool = False,
    page: int = 1,
    per_page: int = DEFAULT_PER_PAGE,
    today: datetime.date | None = None,
) -> Page[ParticipantRow]:
    """One page of the participants at the sites the actor may see, with the next visit due.

    ``search`` matches part of the subject code (case-insensitive); withdrawn, screen-failed
    and completed participants have no visit due (never "overdue")."""
    status = _choice(status, "status", PARTICIPANT_STATUSES)
    sort = _choice(sort, "sort", tuple(PARTICIPANT_SORTS)) or "subject_code"
    sites = visible_sites(actor, "participant.read", trial.id)
    stmt = participants_query(trial, sites, site_code, status, search)
    keys = [*PARTICIPANT_SORTS[sort], Participant.id]
    stmt = stmt.order_by(*(k.desc() if descending else k.asc() for k in keys))
    rows, total = _paged(session, stmt, page, per_page)
    ids = [p.id for p, _ in rows if p.status in FOLLOWED_STATUSES]
    visits: dict[int, list[Visit]] = {}
    done: dict[int, set[str]] = {}
    if ids:
        for visit in session.scalars(select(Visit).where(Visit.participant_id.in_(ids))):
            visits.setdefault(visit.participant_id, []).append(visit)
        for participant_id, visit_code in session.execute(
            select(FormRecord.participant_id, Visit.visit_code)
            .join(Visit, Visit.id == FormRecord.visit_id)
            .where(FormRecord.participant_id.in_(ids), FormRecord.status != "draft")
        ):
            done.setdefault(participant_id, set()).add(visit_code)
    today = today or utcnow().date()
    items = [
        ParticipantRow(
            participant=p,
            site_code=code,
            due=(
                due_visit(visits.get(p.id, []), done.get(p.id, set()), today)
                if p.status in FOLLOWED_STATUSES
                else None
            ),
        )
        for p, code in rows
    ]
    return Page(items=items, page=page, per_page=per_page, total=total)


def due_visit(visits: list[Visit], done: set[str], today: datetime.date) -> DueVisit | None:
    """The earliest scheduled visit not yet done (overdue once its window has closed)."""
    planned = [
        PlannedVisit(v.visit_code, v.planned_on, v.window_start_on, v.window_end_on)
        for v in visits
        if not v.is_unscheduled
        and v.planned_on is not None
        and v.window_start_on is not None
        and v.window_end_on is not None
    ]
    return next_due(planned, done, today)


QUERY_SORTS = {
    "raised_at": (DataQuery.raised_at,),
    "subject_code": (Participant.subject_code,),
    "status": (DataQuery.status,),
}


def age_bucket_bounds(bucket: str, now: datetime.datetime) -> tuple[datetime.datetime | None, ...]:
    """Return (raised after, raised at or before) for an age bucket's label."""
    for label, low, high in AGE_BUCKETS:
        if label == bucket:
            newest = now - datetime.timedelta(days=low)
            oldest = None if high is None else now - datetime.timedelta(days=high + 1)
            return oldest, newest
    labels = ", ".join(b[0] for b in AGE_BUCKETS)
    raise ValidationError("invalid age", {"age": [f"one of {labels}"]})


def queries_page(
    session: Session,
    actor: Actor,
    trial: Trial,
    *,
    status: str | None = None,
    site_code: str | None = None,
    age: str | None = None,
    search: str | None = None,
    sort: str | None = None,
    descending: bool = False,
    page: int = 1,
    per_page: int = DEFAULT_PER_PAGE,
    now: datetime.datetime | None = None,
) -> Page[QueryRow]:
    """One page of the query inbox at the sites the actor may see.

    ``age`` is a bucket of days since the query was raised (``0-7``, ``8-14``, ``15-30``,
    ``31+``); ``search`` matches part of the subject code."""
    status = _choice(status, "status", QUERY_STATUSES)
    sort = _choice(sort, "sort", tuple(QUERY_SORTS)) or "raised_at"
    now = now or utcnow()
    sites = visible_sites(actor, "form.read", trial.id)
    where: list[Any] = [Participant.trial_id == trial.id]
    if sites is not None:
        where.append(Participant.site_id.in_(sites))
    if status:
        where.append(DataQuery.status == status)
    if site_code:
        where.append(Participant.site_id.in_(select(Site.id).where(
            Site.trial_id == trial.id, Site.code == site_code)))
    if age:
        oldest, newest = age_bucket_bounds(age, now)
        if newest is not None:
            where.append(DataQuery.raised_at <= newest)
        if oldest is not None:
            where.append(DataQuery.raised_at > oldest)
    if search and search.strip():
        where.append(
            func.lower(Participant.subject_code).like(
                like_pattern(search.strip().lower()), escape="\\"
            )
        )
    stmt = (
        select(DataQuery, FormRecord, Participant, Site.code, Visit.visit_code)
        .join(FormRecord, FormRecord.id == DataQuery.form_record_id)
        .join(Participant, Participant.id == FormRecord.participant_id)
        .join(Site, Site.id == Participant.site_id)
        .outerjoin(Visit, Visit.id == FormRecord.visit_id)
        .where(*where)
    )
    # the count needs neither the site's code nor the visit: two joins fewer
    count = (
        select(func.count(DataQuery.id))
        .join(FormRecord, FormRecord.id == DataQuery.form_record_id)
        .join(Participant, Participant.id == FormRecord.participant_id)
        .where(*where)
    )
    keys = [*QUERY_SORTS[sort], DataQuery.id]
    stmt = stmt.order_by(*(k.desc() if descending else k.asc() for k in keys))
    rows, total = _paged(session, stmt, page, per_page, count)
    items = [
        QueryRow(
            query=q,
            record=r,
            participant=p,
            site_code=code,
            visit_code=visit_code,
            age_days=max(0, (now - q.raised_at).days),
        )
        for q, r, p, code, visit_code in rows
    ]
    return Page(items=items, page=page, per_page=per_page, total=total)
