"""Participants, their consents, visits and ePRO links."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, Date, ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dtx_trials.crypto import EncryptedText
from dtx_trials.db import Base, UTCDateTime, intpk, utcnow

# Direct identifiers: encrypted at rest, sealed (HMAC) in the audit trail, never exported.
# the participant's own, then the guardian's or legally authorized representative's contact
# (where a consent signed for the participant is sent)
IDENTIFIER_COLUMNS = ("full_name", "phone", "email", "national_id", "address",
                      "representative_phone", "representative_email")


class Participant(Base):
    """A person screened for a trial, known everywhere by a pseudonymous subject code."""

    __tablename__ = "participant"
    __table_args__ = (UniqueConstraint("trial_id", "subject_code"),)
    __audited__ = (
        "trial_id",
        "site_id",
        "subject_code",
        "status",
        "protocol_version_id",
        "screened_at",
        "consented_at",
        "enrolled_at",
        "randomized_at",
        "withdrawn_at",
        "withdrawal_reason",
        "is_emergency_unblinded",
        *IDENTIFIER_COLUMNS,
    )
    __sealed__ = IDENTIFIER_COLUMNS

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    subject_code: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20), default="screening")
    protocol_version_id: Mapped[int | None] = mapped_column(ForeignKey("protocol_version.id"))
    screened_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    consented_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    randomized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    withdrawal_reason: Mapped[str | None] = mapped_column(Text)
    is_emergency_unblinded: Mapped[bool] = mapped_column(default=False)
    full_name: Mapped[str | None] = mapped_column(EncryptedText("participant.full_name"))
    phone: Mapped[str | None] = mapped_column(EncryptedText("participant.phone"))
    email: Mapped[str | None] = mapped_column(EncryptedText("participant.email"))
    national_id: Mapped[str | None] = mapped_column(EncryptedText("participant.national_id"))
    address: Mapped[str | None] = mapped_column(EncryptedText("participant.address"))
    representative_phone: Mapped[str | None] = mapped_column(
        EncryptedText("participant.representative_phone"))
    representative_email: Mapped[str | None] = mapped_column(
        EncryptedText("participant.representative_email"))


class Consent(Base):
    """A signed consent of one consent-form version, by the participant or a witness/guardian."""

    __tablename__ = "consent"
    __audited__ = (
        "participant_id",
        "consent_version",
        "language",
        "signer_role",
        "signed_at",
        "withdrawn_at",
        "document_id",
        "signer_name",
        "signer_phone",
        "recorded_by_id",
        "method",
        "pdf",
        "pdf_sha256",
        "countersigned_by_id",
        "countersigned_at",
    )
    __sealed__ = ("signer_name", "signer_phone")
    __digested__ = ("pdf",)

    id: Mapped[intpk]
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    document_id: Mapped[str] = mapped_column(String(60), default="consent")
    consent_version: Mapped[str] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(5), default="en")
    signer_role: Mapped[str] = mapped_column(String(40), default="participant")
    signer_name: Mapped[str | None] = mapped_column(EncryptedText("consent.signer_name"))
    signer_phone: Mapped[str | None] = mapped_column(EncryptedText("consent.signer_phone"))
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # in_person: recorded by site staff; remote: signed by the signer on a personal link, with
    # a PDF of what was signed, and counted once an investigator countersigns
    method: Mapped[str] = mapped_column(String(20), default="in_person")
    pdf: Mapped[bytes | None] = mapped_column(LargeBinary)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64))
    countersigned_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    countersigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConsentInvitation(Base):
    """A personal, single-use, expiring link to read and sign one consent document remotely;
    only the token's SHA-256 is stored."""

    __tablename__ = "consent_invitation"
    __audited__ = (
        "participant_id",
        "document_id",
        "consent_version",
        "language",
        "signer_role",
        "token_hash",
        "channel",
        "address",
        "created_at",
        "created_by_id",
        "expires_at",
        "opened_at",
        "code_sent_at",
        "signed_at",
        "consent_id",
        "revoked_at",
    )
    __sealed__ = ("address",)
    __unaudited__: ClassVar[dict[str, str]] = {
        "otp_hash": "one-time code digest; each code sent is a notification and an audit event",
        "meta": "code attempts; each failed attempt is an econsent.code_rejected event",
    }

    id: Mapped[intpk]
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    document_id: Mapped[str] = mapped_column(String(60))
    consent_version: Mapped[str] = mapped_column(String(40))
    language: Mapped[str] = mapped_column(String(10))
    signer_role: Mapped[str] = mapped_column(String(40))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    otp_hash: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(10))
    address: Mapped[str | None] = mapped_column(EncryptedText("consent_invitation.address"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    code_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_id: Mapped[int | None] = mapped_column(ForeignKey("consent.id"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Visit(Base):
    __tablename__ = "visit"
    __table_args__ = (UniqueConstraint("participant_id", "visit_code", "occurrence"),)
    __audited__ = (
        "participant_id",
        "visit_code",
        "occurrence",
        "planned_on",
        "actual_on",
        "status",
        "is_unscheduled",
        "window_start_on",
        "window_end_on",
        "actual_at",
        "missed_reason",
    )

    id: Mapped[intpk]
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    visit_code: Mapped[str] = mapped_column(String(40))
    occurrence: Mapped[int] = mapped_column(default=1)
    is_unscheduled: Mapped[bool] = mapped_column(default=False)
    planned_on: Mapped[date | None] = mapped_column(Date)
    window_start_on: Mapped[date | None] = mapped_column(Date)
    window_end_on: Mapped[date | None] = mapped_column(Date)
    actual_on: Mapped[date | None] = mapped_column(Date)  # the site's local calendar date
    actual_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # when a time was given
    status: Mapped[str] = mapped_column(String(20), default="planned")
    missed_reason: Mapped[str | None] = mapped_column(Text)


class ProtocolDeviation(Base):
    """A departure from the protocol (a visit out of its window, a missed visit), raised by the
    system when it is detected and reviewed by the monitor."""

    __tablename__ = "protocol_deviation"
    __audited__ = (
        "trial_id",
        "site_id",
        "participant_id",
        "visit_id",
        "kind",
        "description",
        "days_outside",
        "detected_at",
        "status",
        "reviewed_at",
        "reviewed_by_id",
        "review_note",
    )

    id: Mapped[intpk]
    trial_id: Mapped[int] = mapped_column(ForeignKey("trial.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("site.id"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("visit.id"))
    kind: Mapped[str] = mapped_column(String(40))  # out_of_window | missed_visit
    description: Mapped[str] = mapped_column(Text)
    days_outside: Mapped[int | None] = mapped_column()  # negative: early, positive: late
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open|reviewed|superseded
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    review_note: Mapped[str | None] = mapped_column(Text)


class EproLink(Base):
    """A personal link for one participant and visit; only the token's SHA-256 is stored."""

    __tablename__ = "epro_link"
    __audited__ = (
        "participant_id",
        "visit_id",
        "form_code",
        "expires_at",
        "completed_at",
        "revoked_at",
        "token_hash",
        "channel",
        "created_at",
        "created_by_id",
        "opened_at",
    )
    __unaudited__: ClassVar[dict[str, str]] = {
        "otp_hash": "one-time sign-in code digest; each code sent is an epro.code_sent event",
        "meta": "sign-in bookkeeping (code attempts, pending session); attempts are audited",
    }

    id: Mapped[intpk]
    participant_id: Mapped[int] = mapped_column(ForeignKey("participant.id"), index=True)
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("visit.id"))
    form_code: Mapped[str] = mapped_column(String(60))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    otp_hash: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
