"""PAdES signatures of final statistical reports (pyHanko), and their verification.

A final report (unblinded, every record locked) is signed with the instance's report-signing
key: an ECDSA P-256 key and its X.509 certificate in PEM files outside the database
(``dtx report init-key`` writes a self-signed pair; a certificate issued by the sponsor's CA
works the same). The signature is an invisible ``/ETSI.CAdES.detached`` signature field whose
CMS pyHanko builds (PAdES baseline: signing-certificate-v2 attribute, signing time in ``/M``)
and, when ``DTX_TSA_URL``/``DTX_TSA_CERT`` are set, a signature time-stamp from that RFC 3161
TSA (the anchors' TSA, `dtx_trials.anchors`).

The report stays linearized (PDF-14): the signature dictionary is placed with a zero-filled
``/Contents`` before the file is linearized, and the CMS is written into it in place, so the
signature covers the whole file and no incremental update follows (an incremental update
would end "fast web view"). `verify_report` checks integrity, the signer's certificate
against the given one, coverage of the whole file and the time-stamp, with pyHanko.
"""

from __future__ import annotations

import asyncio
import binascii
import datetime
import hashlib
import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pikepdf
from asn1crypto import cms, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.general import SigningError
from pyhanko.sign.signers import SimpleSigner
from pyhanko.sign.timestamps import TimeStamper
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.errors import SignatureValidationError
from pyhanko_certvalidator import ValidationContext

from dtx_trials.anchors import TimestampError, post_timestamp_query, verify_timestamp

FIELD_NAME = "ReportSignature"
SUBFILTER = "/ETSI.CAdES.detached"
#: room reserved for the CMS (certificate, signed attributes, time-stamp token with the TSA's
#: certificate): 16 KiB, written as 32 KiB of hex
CONTENTS_BYTES = 16384
_PLACEHOLDER = 9_999_999_999  # ten digits: any real offset fits in the byte range's text
# pyHanko logs each untrusted certificate with a traceback; the verdict says it in one line
logging.getLogger("pyhanko").setLevel(logging.CRITICAL)
logging.getLogger("pyhanko_certvalidator").setLevel(logging.CRITICAL)


class ReportSigningError(RuntimeError):
    """A report could not be signed (key, certificate, TSA or PDF problem)."""


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def certificate_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def generate_report_key(
    key_path: Path, cert_path: Path, common_name: str, *, days: int = 3650
) -> x509.Certificate:
    """Write a new ECDSA P-256 key (PEM, mode 0600) and a self-signed certificate for it.

    Neither file may exist already (a signing key is never silently replaced).
    """
    for path in (key_path, cert_path):
        if path.exists():
            raise ReportSigningError(f"{path} exists; a report-signing key is never replaced")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,  # non-repudiation: a signature on a document
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(key_path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def read_certificate(path: str | Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ReportSigningError(f"cannot read the certificate {path}: {exc}") from exc


@dataclass(frozen=True)
class ReportSigner:
    """The instance's report-signing key and certificate, and the TSA if one is configured."""

    key_path: Path
    cert_path: Path
    tsa_url: str | None = None
    tsa_cert_path: Path | None = None

    @property
    def certificate(self) -> x509.Certificate:
        return read_certificate(self.cert_path)

    def describe(self) -> str:
        """The signer as the report's title page names it: subject and certificate hash."""
        cert = self.certificate
        return f"{_common_name(cert)} (certificate SHA-256 {certificate_sha256(cert)})"


def configured_signer(config: dict[str, object], instance_path: str) -> ReportSigner | None:
    """The signer from ``REPORT_SIGNING_KEY``/``REPORT_SIGNING_CERT`` (default, outside tests:
    instance/report-signing.key and .crt when both exist) and ``TSA_URL``/``TSA_CERT``."""
    key, cert = config.get("REPORT_SIGNING_KEY"), config.get("REPORT_SIGNING_CERT")
    if key is None and cert is None and not config.get("TESTING"):
        key_default, cert_default = report_key_paths(instance_path)
        if key_default.exists() and cert_default.exists():
            key, cert = key_default, cert_default
    if not key or not cert:
        if key or cert:
            raise ReportSigningError(
                "set both DTX_REPORT_SIGNING_KEY and DTX_REPORT_SIGNING_CERT (or neither)"
            )
        return None
    tsa_url, tsa_cert = config.get("TSA_URL"), config.get("TSA_CERT")
    return ReportSigner(
        Path(str(key)),
        Path(str(cert)),
        str(tsa_url) if tsa_url and tsa_cert else None,
        Path(str(tsa_cert)) if tsa_cert else None,
    )


def report_key_paths(instance_path: str) -> tuple[Path, Path]:
    instance = Path(instance_path)
    return instance / "report-signing.key", instance / "report-signing.crt"


class _TsaStamper(TimeStamper):
    """pyHanko's time-stamper over the anchors' HTTP client (same TSA, same settings)."""

    def __init__(self, url: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.url = url

    async def async_request_tsa_response(self, req: tsp.TimeStampReq) -> tsp.TimeStampResp:
        body = await asyncio.to_thread(post_timestamp_query, self.url, req.dump())
        return tsp.TimeStampResp.load(body)


@dataclass(frozen=True)
class SignedReport:
    pdf: bytes
    pdf_sha256: str
    signature_sha256: str  # of the CMS (DER), as /Contents holds it
    certificate_sha256: str
    timestamped_at: datetime.datetime | None


def _with_placeholder(pdf: bytes, signed_at: datetime.datetime, reason: str) -> bytes:
    """Add an invisible signature field with a zero-filled /Contents; save linearized."""
    out = io.BytesIO()
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        when = "D:" + signed_at.astimezone(datetime.UTC).strftime("%Y%m%d%H%M%S") + "Z"
        signature = doc.make_indirect(
            pikepdf.Dictionary(
                Type=pikepdf.Name.Sig,
                Filter=pikepdf.Name("/Adobe.PPKLite"),
                SubFilter=pikepdf.Name(SUBFILTER),
                ByteRange=pikepdf.Array([0, _PLACEHOLDER, _PLACEHOLDER, _PLACEHOLDER]),
                Contents=pikepdf.String(b"\0" * CONTENTS_BYTES),
                M=pikepdf.String(when),
                Reason=pikepdf.String(reason),
            )
        )
        page = doc.pages[0]
        widget = doc.make_indirect(
            pikepdf.Dictionary(
                Type=pikepdf.Name.Annot,
                Subtype=pikepdf.Name.Widget,
                FT=pikepdf.Name.Sig,
                T=pikepdf.String(FIELD_NAME),
                V=signature,
                F=132,  # print + locked; zero-size rectangle: invisible
                Rect=pikepdf.Array([0, 0, 0, 0]),
                P=page.obj,
            )
        )
        page.obj.Annots = pikepdf.Array([*page.obj.get("/Annots", []), widget])
        doc.Root.AcroForm = pikepdf.Dictionary(Fields=pikepdf.Array([widget]), SigFlags=3)
        # the signature dictionary must stay a plain object: /Contents is found in the bytes
        doc.save(
            out,
            linearize=True,
            min_version="1.4",
            deterministic_id=True,
            object_stream_mode=pikepdf.ObjectStreamMode.disable,
        )
    return out.getvalue()


def sign_report(
    pdf: bytes, signer: ReportSigner, *, signed_at: datetime.datetime, reason: str
) -> SignedReport:
    """Return ``pdf`` signed (PAdES) by ``signer``, time-stamped if it names a TSA."""
    try:
        key = SimpleSigner.load(  # type: ignore[no-untyped-call]
            str(signer.key_path), str(signer.cert_path)
        )
    except (OSError, ValueError) as exc:
        raise ReportSigningError(f"cannot load the report-signing key: {exc}") from exc
    if key is None:
        raise ReportSigningError(f"cannot load the report-signing key {signer.key_path}")
    data = bytearray(_with_placeholder(pdf, signed_at, reason))
    byte_range = re.search(rb"/ByteRange *\[ *0 +(9999999999 +){2}9999999999 *\]", data)
    contents = re.search(rb"<(?:00){%d}>" % CONTENTS_BYTES, data)
    if byte_range is None or contents is None:
        raise ReportSigningError("the signature placeholder was not found in the saved PDF")
    start, end = contents.start(), contents.end()
    text = b"/ByteRange [0 %d %d %d]" % (start, end, len(data) - end)
    data[byte_range.start() : byte_range.end()] = text.ljust(byte_range.end() - byte_range.start())
    digest = hashlib.sha256(bytes(data[:start]) + bytes(data[end:])).digest()
    stamper = _TsaStamper(signer.tsa_url) if signer.tsa_url else None
    try:
        signed_cms = asyncio.run(
            key.async_sign(digest, "sha256", use_pades=True, timestamper=stamper)
        )
    except (SigningError, TimestampError, OSError, ValueError) as exc:
        raise ReportSigningError(f"signing failed: {exc}") from exc
    der = signed_cms.dump()
    stamped_at = _check_timestamp(signed_cms, signer)
    encoded = binascii.hexlify(der)
    if len(encoded) > 2 * CONTENTS_BYTES:
        raise ReportSigningError(f"the signature ({len(der)} bytes) exceeds the reserved room")
    data[start + 1 : end - 1] = encoded.ljust(2 * CONTENTS_BYTES, b"0")
    out = bytes(data)
    return SignedReport(
        pdf=out,
        pdf_sha256=hashlib.sha256(out).hexdigest(),
        signature_sha256=hashlib.sha256(der).hexdigest(),
        certificate_sha256=certificate_sha256(signer.certificate),
        timestamped_at=stamped_at,
    )


def _timestamp_token(signed_cms: cms.ContentInfo) -> tuple[bytes, bytes] | None:
    """(token DER, signature value it stamps) of the signature time-stamp, if any."""
    signer_info = signed_cms["content"]["signer_infos"][0]
    for attribute in signer_info["unsigned_attrs"] or ():
        if attribute["type"].native == "signature_time_stamp_token":
            return attribute["values"][0].dump(), signer_info["signature"].native
    return None


def _check_timestamp(signed_cms: cms.ContentInfo, signer: ReportSigner) -> datetime.datetime | None:
    """The TSA's time, after checking its token against the pinned TSA certificate."""
    if signer.tsa_url is None or signer.tsa_cert_path is None:
        return None
    found = _timestamp_token(signed_cms)
    if found is None:
        raise ReportSigningError("the TSA is configured but the signature has no time-stamp")
    try:
        info = verify_timestamp(found[0], found[1], read_certificate(signer.tsa_cert_path))
    except TimestampError as exc:
        raise ReportSigningError(f"time-stamp: {exc}") from exc
    return info.gen_time


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verdict:
    """`verify_report`'s answer: ``status`` is valid, invalid, unsigned or not_pdf."""

    status: str
    messages: tuple[str, ...]  # why it is not valid (empty when it is)
    notes: tuple[str, ...] = ()  # what was not checked
    signer: str | None = None
    signed_at: datetime.datetime | None = None
    timestamped_at: datetime.datetime | None = None
    pdf_sha256: str | None = None
    signature_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "valid"


def verify_report(
    data: bytes, certificate: x509.Certificate, tsa_certificate: x509.Certificate | None = None
) -> Verdict:
    """Check a signed report: one signature, intact and cryptographically valid, made with
    ``certificate``'s key (or a certificate it issued), covering the whole file, and its
    time-stamp (if any) intact and, given ``tsa_certificate``, from that TSA."""
    sha = hashlib.sha256(data).hexdigest()
    if not data.startswith(b"%PDF-"):
        return Verdict("not_pdf", ("not a PDF file (no %PDF- header)",), pdf_sha256=sha)
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        signatures = reader.embedded_signatures
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        return Verdict("invalid", (f"not a readable PDF: {exc}",), pdf_sha256=sha)
    if not signatures:
        return Verdict("unsigned", ("the PDF carries no signature",), pdf_sha256=sha)
    if len(signatures) != 1:
        return Verdict("invalid", (f"{len(signatures)} signatures; a report has one",),
                       pdf_sha256=sha)
    embedded = signatures[0]
    trust = ValidationContext(
        trust_roots=[_asn1(certificate)], allow_fetching=False, revocation_mode="soft-fail"
    )
    tsa_trust = ValidationContext(
        trust_roots=[_asn1(tsa_certificate)] if tsa_certificate else [],
        allow_fetching=False,
        revocation_mode="soft-fail",
    )
    try:
        status = validate_pdf_signature(embedded, trust, tsa_trust)
        raw = embedded.pkcs7_content
        der = cms.ContentInfo.load(raw).dump()  # /Contents less its zero padding
        signature_sha = hashlib.sha256(der).hexdigest()
    except (PdfError, SignatureValidationError, ValueError, KeyError, TypeError) as exc:
        return Verdict("invalid", (f"the signature cannot be validated: {exc}",), pdf_sha256=sha)
    problems: list[str] = []
    notes: list[str] = []
    cert = status.signing_cert
    signer = f"{cert.subject.human_friendly} (certificate SHA-256 {cert.sha256.hex()})"
    if embedded.sig_object.get("/SubFilter") != SUBFILTER:
        subfilter = embedded.sig_object.get("/SubFilter")
        problems.append(f"not a PAdES signature (SubFilter {subfilter})")
    if not status.intact:
        problems.append("the document was altered after signing (digest mismatch)")
    elif not status.valid:
        problems.append("the signature value does not verify")
    elif raw[len(der):].strip(b"\0"):
        # /Contents is outside the signed byte range: its padding must stay zeros
        problems.append("the signature's reserved space was altered after signing")
    elif not status.trusted:
        problems.append(
            f"signed by {signer}, not by the given certificate "
            f"(SHA-256 {certificate_sha256(certificate)})"
        )
    if status.coverage is None or status.coverage.name != "ENTIRE_FILE":
        problems.append("the signature does not cover the whole file (content added after it)")
    stamped_at = None
    stamp = status.timestamp_validity
    if stamp is not None:
        stamped_at = stamp.timestamp
        if not (stamp.intact and stamp.valid):
            problems.append("the time-stamp token does not verify")
        elif tsa_certificate is None:
            notes.append("time-stamp intact; its TSA was not checked (no TSA certificate given)")
        elif not stamp.trusted:
            problems.append("the time-stamp is not from the given TSA certificate")
    return Verdict(
        "invalid" if problems else "valid",
        tuple(problems),
        tuple(notes),
        signer=signer,
        signed_at=embedded.self_reported_timestamp,
        timestamped_at=stamped_at,
        pdf_sha256=sha,
        signature_sha256=signature_sha,
    )


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
