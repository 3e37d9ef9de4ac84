"""Operational figures of a trial (sponsor dashboard), for the whole trial or one site.

Nothing here is broken down by arm: every figure pools the arms, so the dashboard is the same
for blinded and unblinded roles. Counts are aggregated in SQL over the sites the actor may see
(``participant.read``); the projection and the weekly adherence are pure functions of plain
data (``project_enrollment``, ``weekly_adherence``) so they are tested without a database.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from analysis.adherence import daily_totals, evaluate_stream_adherence
from dtx_trials.db import utcnow
from dtx_trials.models import (
    DataQuery,
    DeviceObservation,
    FormRecord,
    Participant,
    ProtocolDeviation,
    Site,
    Trial,
    Visit,
)
from dtx_trials.models.forms import Signature
from dtx_trials.services.access import Actor, visible_sites
from dtx_trials.services.errors import NotFound
from dtx_trials.services.listing import AGE_BUCKETS
from dtx_trials.services.protocols import active_protocol, protocol_by_version_id
from ecrf.schedule import epro_windows
from protocols.model import AdherenceRule, Protocol

RECORD_STATUSES = ("draft", "submitted", "verified", "signed", "frozen", "locked")
MAX_WEEKS = 52


@dataclass(frozen=True)
class EnrollmentProjection:
    """Enrolment against the target with a straight-line projection of the rate so far."""

    target: int | None
    enrolled: int
    first_on: datetime.date | None
    rate_per_week: float | None
    projected_on: datetime.date | None
    note: str  # why there is no projection (a code the pages translate), or "" when there is one


def project_enrollment(
    enrolled_on: Sequence[datetime.date], target: int | None, today: datetime.date
) -> EnrollmentProjection:
    """Project the date the target is reached at the mean rate since the first enrolment.

    The rate is enrolled / days from the first enrolment to ``today`` (both counted); there is
    no projection without a target, without enrolment, or when the target is already met."""
    n = len(enrolled_on)
    first = min(enrolled_on) if enrolled_on else None
    if first is None:
        return EnrollmentProjection(target, 0, None, None, None, "no_enrolment")
    days = (today - first).days + 1
    rate_per_day = n / days
    rate_per_week = round(rate_per_day * 7, 2)
    if target is None:
        return EnrollmentProjection(
            target, n, first, rate_per_week, None, "no_sample_size"
        )
    if n >= target:
        return EnrollmentProjection(target, n, first, rate_per_week, None, "target_reached")
    remaining_days = (target - n) / rate_per_day
    projected = today + datetime.timedelta(days=int(-(-remaining_days // 1)))
    return EnrollmentProjection(target, n, first, rate_per_week, projected, "")


def site_targets(protocol: Protocol | None) -> dict[str, int]:
    """Each declared site's enrolment target (``sites.initial[].target``) by site code; sites
    without one (or added while the trial runs) are absent. The targets need not add up to
    ``sample_size.n``: they are operational, the sample size is the statistical plan."""
    if protocol is None:
        return {}
    return {s.code: s.target for s in protocol.sites.initial_sites if s.target is not None}


@dataclass(frozen=True)
class WeekAdherence:
    week: int  # 1 = the first 7 days from the window start
    n_participants: int
    n_adherent: int
    mean_value: float | None

    @property
    def percent_adherent(self) -> float | None:
        return None if not self.n_participants else 100 * self.n_adherent / self.n_participants


def weekly_adherence(
    rule: AdherenceRule,
    stream: str,
    participants: Mapping[int, tuple[datetime.date, datetime.date]],
    observations: Mapping[int, Iterable[tuple[datetime.date, float]]],
    max_weeks: int = MAX_WEEKS,
) -> list[WeekAdherence]:
    """Apply the protocol's adherence rule to each whole week of each participant's window.

    ``participants`` maps an id to (window start, last day to count); a week is counted for a
    participant only when all its 7 days are inside that span. Uses the same evaluator as the
    per-participant adherence (``analysis.adherence.evaluate_stream_adherence``)."""
    per_week: dict[int, list[tuple[bool, float | None]]] = defaultdict(list)
    for participant_id, (start_on, end_on) in participants.items():
        totals = daily_totals(observations.get(participant_id, ()))
        n_weeks = min(max_weeks, ((end_on - start_on).days + 1) // 7)
        for week in range(1, n_weeks + 1):
            first = start_on + datetime.timedelta(days=7 * (week - 1))
            result = evaluate_stream_adherence(
                stream, rule, totals, first, first + datetime.timedelta(days=6)
            )
            per_week[week].append((result.is_adherent, result.value))
    weeks = []
    for week in sorted(per_week):
        entries = per_week[week]
        values = [v for _, v in entries if v is not None]
        weeks.append(
            WeekAdherence(
                week=week,
                n_participants=len(entries),
                n_adherent=sum(1 for ok, _ in entries if ok),
                mean_value=round(sum(values) / len(values), 3) if values else None,
            )
        )
    return weeks


EPRO_OUTCOMES = ("answered", "missed", "open")


def epro_outcomes(
    windows: Iterable[tuple[datetime.date, datetime.date, bool]], today: datetime.date
) -> Counter[str]:
    """Count questionnaire windows (opens on, closes on, answered) opened by ``today``:
    answered, missed (closed unanswered) or still open (the same rule as
    ``services.epro_schedule.compliance``)."""
    counts: Counter[str] = Counter()
    for opens_on, closes_on, answered in windows:
        if opens_on > today:
            continue
        counts["answered" if answered else "missed" if closes_on < today else "open"] += 1
    return counts


LAG_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-1", 0, 1),
    ("2-3", 2, 3),
    ("4-7", 4, 7),
    ("8-14", 8, 14),
    ("15-30", 15, 30),
    ("31+", 31, None),
)


def lag_buckets(lags: Sequence[int]) -> tuple[list[tuple[str, int]], float | None]:
    """Bucket data-entry lags (whole days, negative ones counted as 0) and their median."""
    counts: Counter[str] = Counter()
    clamped = sorted(max(0, lag) for lag in lags)
    for lag in clamped:
        for label, low, high in LAG_BUCKETS:
            if lag >= low and (high is None or lag <= high):
                counts[label] += 1
                break
    median: float | None = None
    if clamped:
        mid = len(clamped) // 2
        median = (
            float(clamped[mid])
            if len(clamped) % 2
            else (clamped[mid - 1] + clamped[mid]) / 2
        )
    return [(label, counts.get(label, 0)) for label, _, _ in LAG_BUCKETS], median


@dataclass(frozen=True)
class StreamWeeks:
    stream: str
    label: str
    metric: str
    threshold: float
    weeks: list[WeekAdherence]


@dataclass(frozen=True)
class TrialFigures:
    """The dashboard's figures for the trial (or one site), pooled over arms."""

    site_code: str | None
    n_screened: int
    status_counts: dict[str, int]
    projection: EnrollmentProjection
    enrolled_by_site: list[tuple[str, int]]
    enrolled_on: list[datetime.date]
    screen_failures: list[tuple[str, str, int]]  # criterion id, text, participants
    queries_by_age: list[tuple[str, int]]
    n_open_queries: int
    records_by_status: list[tuple[str, int]]
    n_signatures: int
    n_records_to_sign: int
    # scheduled visits: done in window, done out of window, missed (site-local dates)
    visit_compliance: list[tuple[str, int]] = field(default_factory=list)
    deviations: list[tuple[str, str, int]] = field(default_factory=list)  # kind, status, n
    n_verified: int = 0  # forms whose status is "verified" (source data verified)
    adherence: list[StreamWeeks] = field(default_factory=list)
    # scheduled ePRO windows opened so far: answered, missed (closed unanswered), still open
    epro_compliance: list[tuple[str, int]] = field(default_factory=list)
    # site forms: days from the visit date to the first submission, by bucket
    entry_lag: list[tuple[str, int]] = field(default_factory=list)
    entry_lag_median: float | None = None
    # enrolment targets of the sites in scope that the protocol gives one (site code -> n)
    site_targets: dict[str, int] = field(default_factory=dict)


def _scope(
    session: Session, actor: Actor, trial: Trial, site_code: str | None
) -> frozenset[int] | None:
    sites = visible_sites(actor, "participant.read", trial.id)
    if not site_code:
        return sites
    site = session.scalars(
        select(Site).where(Site.trial_id == trial.id, Site.code == site_code)
    ).first()
    if site is None or (sites is not None and site.id not in sites):
        raise NotFound("site not found", {"site": [f"no site {site_code} you may see"]})
    return frozenset({site.id})


def trial_figures(
    session: Session,
    actor: Actor,
    trial: Trial,
    *,
    site_code: str | None = None,
    lang: str = "en",
    today: datetime.date | None = None,
    with_adherence: bool = False,
) -> TrialFigures:
    """Collect the dashboard figures of the sites the actor may read (or of one of them)."""
    today = today or utcnow().date()
    sites = _scope(session, actor, trial, site_code)
    in_scope: list[ColumnElement[bool]] = [Participant.trial_id == trial.id]
    if sites is not None:
        in_scope.append(Participant.site_id.in_(sites))
    protocol: Protocol | None = None
    if trial.active_protocol_version_id is not None:
        protocol = active_protocol(session, trial)[1]

    status_counts = dict(
        session.execute(
            select(Participant.status, func.count()).where(*in_scope).group_by(Participant.status)
        ).all()
    )
    enrolled_on = sorted(
        at.date()
        for at in session.scalars(
            select(Participant.enrolled_at).where(*in_scope, Participant.enrolled_at.is_not(None))
        )
        if at is not None
    )
    site_rows = session.execute(
        select(Site.code, func.count(Participant.id))
        .outerjoin(
            Participant,
            (Participant.site_id == Site.id) & Participant.enrolled_at.is_not(None),
        )
        .where(Site.trial_id == trial.id, *([Site.id.in_(sites)] if sites is not None else []))
        .group_by(Site.code)
        .order_by(Site.code)
    ).all()
    targets = site_targets(protocol)
    target = None
    if site_code is not None:
        target = targets.get(site_code)
    elif protocol is not None and protocol.sample_size is not None:
        target = protocol.sample_size.n
    projection = project_enrollment(enrolled_on, target, today)
    if site_code is not None and projection.note == "no_sample_size":
        projection = dataclasses.replace(projection, note="no_site_target")

    failures = _screen_failures(session, in_scope, protocol, lang)

    now = utcnow()
    open_raised = list(
        session.scalars(
            select(DataQuery.raised_at)
            .join(FormRecord, FormRecord.id == DataQuery.form_record_id)
            .join(Participant, Participant.id == FormRecord.participant_id)
            .where(*in_scope, DataQuery.status == "open")
        )
    )
    buckets: Counter[str] = Counter()
    for raised_at in open_raised:
        age = (now - raised_at).days
        for label, low, high in AGE_BUCKETS:
            if age >= low and (high is None or age <= high):
                buckets[label] += 1
                break
    records = dict(
        session.execute(
            select(FormRecord.status, func.count())
            .join(Participant, Participant.id == FormRecord.participant_id)
            .where(*in_scope)
            .group_by(FormRecord.status)
        ).all()
    )
    n_signatures = (
        session.scalar(
            select(func.count(func.distinct(Signature.form_record_id)))
            .join(FormRecord, FormRecord.id == Signature.form_record_id)
            .join(Participant, Participant.id == FormRecord.participant_id)
            .where(*in_scope, Signature.status == "valid")
        )
        or 0
    )
    n_to_sign = sum(n for status, n in records.items() if status != "draft")
    visit_compliance = _visit_compliance(session, in_scope)
    deviation_rows = session.execute(
        select(ProtocolDeviation.kind, ProtocolDeviation.status, func.count())
        .join(Participant, Participant.id == ProtocolDeviation.participant_id)
        .where(*in_scope, ProtocolDeviation.status != "superseded")
        .group_by(ProtocolDeviation.kind, ProtocolDeviation.status)
        .order_by(ProtocolDeviation.kind, ProtocolDeviation.status)
    ).all()
    lag_rows, lag_median = lag_buckets(_entry_lags(session, in_scope, protocol))
    adherence = (
        _adherence(session, trial, protocol, in_scope, today, lang)
        if with_adherence and protocol is not None
        else []
    )
    return TrialFigures(
        site_code=site_code,
        n_screened=sum(status_counts.values()),
        status_counts=status_counts,
        projection=projection,
        enrolled_by_site=[(code, n) for code, n in site_rows],
        enrolled_on=enrolled_on,
        screen_failures=failures,
        queries_by_age=[(label, buckets.get(label, 0)) for label, _, _ in AGE_BUCKETS],
        n_open_queries=len(open_raised),
        records_by_status=[(s, records[s]) for s in RECORD_STATUSES if records.get(s)]
        + [(s, n) for s, n in sorted(records.items()) if s not in RECORD_STATUSES],
        n_signatures=n_signatures,
        n_records_to_sign=n_to_sign,
        visit_compliance=visit_compliance,
        deviations=[(kind, status, n) for kind, status, n in deviation_rows],
        n_verified=records.get("verified", 0),
        adherence=adherence,
        epro_compliance=_epro_compliance(session, trial, in_scope, protocol),
        entry_lag=lag_rows,
        entry_lag_median=lag_median,
        site_targets={code: targets[code] for code, _ in site_rows if code in targets},
    )


VISIT_OUTCOMES = ("in_window", "out_of_window", "missed")


def _visit_compliance(
    session: Session, in_scope: list[ColumnElement[bool]]
) -> list[tuple[str, int]]:
    """Scheduled visits by outcome: done inside their window, done outside it, missed."""
    in_window = (Visit.actual_on >= Visit.window_start_on) & (
        Visit.actual_on <= Visit.window_end_on
    )
    counts: Counter[str] = Counter()
    for status, inside, n in session.execute(
        select(Visit.status, in_window, func.count())
        .join(Participant, Participant.id == Visit.participant_id)
        .where(
            *in_scope,
            Visit.is_unscheduled.is_(False),
            Visit.status.in_(("completed", "missed")),
        )
        .group_by(Visit.status, in_window)
    ):
        if status == "missed":
            counts["missed"] += n
        else:
            counts["in_window" if inside else "out_of_window"] += n
    return [(outcome, counts.get(outcome, 0)) for outcome in VISIT_OUTCOMES]


def _screen_failures(
    session: Session, in_scope: list[ColumnElement[bool]], protocol: Protocol | None, lang: str
) -> list[tuple[str, str, int]]:
    """Count screen-failed participants per failed criterion, re-evaluating the protocol's
    eligibility over their screening data as of their screening date."""
    from dtx_trials.services.participants import clinical_values
    from ecrf.checks import evaluate_eligibility

    failed = list(
        session.scalars(select(Participant).where(*in_scope, Participant.status == "screen_failed"))
    )
    if not failed or protocol is None:
        return [("", "", len(failed))] if failed else []
    texts = {c.id: c.text.get(lang) for c in protocol.eligibility}
    counts: Counter[str] = Counter()
    for participant in failed:
        values, by_visit = clinical_values(session, participant)
        result = evaluate_eligibility(
            protocol.eligibility, values, visits=by_visit, today=participant.screened_at.date()
        )
        reasons = [c.id for c in result.failed] or [""]
        counts.update(reasons)
    return [(cid, texts.get(cid, ""), n) for cid, n in counts.most_common()]


def _adherence(
    session: Session,
    trial: Trial,
    protocol: Protocol,
    in_scope: list[ColumnElement[bool]],
    today: datetime.date,
    lang: str,
) -> list[StreamWeeks]:
    """Weekly adherence of randomized participants, per stream with a rule, from randomization
    (site-local days, as in ``services.devices.adherence``) to withdrawal or today."""
    rows = session.execute(
        select(Participant.id, Participant.randomized_at, Participant.withdrawn_at, Site.timezone)
        .join(Site, Site.id == Participant.site_id)
        .where(*in_scope, Participant.randomized_at.is_not(None))
    ).all()
    from dtx_trials.services.devices import _zone

    zones = {pid: _zone(tz) for pid, _, _, tz in rows}
    spans = {
        pid: (
            randomized_at.astimezone(zones[pid]).date(),
            min(today, withdrawn_at.astimezone(zones[pid]).date()) if withdrawn_at else today,
        )
        for pid, randomized_at, withdrawn_at, _ in rows
        if randomized_at is not None
    }
    result = []
    for stream in protocol.device_streams:
        if stream.adherence is None:
            continue
        observations: dict[int, list[tuple[datetime.date, float]]] = defaultdict(list)
        ids = list(spans)
        for start in range(0, len(ids), 900):
            for pid, observed_at, value in session.execute(
                select(
                    DeviceObservation.participant_id,
                    DeviceObservation.observed_at,
                    DeviceObservation.value,
                ).where(
                    DeviceObservation.trial_id == trial.id,
                    DeviceObservation.stream == stream.id,
                    DeviceObservation.participant_id.in_(ids[start : start + 900]),
                )
            ):
                observations[pid].append((observed_at.astimezone(zones[pid]).date(), value))
        result.append(
            StreamWeeks(
                stream=stream.id,
                label=stream.label.get(lang),
                metric=stream.adherence.metric,
                threshold=stream.adherence.threshold,
                weeks=weekly_adherence(stream.adherence, stream.id, spans, observations),
            )
        )
    return result


@functools.lru_cache(maxsize=64)
def _site_zone(name: str | None) -> datetime.tzinfo:
    from dtx_trials.services.devices import _zone

    return _zone(name) if name else datetime.UTC


def _epro_compliance(
    session: Session,
    trial: Trial,
    in_scope: list[ColumnElement[bool]],
    protocol: Protocol | None,
) -> list[tuple[str, int]]:
    """Scheduled ePRO windows (``schedule.epro``) of enrolled participants opened by today (in
    each site's calendar): answered, missed, still open. Three queries whatever the size (the
    per-participant report ``services.epro_schedule.compliance`` reads each one's rows)."""
    if protocol is None or not protocol.schedule.epro:
        return []
    now = utcnow()
    people = session.execute(
        select(Participant.id, Participant.protocol_version_id, Site.timezone)
        .join(Site, Site.id == Participant.site_id)
        .where(*in_scope, Participant.enrolled_at.is_not(None))
    ).all()
    dates: dict[int, dict[str, datetime.date]] = defaultdict(dict)
    for pid, code, actual_on, planned_on in session.execute(
        select(Visit.participant_id, Visit.visit_code, Visit.actual_on, Visit.planned_on)
        .join(Participant, Participant.id == Visit.participant_id)
        .where(*in_scope, Visit.is_unscheduled.is_(False))
    ):
        on = actual_on or planned_on
        if on is not None:
            dates[pid][code] = on
    forms = {w.form for w in protocol.schedule.epro}
    answered = {
        (pid, code, form, index)
        for pid, code, form, index in session.execute(
            select(FormRecord.participant_id, Visit.visit_code, FormRecord.form_code,
                   FormRecord.repeat_index)
            .join(Participant, Participant.id == FormRecord.participant_id)
            .join(Visit, Visit.id == FormRecord.visit_id)
            .where(*in_scope, FormRecord.form_code.in_(forms), FormRecord.status != "draft")
        )
    }
    counts: Counter[str] = Counter()
    for pid, version_id, timezone in people:
        own = protocol if version_id is None else protocol_by_version_id(session, version_id)
        today = now.astimezone(_site_zone(timezone)).date()
        counts.update(
            epro_outcomes(
                (
                    (w.opens_on, w.closes_on, (pid, w.visit, w.form, w.occurrence) in answered)
                    for w in epro_windows(own.schedule.epro, dates.get(pid, {}))
                ),
                today,
            )
        )
    return [(outcome, counts.get(outcome, 0)) for outcome in EPRO_OUTCOMES]


def _entry_lags(
    session: Session, in_scope: list[ColumnElement[bool]], protocol: Protocol | None
) -> list[int]:
    """Days from each submitted site form's visit date to its first submission (site-local
    calendar); forms the participant answers (ePRO) are left out."""
    own = [f.id for f in protocol.forms if f.respondent == "participant"] if protocol else []
    lags = []
    for actual_on, submitted_at, timezone in session.execute(
        select(Visit.actual_on, FormRecord.submitted_at, Site.timezone)
        .join(Visit, Visit.id == FormRecord.visit_id)
        .join(Participant, Participant.id == FormRecord.participant_id)
        .join(Site, Site.id == Participant.site_id)
        .where(
            *in_scope,
            FormRecord.submitted_at.is_not(None),
            Visit.actual_on.is_not(None),
            *([FormRecord.form_code.not_in(own)] if own else []),
        )
    ):
        if actual_on is None or submitted_at is None:
            continue
        local = submitted_at.astimezone(_site_zone(timezone)).date()
        lags.append((local - actual_on).days)
    return lags
