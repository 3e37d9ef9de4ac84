"""`dtx report init-key`, `dtx report verify`: the report-signing key and signed reports."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

if TYPE_CHECKING:
    from flask import Flask

console = Console(soft_wrap=True, highlight=False)
DEFAULT_SIGNER = "dtx-trials report signing"


@click.group()
def report() -> None:
    """Signed statistical reports (PAdES)."""


def _config_paths(app: Flask | None = None) -> tuple[Path, Path, dict[str, object]]:
    from dtx_trials import create_app
    from dtx_trials.report_signing import report_key_paths

    app = app or create_app()
    key_default, cert_default = report_key_paths(app.instance_path)
    config = dict(app.config)
    key = Path(str(config.get("REPORT_SIGNING_KEY") or key_default))
    cert = Path(str(config.get("REPORT_SIGNING_CERT") or cert_default))
    return key, cert, config


def ensure_report_key(app: Flask) -> str:
    """Create the instance's report-signing key and certificate when both are absent (as
    `dtx report init-key` does, default name); never replace either. Return what to print:
    where they are and the certificate's SHA-256 fingerprint, or why reports stay unsigned."""
    from dtx_trials.report_signing import (
        ReportSigningError,
        certificate_sha256,
        generate_report_key,
        read_certificate,
    )

    key, cert, _ = _config_paths(app)
    try:
        if key.exists() and cert.exists():
            fingerprint = certificate_sha256(read_certificate(cert))
            return (f"report-signing key {key} and certificate {cert} exist (not replaced); "
                    f"certificate SHA-256 {fingerprint}")
        if key.exists() or cert.exists():
            there, missing = (key, cert) if key.exists() else (cert, key)
            return (f"warning: report-signing {there} exists but {missing} does not; neither "
                    "replaced, final reports are not signed until both exist")
        certificate = generate_report_key(key, cert, DEFAULT_SIGNER)
    except ReportSigningError as exc:
        return f"warning: report-signing key: {exc}"
    return (f"wrote report-signing key {key} (private key, mode 0600) and certificate {cert}; "
            + _certificate_facts(certificate))


def _certificate_facts(certificate: Any) -> str:
    """What both commands print of a new certificate: its fingerprint and validity."""
    from dtx_trials.report_signing import certificate_sha256

    return (f"certificate SHA-256 {certificate_sha256(certificate)}, valid until "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}")


@report.command("init-key")
@click.option(
    "--name",
    "common_name",
    default=DEFAULT_SIGNER,
    show_default=True,
    help="Common name of the self-signed certificate (the signer the report names).",
)
@click.option("--days", default=3650, show_default=True, type=click.IntRange(1, 36500),
              help="Validity of the certificate.")
def init_key(common_name: str, days: int) -> None:
    """Write the instance's report-signing key and a self-signed certificate.

    Paths: DTX_REPORT_SIGNING_KEY / DTX_REPORT_SIGNING_CERT, else instance/report-signing.key
    and instance/report-signing.crt. An existing key is never replaced.
    """
    from dtx_trials.cli import _fail
    from dtx_trials.report_signing import ReportSigningError, generate_report_key

    key, cert, _ = _config_paths()
    try:
        certificate = generate_report_key(key, cert, common_name, days=days)
    except ReportSigningError as exc:
        _fail(str(exc))
    console.print(f"wrote {key} (private key, mode 0600) and {cert}")
    console.print(_certificate_facts(certificate))


@report.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--cert",
    "cert_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The signer's certificate (PEM); default: the instance's report-signing certificate.",
)
@click.option(
    "--tsa-cert",
    "tsa_cert_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The TSA's certificate (PEM); default: DTX_TSA_CERT when set.",
)
def verify(file: Path, cert_path: Path | None, tsa_cert_path: Path | None) -> None:
    """Check FILE's signature: intact, by the certificate, covering the whole file, time-stamp.

    Exit status 0 when the signature is valid, 1 otherwise (altered, another signer, unsigned,
    not a PDF), 2 on a usage error.
    """
    from dtx_trials.report_signing import ReportSigningError, read_certificate, verify_report

    try:
        if cert_path is None:
            _, cert, config = _config_paths()
            if not cert.exists():
                raise ReportSigningError(
                    f"no certificate at {cert}: pass --cert, or run `dtx report init-key`")
            cert_path = cert
            if tsa_cert_path is None and config.get("TSA_CERT"):
                tsa_cert_path = Path(str(config["TSA_CERT"]))
        certificate = read_certificate(cert_path)
        tsa = read_certificate(tsa_cert_path) if tsa_cert_path else None
    except ReportSigningError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    verdict = verify_report(file.read_bytes(), certificate, tsa)
    if verdict.status == "not_pdf":
        console.print(f"{file}: NOT A PDF: {verdict.messages[0]}")
        sys.exit(1)
    if verdict.status == "unsigned":
        console.print(f"{file}: UNSIGNED: {verdict.messages[0]} (only final reports are signed)")
        sys.exit(1)
    head = "VALID" if verdict.ok else "INVALID"
    signed = f" at {verdict.signed_at:%Y-%m-%dT%H:%M:%SZ}" if verdict.signed_at else ""
    stamped = (f", time-stamped {verdict.timestamped_at:%Y-%m-%dT%H:%M:%SZ}"
               if verdict.timestamped_at else ", no time-stamp")
    console.print(f"{file}: {head} signature by {verdict.signer}{signed}{stamped}"
                  if verdict.signer else f"{file}: {head}")
    for message in verdict.messages:
        console.print(f"  FAIL: {message}")
    for note in verdict.notes:
        console.print(f"  note: {note}")
    if verdict.pdf_sha256:
        console.print(f"  file SHA-256 {verdict.pdf_sha256}")
    if verdict.signature_sha256:
        console.print(f"  signature SHA-256 {verdict.signature_sha256}")
    sys.exit(0 if verdict.ok else 1)
