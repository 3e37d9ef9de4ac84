"""Signed final reports (issue #19 item 6): a PAdES signature by the instance's report-signing
key, time-stamped by the configured TSA, checked by `dtx report verify`. The analysis service's
part (final reports signed, interim ones not, hashes in the audit trail, both databases) is in
test_analyses.py; the PDF checks on a signed file in tests/analysis/report."""

from __future__ import annotations

import datetime
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pikepdf
import pytest
from click.testing import CliRunner
from pypdf import PdfReader

from analysis.report import build_report
from dtx_trials.cli.report import report as report_cli
from dtx_trials.report_signing import (
    ReportSigner,
    SignedReport,
    generate_report_key,
    read_certificate,
    sign_report,
    verify_report,
)
from tests.analysis.report.report_samples import make_spec
from tests.dtx_trials.tsa_server import running_tsa

SIGNED_AT = datetime.datetime(2026, 12, 1, 9, 30, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The instance's key pair, another signer's, and the test TSA's certificate."""
    folder = tmp_path_factory.mktemp("report-keys")
    generate_report_key(folder / "report.key", folder / "report.crt", "dtx test report signing")
    generate_report_key(folder / "other.key", folder / "other.crt", "someone else")
    return folder


@pytest.fixture(scope="module")
def unsigned() -> bytes:
    return build_report(make_spec())


@pytest.fixture(scope="module")
def signed(keys: Path, unsigned: bytes) -> Iterator[tuple[SignedReport, Path]]:
    with running_tsa() as (url, tsa_pem):
        (keys / "tsa.crt").write_bytes(tsa_pem)
        signer = ReportSigner(keys / "report.key", keys / "report.crt", url, keys / "tsa.crt")
        yield sign_report(unsigned, signer, signed_at=SIGNED_AT, reason="test"), keys / "tsa.crt"


def test_sign_and_verify_with_time_stamp(signed: tuple[SignedReport, Path], keys: Path) -> None:
    result, tsa_cert = signed
    verdict = verify_report(result.pdf, read_certificate(keys / "report.crt"),
                            read_certificate(tsa_cert))
    assert verdict.ok, verdict.messages
    assert verdict.messages == ()
    assert verdict.pdf_sha256 == result.pdf_sha256 == hashlib.sha256(result.pdf).hexdigest()
    assert verdict.signature_sha256 == result.signature_sha256
    assert verdict.signed_at == SIGNED_AT
    assert result.timestamped_at is not None and verdict.timestamped_at is not None
    assert "dtx test report signing" in (verdict.signer or "")
    # without the TSA's certificate the stamp is checked for integrity only, and says so
    loose = verify_report(result.pdf, read_certificate(keys / "report.crt"))
    assert loose.ok and loose.messages == () and "TSA was not checked" in loose.notes[0]


def test_pdf_14_signed_report_stays_linearized_and_one_revision(
    signed: tuple[SignedReport, Path], unsigned: bytes
) -> None:
    """The signature is written in place (no incremental update): still "fast web view"."""
    result, _ = signed
    with pikepdf.open(io.BytesIO(result.pdf)) as pdf:
        assert pdf.is_linearized
        report = io.StringIO()
        assert pdf.check_linearization(report), report.getvalue()
        assert pdf.pdf_version == "1.4"
        widgets = [a for p in pdf.pages for a in p.get("/Annots", [])
                   if a.Subtype == pikepdf.Name.Widget]
        assert len(widgets) == 1 and pikepdf.Name.Sig == widgets[0].FT
        assert [float(v) for v in widgets[0].Rect] == [0, 0, 0, 0]  # invisible
    assert result.pdf.count(b"%%EOF") == unsigned.count(b"%%EOF")
    pages = [p.extract_text() for p in PdfReader(io.BytesIO(result.pdf)).pages]
    assert len(pages) == len(PdfReader(io.BytesIO(unsigned)).pages)


@pytest.mark.parametrize("where", ["signed range", "signature padding", "signature value"])
def test_sig_02_a_flipped_byte_fails_verify(
    signed: tuple[SignedReport, Path], keys: Path, where: str
) -> None:
    result, _ = signed
    data = bytearray(result.pdf)
    start = data.index(b"/Contents <") + len(b"/Contents <")
    offset = {"signed range": len(data) // 2 + 7, "signature padding": start + 30000,
              "signature value": start + 400}[where]
    data[offset] ^= 0x01 if where != "signature padding" else 0x07
    verdict = verify_report(bytes(data), read_certificate(keys / "report.crt"))
    assert verdict.status == "invalid", (where, verdict)


def test_sig_02_signed_by_another_key_fails_against_the_instance_certificate(
    keys: Path, unsigned: bytes
) -> None:
    other = ReportSigner(keys / "other.key", keys / "other.crt")
    result = sign_report(unsigned, other, signed_at=SIGNED_AT, reason="test")
    assert result.timestamped_at is None  # no TSA configured: no stamp
    verdict = verify_report(result.pdf, read_certificate(keys / "report.crt"))
    assert verdict.status == "invalid"
    assert any("someone else" in m and "not by the given certificate" in m
               for m in verdict.messages)
    assert verify_report(result.pdf, read_certificate(keys / "other.crt")).ok


def test_appended_revision_is_not_covered(signed: tuple[SignedReport, Path], keys: Path) -> None:
    result, _ = signed
    with pikepdf.open(io.BytesIO(result.pdf)) as pdf:
        pdf.docinfo["/Title"] = "changed"
        out = io.BytesIO()
        pdf.save(out)  # a rewrite keeps the signature dictionary but not the signed bytes
    verdict = verify_report(out.getvalue(), read_certificate(keys / "report.crt"))
    assert verdict.status == "invalid"


def test_dtx_report_verify_verdicts_and_exit_codes(
    signed: tuple[SignedReport, Path], keys: Path, unsigned: bytes, tmp_path: Path
) -> None:
    result, tsa_cert = signed
    (tmp_path / "signed.pdf").write_bytes(result.pdf)
    (tmp_path / "unsigned.pdf").write_bytes(unsigned)
    (tmp_path / "notes.txt").write_text("not a report")
    flipped = bytearray(result.pdf)
    flipped[len(flipped) // 2] ^= 1
    (tmp_path / "flipped.pdf").write_bytes(bytes(flipped))
    runner = CliRunner()
    cert = ["--cert", str(keys / "report.crt")]

    def run(name: str, *extra: str) -> tuple[int, str]:
        answer = runner.invoke(report_cli, ["verify", str(tmp_path / name), *cert, *extra])
        return answer.exit_code, answer.output

    code, output = run("signed.pdf", "--tsa-cert", str(tsa_cert))
    assert code == 0 and "VALID signature by" in output and "time-stamped" in output
    assert result.pdf_sha256 in output and result.signature_sha256 in output
    code, output = run("flipped.pdf")
    assert code == 1 and "INVALID" in output and "altered after signing" in output
    code, output = run("unsigned.pdf")
    assert code == 1 and f"{tmp_path / 'unsigned.pdf'}: UNSIGNED" in output
    code, output = run("notes.txt")
    assert code == 1 and f"{tmp_path / 'notes.txt'}: NOT A PDF" in output
    answer = runner.invoke(report_cli, ["verify", str(tmp_path / "signed.pdf"), "--cert",
                                        str(keys / "other.crt")])
    assert answer.exit_code == 1 and "not by the given certificate" in answer.output


def test_init_key_never_replaces_a_key(keys: Path) -> None:
    from dtx_trials.report_signing import ReportSigningError

    with pytest.raises(ReportSigningError, match="never replaced"):
        generate_report_key(keys / "report.key", keys / "new.crt", "x")
    assert oct((keys / "report.key").stat().st_mode)[-3:] == "600"
