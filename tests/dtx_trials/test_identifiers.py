"""SEC-13 / CN-02: direct identifiers are encrypted at rest, sealed in the trail, key required."""

from __future__ import annotations

import base64

import pytest
from flask import Flask
from sqlalchemy import select, text

from dtx_trials import create_app, crypto
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, Participant
from dtx_trials.services import audit
from tests.helpers import CLI, make_site, make_trial

IDENTITY = {
    "full_name": "Wang Xiaoming",
    "phone": "13812345678",
    "email": "wang@example.cn",
    "national_id": "11010519491231002X",
    "address": "1 Chang'an Avenue, Beijing",
}


def _participant() -> int:
    trial = make_trial("T1")
    site = make_site(trial)
    participant = Participant(
        trial_id=trial.id, site_id=site.id, subject_code="T1-S1-001", **IDENTITY
    )
    db.session.add(participant)
    audit.record_create(db.session, CLI, "participant.screen", participant)
    db.session.commit()
    return participant.id


def test_sec_13_identifier_columns_hold_no_plaintext(app: Flask) -> None:
    participant_id = _participant()
    db.session.remove()
    with db.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT full_name, phone, email, national_id, address "
                "FROM participant WHERE id = :id"
            ),
            {"id": participant_id},
        ).one()
    for raw, plain in zip(row, IDENTITY.values(), strict=True):
        blob = bytes(raw)
        assert plain.encode() not in blob
        # version 2 names its key id: the data say which key of the ring opens them
        assert blob[:1] == b"\x02" and blob[1:10].decode() == crypto.cipher().current.kid
        assert len(blob) > len(plain)
    loaded = db.session.get(Participant, participant_id)
    assert loaded is not None and loaded.phone == IDENTITY["phone"]


def test_identifiers_never_enter_the_audit_trail(app: Flask) -> None:
    _participant()
    db.session.remove()
    with db.engine.connect() as conn:
        dump = " ".join(str(r) for r in conn.execute(text("SELECT changes FROM audit_event")))
    for plain in IDENTITY.values():
        assert plain not in dump
    event = db.session.scalars(
        select(AuditEvent).where(AuditEvent.entity_type == "participant")
    ).one()
    sealed = {c["field"]: c["new"] for c in event.changes}
    assert sealed["phone"].startswith(f"s2:{crypto.cipher().current.kid}:")
    assert audit.verify(db.session).ok


def test_ciphertext_moved_to_another_column_does_not_decrypt(app: Flask) -> None:
    participant_id = _participant()
    db.session.remove()
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE participant SET email = phone WHERE id = :id"), {"id": participant_id}
        )
    with pytest.raises(crypto.CiphertextError, match=r"participant\.email"):
        db.session.get(Participant, participant_id)
    db.session.rollback()
    # verify names the column instead of crashing
    report = audit.verify(db.session)
    assert [p.where for p in report.problems] == [f"participant id={participant_id}.email"]


def test_sec_13_app_refuses_to_start_without_a_key(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DTX_INSTANCE_PATH", str(tmp_path))
    monkeypatch.delenv("DTX_FIELD_KEY", raising=False)
    with pytest.raises(crypto.FieldKeyError, match="DTX_FIELD_KEY"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://"})
    bad = base64.urlsafe_b64encode(b"short").decode()
    with pytest.raises(crypto.FieldKeyError, match="32 bytes"):
        create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "FIELD_KEY": bad})
