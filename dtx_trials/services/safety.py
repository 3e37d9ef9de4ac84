"""Safety: a serious adverse event starts the expedited-report clock (24 h by default) and
e-mails the roles the protocol names; alert rules on answers (e.g. a self-harm item above 0)
alert the site at once, wait for an acknowledgement and escalate when nobody has acknowledged in
time. Events are raised in the transaction of the form submission that causes them; every step
is audited."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.db import lock_row, transaction, utcnow
from dtx_trials.models import (
    FormRecord,
    Participant,
    SafetyEvent,
    SafetyFollowUp,
    Site,
    Trial,
)
from dtx_trials.services import audit, notifications
from dtx_trials.services.access import SYSTEM, Actor, can, require, visible_sites
from dtx_trials.services.errors import Conflict, NotFound, ValidationError
from ecrf.expressions import ExpressionError, evaluate, truthy
from protocols.model import Protocol

CAUSALITY = ("not_related", "unlikely", "possibly", "probably", "related")
EXPECTEDNESS = ("expected", "unexpected")
OUTCOMES = ("recovered", "recovering", "not_recovered", "recovered_with_sequelae", "fatal",
            "unknown")


def _holds(expression: str, values: Mapping[str, object]) -> bool:
    try:
        return truthy(evaluate(expression, values))
    except ExpressionError:
        return False


def _exists(session: Session, record: FormRecord, rule_id: str) -> bool:
    return (
        session.scalars(
            select(SafetyEvent.id).where(
                SafetyEvent.form_record_id == record.id, SafetyEvent.rule_id == rule_id
            )
        ).first()
        is not None
    )


@dataclass(frozen=True)
class Trigger:
    """A safety rule a record's values set off (pure: decided from the protocol alone)."""

    kind: str  # sae | alert
    rule_id: str
    message: str
    due_hours: int | None  # SAE: report clock; alert: escalation after
    notify: tuple[str, ...]
    escalate_to: tuple[str, ...]


def triggered(protocol: Protocol, form_code: str, values: Mapping[str, object]) -> list[Trigger]:
    """Return the SAE and alert rules of the protocol that these submitted values set off."""
    safety = protocol.safety
    out: list[Trigger] = []
    if safety.form == form_code and safety.serious_if and _holds(safety.serious_if, values):
        term = str(values.get("ae_term") or "serious adverse event")
        out.append(Trigger("sae", "sae", f"Serious adverse event: {term}",
                           safety.report_within_hours, tuple(safety.notify),
                           ("sponsor_admin", "monitor")))
    for rule in safety.alerts:
        if rule.form == form_code and _holds(rule.when, values):
            out.append(Trigger("alert", rule.id, rule.message.en, rule.escalate_after_hours,
                               tuple(rule.notify), tuple(rule.escalate_to)))
    return out


def evaluate_record(
    session: Session,
    actor: Actor,
    trial: Trial,
    participant: Participant,
    protocol: Protocol,
    record: FormRecord,
    now: datetime.datetime | None = None,
) -> list[SafetyEvent]:
    """Raise the SAE and alert events a submitted record calls for (inside the caller's
    transaction); each record raises each rule once."""
    if record.status == "draft":
        return []
    now = now or utcnow()
    raised: list[SafetyEvent] = []
    fired = triggered(protocol, record.form_code, dict(record.data or {}))
    if record.form_code == protocol.safety.form:
        _follow_seriousness(session, actor, trial, participant, protocol, record,
                            serious=any(t.kind == "sae" for t in fired))
    for trigger in fired:
        site = session.get(Site, participant.site_id)
        where = f"{participant.subject_code} ({site.code if site else 'site'})"
        if _exists(session, record, trigger.rule_id):
            continue
        due = now + datetime.timedelta(hours=trigger.due_hours) if trigger.due_hours else None
        event = _raise(session, actor, participant, record, trigger.kind, trigger.rule_id,
                       f"{trigger.message} ({where})", due, now)
        raised.append(event)
        if trigger.kind == "sae":
            assert due is not None
            subject = (f"{trial.code}: SAE for {participant.subject_code} — initial report due "
                       f"{due:%Y-%m-%d %H:%M} UTC")
            body = (f"{event.message}\nThe expedited initial report is due within "
                    f"{trigger.due_hours} h, by {due:%Y-%m-%d %H:%M} UTC.")
        else:
            subject = f"{trial.code}: ALERT {trigger.rule_id} for {participant.subject_code}"
            body = (f"{event.message}\nAcknowledge it in the trial's safety list"
                    + (f" within {trigger.due_hours} h." if due else "."))
        notifications.notify_roles(
            session, actor, trial=trial, roles=trigger.notify, site_id=participant.site_id,
            kind=f"safety.{trigger.kind}", entity_type="safety_event", entity_id=event.id,
            subject=subject, body=body,
        )
    return raised


def _follow_seriousness(
    session: Session, actor: Actor, trial: Trial, participant: Participant, protocol: Protocol,
    record: FormRecord, *, serious: bool,
) -> None:
    """An AE record corrected so it no longer meets the serious criteria: its SAE, while no
    initial report was filed, is downgraded (its clock and escalation stop; before, it stayed
    open and was escalated as overdue). Corrected back to serious, the SAE opens again on its
    first clock (awareness dates from the first report). Only an investigator's correction
    downgrades (seriousness is theirs to judge). A reported SAE keeps its case: the downgrade
    is new information for the investigator's follow-up report."""
    event = session.scalars(
        select(SafetyEvent).where(
            SafetyEvent.form_record_id == record.id, SafetyEvent.rule_id == "sae"
        ).with_for_update()
    ).first()
    if event is None:
        return
    change = {
        (False, "open"): ("downgraded", "safety.downgrade", "no longer meets the serious "
                          "criteria: downgraded, no expedited report is due"),
        (True, "downgraded"): ("open", "safety.reopen", "meets the serious criteria again: "
                               "the initial report is due on its first clock"),
    }.get((serious, event.status))
    if change is None:
        return
    if not serious and not can(actor, "safety.report", trial.id, participant.site_id):
        # seriousness is the investigator's call: a coordinator's correction leaves the SAE
        # open, its clock running, for the investigator to report or to correct the AE
        return
    status, action, what = change
    before = audit.snapshot(event)
    event.status = status
    audit.record_update(session, actor, action, event, before, trial_id=trial.id,
                        site_id=event.site_id, reason=f"the AE record {what}")
    notifications.notify_roles(
        session, actor, trial=trial, roles=tuple(protocol.safety.notify),
        site_id=participant.site_id, kind=action,
        entity_type="safety_event", entity_id=event.id,
        subject=f"{trial.code}: SAE for {participant.subject_code} "
                f"{'downgraded' if status == 'downgraded' else 'open again'}",
        body=f"{event.message}\nThe AE record {what}.",
    )


def _raise(
    session: Session, actor: Actor, participant: Participant, record: FormRecord, kind: str,
    rule_id: str, message: str, due: datetime.datetime | None, now: datetime.datetime,
) -> SafetyEvent:
    event = SafetyEvent(
        trial_id=participant.trial_id,
        site_id=participant.site_id,
        participant_id=participant.id,
        form_record_id=record.id,
        kind=kind,
        rule_id=rule_id,
        message=message,
        detected_at=now,
        due_at=due,
        status="open",
    )
    session.add(event)
    audit.record_create(
        session, actor, f"safety.{kind}", event, trial_id=participant.trial_id,
        site_id=participant.site_id,
    )
    return event


def list_events(
    session: Session, actor: Actor, trial: Trial, *, status: str | None = None
) -> list[tuple[SafetyEvent, Participant]]:
    """Safety events at the sites the actor may read, newest first."""
    sites = visible_sites(actor, "participant.read", trial.id)
    stmt = (
        select(SafetyEvent, Participant)
        .join(Participant, Participant.id == SafetyEvent.participant_id)
        .where(SafetyEvent.trial_id == trial.id)
    )
    if sites is not None:
        stmt = stmt.where(SafetyEvent.site_id.in_(sites))
    if status:
        stmt = stmt.where(SafetyEvent.status == status)
    rows = session.execute(stmt.order_by(SafetyEvent.id.desc())).all()
    session.rollback()
    return [(e, p) for e, p in rows]


def _event(session: Session, actor: Actor, trial: Trial, event_id: int, action: str
           ) -> SafetyEvent:
    event = session.get(SafetyEvent, event_id)
    if event is None or event.trial_id != trial.id:
        raise NotFound("safety event not found")
    require(actor, action, trial.id, event.site_id)
    locked = lock_row(session, SafetyEvent, event_id)
    assert locked is not None
    return locked


def acknowledge(session: Session, actor: Actor, trial: Trial, event_id: int) -> SafetyEvent:
    """Site staff acknowledge an alert (stops its escalation clock)."""
    with transaction(session):
        event = _event(session, actor, trial, event_id, "safety.acknowledge")
        if event.kind != "alert":
            raise Conflict("an SAE is closed by its report, not acknowledged")
        if event.status != "open":
            raise Conflict(f"the alert is {event.status}")
        before = audit.snapshot(event)
        event.status = "acknowledged"
        event.acknowledged_at = utcnow()
        event.acknowledged_by_id = actor.user_id
        audit.record_update(session, actor, "safety.acknowledge", event, before,
                            trial_id=trial.id, site_id=event.site_id)
    return event


def report_sae(
    session: Session, actor: Actor, trial: Trial, event_id: int, *, causality: str,
    expectedness: str, narrative: str,
) -> SafetyEvent:
    """The investigator files the expedited initial report with causality and expectedness;
    the answer says whether it was within the clock."""
    errors: dict[str, list[str]] = {}
    if causality not in CAUSALITY:
        errors["causality"] = [f"one of {', '.join(CAUSALITY)}"]
    if expectedness not in EXPECTEDNESS:
        errors["expectedness"] = [f"one of {', '.join(EXPECTEDNESS)}"]
    if not narrative or not narrative.strip():
        errors["narrative"] = ["must not be blank"]
    if errors:
        raise ValidationError("the report is incomplete", errors)
    with transaction(session):
        event = _event(session, actor, trial, event_id, "safety.report")
        if event.kind != "sae":
            raise Conflict("only an SAE has an expedited report")
        if event.reported_at is not None:  # reported, or closed by its final follow-up
            raise Conflict("the initial report was already filed")
        if event.status == "downgraded":
            raise Conflict("the AE record no longer meets the serious criteria: no expedited "
                           "report is due")
        before = audit.snapshot(event)
        event.status = "reported"
        event.reported_at = utcnow()
        event.reported_by_id = actor.user_id
        event.causality = causality
        event.expectedness = expectedness
        event.narrative = narrative.strip()
        audit.record_update(session, actor, "safety.report", event, before, trial_id=trial.id,
                            site_id=event.site_id)
    return event


def report_follow_up(
    session: Session, actor: Actor, trial: Trial, event_id: int, *, causality: str,
    expectedness: str, outcome: str, narrative: str, is_final: bool = False,
) -> SafetyFollowUp:
    """The investigator files a follow-up of a reported SAE: the current causality and
    expectedness assessment (a change from the previous one is recorded as such), the outcome
    and the new information; a final follow-up closes the case."""
    errors: dict[str, list[str]] = {}
    if causality not in CAUSALITY:
        errors["causality"] = [f"one of {', '.join(CAUSALITY)}"]
    if expectedness not in EXPECTEDNESS:
        errors["expectedness"] = [f"one of {', '.join(EXPECTEDNESS)}"]
    if outcome not in OUTCOMES:
        errors["outcome"] = [f"one of {', '.join(OUTCOMES)}"]
    if not narrative or not narrative.strip():
        errors["narrative"] = ["must not be blank"]
    if errors:
        raise ValidationError("the follow-up is incomplete", errors)
    with transaction(session):
        event = _event(session, actor, trial, event_id, "safety.report")
        if event.kind != "sae":
            raise Conflict("only an SAE has follow-up reports")
        if event.status == "closed":
            raise Conflict("the SAE was closed by its final follow-up")
        if event.status != "reported":
            raise Conflict("file the initial report first")
        previous = follow_ups(session, event.id)
        follow_up = SafetyFollowUp(
            safety_event_id=event.id,
            number=len(previous) + 1,
            reported_at=utcnow(),
            reported_by_id=actor.user_id,
            causality=causality,
            expectedness=expectedness,
            outcome=outcome,
            narrative=narrative.strip(),
            is_final=is_final,
        )
        session.add(follow_up)
        last = previous[-1] if previous else None
        was = (last.causality, last.expectedness) if last else (event.causality,
                                                                 event.expectedness)
        changed = [name for name, old, new in (("causality", was[0], causality),
                                                ("expectedness", was[1], expectedness))
                   if old != new]
        audit.record_create(
            session, actor, "safety.follow_up", follow_up, trial_id=trial.id,
            site_id=event.site_id,
            reason=f"assessment changed: {', '.join(changed)}" if changed else None,
        )
        if is_final:
            before = audit.snapshot(event)
            event.status = "closed"
            audit.record_update(session, actor, "safety.close", event, before,
                                trial_id=trial.id, site_id=event.site_id)
    return follow_up


def follow_ups(session: Session, event_id: int) -> list[SafetyFollowUp]:
    return list(session.scalars(
        select(SafetyFollowUp).where(SafetyFollowUp.safety_event_id == event_id)
        .order_by(SafetyFollowUp.number)
    ))


def escalate_overdue(
    session: Session, trial: Trial, now: datetime.datetime | None = None
) -> list[SafetyEvent]:
    """Escalate open alerts past their acknowledgement deadline and SAEs whose initial report
    is overdue (each once), e-mailing the rule's escalation roles / the sponsor and monitor."""
    now = now or utcnow()
    escalated: list[SafetyEvent] = []
    protocol = None
    with transaction(session):
        from dtx_trials.services.protocols import active_protocol

        _, protocol = active_protocol(session, trial)
        rules = {rule.id: rule for rule in protocol.safety.alerts}
        events = list(session.scalars(
            select(SafetyEvent).where(
                SafetyEvent.trial_id == trial.id,
                SafetyEvent.status == "open",
                SafetyEvent.escalated_at.is_(None),
                SafetyEvent.due_at.is_not(None),
            ).order_by(SafetyEvent.id).with_for_update()
        ))
        for event in events:
            assert event.due_at is not None
            if event.due_at > now:
                continue
            participant = session.get(Participant, event.participant_id)
            assert participant is not None
            roles = (
                rules[event.rule_id].escalate_to if event.rule_id in rules
                else ("sponsor_admin", "monitor")
            )
            before = audit.snapshot(event)
            event.escalated_at = now
            audit.record_update(session, SYSTEM, "safety.escalate", event, before,
                                trial_id=trial.id, site_id=event.site_id)
            what = ("not acknowledged" if event.kind == "alert"
                    else "initial SAE report overdue")
            notifications.notify_roles(
                session, SYSTEM, trial=trial, roles=roles, site_id=participant.site_id,
                kind="safety.escalation", entity_type="safety_event", entity_id=event.id,
                subject=f"{trial.code}: ESCALATION — {what} for {participant.subject_code}",
                body=f"{event.message}\nDue {event.due_at:%Y-%m-%d %H:%M} UTC; {what}.",
            )
            escalated.append(event)
    return escalated
