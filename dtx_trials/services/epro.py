"""ePRO: personal links through which participants answer their own questionnaires.

A link is scoped to one participant, one visit and one participant-respondent form. Its token
(``secrets.token_urlsafe(32)``) is shown once to the issuing staff member and stored only as
SHA-256. Opening the link exchanges the token for a short-lived browser session bound to the
link (a `WebSession` with ``epro_link_id`` and no user), so the token leaves the address bar
(SEC-03). The token is single-use: a second opening gets 410 — unless the instance allows
reopening (``DTX_EPRO_ALLOW_REOPEN``, for participants who return to a saved draft later), in
which case each opening ends the sessions opened before. With a delivery channel, a 6-digit
one-time code is sent through a `Sender` and stored as a keyed HMAC; three wrong codes revoke
the link.

The participant writes through `services.forms.save_form`, as an `Actor` with ``via="epro"``
and a participant grant for the participant's trial and site (`access.can` honours such a grant
only for ePRO actors); this module pins the subject, visit and form before each call.
"""

from __future__ import annotations

import datetime
import logging
import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Protocol as TypingProtocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.crypto import cipher
from dtx_trials.db import lock_row, transaction, utcnow
from dtx_trials.models import EproLink, FormRecord, Participant, Trial, Visit, WebSession
from dtx_trials.models.users import Role
from dtx_trials.services import audit, forms
from dtx_trials.services.access import Actor, Grant
from dtx_trials.services.accounts import Policy, open_session, sha256_hex
from dtx_trials.services.errors import Conflict, DomainError, NotFound, ValidationError
from dtx_trials.services.participants import get_participant, protocol_for
from ecrf.model import FormDef
from protocols.model import Protocol

log = logging.getLogger("dtx_trials.epro")

CHANNELS = ("none", "sms", "email")
DEFAULT_HOURS = 72
MAX_HOURS = 720
MAX_OTP_FAILURES = 3
SESSION_HOURS = 1
_DEVICE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"
)


class LinkNotFoundError(NotFound):
    code = "link_not_found"


class LinkGoneError(DomainError):
    """The link expired, was revoked or was already used; the page says no more than that."""

    status = 410
    code = "link_gone"


class OtpRejectedError(DomainError):
    status = 403
    code = "otp_rejected"


# ---------------------------------------------------------------- delivery


class Sender(TypingProtocol):
    """Delivers a one-time code to a participant's phone (sms) or e-mail address (email)."""

    def send_code(self, channel: str, address: str, code: str, *, subject_code: str) -> None:
        """Deliver ``code`` to ``address``; must not log the address unmasked."""


def mask_phone(phone: str) -> str:
    """Mask a phone number as ``138****1234`` (first 3 and last 4 digits shown)."""
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 8:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"


def mask_email(email: str) -> str:
    """Mask an e-mail address as ``l***@example.com``."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def mask_address(channel: str, address: str) -> str:
    return mask_phone(address) if channel == "sms" else mask_email(address)


class LogSender:
    """Development sender: logs the delivery with a masked address.

    The code itself is logged only when ``reveal_codes`` is set (development and testing
    instances); a production instance must install a real sender.
    """

    def __init__(self, *, reveal_codes: bool = False) -> None:
        self.reveal_codes = reveal_codes

    def send_code(self, channel: str, address: str, code: str, *, subject_code: str) -> None:
        masked = mask_address(channel, address)
        if self.reveal_codes:
            log.info("sent one-time code %s to %s via %s (development)", code, masked, channel)
        else:
            log.info("sent one-time code to %s via %s", masked, channel)


# ---------------------------------------------------------------- staff: issue, list, revoke


@dataclass(frozen=True)
class IssuedLink:
    link: EproLink
    token: str
    delivered_to: str | None  # masked address the one-time code went to


def link_status(link: EproLink, now: datetime.datetime | None = None) -> str:
    now = now or utcnow()
    if link.completed_at is not None:
        return "completed"
    if link.revoked_at is not None:
        return "revoked"
    if link.expires_at <= now:
        return "expired"
    return "opened" if link.opened_at is not None else "issued"


def _participant_form(protocol: Protocol, form_code: str, visit_code: str) -> FormDef:
    try:
        form = protocol.form(form_code)
    except KeyError as exc:
        raise ValidationError(
            f"form {form_code} is not part of the protocol", {"form": ["unknown form"]}
        ) from exc
    if form.respondent != "participant":
        raise ValidationError(
            f"form {form_code} is answered by site staff, not by the participant",
            {"form": ["not a participant-respondent (ePRO) form"]},
        )
    scheduled = protocol.visits_of_form(form.id)
    if visit_code not in scheduled:
        raise ValidationError(
            f"form {form_code} is not scheduled at visit {visit_code}",
            {"visit": [f"scheduled at: {', '.join(scheduled) or 'none'}"]},
        )
    return form


def issue_link(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    *,
    visit: str,
    form: str,
    sender: Sender,
    expires_in_hours: int = DEFAULT_HOURS,
    channel: str = "none",
    repeat_index: int = 1,
    expires_at: datetime.datetime | None = None,
    now: datetime.datetime | None = None,
) -> IssuedLink:
    """Create a personal link for one participant, visit and ePRO form (site staff).

    Earlier open links for the same visit and form are revoked. With channel sms/email a
    one-time code goes to the participant's phone/e-mail and the link asks for it.
    ``expires_at`` (the scheduler: the end of the questionnaire's window) replaces the
    lifetime in hours; ``now`` (the scheduler's clock) defaults to the time of the call.
    """
    if channel not in CHANNELS:
        raise ValidationError("unknown channel", {"channel": [f"one of {', '.join(CHANNELS)}"]})
    if not 1 <= expires_in_hours <= MAX_HOURS:
        raise ValidationError(
            "invalid lifetime", {"expires_in_hours": [f"between 1 and {MAX_HOURS}"]}
        )
    with transaction(session):
        participant = get_participant(session, actor, trial, subject_code, "epro.issue", lock=True)
        if participant.status not in forms.OPEN_PARTICIPANT_STATUSES:
            raise Conflict(f"participant is {participant.status}; no new data may be entered")
        protocol = protocol_for(session, participant)
        form_def = _participant_form(protocol, form, visit)
        now = now or utcnow()
        visit_row = _visit_row(session, participant, visit)
        forms.check_window(session, participant, protocol, visit, visit_row, form_def.id,
                           repeat_index, now)
        record = _record(session, participant, visit_row, form_def.id, repeat_index)
        if record is not None and record.status != "draft":
            raise Conflict(f"form {form} at visit {visit} is already {record.status}")
        address = None
        if channel == "sms":
            address = participant.phone
        elif channel == "email":
            address = participant.email
        if channel != "none" and not address:
            what = "phone number" if channel == "sms" else "e-mail address"
            raise ValidationError(
                f"the participant has no {what} on file", {"channel": [f"no {what} on file"]}
            )
        for earlier in open_links(session, participant, visit, form_def.id, repeat_index, now):
            before = audit.snapshot(earlier)
            earlier.revoked_at = now
            audit.record_update(
                session,
                actor,
                "epro.revoke",
                earlier,
                before,
                trial_id=trial.id,
                site_id=participant.site_id,
                reason="superseded by a new link",
            )
        token = secrets.token_urlsafe(32)
        code = f"{secrets.randbelow(10**6):06d}" if channel != "none" else None
        link = EproLink(
            participant_id=participant.id,
            visit_id=visit_row.id if visit_row else None,
            form_code=form_def.id,
            token_hash=sha256_hex(token),
            channel=channel,
            created_at=now,
            created_by_id=actor.user_id,
            expires_at=expires_at or now + datetime.timedelta(hours=expires_in_hours),
            # a repeating questionnaire (weekly, ...) answers its n-th window as entry n
            meta={"visit_code": visit, "otp_failures": 0,
                  **({"repeat_index": repeat_index} if repeat_index != 1 else {})},
        )
        if code is not None:
            link.otp_hash = _otp_digest(link.token_hash, code)
        session.add(link)
        audit.record_create(
            session, actor, "epro.issue", link, trial_id=trial.id, site_id=participant.site_id
        )
        delivered_to = None
        if code is not None and address:
            sender.send_code(channel, address, code, subject_code=participant.subject_code)
            delivered_to = mask_address(channel, address)
            audit.record_event(
                session,
                actor,
                "epro.code_sent",
                entity_type="epro_link",
                entity_id=link.id,
                trial_id=trial.id,
                site_id=participant.site_id,
                details={"channel": channel, "to": delivered_to},
            )
    return IssuedLink(link, token, delivered_to)


def _otp_digest(token_hash: str, code: str) -> str:
    # keyed (field key) so that a copy of the table does not give the code away by brute force
    return cipher().mac_hex(code, f"epro_link.otp:{token_hash}")


def _visit_row(session: Session, participant: Participant, visit_code: str) -> Visit | None:
    return session.scalars(
        select(Visit).where(
            Visit.participant_id == participant.id,
            Visit.visit_code == visit_code,
            Visit.is_unscheduled.is_(False),
        )
    ).first()


def _record(
    session: Session, participant: Participant, visit: Visit | None, form_code: str,
    repeat_index: int = 1,
) -> FormRecord | None:
    if visit is None:
        return None
    return session.scalars(
        select(FormRecord).where(
            FormRecord.participant_id == participant.id,
            FormRecord.visit_id == visit.id,
            FormRecord.form_code == form_code,
            FormRecord.repeat_index == repeat_index,
        )
    ).first()


def repeat_index_of(link: EproLink) -> int:
    """The window (occurrence) of its questionnaire a link answers: 1 unless it says."""
    return int((link.meta or {}).get("repeat_index", 1))


def open_links(
    session: Session,
    participant: Participant,
    visit_code: str,
    form_code: str,
    repeat_index: int,
    now: datetime.datetime,
) -> list[EproLink]:
    """The open links of one window (visit, form, occurrence), newest first: a new link
    supersedes them, never another week's."""
    links = session.scalars(
        select(EproLink).where(
            EproLink.participant_id == participant.id,
            EproLink.form_code == form_code,
            EproLink.completed_at.is_(None),
            EproLink.revoked_at.is_(None),
        ).order_by(EproLink.id.desc())
    )
    return [
        link
        for link in links
        if link.expires_at > now and (link.meta or {}).get("visit_code") == visit_code
        and repeat_index_of(link) == repeat_index
    ]


def list_links(session: Session, actor: Actor, trial: Trial, subject_code: str) -> list[EproLink]:
    """The participant's links, newest first (never the tokens)."""
    participant = get_participant(session, actor, trial, subject_code, "participant.read")
    links = list(
        session.scalars(
            select(EproLink)
            .where(EproLink.participant_id == participant.id)
            .order_by(EproLink.id.desc())
        )
    )
    session.rollback()  # end the read transaction
    return links


def revoke_link(
    session: Session, actor: Actor, trial: Trial, subject_code: str, link_id: int
) -> EproLink:
    """Revoke a link that has not been completed; revoking twice changes nothing."""
    with transaction(session):
        participant = get_participant(session, actor, trial, subject_code, "epro.issue")
        link = lock_row(session, EproLink, link_id)
        if link is None or link.participant_id != participant.id:
            raise NotFound("ePRO link not found")
        if link.completed_at is not None:
            raise Conflict("the link was already used to submit the form")
        if link.revoked_at is None:
            before = audit.snapshot(link)
            link.revoked_at = utcnow()
            _end_sessions(session, link.id)
            audit.record_update(
                session,
                actor,
                "epro.revoke",
                link,
                before,
                trial_id=trial.id,
                site_id=participant.site_id,
            )
    return link


def _end_sessions(session: Session, link_id: int, keep: int | None = None) -> None:
    now = utcnow()
    for row in session.scalars(
        select(WebSession).where(
            WebSession.epro_link_id == link_id, WebSession.revoked_at.is_(None)
        )
    ):
        if row.id != keep:
            row.revoked_at = now


# ---------------------------------------------------------------- participant side


def participant_actor(
    participant: Participant,
    link: EproLink,
    request_id: str | None = None,
    *,
    web_session_id: int | None = None,
) -> Actor:
    """The actor a participant writes as: ePRO only, participant role at their own site.

    Its events name the ePRO browser session, or the link itself when the link token was all
    that was presented (opening it, completing it after the submission).
    """
    return Actor(
        user_id=None,
        username=f"epro:{participant.subject_code}",
        printed_name=f"Participant {participant.subject_code}",
        grants=(Grant(participant.trial_id, participant.site_id, Role.PARTICIPANT),),
        request_id=request_id,
        via="epro",
        auth_ref=f"session:{web_session_id}" if web_session_id else f"link:{link.id}",
        extra={"epro_link_id": link.id},
    )


def _live_link(
    session: Session, link: EproLink | None, now: datetime.datetime
) -> tuple[EproLink, Participant]:
    if link is None:
        raise LinkNotFoundError("this link is not valid")
    participant = session.get(Participant, link.participant_id)
    if (
        participant is None
        or link_status(link, now) in ("completed", "revoked", "expired")
        or participant.status not in forms.OPEN_PARTICIPANT_STATUSES
    ):
        raise LinkGoneError("this link has expired or has already been used")
    return link, participant


def open_link(
    session: Session,
    token: str,
    *,
    policy: Policy | None = None,
    allow_reopen: bool = False,
    request_id: str | None = None,
) -> tuple[WebSession, str]:
    """Exchange a link token for a new ePRO browser session; return the row and cookie value.

    Unknown token → 404; expired, revoked or completed link → 410, and so is a link opened
    before unless ``allow_reopen``. Earlier sessions of the link end, and the session lasts at
    most an hour and never beyond the link.
    """
    if not token or len(token) > 100:
        raise LinkNotFoundError("this link is not valid")
    now = utcnow()
    opened: tuple[WebSession, str] | None = None
    with transaction(session):
        found = session.scalars(
            select(EproLink).where(EproLink.token_hash == sha256_hex(token))
        ).first()
        link = lock_row(session, EproLink, found.id) if found is not None else None
        link, participant = _live_link(session, link, now)
        actor = participant_actor(participant, link, request_id)
        before = audit.snapshot(link)
        if link.opened_at is not None and not allow_reopen:
            action = "epro.reuse_refused"  # recorded, then 410 (committed with the event)
        else:
            action = "epro.open"
            session_policy = replace(policy or Policy(), session_max_hours=SESSION_HOURS)
            row, cookie = open_session(session, None, policy=session_policy, epro_link_id=link.id)
            row.expires_at = min(row.expires_at, link.expires_at)
            _end_sessions(session, link.id, keep=row.id)
            link.opened_at = link.opened_at or now
            link.meta = {**(link.meta or {}), "otp_session_id": None}
            opened = (row, cookie)
            actor = participant_actor(participant, link, request_id, web_session_id=row.id)
        if not (
            action == "epro.open"
            and audit.record_update(
                session,
                actor,
                action,
                link,
                before,
                trial_id=participant.trial_id,
                site_id=participant.site_id,
            )
        ):
            audit.record_event(
                session,
                actor,
                action,
                entity_type="epro_link",
                entity_id=link.id,
                trial_id=participant.trial_id,
                site_id=participant.site_id,
            )
    if opened is None:
        raise LinkGoneError("this link has expired or has already been used")
    return opened


@dataclass(frozen=True)
class EproContext:
    """What an ePRO session may see: one participant's one form at one visit."""

    link: EproLink
    participant: Participant
    trial: Trial
    form: FormDef
    visit_code: str
    record: FormRecord | None
    needs_code: bool
    repeat_index: int = 1


def context_for(
    session: Session, web_session: WebSession | None, *, request_id: str | None = None
) -> EproContext:
    """Return the link behind an ePRO session, or raise (404 no session, 410 link closed).

    A link whose form is already submitted is completed here (see `complete_link`).
    """
    if web_session is None or web_session.epro_link_id is None:
        raise LinkNotFoundError("open the personal link you received to answer the questionnaire")
    link, participant = _live_link(
        session, session.get(EproLink, web_session.epro_link_id), utcnow()
    )
    trial = session.get(Trial, participant.trial_id)
    assert trial is not None
    visit_code = str((link.meta or {}).get("visit_code", ""))
    try:
        form = protocol_for(session, participant).form(link.form_code)
    except KeyError as exc:  # an amendment removed the questionnaire after the link was sent
        raise LinkGoneError("this questionnaire is no longer part of the study") from exc
    repeat_index = repeat_index_of(link)
    record = _record(session, participant, _visit_row(session, participant, visit_code), form.id,
                     repeat_index)
    if record is not None and record.status != "draft":
        complete_link(session, link.id, request_id=request_id)
        raise LinkGoneError("this link has expired or has already been used")
    needs_code = (
        link.otp_hash is not None and (link.meta or {}).get("otp_session_id") != web_session.id
    )
    return EproContext(link, participant, trial, form, visit_code, record, needs_code,
                       repeat_index)


def verify_code(
    session: Session, web_session: WebSession, code: str, *, request_id: str | None = None
) -> None:
    """Check the one-time code; the third wrong code revokes the link (commits either way)."""
    with transaction(session):
        link = lock_row(session, EproLink, web_session.epro_link_id or 0)
        link, participant = _live_link(session, link, utcnow())
        actor = participant_actor(participant, link, request_id, web_session_id=web_session.id)
        meta = dict(link.meta or {})
        expected = link.otp_hash or ""
        code = code.strip()
        given = _otp_digest(link.token_hash, code) if re.fullmatch(r"\d{6}", code) else ""
        if given and secrets.compare_digest(given, expected):
            meta.update(otp_session_id=web_session.id, otp_failures=0)
            link.meta = meta
            audit.record_event(
                session,
                actor,
                "epro.code_accepted",
                entity_type="epro_link",
                entity_id=link.id,
                trial_id=participant.trial_id,
                site_id=participant.site_id,
            )
            return
        failures = int(meta.get("otp_failures", 0)) + 1
        meta["otp_failures"] = failures
        link.meta = meta
        details: dict[str, object] = {"failures": failures}
        failure: DomainError = OtpRejectedError(
            "the code is not correct", attempts_left=MAX_OTP_FAILURES - failures
        )
        if failures >= MAX_OTP_FAILURES:
            before = audit.snapshot(link)
            link.revoked_at = utcnow()
            _end_sessions(session, link.id)
            audit.record_update(
                session,
                actor,
                "epro.revoke",
                link,
                before,
                trial_id=participant.trial_id,
                site_id=participant.site_id,
                reason=f"{MAX_OTP_FAILURES} wrong one-time codes",
            )
            failure = LinkGoneError("this link has expired or has already been used")
        audit.record_event(
            session,
            actor,
            "epro.code_rejected",
            entity_type="epro_link",
            entity_id=link.id,
            trial_id=participant.trial_id,
            site_id=participant.site_id,
            details=details,
        )
    raise failure


def clean_device_time(text: str | None) -> str | None:
    """Keep the device's clock reading only when it is an ISO 8601 date-time with offset.

    It is stored beside the server time, never in its place (AUD-06).
    """
    if not text or len(text) > 40 or not _DEVICE_TIME.fullmatch(text.strip()):
        return None
    try:
        datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return text.strip()


def save_response(
    session: Session,
    web_session: WebSession,
    values: Mapping[str, object],
    *,
    submit: bool,
    device_time: str | None = None,
    expected_version: int | None = None,
    acknowledged: Collection[str] = (),
    request_id: str | None = None,
) -> forms.SaveResult:
    """Save the participant's answers as a draft or submit them, through `forms.save_form`.

    Only the link's own form at its own visit is written; on submit the link is completed
    and every session of the link ends, so the token and the cookie are both spent.
    """
    ctx = context_for(session, web_session, request_id=request_id)
    if ctx.needs_code:
        raise OtpRejectedError("enter the one-time code first")
    allowed = {f.id for f in ctx.form.fields}
    actor = participant_actor(ctx.participant, ctx.link, request_id, web_session_id=web_session.id)
    session.rollback()  # end the read transaction: save_form opens its own
    result = forms.save_form(
        session,
        actor,
        ctx.trial,
        ctx.participant.subject_code,
        ctx.visit_code,
        ctx.form.id,
        {k: v for k, v in values.items() if k in allowed},
        submit=submit,
        expected_version=expected_version,
        acknowledged=acknowledged,
        device_time=clean_device_time(device_time),
        repeat_index=ctx.repeat_index,
    )
    if submit:
        complete_link(session, ctx.link.id, request_id=request_id)
    return result


def complete_link(session: Session, link_id: int, *, request_id: str | None = None) -> None:
    """Mark the link used once its form is submitted, and end its sessions (idempotent).

    Runs right after the submission's own transaction; should it not, the next use of the
    link finds the submitted record and completes the link then.
    """
    with transaction(session):
        link = lock_row(session, EproLink, link_id)
        if link is None or link.completed_at is not None:
            return
        participant = session.get(Participant, link.participant_id)
        assert participant is not None
        before = audit.snapshot(link)
        link.completed_at = utcnow()
        _end_sessions(session, link.id)
        audit.record_update(
            session,
            participant_actor(participant, link, request_id),
            "epro.complete",
            link,
            before,
            trial_id=participant.trial_id,
            site_id=participant.site_id,
        )
