"""DEID-02..04 through the export API on SQLite and PostgreSQL: ``?profile=safe_harbor``
scrubs a free-text AE term, caps an age of 93 at 90 / "90+", shifts every date of a
participant by one offset, is audited with its profile; ``limited`` stays as it was."""

from __future__ import annotations

import csv
import datetime
import io
import zipfile

from flask.testing import FlaskClient
from sqlalchemy import select

from analysis.exports.deid import date_shift_days
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent
from dtx_trials.services import exports
from tests.dtx_trials.trial_flow import (
    MCI_CODE,
    MCI_SCREENING,
    api,
    consented_mci_participant,
    enrolled_mci_participant,
    load_trial,
)

PHONE = "13912345678"
EMAIL = "wang.fang@example.cn"
PRC_ID = "11010519491231002X"
AE_TERM = f"Dizziness, call {PHONE} or {EMAIL}, id {PRC_ID}"


def _zip(client: FlaskClient, headers: dict[str, str], fmt: str, profile: str | None
         ) -> dict[str, bytes]:
    query = f"?profile={profile}" if profile else ""
    response = client.get(f"/api/v1/trials/{MCI_CODE}/exports/{fmt}.zip{query}", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    return {name: archive.read(name) for name in archive.namelist()}


def _subjects(files: dict[str, bytes]) -> dict[str, dict[str, str]]:
    text = files["csv/subjects.csv"].decode("utf-8-sig")
    return {row["subject_code"]: row for row in csv.DictReader(io.StringIO(text))}


def test_deid_02_03_04_safe_harbor_export_profile(client: FlaskClient) -> None:
    staff = load_trial(client)
    enrolled = enrolled_mci_participant(client, staff)
    api(client, staff["inv"], "PUT", f"/participants/{enrolled}/visits/baseline/forms/"
        "adverse_events",
        {"values": {"ae_term": AE_TERM, "ae_onset_on": datetime.date.today().isoformat(),
                    "ae_severity": "moderate", "ae_serious": "0", "ae_related": "possibly"},
         "submit": True}, 200)
    elderly = consented_mci_participant(client, staff, identifiers={
        "full_name": "Zhao Min", "phone": "13700002222"})
    api(client, staff["inv"], "PUT", f"/participants/{elderly}/visits/screening/forms/screening",
        {"values": {**MCI_SCREENING, "age": 93}, "submit": True}, 200)
    headers = staff["unblinded"].headers

    limited = {fmt: _zip(client, headers, fmt, None) for fmt in ("csv", "xpt", "odm", "fhir")}
    for fmt, files in limited.items():  # ?profile=limited is the default
        assert _zip(client, headers, fmt, "limited").keys() == files.keys()
    assert any(PHONE.encode() in c for f in limited.values() for c in f.values())
    assert _subjects(limited["csv"])[elderly]["age"] == "90+"  # CSV has always printed 90+
    assert any(name.startswith("audit/") for name in limited["csv"])

    safe = {fmt: _zip(client, headers, fmt, "safe_harbor") for fmt in limited}
    for fmt, files in safe.items():
        assert not any(name.startswith("audit/") for name in files), fmt
        assert "csv/device_observations.csv" not in files
        for name, content in files.items():
            for secret in (PHONE, EMAIL, PRC_ID):
                assert secret.encode() not in content, (name, secret)
    odm = safe["odm"]["odm/odm.xml"].decode()
    assert "Dizziness, call [REDACTED] or [REDACTED], id [REDACTED]" in odm
    assert _subjects(safe["csv"])[elderly]["age"] == "90+"
    # every date of a participant moves by the same keyed offset
    with client.application.app_context():
        key = exports._deid_key()
    for code in (enrolled, elderly):
        before, after = _subjects(limited["csv"])[code], _subjects(safe["csv"])[code]
        shift = datetime.timedelta(date_shift_days(key, code))
        assert before["consented_on"] and after["consented_on"] != before["consented_on"]
        assert datetime.date.fromisoformat(after["consented_on"]) == \
            datetime.date.fromisoformat(before["consented_on"]) + shift
    # the export audit event records the profile
    events = list(db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "export.created").order_by(AuditEvent.id)))
    profiles = [next(c["new"] for c in e.changes if c["field"] == "profile") for e in events]
    assert profiles == ["limited"] * 8 + ["safe_harbor"] * 4


def test_deid_02_unknown_profile_is_422_and_cdisc_takes_limited_only(
    client: FlaskClient,
) -> None:
    staff = load_trial(client)
    headers = staff["unblinded"].headers
    response = client.get(f"/api/v1/trials/{MCI_CODE}/exports/csv.zip?profile=anonymous",
                          headers=headers)
    assert response.status_code == 422
    assert "profile" in str(response.get_json())
    response = client.get(f"/api/v1/trials/{MCI_CODE}/exports/cdisc.zip?profile=safe_harbor",
                          headers=headers)
    assert response.status_code == 422
    assert response.get_json()["errors"]["profile"]
    assert not list(db.session.scalars(select(AuditEvent).where(
        AuditEvent.action == "export.created")))


def test_deid_01_sensitive_fields_are_named_for_the_audit_event() -> None:
    """PIPL Art. 28: an export names the fields classified sensitive that it carries."""
    from dataclasses import replace

    from tests.analysis.exports.export_samples import make_export_data

    data = make_export_data()
    assert exports.sensitive_fields(data) == []
    forms = tuple(replace(f, fields=tuple(
        replace(fd, classification="sensitive") if fd.id in ("total", "ae_serious", "postcode")
        else fd for fd in f.fields)) for f in data.forms)
    marked = replace(data, forms=forms)
    assert exports.sensitive_fields(marked) == ["adas_cog.total", "adverse_events.ae_serious"]
    # a sensitive field with no value in the export is not named
    assert exports.sensitive_fields(replace(marked, values=tuple(
        v for v in marked.values if v.field_id != "total"))) == ["adverse_events.ae_serious"]
