"""Scheduled ePRO: the protocol's questionnaire windows (``schedule.epro``) issue personal links
automatically and send reminders, by e-mail through the notification outbox; compliance per
participant and per site.

`tick` is idempotent: run it as often as you like (``dtx epro tick``, cron or the worker). For
each enrolled or randomized participant and each window open today (in the site's calendar) with
no submitted answer, it issues a link if none is open, and once the window's
``remind_after_hours`` have passed without an answer it sends a reminder with a fresh link (the
earlier one is revoked: only a token's hash is stored, so a reminder cannot repeat it).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.db import transaction, utcnow
from dtx_trials.models import EproLink, FormRecord, Participant, Site, Trial, Visit
from dtx_trials.models.users import Role
from dtx_trials.services import epro, notifications
from dtx_trials.services.access import Actor, Grant, visible_sites
from dtx_trials.services.deviations import site_zone
from dtx_trials.services.participants import protocol_for
from ecrf.schedule import OpenQuestionnaire, epro_windows, reminder_due

SCHEDULED_STATUSES = ("enrolled", "randomized")


def scheduler(trial: Trial) -> Actor:
    """The system actor that issues scheduled links (a coordinator's rights, no account)."""
    return Actor(
        user_id=None,
        username="epro-scheduler",
        printed_name="ePRO scheduler",
        via="system",
        grants=(Grant(trial.id, None, Role.COORDINATOR),),
    )


@dataclass(frozen=True)
class TickReport:
    issued: int = 0
    reminded: int = 0
    open_windows: int = 0


def _visit_dates(visits: list[Visit]) -> dict[str, datetime.date]:
    out: dict[str, datetime.date] = {}
    for visit in visits:
        on = visit.actual_on or visit.planned_on
        if on is not None and not visit.is_unscheduled:
            out[visit.visit_code] = on
    return out


def _windows(session: Session, participant: Participant) -> tuple[
    tuple[OpenQuestionnaire, ...], dict[str, Visit]
]:
    protocol = protocol_for(session, participant)
    visits = list(
        session.scalars(select(Visit).where(Visit.participant_id == participant.id))
    )
    by_code = {v.visit_code: v for v in visits if not v.is_unscheduled}
    return epro_windows(protocol.schedule.epro, _visit_dates(visits)), by_code


def _submitted(session: Session, participant: Participant, visit: Visit | None, form: str,
               occurrence: int = 1) -> bool:
    """Whether the occurrence-th window of this form at this visit has a submitted answer."""
    if visit is None:
        return False
    return (
        session.scalars(
            select(FormRecord.id).where(
                FormRecord.participant_id == participant.id,
                FormRecord.visit_id == visit.id,
                FormRecord.form_code == form,
                FormRecord.repeat_index == occurrence,
                FormRecord.status != "draft",
            )
        ).first()
        is not None
    )


def _open_link(session: Session, participant: Participant, window: OpenQuestionnaire,
               now: datetime.datetime) -> EproLink | None:
    found = epro.open_links(session, participant, window.visit, window.form, window.occurrence,
                            now)
    return found[0] if found else None


def tick(
    session: Session, trial: Trial, *, link_base: str, now: datetime.datetime | None = None
) -> TickReport:
    """Issue due links and reminders for every participant of the trial (see the module)."""
    now = now or utcnow()
    actor = scheduler(trial)
    sites = {s.id: s for s in session.scalars(select(Site).where(Site.trial_id == trial.id))}
    participants = list(
        session.scalars(
            select(Participant)
            .where(Participant.trial_id == trial.id,
                   Participant.status.in_(SCHEDULED_STATUSES))
            .order_by(Participant.id)
        )
    )
    session.rollback()
    issued = reminded = n_open = 0
    for participant in participants:
        zone = site_zone(sites.get(participant.site_id))
        today = now.astimezone(zone).date()
        windows, visits = _windows(session, participant)
        for window in windows:
            if not window.is_open(today):
                continue
            if _submitted(session, participant, visits.get(window.visit), window.form,
                          window.occurrence):
                continue
            n_open += 1
            link = _open_link(session, participant, window, now)
            if link is not None and not (
                not (link.meta or {}).get("reminded") and reminder_due(window, link.created_at, now)
            ):
                continue
            is_reminder = link is not None
            session.rollback()
            _issue(session, actor, trial, participant, window, link_base, now, zone,
                   is_reminder=is_reminder)
            if is_reminder:
                reminded += 1
            else:
                issued += 1
    session.rollback()
    return TickReport(issued, reminded, n_open)


def _issue(session: Session, actor: Actor, trial: Trial, participant: Participant,
           window: OpenQuestionnaire, link_base: str, now: datetime.datetime,
           zone: datetime.tzinfo, *, is_reminder: bool) -> None:
    # the link ends with the window: at the midnight after its last day on the site's clock
    # (before, a day later in UTC plus 14 hours: answers taken up to a day after it closed);
    # a window longer than a link may live (MAX_HOURS) gets a new link when this one ends
    closes_at = datetime.datetime.combine(
        window.closes_on + datetime.timedelta(days=1), datetime.time(), zone
    ).astimezone(datetime.UTC)
    expires_at = min(closes_at, now + datetime.timedelta(hours=epro.MAX_HOURS))
    issued = epro.issue_link(
        session, actor, trial, participant.subject_code, visit=window.visit, form=window.form,
        sender=epro.LogSender(), expires_at=expires_at, channel="none",
        repeat_index=window.occurrence, now=now,
    )
    with transaction(session):
        link = session.get(EproLink, issued.link.id)
        assert link is not None
        # bookkeeping of the scheduler (meta is unaudited; the issue itself is audited)
        link.meta = {**(link.meta or {}), "scheduled": True, "reminded": is_reminder}
        protocol = protocol_for(session, participant)
        title = protocol.form(window.form).title
        url = f"{link_base.rstrip('/')}/{issued.token}"
        subject = (f"Reminder: {title.en}" if is_reminder else f"Your questionnaire: {title.en}")
        notifications.enqueue(
            session, actor, trial_id=trial.id,
            kind="epro.reminder" if is_reminder else "epro.link",
            channel="email", address=participant.email,
            subject=subject,
            body=(f"{title.en} / {title.get('zh')}\n"
                  f"Open until {window.closes_on.isoformat()}: {url}"),
            entity_type="epro_link", entity_id=link.id,
        )


@dataclass(frozen=True)
class ComplianceRow:
    """Questionnaires due so far (windows opened), answered, and the share answered."""

    subject_code: str
    site_code: str
    n_due: int
    n_answered: int
    n_missed: int  # windows closed without an answer

    @property
    def rate(self) -> float | None:
        return self.n_answered / self.n_due if self.n_due else None


def compliance(
    session: Session, actor: Actor, trial: Trial, *, now: datetime.datetime | None = None
) -> list[ComplianceRow]:
    """Per participant (the sites the actor may read): scheduled questionnaires due so far."""
    now = now or utcnow()
    allowed = visible_sites(actor, "participant.read", trial.id)
    sites = {s.id: s for s in session.scalars(select(Site).where(Site.trial_id == trial.id))}
    stmt = select(Participant).where(Participant.trial_id == trial.id,
                                     Participant.enrolled_at.is_not(None))
    if allowed is not None:
        stmt = stmt.where(Participant.site_id.in_(allowed))
    rows: list[ComplianceRow] = []
    for participant in session.scalars(stmt.order_by(Participant.subject_code)).all():
        today = now.astimezone(site_zone(sites.get(participant.site_id))).date()
        windows, visits = _windows(session, participant)
        due = [w for w in windows if w.opens_on <= today]
        answered = [w for w in due if _submitted(session, participant, visits.get(w.visit),
                                                 w.form, w.occurrence)]
        missed = [w for w in due if w.is_closed(today) and w not in answered]
        site = sites.get(participant.site_id)
        rows.append(ComplianceRow(participant.subject_code, site.code if site else "",
                                  len(due), len(answered), len(missed)))
    session.rollback()
    return rows
