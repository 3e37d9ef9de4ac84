"""Protocol versions through the API and CLI: upload, validate, diff, activate, amendments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import select

from dtx_trials.extensions import db
from dtx_trials.models import (
    AuditEvent,
    FormRecord,
    Participant,
    RandomizationState,
    Site,
    Trial,
)
from dtx_trials.services import audit
from tests.helpers import CLI, Account, login, make_trial, make_user

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"
MCI = (LIBRARY / "cognitive_impairment.yaml").read_text(encoding="utf-8")
CODE = "MCI-COGTRAIN-01"
YAML = {"Content-Type": "application/x-yaml"}


def _sponsor(client: FlaskClient) -> tuple[Trial, Account]:
    trial = make_trial(CODE, "MCI trial")
    sponsor = login(client, make_user("sponsor", role="sponsor_admin", trial=trial))
    return trial, sponsor


def _upload(client: FlaskClient, sponsor: Account, text: str) -> tuple[int, dict]:
    r = client.post(
        f"/api/v1/trials/{CODE}/protocol-versions?name=mci.yaml",
        data=text,
        headers={**sponsor.headers, **YAML},
    )
    return r.status_code, r.get_json()


def test_upload_is_idempotent_on_content(client: FlaskClient) -> None:
    _, sponsor = _sponsor(client)
    status, first = _upload(client, sponsor, MCI)
    assert status == 201 and first["version_no"] == 1 and first["status"] == "draft"
    status, again = _upload(client, sponsor, MCI + "\n# a comment changes nothing\n")
    assert status == 200 and again["id"] == first["id"]
    listed = client.get(f"/api/v1/trials/{CODE}/protocol-versions", headers=sponsor.headers)
    assert [v["version_no"] for v in listed.get_json()] == [1]


def test_broken_protocol_gives_422_with_line_numbers(client: FlaskClient) -> None:
    _, sponsor = _sponsor(client)
    broken = MCI.replace("block_sizes: [4, 6]", "block_sizes: [3, 6]").replace(
        "type: integer", "type: integr", 1
    )
    status, body = _upload(client, sponsor, broken)
    assert status == 422
    lines = body["errors"]["protocol"]
    assert any("block size 3 is not a multiple of ratio sum 2" in line for line in lines), lines
    assert any(line.startswith("mci.yaml:") and "integr" in line for line in lines), lines
    assert all(i["line"] > 0 for i in body["issues"])
    assert (
        db.session.scalars(select(AuditEvent).where(AuditEvent.action == "protocol.upload")).first()
        is None
    )


def test_activate_creates_sites_randomization_state_and_audit(client: FlaskClient) -> None:
    trial, sponsor = _sponsor(client)
    _upload(client, sponsor, MCI)
    r = client.post(
        f"/api/v1/trials/{CODE}/protocol-versions/1/activate", json={}, headers=sponsor.headers
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["version"]["status"] == "active"
    db.session.expire_all()
    t = db.session.get(Trial, trial.id)
    assert t is not None and t.blinding == "double" and t.status == "active"
    codes = set(db.session.scalars(select(Site.code).where(Site.trial_id == trial.id)))
    assert codes == {"BJ01", "SH01", "GZ01", "HK01"}
    state = db.session.scalars(select(RandomizationState)).one()
    assert len(state.secret) == 64  # 32 bytes, hex, encrypted at rest
    assert audit.verify(db.session).ok


def test_amendment_diff_and_breaking_change_gate(client: FlaskClient) -> None:
    trial, sponsor = _sponsor(client)
    _upload(client, sponsor, MCI)
    client.post(
        f"/api/v1/trials/{CODE}/protocol-versions/1/activate", json={}, headers=sponsor.headers
    )
    # captured data on achei_use makes removing that field a breaking change
    site = db.session.scalars(select(Site).where(Site.code == "BJ01")).one()
    participant = Participant(trial_id=trial.id, site_id=site.id, subject_code="BJ01-001")
    db.session.add(participant)
    audit.record_create(db.session, CLI, "participant.screen", participant)
    record = FormRecord(
        participant_id=participant.id, form_code="screening", data={"achei_use": "0"}
    )
    db.session.add(record)
    audit.record_create(db.session, CLI, "form.save", record, trial_id=trial.id)
    db.session.commit()

    amended = MCI.replace('version: "1.0"', 'version: "2.0"').replace(
        "      - {id: achei_use, type: yesno, label: {en: Taking a cholinesterase inhibitor, "
        "zh: 正在服用胆碱酯酶抑制剂}, required: true}\n",
        "",
    )
    assert "achei_use" not in amended
    status, v2 = _upload(client, sponsor, amended)
    assert status == 201 and v2["version_no"] == 2, v2
    diff = client.get(
        f"/api/v1/trials/{CODE}/protocol-versions/1/diff/2", headers=sponsor.headers
    ).get_json()
    assert any(c["kind"] == "removed" and "achei_use" in c["path"] for c in diff), diff
    refused = client.post(
        f"/api/v1/trials/{CODE}/protocol-versions/2/activate", json={}, headers=sponsor.headers
    )
    assert refused.status_code == 409
    breaking = refused.get_json()["breaking_ids"]
    assert any("achei_use" in b for b in breaking), breaking
    accepted = client.post(
        f"/api/v1/trials/{CODE}/protocol-versions/2/activate",
        json={"accepted_migrations": breaking},
        headers=sponsor.headers,
    )
    assert accepted.status_code == 200, accepted.get_json()
    versions = client.get(
        f"/api/v1/trials/{CODE}/protocol-versions", headers=sponsor.headers
    ).get_json()
    assert [v["status"] for v in versions] == ["superseded", "active"]
    assert versions[1]["accepted_migrations"] == sorted(breaking)


def test_only_sponsor_admin_uploads_and_activates(client: FlaskClient) -> None:
    trial, sponsor = _sponsor(client)
    monitor = login(client, make_user("mon", role="monitor", trial=trial))
    status, _ = _upload(client, monitor, MCI)
    assert status == 403
    _upload(client, sponsor, MCI)
    r = client.post(
        f"/api/v1/trials/{CODE}/protocol-versions/1/activate", json={}, headers=monitor.headers
    )
    assert r.status_code == 403
    assert (
        client.get(
            f"/api/v1/trials/{CODE}/protocol-versions/1", headers=monitor.headers
        ).status_code
        == 200
    )


def test_validate_endpoint_returns_issues(client: FlaskClient) -> None:
    _, sponsor = _sponsor(client)
    r = client.post(
        "/api/v1/protocols/validate?name=p.yaml",
        data="code: X\nfoo: 1\n",
        headers={**sponsor.headers, **YAML},
    )
    body = r.get_json()
    assert r.status_code == 200 and body["valid"] is False
    assert any(i["line"] == 2 and "unknown key 'foo'" in i["message"] for i in body["issues"])


def _dtx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dtx_trials", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_validate_exit_codes_and_line_numbers(tmp_path: Path) -> None:
    library = sorted(LIBRARY.glob("*.yaml"))
    assert len(library) == 4
    ok = _dtx("protocol", "validate", *(str(p) for p in library))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(f"{p}: ok" in ok.stdout for p in library), ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(MCI.replace("ratio: 1\n", "ratio: one\n", 1), encoding="utf-8")
    result = _dtx("protocol", "validate", str(bad))
    assert result.returncode == 1
    line_no = MCI[: MCI.index("ratio: 1\n")].count("\n") + 1
    assert f"{bad}:{line_no}:" in result.stdout, result.stdout


def test_cli_diff_and_schema(tmp_path: Path) -> None:
    amended = tmp_path / "v2.yaml"
    amended.write_text(
        MCI.replace("caps: {per_site: 80}", "caps: {per_site: 90}"), encoding="utf-8"
    )
    result = _dtx("protocol", "diff", str(LIBRARY / "cognitive_impairment.yaml"), str(amended))
    assert result.returncode == 1
    assert "per_site" in result.stdout and "1 change(s)" in result.stdout
    schema = _dtx("protocol", "schema")
    assert schema.returncode == 0 and '"$schema"' in schema.stdout
