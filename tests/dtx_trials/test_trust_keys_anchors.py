"""Key management and anchors: a wrong field key is refused (and /readyz says why), key
rotation keeps the chain verifiable, checkpoints are signed, audited, time-stamped by an
RFC 3161 TSA and checked by `dtx audit verify --anchors` (AUD-05)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import LargeBinary, select, type_coerce

from dtx_trials import crypto
from dtx_trials.anchors import DirectoryStore, read_anchor
from dtx_trials.extensions import db
from dtx_trials.models import AuditEvent, Participant
from dtx_trials.services import accounts, audit, checkpoints, keys
from dtx_trials.services.integrity import check_integrity
from tests.conftest import FIELD_KEY, make_test_app
from tests.dtx_trials.trust_helpers import anchoring
from tests.dtx_trials.tsa_server import running_tsa
from tests.helpers import CLI, make_site, make_trial

NEW_KEY = crypto.generate_key()
OTHER_KEY = crypto.generate_key()


@pytest.fixture
def own_database(tmp_path: Path) -> Iterator[str]:
    """A migrated SQLite database of this test's own (its apps use other keys)."""
    from flask_migrate import upgrade

    url = f"sqlite:///{tmp_path / 'own.sqlite'}"
    first = make_test_app(url)
    with first.app_context():
        upgrade()
    try:
        yield url
    finally:
        crypto.configure(FIELD_KEY)  # the suite's key ring again


def _screen(app: Flask) -> int:
    with app.app_context():
        trial = make_trial("K1")
        site = make_site(trial)
        participant = Participant(
            trial_id=trial.id, site_id=site.id, subject_code="K1-001", phone="13900001111"
        )
        db.session.add(participant)
        audit.record_create(db.session, CLI, "participant.screen", participant)
        db.session.commit()
        return participant.id


def test_wrong_field_key_stops_start_up_and_readyz_says_why(own_database: str) -> None:
    first = make_test_app(own_database)
    assert first.test_client().get("/readyz").get_json()["keys"] == "ok"  # key registered
    _screen(first)
    with first.app_context():
        own = accounts.credentials()
        configured = (own.hasher.time_cost, own.tokens.seconds)
    other = {"ARGON2_TIME_COST": configured[0] + 1, "TOKEN_CACHE_SECONDS": configured[1] + 1}
    with pytest.raises(keys.KeyMismatchError, match="wrong key"):
        make_test_app(own_database, FIELD_KEY=OTHER_KEY, **other)
    # the refused app leaves the process as it was: the running app still writes and reads
    # under its own key, never the refused one, and hashes and caches as configured
    assert crypto.cipher().current.kid == crypto.FieldKey(FIELD_KEY).kid
    with first.app_context():
        assert accounts.credentials() is own
        assert (own.hasher.time_cost, own.tokens.seconds) == configured
        assert audit.verify(db.session).ok
    # started without the check (e.g. the database was down): every request is refused, and
    # once the check has found the key wrong the process's ring is the one it found again
    late = make_test_app(own_database, FIELD_KEY=OTHER_KEY, KEY_CHECK_AT_START=False, **other)
    assert crypto.cipher().current.kid == crypto.FieldKey(OTHER_KEY).kid  # not checked yet
    client = late.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "wrong key" in ready.get_json()["keys"]
    assert client.get("/api/v1/trials").status_code == 503
    assert client.get("/healthz").status_code == 200
    assert crypto.cipher().current.kid == crypto.FieldKey(FIELD_KEY).kid
    with first.app_context():
        # the late app's hasher cost and cache lifetime are its own: the first app's unchanged
        assert (own.hasher.time_cost, own.tokens.seconds) == configured
        assert accounts.credentials() is own and audit.verify(db.session).ok
    with late.app_context():
        theirs = accounts.credentials()
        assert (theirs.hasher.time_cost, theirs.tokens.seconds) == tuple(other.values())
    assert first.test_client().get("/readyz").get_json()["keys"] == "ok"


@pytest.mark.parametrize("key", [OTHER_KEY, "not-base64!"], ids=["another-key", "not-base64"])
def test_the_command_line_names_a_wrong_key_without_a_traceback(
    own_database: str, key: str
) -> None:
    from click.testing import CliRunner

    from dtx_trials.cli import cli

    _screen(make_test_app(own_database))
    result = CliRunner().invoke(
        cli, ["audit", "verify"], env={"DATABASE_URL": own_database, "DTX_FIELD_KEY": key}
    )
    assert result.exit_code == 2, result.output
    assert "error: field key:" in result.output and "Traceback" not in result.output
    assert "wrong key" in result.output or "base64" in result.output


def test_keys_rotate_reencrypts_reseals_and_keeps_the_chain(own_database: str) -> None:
    first = make_test_app(own_database)
    first.test_client().get("/readyz")
    participant_id = _screen(first)
    old_kid = crypto.FieldKey(FIELD_KEY).kid
    rotating = make_test_app(
        own_database, FIELD_KEY=NEW_KEY, FIELD_KEYS_RETIRED=FIELD_KEY, KEY_CHECK_AT_START=False
    )
    with rotating.app_context():
        result = keys.rotate_keys(db.session, CLI)
        assert result.from_kids == (old_kid,) and result.to_kid == crypto.cipher().current.kid
        assert (result.n_reencrypted, result.n_resealed) == (1, 1)  # the participant row
        assert check_integrity(db.session).ok
        blob = db.session.scalar(
            select(type_coerce(Participant.__table__.c.phone, LargeBinary)).where(
                Participant.id == participant_id
            )
        )
        assert crypto.KeyRing.key_id_of(bytes(blob)) == result.to_kid
        kids = set(db.session.scalars(select(AuditEvent.key_id)))
        assert kids == {old_kid, result.to_kid}  # old events keep the key they name
        assert db.session.get(Participant, participant_id).phone == "13900001111"
    # the new key alone starts, but cannot verify what the old key hashed
    alone = make_test_app(own_database, FIELD_KEY=NEW_KEY)
    with alone.app_context():
        report = check_integrity(db.session)
        assert {p.kind for p in report.problems} == {"key"}
        assert old_kid in report.problems[0].message
    # the old key alone is now refused at start-up
    with pytest.raises(keys.KeyMismatchError, match="wrong key"):
        make_test_app(own_database, FIELD_KEY=FIELD_KEY)


def test_checkpoint_is_signed_time_stamped_audited_and_verified(app: Flask, tmp_path: Path) -> None:
    trial = make_trial("A1")
    make_site(trial)
    with running_tsa() as (url, cert_pem):
        (tmp_path / "tsa.pem").write_bytes(cert_pem)
        settings = {"TSA_URL": url, "TSA_CERT": str(tmp_path / "tsa.pem")}
        with anchoring(app, tmp_path / "anchors", **settings) as configured:
            anchor = checkpoints.write_checkpoint(db.session, "manual")
            assert anchor.timestamp is not None and anchor.chains[f"trial:{trial.id}"].seq >= 2
            event = db.session.scalars(
                select(AuditEvent).where(AuditEvent.action == "audit.checkpoint")
            ).one()
            details = {c["field"]: c["new"] for c in event.changes}
            assert details["anchor"] == anchor.name and details["sha256"] == anchor.sha256
            store = DirectoryStore(tmp_path / "anchors")
            report = checkpoints.verify_anchors(
                db.session, store, configured.trusted, configured.tsa_cert
            )
            assert report.problems == () and report.n_trusted == 1
            # write-once: the file is read-only and a name is never reused
            path = tmp_path / "anchors" / anchor.name
            assert path.stat().st_mode & 0o222 == 0
            with pytest.raises(checkpoints.AnchorError, match="already exists"):
                store.put(anchor.name, b"{}")
            # an anchor whose payload was edited no longer verifies
            document = json.loads(path.read_bytes())
            document["payload"]["chains"][f"trial:{trial.id}"]["seq"] = 1
            with pytest.raises(checkpoints.AnchorError, match="signature does not verify"):
                read_anchor(
                    anchor.name,
                    json.dumps(document).encode(),
                    configured.trusted,
                    configured.tsa_cert,
                )
            # another TSA's certificate does not vouch for the time-stamp
            with running_tsa() as (_, other_pem):
                from cryptography import x509 as cx509

                other = cx509.load_pem_x509_certificate(other_pem)
                with pytest.raises(checkpoints.AnchorError, match="configured TSA"):
                    read_anchor(anchor.name, path.read_bytes(), configured.trusted, other)


def test_periodic_and_export_checkpoints(app: Flask, tmp_path: Path) -> None:
    with anchoring(app, tmp_path / "anchors", ANCHOR_EVERY_EVENTS=5):
        trial = make_trial("P1")  # trial.create + membership events
        for n in range(4):
            make_site(trial, f"S{n}", f"Site {n}")
        names = DirectoryStore(tmp_path / "anchors").names()
        assert names, "every 5 events of a chain is a periodic checkpoint"
        audit.record_event(
            db.session,
            CLI,
            "export.created",
            entity_type="trial",
            entity_id=None,
            trial_id=None,
        )
        db.session.commit()
        reasons = [
            json.loads((tmp_path / "anchors" / n).read_bytes())["payload"]["reason"]
            for n in DirectoryStore(tmp_path / "anchors").names()
        ]
        assert "export" in reasons and "periodic" in reasons


def test_aud_07_trail_export_csv_pdf_by_subject(client: FlaskClient) -> None:
    from tests.dtx_trials.trial_flow import enrolled_mci_participant, load_trial

    staff = load_trial(client)
    first = enrolled_mci_participant(client, staff)
    second = enrolled_mci_participant(client, staff)
    base = "/api/v1/trials/MCI-COGTRAIN-01/audit/export"
    headers = staff["auditor"].headers
    whole = client.get(f"{base}.csv", headers=headers)
    assert whole.status_code == 200 and whole.mimetype == "text/csv"
    mine = client.get(f"{base}.csv?subject={first}", headers=headers)
    rows = list(csv.DictReader(io.StringIO(mine.get_data(as_text=True))))
    assert rows and {r["subject"] for r in rows} == {first}
    assert second in whole.get_data(as_text=True) and second not in mine.get_data(as_text=True)
    moca = next(r for r in rows if r["field"] == "data" and "moca_raw" in r["new"])
    assert moca["actor"] == "Inv" and moca["at_utc"].endswith("Z")
    assert "Li Lei" not in whole.get_data(as_text=True)  # identifiers stay sealed
    pdf = client.get(f"{base}.pdf?subject={first}", headers=headers)
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF-1.4")
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.data)).pages)
    assert first in text and "Page 1" in text
    assert client.get(f"{base}.csv", headers=staff["monitor"].headers).status_code == 403
    assert client.get(f"{base}.csv?subject=NOPE", headers=headers).status_code == 404
    exported = db.session.scalars(
        select(AuditEvent).where(AuditEvent.action == "audit.exported")
    ).all()
    assert len(exported) == 3  # every export is audited
