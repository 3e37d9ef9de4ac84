"""Signed checkpoints of the audit chains, kept outside the database (no database access here).

An anchor is a JSON file: a payload (every chain's head seq and hash, when, why, who signed)
signed with Ed25519 by a key the database never holds, optionally with an RFC 3161 time-stamp
token over the payload from a time-stamping authority (TSA). Anchors go to an append-only store:
`DirectoryStore` creates each file once (``O_EXCL``) and makes it read-only; any store with the
same three methods (e.g. an S3 bucket with object lock in compliance mode) can replace it.
`Signer` is the seam for an HSM or a cloud KMS: `FileSigner` reads an instance key file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from asn1crypto import algos, cms, tsp, x509
from cryptography import x509 as cx509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "dtx-anchor/1"
SUFFIX = ".anchor.json"


class AnchorError(RuntimeError):
    """An anchor could not be written, read or trusted."""


class TimestampError(AnchorError):
    """A time-stamp token is missing, malformed or does not verify."""


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


# ---------------------------------------------------------------- signing


def public_key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer(Protocol):
    """Signs anchor payloads; an HSM or KMS adapter implements the same three members."""

    @property
    def key_id(self) -> str: ...

    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        ...

    def sign(self, data: bytes) -> bytes: ...


class FileSigner:
    """An Ed25519 private key in a PEM (PKCS#8) file on the app host, outside the database."""

    def __init__(self, path: str | Path) -> None:
        try:
            key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise AnchorError(f"cannot read the anchor signing key {path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise AnchorError(f"{path} is not an Ed25519 private key")
        self._key = key
        self._public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def key_id(self) -> str:
        return public_key_id(self._public)

    def public_key(self) -> bytes:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def generate_signing_key(path: str | Path) -> bytes:
    """Write a new Ed25519 private key (PEM, mode 0600); return its raw public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(raw: bytes) -> str:
    return "ed25519:" + base64.b64encode(raw).decode()


def read_public_key(text_or_path: str) -> bytes:
    """A trusted public key: ``ed25519:<base64>``, a PEM public key file, or a file holding the
    ``ed25519:`` form."""
    text = text_or_path.strip()
    if not text.startswith("ed25519:") and Path(text).is_file():
        data = Path(text).read_bytes()
        if b"BEGIN PUBLIC KEY" in data:
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise AnchorError(f"{text} is not an Ed25519 public key")
            return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        text = data.decode().strip()
    if not text.startswith("ed25519:"):
        raise AnchorError(f"not an Ed25519 public key: {text_or_path[:40]!r}")
    raw = base64.b64decode(text[8:])
    if len(raw) != 32:
        raise AnchorError("an Ed25519 public key has 32 bytes")
    return raw


# ---------------------------------------------------------------- stores


class AnchorStore(Protocol):
    """Append-only storage: `put` never replaces an existing name."""

    def put(self, name: str, data: bytes) -> None: ...

    def names(self) -> list[str]: ...

    def get(self, name: str) -> bytes: ...


class DirectoryStore:
    """A directory of write-once files (create-exclusive, fsync'd, then made read-only).

    Mount it from storage the database host cannot rewrite (WORM volume, another host's share,
    a bucket with object lock synchronised from it): the file system is what makes it
    append-only against someone with root on the app host.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def put(self, name: str, data: bytes) -> None:
        if "/" in name or name.startswith("."):
            raise AnchorError(f"bad anchor name {name!r}")
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / name
        try:
            fd = os.open(str(target), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError as exc:
            raise AnchorError(f"anchor {name} already exists; anchors are never replaced") from exc
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        dir_fd = os.open(str(self.path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.iterdir() if p.name.endswith(SUFFIX))

    def get(self, name: str) -> bytes:
        return (self.path / name).read_bytes()


# ---------------------------------------------------------------- RFC 3161 time-stamps

_TIMESTAMPING_EKU = cx509.ObjectIdentifier("1.3.6.1.5.5.7.3.8")


class TimestampAuthority:
    """An RFC 3161 TSA reached over HTTP, whose certificate is pinned (PEM file)."""

    def __init__(self, url: str, cert_pem: bytes, timeout: float = 10.0) -> None:
        self.url = url
        self.cert = cx509.load_pem_x509_certificate(cert_pem)
        self.timeout = timeout

    def stamp(self, data: bytes) -> bytes:
        """Return a verified time-stamp token (DER) over SHA-256(data)."""
        nonce = secrets.randbits(63)
        request = tsp.TimeStampReq(
            {
                "version": "v1",
                "message_imprint": {
                    "hash_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                    "hashed_message": hashlib.sha256(data).digest(),
                },
                "nonce": nonce,
                "cert_req": True,
            }
        ).dump()
        body = post_timestamp_query(self.url, request, self.timeout)
        try:
            response = tsp.TimeStampResp.load(body)
            status = response["status"]["status"].native
            if status not in ("granted", "granted_with_mods"):
                raise TimestampError(f"TSA refused the request: {status}")
            token = response["time_stamp_token"].dump()
        except (ValueError, KeyError, TypeError) as exc:
            raise TimestampError(f"TSA answer is not a time-stamp response: {exc}") from exc
        info = verify_timestamp(token, data, self.cert)
        if info.nonce != nonce:
            raise TimestampError("TSA answered another request (nonce differs)")
        return token


def post_timestamp_query(url: str, request: bytes, timeout: float = 10.0) -> bytes:
    """POST a DER TimeStampReq to the TSA at ``url``; return the raw answer (RFC 3161 §3.4)."""
    if not url.startswith(("http://", "https://")):
        raise TimestampError(f"TSA URL must be http(s): {url}")
    http = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url,
        data=request,
        headers={"Content-Type": "application/timestamp-query"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(http, timeout=timeout) as answer:  # noqa: S310
            return bytes(answer.read())
    except OSError as exc:
        raise TimestampError(f"TSA {url} unreachable: {exc}") from exc


@dataclass(frozen=True)
class TimestampInfo:
    gen_time: datetime
    serial: int
    nonce: int | None


def verify_timestamp(token: bytes, data: bytes, cert: cx509.Certificate) -> TimestampInfo:
    """Check a token (CMS SignedData over a TSTInfo) against `data` and the pinned TSA cert."""
    try:
        content = cms.ContentInfo.load(token)
        signed = content["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise TimestampError("token does not hold a TSTInfo")
        tst_der = encap["content"].contents
        tst = tsp.TSTInfo.load(tst_der)
        signer = signed["signer_infos"][0]
        signed_attrs = signer["signed_attrs"]
        attrs = {a["type"].native: a["values"][0] for a in signed_attrs}
        sid = signer["sid"].chosen
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise TimestampError(f"malformed time-stamp token: {exc}") from exc
    imprint = tst["message_imprint"]
    if imprint["hash_algorithm"]["algorithm"].native != "sha256":
        raise TimestampError("time-stamp imprint is not SHA-256")
    if imprint["hashed_message"].native != hashlib.sha256(data).digest():
        raise TimestampError("time-stamp covers other data")
    if attrs.get("message_digest") is None or (
        attrs["message_digest"].native != hashlib.sha256(tst_der).digest()
    ):
        raise TimestampError("time-stamp signed attributes do not match its content")
    pinned = x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
    if not isinstance(sid, cms.IssuerAndSerialNumber) or (
        sid["serial_number"].native != pinned.serial_number
        or sid["issuer"].dump() != pinned.issuer.dump()
    ):
        raise TimestampError("time-stamp was not signed by the configured TSA certificate")
    try:
        eku = cert.extensions.get_extension_for_class(cx509.ExtendedKeyUsage).value
    except cx509.ExtensionNotFound:
        eku = None
    if eku is None or _TIMESTAMPING_EKU not in eku:
        raise TimestampError("the TSA certificate lacks the timeStamping key usage")
    to_verify = b"\x31" + signed_attrs.dump()[1:]  # signed over as a SET OF, not [0]
    signature = signer["signature"].native
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, to_verify, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, to_verify, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, Ed25519PublicKey):
            key.verify(signature, to_verify)
        else:
            raise TimestampError("unsupported TSA key type")
    except InvalidSignature as exc:
        raise TimestampError("time-stamp signature does not verify") from exc
    return TimestampInfo(
        gen_time=tst["gen_time"].native.astimezone(UTC),
        serial=int(tst["serial_number"].native),
        nonce=tst["nonce"].native,
    )


# ---------------------------------------------------------------- anchors


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str
    trial_code: str | None


@dataclass(frozen=True)
class Anchor:
    name: str
    created_at: datetime
    reason: str
    chains: dict[str, ChainHead]
    key_id: str
    sha256: str  # of the whole file, as the audit event records it
    timestamp: TimestampInfo | None


def build_anchor(
    heads: dict[str, ChainHead],
    *,
    reason: str,
    signer: Signer,
    tsa: TimestampAuthority | None = None,
    now: datetime | None = None,
) -> tuple[str, bytes]:
    """Return (file name, file bytes) of a signed (and, with a TSA, time-stamped) anchor."""
    now = now or datetime.now(UTC)
    name = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{secrets.token_hex(4)}{SUFFIX}"
    payload = {
        "format": FORMAT,
        "anchor": name,
        "created_at": utc_text(now),
        "reason": reason,
        "chains": {
            chain: {"seq": h.seq, "hash": h.hash, "trial_code": h.trial_code}
            for chain, h in sorted(heads.items())
        },
        "signer": {
            "algorithm": "Ed25519",
            "key_id": signer.key_id,
            "public_key": public_key_text(signer.public_key()),
        },
    }
    body = canonical(payload)
    document: dict[str, Any] = {
        "payload": payload,
        "signature": base64.b64encode(signer.sign(body)).decode(),
        "timestamp": None,
    }
    if tsa is not None:
        token = tsa.stamp(body)
        document["timestamp"] = {"tsa": tsa.url, "token": base64.b64encode(token).decode()}
    return name, json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"


def read_anchor(
    name: str,
    data: bytes,
    trusted: dict[str, bytes],
    tsa_cert: cx509.Certificate | None = None,
) -> Anchor:
    """Parse and authenticate an anchor file; AnchorError says why it cannot be trusted."""
    try:
        document = json.loads(data)
        payload = document["payload"]
        signature = base64.b64decode(document["signature"])
        if payload.get("format") != FORMAT:
            raise AnchorError(f"unknown anchor format {payload.get('format')!r}")
        key_id = payload["signer"]["key_id"]
        chains = {
            chain: ChainHead(int(h["seq"]), str(h["hash"]), h.get("trial_code"))
            for chain, h in payload["chains"].items()
        }
        created_at = parse_utc(payload["created_at"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AnchorError(f"{name}: not a readable anchor ({exc})") from exc
    if payload.get("anchor") != name:
        raise AnchorError(f"{name}: the file was renamed (it says {payload.get('anchor')!r})")
    public = trusted.get(key_id)
    if public is None:
        raise AnchorError(f"{name}: signed by key {key_id}, which is not a trusted anchor key")
    body = canonical(payload)
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, body)
    except InvalidSignature as exc:
        raise AnchorError(f"{name}: signature does not verify (anchor altered or forged)") from exc
    stamp: TimestampInfo | None = None
    if document.get("timestamp"):
        if tsa_cert is None:
            raise AnchorError(f"{name}: time-stamped, but no TSA certificate is configured")
        try:
            stamp = verify_timestamp(
                base64.b64decode(document["timestamp"]["token"]), body, tsa_cert
            )
        except TimestampError as exc:
            raise AnchorError(f"{name}: {exc}") from exc
        if abs(stamp.gen_time - created_at) > timedelta(minutes=10):
            raise AnchorError(
                f"{name}: claims {utc_text(created_at)} but was time-stamped at "
                f"{utc_text(stamp.gen_time)} (backdated or forged)"
            )
    elif tsa_cert is not None:
        raise AnchorError(f"{name}: has no time-stamp, but time-stamps are required")
    return Anchor(
        name=name,
        created_at=created_at,
        reason=str(payload.get("reason", "")),
        chains=chains,
        key_id=key_id,
        sha256=hashlib.sha256(data).hexdigest(),
        timestamp=stamp,
    )
