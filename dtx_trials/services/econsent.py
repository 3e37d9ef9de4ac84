"""Remote eConsent: a personal link on which a participant, guardian or legally authorised
representative reads a versioned consent document (en/zh), answers the protocol's
comprehension questions and signs with their typed name and a one-time code; an investigator
countersigns.

The link's token (``secrets.token_urlsafe(32)``) is shown once to the issuing staff member and
sent to the signer through the notification outbox; only its SHA-256 is stored. It expires, and
it is single use: once signed it answers 410. The one-time code goes through the outbox too
(SMS or e-mail, to the address given for the signer, encrypted at rest), is stored as a keyed
HMAC, and three wrong codes revoke the link. Signing stores a PDF of what was signed; its
SHA-256 is in the audit trail. A remote consent counts (``missing_consents``) once an
investigator has countersigned it with their password.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from dtx_trials.crypto import cipher
from dtx_trials.db import lock_row, transaction, utcnow
from dtx_trials.models import Consent, ConsentInvitation, Participant, Trial
from dtx_trials.services import accounts, audit, notifications
from dtx_trials.services.access import Actor
from dtx_trials.services.consent_pdf import build_consent_pdf
from dtx_trials.services.epro import (
    LinkGoneError,
    LinkNotFoundError,
    OtpRejectedError,
    mask_address,
)
from dtx_trials.services.errors import Conflict, NotFound, ValidationError
from dtx_trials.services.participants import (
    ACTIVE_STATUSES,
    current_protocol,
    get_participant,
    missing_consents,
    move_if_due,
    write_identifiers,
)
from protocols.model import ConsentDocument

CHANNELS = ("sms", "email")
DEFAULT_HOURS = 72
MAX_HOURS = 720
MAX_CODE_FAILURES = 3
MAX_CODES = 5


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: ConsentInvitation
    token: str
    delivered_to: str


@dataclass(frozen=True)
class InvitationView:
    """What the signer's page shows: the document in its language, and the link's state."""

    invitation: ConsentInvitation
    document: ConsentDocument
    trial_code: str
    subject_code: str


def _actor_for(invitation: ConsentInvitation, name: str = "Remote signer") -> Actor:
    return Actor(
        user_id=None,
        username=f"econsent:{invitation.id}",
        printed_name=name,
        via="econsent",
        auth_ref=f"invitation:{invitation.id}",
    )


def _document(protocol_consents: tuple[ConsentDocument, ...], document_id: str, version: str,
              language: str) -> ConsentDocument:
    for document in protocol_consents:
        if (document.id, document.version, document.language) == (document_id, version, language):
            return document
    known = sorted(f"{d.id} v{d.version} ({d.language})" for d in protocol_consents)
    raise ValidationError(
        "unknown consent document", {"document_id": [f"one of: {', '.join(known) or 'none'}"]}
    )


def issue_invitation(
    session: Session,
    actor: Actor,
    trial: Trial,
    subject_code: str,
    *,
    document_id: str,
    version: str,
    language: str,
    channel: str,
    link_base: str,
    address: str | None = None,
    expires_in_hours: int = DEFAULT_HOURS,
) -> IssuedInvitation:
    """Send a signer a personal link to read and sign one consent document (site staff).

    ``address`` is the signer's phone (sms) or e-mail (email): the one on the participant's
    record (`_signer_address`). Earlier open links for the same document are revoked.
    """
    if channel not in CHANNELS:
        raise ValidationError("unknown channel", {"channel": [f"one of {', '.join(CHANNELS)}"]})
    if not 1 <= expires_in_hours <= MAX_HOURS:
        raise ValidationError(
            "invalid lifetime", {"expires_in_hours": [f"between 1 and {MAX_HOURS}"]}
        )
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "participant.write", lock=True
        )
        if participant.status not in ACTIVE_STATUSES:
            raise Conflict(f"participant is {participant.status}")
        protocol = current_protocol(session, participant)
        document = _document(protocol.consents, document_id, version, language)
        address = _signer_address(session, actor, participant, document.signer, channel,
                                  address)
        if not address:
            what = "phone" if channel == "sms" else "e-mail"
            raise ValidationError(
                f"no {channel} address for the {document.signer}",
                {"address": [f"the {document.signer}'s {what}"]},
            )
        now = utcnow()
        for earlier in session.scalars(
            select(ConsentInvitation).where(
                ConsentInvitation.participant_id == participant.id,
                ConsentInvitation.document_id == document.id,
                ConsentInvitation.signed_at.is_(None),
                ConsentInvitation.revoked_at.is_(None),
            )
        ):
            before = audit.snapshot(earlier)
            earlier.revoked_at = now
            audit.record_update(
                session, actor, "econsent.revoke", earlier, before, trial_id=trial.id,
                site_id=participant.site_id, reason="superseded by a new link",
            )
        token = secrets.token_urlsafe(32)
        invitation = ConsentInvitation(
            participant_id=participant.id,
            document_id=document.id,
            consent_version=document.version,
            language=document.language,
            signer_role=document.signer,
            token_hash=accounts.sha256_hex(token),
            channel=channel,
            address=address,
            created_at=now,
            created_by_id=actor.user_id,
            expires_at=now + datetime.timedelta(hours=expires_in_hours),
            meta={"code_failures": 0, "codes_sent": 0},
        )
        session.add(invitation)
        audit.record_create(
            session, actor, "econsent.issue", invitation, trial_id=trial.id,
            site_id=participant.site_id,
        )
        zh = document.language.startswith("zh")
        notifications.enqueue(
            session, actor, trial_id=trial.id, kind="econsent.link", channel=channel,
            address=address,
            subject="请阅读并签署知情同意书" if zh else "Please read and sign your consent form",
            body=(f"{document.title.get(document.language)}: {link_base.rstrip('/')}/{token}"),
            entity_type="consent_invitation", entity_id=invitation.id,
        )
    return IssuedInvitation(invitation, token, mask_address(channel, address))


def _signer_address(
    session: Session, actor: Actor, participant: Participant, signer: str, channel: str,
    given: str | None,
) -> str | None:
    """The signer's phone or e-mail is the one on the participant's record: the participant's
    own (``phone``, ``email``) or, for a guardian or legally authorized representative, the
    representative's (``representative_phone``, ``representative_email``). Given while none is
    recorded, it is recorded (audited, sealed); another than the recorded one is refused, and
    changed first with its reason (PATCH identifiers): nobody sends a signer's link and code to
    an address of their own unseen (before: any address was taken for any signer)."""
    kind = "phone" if channel == "sms" else "email"
    column = kind if signer == "participant" else f"representative_{kind}"
    on_file: str | None = getattr(participant, column)
    given = given.strip() if given and given.strip() else None
    what = f"the {signer.replace('_', ' ')}'s {'phone' if kind == 'phone' else 'e-mail'}"
    if on_file is None and given is not None:
        write_identifiers(session, actor, participant, {column: given},
                          f"{what}, given with a consent invitation")
        return given
    if given is not None and given != on_file:
        raise ValidationError(
            f"{what} on record is another: the link goes there",
            {"address": [f"{what} on record (change the record first, with a reason)"]},
        )
    return on_file


def _by_token(session: Session, token: str, now: datetime.datetime, *, lock: bool
              ) -> ConsentInvitation:
    if not token or len(token) > 200:
        raise LinkNotFoundError("link not found")
    invitation = session.scalars(
        select(ConsentInvitation).where(ConsentInvitation.token_hash == accounts.sha256_hex(token))
    ).first()
    if invitation is None:
        raise LinkNotFoundError("link not found")
    if lock:
        invitation = lock_row(session, ConsentInvitation, invitation.id)
        assert invitation is not None
    participant = session.get(Participant, invitation.participant_id)
    if (
        invitation.signed_at is not None
        or invitation.revoked_at is not None
        or invitation.expires_at <= now
        # a participant who has left the study (withdrawn, screen failed, completed) signs
        # nothing more through a link sent before (as ePRO links and app tokens)
        or participant is None
        or participant.status not in ACTIVE_STATUSES
    ):
        raise LinkGoneError("the link can no longer be used")
    return invitation


def _view(session: Session, invitation: ConsentInvitation) -> InvitationView:
    participant = session.get(Participant, invitation.participant_id)
    assert participant is not None
    trial = session.get(Trial, participant.trial_id)
    assert trial is not None
    document = _document(
        current_protocol(session, participant).consents, invitation.document_id,
        invitation.consent_version, invitation.language,
    )
    return InvitationView(invitation, document, trial.code, participant.subject_code)


def open_invitation(
    session: Session, token: str, now: datetime.datetime | None = None
) -> InvitationView:
    """Return what the signer's page shows; the first opening is audited."""
    now = now or utcnow()
    with transaction(session):
        invitation = _by_token(session, token, now, lock=True)
        if invitation.opened_at is None:
            participant = session.get(Participant, invitation.participant_id)
            assert participant is not None
            before = audit.snapshot(invitation)
            invitation.opened_at = now
            audit.record_update(
                session, _actor_for(invitation), "econsent.open", invitation, before,
                trial_id=participant.trial_id, site_id=participant.site_id,
            )
        view = _view(session, invitation)
    return view


def send_code(session: Session, token: str, now: datetime.datetime | None = None) -> str:
    """Send the signer a fresh 6-digit code through the outbox; return the masked address."""
    now = now or utcnow()
    with transaction(session):
        invitation = _by_token(session, token, now, lock=True)
        participant = session.get(Participant, invitation.participant_id)
        assert participant is not None and invitation.address is not None
        meta = dict(invitation.meta or {})
        if meta.get("codes_sent", 0) >= MAX_CODES:
            raise Conflict("too many codes were sent for this link; ask the study team")
        code = f"{secrets.randbelow(10**6):06d}"
        invitation.otp_hash = _digest(invitation.token_hash, code)
        invitation.meta = {**meta, "codes_sent": meta.get("codes_sent", 0) + 1}
        before = audit.snapshot(invitation)
        invitation.code_sent_at = now
        actor = _actor_for(invitation)
        audit.record_update(
            session, actor, "econsent.code_sent", invitation, before,
            trial_id=participant.trial_id, site_id=participant.site_id,
        )
        zh = invitation.language.startswith("zh")
        notifications.enqueue(
            session, actor, trial_id=participant.trial_id, kind="econsent.code",
            channel=invitation.channel, address=invitation.address,
            subject="签署验证码" if zh else "Your signing code",
            body=(f"验证码：{code}（仅用于签署知情同意书）" if zh
                  else f"Your code to sign the consent form: {code}"),
            entity_type="consent_invitation", entity_id=invitation.id,
        )
        return mask_address(invitation.channel, invitation.address)


def _digest(token_hash: str, code: str) -> str:
    return cipher().mac_hex(code, f"consent_invitation.otp:{token_hash}")


def sign_invitation(
    session: Session,
    token: str,
    *,
    typed_name: str,
    code: str,
    answers: Mapping[str, str],
    read_in: str | None = None,
    now: datetime.datetime | None = None,
) -> Consent:
    """Sign on the link: every comprehension answer right (422 naming the wrong ones), the
    typed name, and the one-time code (403; three wrong codes revoke the link). ``read_in``:
    the language the signer's page showed the document's texts in (default: the document's
    own); the signed PDF holds the texts in it."""
    now = now or utcnow()
    name = (typed_name or "").strip()
    with transaction(session):
        invitation = _by_token(session, token, now, lock=True)
        view = _view(session, invitation)
        participant = session.get(Participant, invitation.participant_id)
        assert participant is not None
        errors: dict[str, list[str]] = {
            qid: ["not the right answer: please read that part again"]
            for qid in wrong_answers(view.document, answers)
        }
        if not name or len(name) > 200:
            errors["typed_name"] = ["type your full name (at most 200 characters)"]
        if errors:
            raise ValidationError("please check your answers", errors)
        if invitation.otp_hash is None:
            raise Conflict("ask for a code first")
        actor = _actor_for(invitation, name)
        if not secrets.compare_digest(invitation.otp_hash, _digest(invitation.token_hash, code)):
            failures = int((invitation.meta or {}).get("code_failures", 0)) + 1
            invitation.meta = {**(invitation.meta or {}), "code_failures": failures}
            audit.record_event(
                session, actor, "econsent.code_rejected", entity_type="consent_invitation",
                entity_id=invitation.id, trial_id=participant.trial_id,
                site_id=participant.site_id, details={"failures": failures},
            )
            if failures >= MAX_CODE_FAILURES:
                before = audit.snapshot(invitation)
                invitation.revoked_at = now
                audit.record_update(
                    session, actor, "econsent.revoke", invitation, before,
                    trial_id=participant.trial_id, site_id=participant.site_id,
                    reason="three wrong codes",
                )
            # the attempt is recorded even though the request fails
            session.commit()
            raise OtpRejectedError(
                "the code is not correct", attempts_left=MAX_CODE_FAILURES - failures
            )
        lang = read_in or view.document.language
        pdf = build_consent_pdf(
            trial_code=view.trial_code,
            subject_code=view.subject_code,
            document_id=view.document.id,
            version=view.document.version,
            language=view.document.language,
            read_in=lang,
            title=view.document.title.get(lang),
            body=view.document.body.get(lang) if view.document.body else "",
            answers=[
                (q.text.get(lang), next(c.label.get(lang) for c in q.choices if c.code == q.answer))
                for q in view.document.comprehension
            ],
            signer_role=invitation.signer_role,
            signer_name=name,
            signed_at=now,
            verification=f"one-time code sent by {invitation.channel} to "
            f"{mask_address(invitation.channel, invitation.address or '')}",
        )
        consent = Consent(
            participant_id=participant.id,
            document_id=invitation.document_id,
            consent_version=invitation.consent_version,
            language=invitation.language,
            signer_role=invitation.signer_role,
            signer_name=name,
            signer_phone=invitation.address if invitation.channel == "sms" else None,
            signed_at=now,
            method="remote",
            pdf=pdf,
            pdf_sha256=hashlib.sha256(pdf).hexdigest(),
        )
        session.add(consent)
        audit.record_create(
            session, actor, "consent.sign_remote", consent, trial_id=participant.trial_id,
            site_id=participant.site_id,
        )
        before = audit.snapshot(invitation)
        invitation.signed_at = now
        invitation.consent_id = consent.id
        audit.record_update(
            session, actor, "econsent.signed", invitation, before,
            trial_id=participant.trial_id, site_id=participant.site_id,
        )
        trial = session.get(Trial, participant.trial_id)
        assert trial is not None
        notifications.notify_roles(
            session, actor, trial=trial, roles=("investigator",), site_id=participant.site_id,
            kind="econsent.countersign", entity_type="consent", entity_id=consent.id,
            subject=f"{trial.code}: consent to countersign for {participant.subject_code}",
            body=f"{participant.subject_code} signed {consent.document_id} "
            f"v{consent.consent_version} remotely; please countersign it.",
        )
    return consent


def wrong_answers(document: ConsentDocument, answers: Mapping[str, str]) -> list[str]:
    """Return the ids of the comprehension questions not answered with the right code."""
    return [q.id for q in document.comprehension if answers.get(q.id) != q.answer]


def _consent(session: Session, participant: Participant, consent_id: int) -> Consent:
    consent = session.get(Consent, consent_id)
    if consent is None or consent.participant_id != participant.id:
        raise NotFound("consent not found")
    return consent


def countersign_consent(
    session: Session, actor: Actor, trial: Trial, subject_code: str, consent_id: int,
    password: str,
) -> Consent:
    """The investigator countersigns a remote consent (password re-entered); it then counts."""
    get_participant(session, actor, trial, subject_code, "consent.countersign")
    # the password first: every wrong one counts towards the lockout, whatever the consent
    accounts.reauthenticate(session, actor, password, purpose="signature")
    with transaction(session):
        participant = get_participant(
            session, actor, trial, subject_code, "consent.countersign", lock=True
        )
        _consent(session, participant, consent_id)
        consent = lock_row(session, Consent, consent_id)
        assert consent is not None
        if consent.method != "remote":
            raise Conflict("only a remote consent is countersigned")
        if consent.countersigned_at is not None:
            raise Conflict("the consent is already countersigned")
        before = audit.snapshot(consent)
        consent.countersigned_at = utcnow()
        consent.countersigned_by_id = actor.user_id
        audit.record_update(
            session, actor, "consent.countersign", consent, before, trial_id=trial.id,
            site_id=participant.site_id,
        )
        protocol = current_protocol(session, participant)
        if participant.status == "screening" and not missing_consents(
            session, participant, protocol
        ):
            before_p = audit.snapshot(participant)
            participant.status = "consented"
            participant.consented_at = consent.signed_at
            audit.record_update(session, actor, "participant.consented", participant, before_p)
        move_if_due(session, actor, participant, "consent")
    return consent


def consent_pdf(
    session: Session, actor: Actor, trial: Trial, subject_code: str, consent_id: int
) -> tuple[bytes, str]:
    """The stored PDF of a remote consent and its SHA-256 (site staff; the access is audited)."""
    with transaction(session):
        participant = get_participant(session, actor, trial, subject_code, "participant.identify")
        consent = _consent(session, participant, consent_id)
        if consent.pdf is None or consent.pdf_sha256 is None:
            raise NotFound("this consent has no PDF (recorded in person)")
        audit.record_event(
            session, actor, "consent.pdf_viewed", entity_type="consent", entity_id=consent.id,
            trial_id=trial.id, site_id=participant.site_id,
        )
        return consent.pdf, consent.pdf_sha256
