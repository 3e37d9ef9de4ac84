"""Consent before data, the protocol's signer rules, encrypted signer identifiers and
re-consent when a new consent version is activated."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import LargeBinary, func, select, type_coerce

from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, Consent, FormRecord
from dtx_trials.services import protocols
from tests.dtx_trials.trial_flow import (
    LIBRARY,
    MCI_SCREENING,
    api,
    enrolled_mci_participant,
    load_trial,
)
from tests.helpers import CLI


def consent(document: str, role: str, **extra: str) -> dict[str, str]:
    return {"document_id": document, "version": "1.0", "language": "zh-CN",
            "signer_role": role, **extra}


def test_no_form_data_before_the_required_consents(client: FlaskClient) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    subject = api(client, inv, "POST", "/participants", {"site": "BJ01"}, 201)["subject_code"]
    screening = {"values": MCI_SCREENING, "submit": True}
    url = f"/participants/{subject}/visits/screening/forms/screening"
    body = api(client, inv, "PUT", url, screening, 409)
    assert body["errors"]["consent"] == ["main_icf v1.0", "partner_icf v1.0"]
    assert "consent required before data entry: main_icf v1.0" in body["message"]
    api(client, inv, "POST", f"/participants/{subject}/consents",
        consent("main_icf", "participant"), 201)
    body = api(client, inv, "PUT", url, screening, 409)
    assert body["errors"]["consent"] == ["partner_icf v1.0"]
    assert db.session.scalar(select(func.count()).select_from(FormRecord)) == 0
    api(client, inv, "POST", f"/participants/{subject}/consents",
        consent("partner_icf", "legally_authorized_representative"), 201)
    api(client, inv, "PUT", url, screening, 200)


def test_the_documents_signer_is_enforced(client: FlaskClient) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    subject = api(client, inv, "POST", "/participants", {"site": "BJ01"}, 201)["subject_code"]
    path = f"/participants/{subject}/consents"
    body = api(client, inv, "POST", path, consent("main_icf", "guardian"), 422)
    assert body["errors"]["signer_role"] == ["must be participant for main_icf"]
    body = api(client, inv, "POST", path, consent("partner_icf", "participant"), 422)
    assert "legally_authorized_representative" in body["errors"]["signer_role"][0]
    assert db.session.scalar(select(func.count()).select_from(Consent)) == 0
    # the representative's name and phone are stored encrypted and sealed in the trail
    api(client, inv, "POST", path, consent(
        "partner_icf", "legally_authorized_representative",
        signer_name="Han Meimei", signer_phone="13800138000"), 201)
    raw = db.session.execute(select(
        type_coerce(Consent.signer_name, LargeBinary),
        type_coerce(Consent.signer_phone, LargeBinary),
    )).one()
    assert all(b"Han" not in bytes(v) and b"13800138000" not in bytes(v) for v in raw)
    stored = db.session.scalars(select(Consent)).one()
    assert (stored.signer_name, stored.signer_phone) == ("Han Meimei", "13800138000")
    trail = " ".join(str(e.changes) for e in db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "consent.sign")))
    assert "13800138000" not in trail and "Han Meimei" not in trail and "signer_phone" in trail


def test_a_new_consent_version_needs_re_consent_before_more_data(
    client: FlaskClient, tmp_path: Path
) -> None:
    staff = load_trial(client)
    inv = staff["inv"]
    subject = enrolled_mci_participant(client, staff)
    api(client, inv, "POST", f"/participants/{subject}/randomization", {}, 201)
    text = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
    amended = text.replace('version: "1.0"', 'version: "1.1"', 1).replace(
        '{id: main_icf, version: "1.0"', '{id: main_icf, version: "1.1"')
    path = tmp_path / "mci-1.1.yaml"
    path.write_text(amended, encoding="utf-8")
    protocols.load_library_file(db.session, CLI, path)
    shown = api(client, inv, "GET", f"/participants/{subject}", expect=200)
    assert shown["missing_consents"] == ["main_icf v1.1"]
    body = api(client, inv, "PUT", f"/participants/{subject}/visits/baseline/forms/adas_cog",
               {"values": {}}, 409)
    assert body["message"] == "re-consent required before data entry: main_icf v1.1"
    # safety reporting does not wait for the re-consent
    api(client, inv, "PUT", f"/participants/{subject}/visits/baseline/forms/adverse_events",
        {"values": {"ae_term": "headache"}}, 200)
    api(client, inv, "POST", f"/participants/{subject}/consents",
        {**consent("main_icf", "participant"), "version": "1.1"}, 201)
    assert api(client, inv, "GET", f"/participants/{subject}")["missing_consents"] == []
    api(client, inv, "PUT", f"/participants/{subject}/visits/baseline/forms/adas_cog",
        {"values": {}}, 200)
