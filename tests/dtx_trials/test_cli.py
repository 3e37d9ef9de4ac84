"""The `dtx` command as a new user runs it: bootstrap, accounts, audit verify, serve + readyz."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _dtx(
    tmp: Path, *args: str, check: bool = True, input_text: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DTX_INSTANCE_PATH": str(tmp),
        "DTX_ARGON2_TIME_COST": "1",
        "DTX_ARGON2_MEMORY_KIB": "1024",
    }
    env.pop("DATABASE_URL", None)
    env.pop("DTX_FIELD_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "dtx_trials", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
        input=input_text,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("instance")
    result = _dtx(tmp, "bootstrap")
    return tmp, result.stdout


def test_bootstrap_creates_keys_database_and_demo_accounts(instance: tuple[Path, str]) -> None:
    tmp, output = instance
    assert (tmp / "field.key").exists() and (tmp / "dtx.sqlite").exists()
    assert oct((tmp / "field.key").stat().st_mode)[-3:] == "600"
    for username in ("admin", "sponsor", "investigator", "monitor", "auditor"):
        assert re.search(rf"^\s+{username}\s+\S{{12,}}", output, re.MULTILINE), output
    key, cert = tmp / "report-signing.key", tmp / "report-signing.crt"
    before = key.read_bytes(), cert.read_bytes()
    again = _dtx(tmp, "bootstrap").stdout  # idempotent; passwords are printed only once
    assert "Demo accounts" not in again
    # the report-signing key pair: written once, where and with which fingerprint, kept after
    from dtx_trials.report_signing import certificate_sha256, read_certificate

    assert oct(key.stat().st_mode)[-3:] == "600"
    fingerprint = certificate_sha256(read_certificate(cert))
    assert f"wrote report-signing key {key} (private key, mode 0600) and certificate {cert}; " \
        f"certificate SHA-256 {fingerprint}" in output
    assert f"report-signing key {key} and certificate {cert} exist (not replaced); " \
        f"certificate SHA-256 {fingerprint}" in again
    assert (key.read_bytes(), cert.read_bytes()) == before


def test_bootstrap_never_completes_half_a_report_signing_key_pair(tmp_path: Path) -> None:
    """A key without its certificate (or the reverse) is reported, nothing written."""
    from flask import Flask

    from dtx_trials.cli.report import ensure_report_key

    app = Flask(__name__, instance_path=str(tmp_path))
    (tmp_path / "report-signing.key").write_bytes(b"kept")
    message = ensure_report_key(app)
    assert message.startswith(f"warning: report-signing {tmp_path / 'report-signing.key'} "
                              f"exists but {tmp_path / 'report-signing.crt'} does not")
    assert (tmp_path / "report-signing.key").read_bytes() == b"kept"
    assert not (tmp_path / "report-signing.crt").exists()


def test_users_create_grant_and_errors(instance: tuple[Path, str]) -> None:
    tmp, _ = instance
    created = _dtx(tmp, "users", "create", "carol", "--name", "Carol C")
    assert re.search(r"created carol \(user id \d+\) with password \S{12,}", created.stdout)
    duplicate = _dtx(tmp, "users", "create", "carol", "--name", "Carol C", check=False)
    assert duplicate.returncode == 2
    assert "taken" in duplicate.stderr
    weak = _dtx(tmp, "users", "create", "dave", "--name", "D", "--password", "short", check=False)
    assert weak.returncode == 2 and "at least 12 characters" in weak.stderr
    missing = _dtx(tmp, "users", "grant", "carol", "NOPE", "monitor", check=False)
    assert missing.returncode == 2 and "unknown trial NOPE" in missing.stderr


def test_audit_verify_exit_codes(instance: tuple[Path, str]) -> None:
    tmp, _ = instance
    ok = _dtx(tmp, "audit", "verify")
    assert "OK" in ok.stdout and "0 problem(s)" in ok.stdout
    import sqlite3

    with sqlite3.connect(tmp / "dtx.sqlite") as conn:
        conn.execute("UPDATE user SET printed_name = 'Mallory' WHERE username = 'auditor'")
    bad = _dtx(tmp, "audit", "verify", check=False)
    assert bad.returncode == 1
    assert 'printed_name is "Mallory"' in bad.stdout
    with sqlite3.connect(tmp / "dtx.sqlite") as conn:
        conn.execute("UPDATE user SET printed_name = 'Otto Auditor' WHERE username = 'auditor'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_readyz(instance: tuple[Path, str]) -> None:
    tmp, _ = instance
    port = _free_port()
    env = {**os.environ, "DTX_INSTANCE_PATH": str(tmp)}
    env.pop("DATABASE_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "dtx_trials", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    body = json.loads(r.read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert body["status"] == "ready" and body["database"] == "ok" and body["keys"] == "ok"
        # bootstrap made an anchor signing key: checkpoints go to instance/anchors
        assert body["anchors"] == str(tmp / "anchors") and body["anchor_failures"] == 0
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_sec_09_cli_refuses_arguments_no_layer_can_store(instance: tuple[Path, str]) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates; control characters as they
    are. Either is a clear error before the command runs, not a traceback from the driver."""
    tmp, _ = instance
    env = {**os.environ, "DTX_INSTANCE_PATH": str(tmp)}
    env.pop("DATABASE_URL", None)
    raw = subprocess.run(
        [sys.executable, "-m", "dtx_trials", "users", "create", b"ev\xffil", "--name", "E"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert raw.returncode == 2, raw.stderr
    assert b"argument 3" in raw.stderr and b"surrogate" in raw.stderr
    bell = _dtx(tmp, "users", "create", "bell", "--name", "B\x07", check=False)
    assert bell.returncode == 2 and "U+0007" in bell.stderr
    assert "Traceback" not in bell.stderr


def test_sec_09_cli_protocol_validate_reports_an_alias_bomb_with_its_line(
    tmp_path: Path,
) -> None:
    lines = ["l0: &l0 [" + ",".join(["lol"] * 9) + "]"]
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join([*lines, "arms: [*l8]"]) + "\n", encoding="utf-8")
    started = time.perf_counter()
    result = _dtx(tmp_path, "protocol", "validate", str(bomb), check=False)
    assert time.perf_counter() - started < 30  # the interpreter's start-up included
    assert result.returncode == 1
    assert re.search(r"bomb\.yaml:\d+:\d+: .*document refused: aliases expand", result.stdout
                     + result.stderr)


LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"


def test_init_trial_creates_first_sponsor_admin_and_trial(instance: tuple[Path, str]) -> None:
    """The documented first-run command: a new trial and its sponsor admin, who can sign in."""
    tmp, _ = instance
    made = _dtx(tmp, "init-trial", "NEW-01", "--title", "A new trial", "--admin", "nina",
                "--name", "Nina New")
    match = re.search(r"sponsor admin nina \(user id (\d+)\) password (\S{12,})", made.stdout)
    assert match, made.stdout
    assert re.search(r"trial NEW-01 \(trial id \d+\) created", made.stdout)
    import sqlite3

    with sqlite3.connect(tmp / "dtx.sqlite") as conn:
        role = conn.execute(
            "SELECT m.role, m.is_active FROM membership m JOIN trial t ON t.id = m.trial_id "
            "WHERE m.user_id = ? AND t.code = 'NEW-01'",
            (int(match.group(1)),),
        ).fetchall()
    assert role == [("sponsor_admin", 1)]
    # the password printed signs in, through the same service as the login page
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from dtx_trials import create_app; app = create_app()\n"
            "with app.app_context():\n"
            "    from dtx_trials.extensions import db; from dtx_trials.services import accounts\n"
            "    print(accounts.authenticate(db.session, 'nina', sys.argv[1]).id)",
            match.group(2),
        ],
        env={**os.environ, "DTX_INSTANCE_PATH": str(tmp), "DATABASE_URL": ""},
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert check.stdout.strip() == match.group(1), check.stderr
    # an existing account becomes sponsor admin of a second trial; a taken code changes nothing
    again = _dtx(tmp, "init-trial", "NEW-02", "--title", "Second", "--admin", "nina")
    assert "(existing account)" in again.stdout
    taken = _dtx(tmp, "init-trial", "NEW-01", "--title", "X", "--admin", "omar", "--name", "O",
                 check=False)
    assert taken.returncode == 2 and "exists" in taken.stderr
    with sqlite3.connect(tmp / "dtx.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM user WHERE username = 'omar'").fetchone() == (0,)
    unknown = _dtx(tmp, "init-trial", "NEW-03", "--title", "X", "--admin", "zed", check=False)
    assert unknown.returncode == 2 and "give --name" in unknown.stderr
    mismatch = _dtx(tmp, "init-trial", "NEW-04", "--title", "X", "--admin", "nina",
                    "--protocol", str(LIBRARY / "type2_diabetes.yaml"), check=False)
    assert mismatch.returncode == 2 and "is not the trial code" in mismatch.stderr
    with sqlite3.connect(tmp / "dtx.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM trial WHERE code = 'NEW-04'").fetchone() == (0,)
def test_visits_sweep(instance: tuple[Path, str]) -> None:
    tmp, _ = instance
    swept = _dtx(tmp, "visits", "sweep", "MCI-COGTRAIN-01")
    assert "MCI-COGTRAIN-01: 0 missed visit(s) recorded as deviations" in swept.stdout
    unknown = _dtx(tmp, "visits", "sweep", "NOPE", check=False)
    assert unknown.returncode == 2 and "error:" in unknown.stderr


def test_epro_tick(instance: tuple[Path, str]) -> None:
    tmp, _ = instance
    ticked = _dtx(tmp, "epro", "tick", "MCI-COGTRAIN-01")
    assert "MCI-COGTRAIN-01: 0 open questionnaire(s), 0 link(s) issued, 0 reminder(s)" in (
        ticked.stdout
    )
    assert _dtx(tmp, "epro", "tick", "NOPE", check=False).returncode == 2


def test_safety_escalate(instance: tuple[Path, str]) -> None:
    tmp, _ = instance
    done = _dtx(tmp, "safety", "escalate", "MCI-COGTRAIN-01")
    assert "MCI-COGTRAIN-01: 0 safety event(s) escalated" in done.stdout
