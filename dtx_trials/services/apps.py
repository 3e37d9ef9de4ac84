"""The DTx app's side of a trial: participant tokens redeemed once from the activation code of
the participant's allocation; service credentials (client credentials) of an app vendor's
backend, scoped to one trial and to device-data write; what the app shows (today's
questionnaires with their definitions, the participant's own schedule) and what it sends
(answers, usage data). Tokens and secrets are stored as SHA-256 digests only.

An app token opens the app API (``/api/v1/app``) and nothing else: the staff API does not
recognise it, and a staff token does not open the app API. A participant's token acts as that
participant only (their own forms answered by the participant, their own device data); a
service token only writes device data of its trial.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.db import lock_row, transaction, utcnow
from dtx_trials.models import (
    Allocation,
    AppToken,
    Participant,
    ServiceCredential,
    Site,
    Trial,
    Visit,
)
from dtx_trials.models.apps import DEVICE_DATA_WRITE
from dtx_trials.models.users import Role
from dtx_trials.services import accounts, audit, devices, forms
from dtx_trials.services.access import Actor, Grant, knows_allocation, require
from dtx_trials.services.accounts import sha256_hex
from dtx_trials.services.deviations import site_zone
from dtx_trials.services.epro_schedule import _submitted, _windows
from dtx_trials.services.errors import (
    AuthenticationError,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from dtx_trials.services.participants import protocol_for
from ecrf.render import form_to_json
from ecrf.schedule import OpenQuestionnaire

PARTICIPANT_TOKEN_PREFIX = "dtxp_"  # noqa: S105 (a prefix, not a secret)
SERVICE_TOKEN_PREFIX = "dtxs_"  # noqa: S105 (a prefix, not a secret)
SECRET_PREFIX = "dtxsec_"  # noqa: S105 (a prefix, not a secret)
#: Statuses in which a participant uses the app (after randomization, until they leave).
APP_STATUSES = frozenset({"enrolled", "randomized"})


@dataclass(frozen=True)
class AppPrincipal:
    """Who presented an app token: a participant (``participant`` set) or a service."""

    token: AppToken
    trial: Trial
    actor: Actor
    participant: Participant | None = None
    credential: ServiceCredential | None = None


def _participant_actor(participant: Participant, token_id: int | None,
                       request_id: str | None = None) -> Actor:
    return Actor(
        user_id=None,
        username=f"app:{participant.subject_code}",
        printed_name=f"Participant {participant.subject_code}",
        grants=(Grant(participant.trial_id, participant.site_id, Role.PARTICIPANT),),
        request_id=request_id,
        via="app",
        auth_ref=f"app_token:{token_id}" if token_id else None,
    )


def _service_actor(credential: ServiceCredential, token_id: int | None,
                   request_id: str | None = None) -> Actor:
    return Actor(
        user_id=None,
        username=f"service:{credential.client_id}",
        printed_name=f"Service {credential.name}",
        grants=(Grant(credential.trial_id, None, Role.PARTICIPANT),),
        request_id=request_id,
        via="service",
        auth_ref=f"app_token:{token_id}" if token_id else None,
    )


# ------------------------------------------------------------------ participant tokens


def redeem_activation_code(
    session: Session,
    trial_code: str,
    activation_code: str,
    *,
    days: int,
    request_id: str | None = None,
) -> tuple[AppToken, str, Participant]:
    """Exchange the activation code of a participant's allocation for an app token (once).

    An unknown code, a code of a voided allocation or of a participant who left is 404 (the
    same answer for each); a code already redeemed is 409.
    """
    code = activation_code.strip().upper()
    with transaction(session):
        trial = session.scalars(select(Trial).where(Trial.code == trial_code)).first()
        allocation = (
            session.scalars(
                select(Allocation).where(
                    Allocation.trial_id == trial.id,
                    Allocation.activation_code == code,
                    Allocation.status == "allocated",
                )
            ).first()
            if trial is not None and code
            else None
        )
        participant = (
            lock_row(session, Participant, allocation.participant_id) if allocation else None
        )
        if (
            trial is None
            or allocation is None
            or participant is None
            or participant.status not in APP_STATUSES
        ):
            raise NotFound("unknown activation code")
        redeemed = session.scalars(
            select(AppToken.id).where(AppToken.allocation_id == allocation.id)
        ).first()
        if redeemed is not None:
            raise Conflict("this activation code has already been redeemed; ask the site for "
                           "help")
        text = PARTICIPANT_TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = AppToken(
            trial_id=trial.id,
            kind="participant",
            participant_id=participant.id,
            allocation_id=allocation.id,
            token_hash=sha256_hex(text),
            expires_at=utcnow() + datetime.timedelta(days=days),
        )
        session.add(token)
        session.flush()
        audit.record_event(
            session, _participant_actor(participant, token.id, request_id), "app.activated",
            entity_type="app_token", entity_id=token.id, trial_id=trial.id,
            site_id=participant.site_id, details={"expires_at": token.expires_at},
        )
    return token, text, participant


def revoke_participant_tokens(
    session: Session, actor: Actor, trial: Trial, subject_code: str
) -> int:
    """Site staff end a participant's app tokens (a lost phone); return how many."""
    from dtx_trials.services.participants import get_participant

    with transaction(session):
        participant = get_participant(session, actor, trial, subject_code, "participant.write")
        n = 0
        for token in session.scalars(
            select(AppToken).where(AppToken.participant_id == participant.id,
                                   AppToken.revoked_at.is_(None)).with_for_update()
        ):
            token.revoked_at = utcnow()
            audit.record_event(
                session, actor, "app.token_revoked", entity_type="app_token",
                entity_id=token.id, trial_id=trial.id, site_id=participant.site_id,
            )
            n += 1
    return n


def principal_for(
    session: Session, token_text: str, request_id: str | None = None
) -> AppPrincipal | None:
    """The participant or service an app token stands for (None: unknown, expired, revoked,
    a participant who left, a revoked credential)."""
    if not token_text.startswith((PARTICIPANT_TOKEN_PREFIX, SERVICE_TOKEN_PREFIX)):
        return None
    token = session.scalars(
        select(AppToken).where(AppToken.token_hash == sha256_hex(token_text))
    ).first()
    if token is None or token.revoked_at is not None or token.expires_at <= utcnow():
        return None
    trial = session.get(Trial, token.trial_id)
    assert trial is not None
    if token.kind == "participant" and token.participant_id is not None:
        participant = session.get(Participant, token.participant_id)
        if participant is None or participant.status not in APP_STATUSES:
            return None
        return AppPrincipal(token, trial, _participant_actor(participant, token.id, request_id),
                            participant=participant)
    credential = (
        session.get(ServiceCredential, token.credential_id) if token.credential_id else None
    )
    if credential is None or credential.revoked_at is not None or credential.approved_at is None:
        return None
    return AppPrincipal(token, trial, _service_actor(credential, token.id, request_id),
                        credential=credential)


# ------------------------------------------------------------------ service credentials


def create_credential(
    session: Session, actor: Actor, trial: Trial, name: str
) -> tuple[ServiceCredential, str]:
    """A sponsor admin creates client credentials for an app vendor's backend; the secret is
    returned once (only its SHA-256 is kept). The credential writes participants' device data,
    so it is live only once a second administrator approved it (`approve_credential`): one
    administrator alone never holds a way to write clinical data (a superuser's or the
    command line's is live at once)."""
    require(actor, "service.manage", trial.id)
    if not name.strip():
        raise ValidationError("a name is required", {"name": ["must not be blank"]})
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with transaction(session):
        at_once = actor.is_superuser or actor.via == "cli"
        credential = ServiceCredential(
            trial_id=trial.id,
            name=name.strip()[:100],
            client_id="dtxc_" + secrets.token_hex(12),
            secret_hash=sha256_hex(secret),
            scope=DEVICE_DATA_WRITE,
            created_by_id=actor.user_id,
            approved_at=utcnow() if at_once else None,
            approved_by_id=actor.user_id if at_once else None,
        )
        session.add(credential)
        session.flush()
        audit.record_event(
            session, actor, "service_credential.create", entity_type="service_credential",
            entity_id=credential.id, trial_id=trial.id,
            details={"name": credential.name, "client_id": credential.client_id,
                     "scope": credential.scope},
        )
    return credential, secret


def approve_credential(
    session: Session, actor: Actor, trial: Trial, credential_id: int
) -> ServiceCredential:
    """A second administrator approves a credential: not its creator, nor an administrator
    appointed by the creator or who appointed them (`accounts.appointed_by`). Audited."""
    require(actor, "service.manage", trial.id)
    with transaction(session):
        credential = lock_row(session, ServiceCredential, credential_id)
        if credential is None or credential.trial_id != trial.id:
            raise NotFound("service credential not found")
        if credential.approved_at is not None or credential.revoked_at is not None:
            raise Conflict("this credential is not waiting for approval")
        creator = credential.created_by_id
        if not actor.is_superuser and actor.user_id is not None and creator is not None and (
            actor.user_id == creator
            or accounts.appointed_by(session, trial.id, actor.user_id, creator)
            or accounts.appointed_by(session, trial.id, creator, actor.user_id)
        ):
            raise PermissionDenied(
                "a second administrator approves: not the credential's creator, nor one "
                "appointed by them or who appointed them"
            )
        credential.approved_at = utcnow()
        credential.approved_by_id = actor.user_id
        audit.record_event(
            session, actor, "service_credential.approve", entity_type="service_credential",
            entity_id=credential.id, trial_id=trial.id,
            details={"client_id": credential.client_id, "created_by_id": creator},
        )
    return credential


def list_credentials(session: Session, actor: Actor, trial: Trial) -> list[ServiceCredential]:
    require(actor, "service.manage", trial.id)
    return list(session.scalars(
        select(ServiceCredential).where(ServiceCredential.trial_id == trial.id)
        .order_by(ServiceCredential.id)
    ))


def revoke_credential(
    session: Session, actor: Actor, trial: Trial, credential_id: int
) -> ServiceCredential:
    """Revoke a credential and every token issued to it (audited)."""
    require(actor, "service.manage", trial.id)
    with transaction(session):
        credential = lock_row(session, ServiceCredential, credential_id)
        if credential is None or credential.trial_id != trial.id:
            raise NotFound("service credential not found")
        if credential.revoked_at is None:
            now = utcnow()
            credential.revoked_at = now
            credential.revoked_by_id = actor.user_id
            for token in session.scalars(
                select(AppToken).where(AppToken.credential_id == credential.id,
                                       AppToken.revoked_at.is_(None))
            ):
                token.revoked_at = now
            audit.record_event(
                session, actor, "service_credential.revoke", entity_type="service_credential",
                entity_id=credential.id, trial_id=trial.id,
                details={"client_id": credential.client_id},
            )
    return credential


def issue_service_token(
    session: Session,
    client_id: str,
    client_secret: str,
    *,
    minutes: int,
    scope: str | None = None,
    request_id: str | None = None,
) -> tuple[AppToken, str, ServiceCredential]:
    """OAuth 2.0 client credentials: a short-lived token for a live credential (401 for a
    wrong id or secret, the same answer for both; 400 for a scope it does not hold)."""
    with transaction(session):
        credential = session.scalars(
            select(ServiceCredential).where(ServiceCredential.client_id == client_id)
        ).first()
        if (
            credential is None
            or credential.revoked_at is not None
            or not secrets.compare_digest(credential.secret_hash, sha256_hex(client_secret))
        ):
            raise AuthenticationError("invalid client credentials")
        if credential.approved_at is None:  # told only to the holder of the secret
            raise PermissionDenied("this credential waits for a second administrator's approval")
        if scope is not None and scope != credential.scope:
            raise ValidationError("scope not granted",
                                  {"scope": [f"this credential holds {credential.scope}"]})
        text = SERVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = AppToken(
            trial_id=credential.trial_id,
            kind="service",
            credential_id=credential.id,
            token_hash=sha256_hex(text),
            expires_at=utcnow() + datetime.timedelta(minutes=minutes),
        )
        session.add(token)
        session.flush()
        audit.record_event(
            session, _service_actor(credential, token.id, request_id), "service.token_issued",
            entity_type="app_token", entity_id=token.id, trial_id=credential.trial_id,
            details={"client_id": credential.client_id, "expires_at": token.expires_at},
        )
    return token, text, credential


# ------------------------------------------------------------------ what the app shows


def _participant_of(principal: AppPrincipal) -> Participant:
    if principal.participant is None:
        raise PermissionDenied("a participant's app token is required here")
    return principal.participant


def _today(session: Session, participant: Participant, now: datetime.datetime
           ) -> datetime.date:
    return now.astimezone(site_zone(session.get(Site, participant.site_id))).date()


def profile(session: Session, principal: AppPrincipal) -> dict[str, Any]:
    """The participant's own facts; the arm only in an open-label trial that blinds no
    participant."""
    from dtx_trials.services.protocols import blinded_roles

    participant = _participant_of(principal)
    site = session.get(Site, participant.site_id)
    protocol = protocol_for(session, participant)
    out: dict[str, Any] = {
        "trial": principal.trial.code,
        "subject_code": participant.subject_code,
        "status": participant.status,
        "site_timezone": site.timezone if site else None,
        "protocol_version": protocol.version,
    }
    trial = principal.trial
    if trial.blinding == "open" and knows_allocation(
        Role.PARTICIPANT, blinded_roles(session, trial)
    ):
        allocation = session.scalars(
            select(Allocation).where(Allocation.participant_id == participant.id,
                                     Allocation.status == "allocated")
        ).first()
        if allocation is not None:
            arm = protocol.arm(allocation.arm_code)
            out["arm"] = {"code": arm.code, "name": arm.name.en, "name_zh": arm.name.get("zh")}
    session.rollback()
    return out


def _window_out(window: OpenQuestionnaire, today: datetime.date, answered: bool
                ) -> dict[str, Any]:
    state = ("answered" if answered else "open" if window.is_open(today)
             else "closed" if window.is_closed(today) else "upcoming")
    return {"visit": window.visit, "form": window.form, "occurrence": window.occurrence,
            "opens_on": window.opens_on, "closes_on": window.closes_on, "status": state}


def today_questionnaires(
    session: Session, principal: AppPrincipal, *, language: str = "en",
    now: datetime.datetime | None = None,
) -> list[dict[str, Any]]:
    """The questionnaires open today (site calendar) and not yet answered, each with the form
    definition the app renders natively."""
    participant = _participant_of(principal)
    today = _today(session, participant, now or utcnow())
    protocol = protocol_for(session, participant)
    windows, visits = _windows(session, participant)
    out = []
    for window in windows:
        if not window.is_open(today):
            continue
        if _submitted(session, participant, visits.get(window.visit), window.form,
                      window.occurrence):
            continue
        out.append({**_window_out(window, today, False),
                    "definition": form_to_json(protocol.form(window.form), language)})
    session.rollback()
    return out


def own_schedule(
    session: Session, principal: AppPrincipal, *, now: datetime.datetime | None = None
) -> dict[str, Any]:
    """The participant's visits (planned date, window, actual date, status) and questionnaire
    windows with their state."""
    participant = _participant_of(principal)
    today = _today(session, participant, now or utcnow())
    protocol = protocol_for(session, participant)
    labels = {v.id: v.label for v in protocol.schedule.visits}
    visits = list(session.scalars(
        select(Visit).where(Visit.participant_id == participant.id,
                            Visit.is_unscheduled.is_(False)).order_by(Visit.planned_on, Visit.id)
    ))
    windows, by_code = _windows(session, participant)
    out = {
        "today": today,
        "visits": [
            {"visit": v.visit_code,
             "label": labels[v.visit_code].en if v.visit_code in labels else v.visit_code,
             "label_zh": labels[v.visit_code].get("zh") if v.visit_code in labels else None,
             "planned_on": v.planned_on, "window_start_on": v.window_start_on,
             "window_end_on": v.window_end_on, "actual_on": v.actual_on, "status": v.status}
            for v in visits
        ],
        "questionnaires": [
            _window_out(w, today, _submitted(session, participant, by_code.get(w.visit), w.form,
                                             w.occurrence))
            for w in windows
        ],
    }
    session.rollback()
    return out


def submit_answers(
    session: Session,
    principal: AppPrincipal,
    visit_code: str,
    form_code: str,
    values: Mapping[str, object],
    *,
    submit: bool,
    device_time: str | None = None,
    expected_version: int | None = None,
    now: datetime.datetime | None = None,
) -> forms.SaveResult:
    """Save or submit the participant's answers to a questionnaire open today (its window, in
    the site's calendar); anything else is 404 or 409."""
    from dtx_trials.services.epro import clean_device_time

    participant = _participant_of(principal)
    today = _today(session, participant, now or utcnow())
    windows, visits = _windows(session, participant)
    mine = [w for w in windows if (w.visit, w.form) == (visit_code, form_code)]
    if not mine:
        raise NotFound(f"no questionnaire {form_code} at {visit_code} in your schedule")
    # windows of a repeating questionnaire never overlap (the protocol validator): at most one
    # is open today
    window = next((w for w in mine if w.is_open(today)), None)
    if window is None:
        spans = ", ".join(f"{w.opens_on.isoformat()} to {w.closes_on.isoformat()}"
                          for w in mine)
        raise Conflict(f"{form_code} is not open today; it is open {spans}")
    if _submitted(session, participant, visits.get(visit_code), form_code, window.occurrence):
        raise Conflict(f"{form_code} at {visit_code} has been answered already")
    session.rollback()
    return forms.save_form(
        session, principal.actor, principal.trial, participant.subject_code, visit_code,
        form_code, values, submit=submit, expected_version=expected_version,
        device_time=clean_device_time(device_time), repeat_index=window.occurrence,
    )


def upload_usage(
    session: Session, principal: AppPrincipal, records: Sequence[object]
) -> devices.IngestResult:
    """Store device / usage observations: a participant's token for their own subject only
    (a record naming another subject is refused), a service token for any participant of its
    trial."""
    if principal.participant is not None:
        own = principal.participant.subject_code
        checked: list[object] = []
        for record in records:
            if isinstance(record, dict):
                subject = record.get("subject", own)
                if subject != own:
                    raise ValidationError(
                        "an app token uploads its own participant's data only",
                        {"subject": [f"must be {own} or left out"]},
                    )
                record = {**record, "subject": own}
            checked.append(record)
        records = checked
    elif principal.credential is None or principal.credential.scope != DEVICE_DATA_WRITE:
        raise PermissionDenied("this token may not write device data")
    return devices.ingest_observations(session, principal.actor, principal.trial, records)
