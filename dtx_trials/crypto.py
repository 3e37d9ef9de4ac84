"""Field encryption, sealed values and the audit chain's keyed hash, under a key ring with ids.

Keys. ``DTX_FIELD_KEY`` (urlsafe base64 of 32 bytes) is the *current* key; retired keys (kept
after ``dtx keys rotate`` to read what they sealed) come from ``DTX_FIELD_KEYS_RETIRED``
(comma-separated) or ``instance/field-retired.keys`` (one per line). Every key has an id derived
from it (``k`` + 8 hex digits) and a key-check value (KCV) that the database stores, so a wrong
key is recognised at start-up before anything is written under it (``services/keys.py``).
Three sub-keys are derived from each key: AES-256-GCM for identifiers, HMAC-SHA256 for sealed
values, HMAC-SHA256 for the audit chain.

Formats (each names its key id, so old data stay readable and verifiable after a rotation):

- ciphertext ``b"\\x02" + kid(9 ASCII bytes) + nonce(12) + AES-GCM(ciphertext || tag)`` with the
  column name as associated data (a value copied into another column does not decrypt).
  Version ``\\x01`` (no key id, written before key ids existed) is read with whichever key of
  the ring opens it; ``dtx keys rotate`` rewrites it as version 2.
- sealed value ``s2:<kid>:<salt>:<hex HMAC(salt NUL column NUL value)>``: what the audit trail
  holds instead of an identifier or an arm. The salt (16 random bytes, hex) is new for every
  seal, so two allocations to the same arm, or one phone number in two events or two trials,
  look unrelated to anyone without the key; `seal_matches` still checks a value against it.
  Written before this: ``s1:<kid>:<hex HMAC(column NUL value)>`` (unsalted, linkable) and
  ``hmac:<hex>`` (before key ids, checked against every key of the ring); both still verify,
  and ``dtx keys rotate`` reseals them as ``s2``.
- audit chain: an event's ``hash`` is ``HMAC(chain key of event.key_id, canonical JSON)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import LargeBinary
from sqlalchemy.types import TypeDecorator

_V1 = b"\x01"
_V2 = b"\x02"
_KID_LEN = 9
SEAL_SCHEME = "s2"
_SEAL_SCHEMES = ("s1", "s2")


class FieldKeyError(RuntimeError):
    """The field key is missing, malformed, or not the key the database was written with."""


class UnknownKeyError(FieldKeyError):
    """Data name a key id that is not in the key ring."""


class CiphertextError(ValueError):
    """A stored ciphertext does not open under the key it names (altered, moved or wrong key)."""


def _derive(label: bytes, key: bytes) -> bytes:
    return hashlib.sha256(label + b"|" + key).digest()


def _decode_key(key_b64: str, name: str = "DTX_FIELD_KEY") -> bytes:
    try:
        key = base64.urlsafe_b64decode(key_b64.strip().encode())
    except (ValueError, TypeError) as exc:
        raise FieldKeyError(f"{name} is not valid base64") from exc
    if len(key) != 32:
        raise FieldKeyError(f"{name} must decode to 32 bytes")
    return key


class FieldKey:
    """One 32-byte master key and the sub-keys derived from it."""

    def __init__(self, key_b64: str, name: str = "DTX_FIELD_KEY") -> None:
        key = _decode_key(key_b64, name)
        self.kid = "k" + _derive(b"dtx-key-id", key).hex()[:8]
        self.kcv = hmac.new(_derive(b"dtx-kcv", key), b"dtx key check v1", "sha256").hexdigest()
        self._aead = AESGCM(_derive(b"dtx-field-enc", key))
        self._mac_key = _derive(b"dtx-field-mac", key)
        self._chain_key = _derive(b"dtx-chain-mac", key)
        self._tag_key = _derive(b"dtx-short-tag", key)

    def encrypt(self, plaintext: str, column: str) -> bytes:
        nonce = os.urandom(12)
        return (
            _V2
            + self.kid.encode()
            + nonce
            + self._aead.encrypt(nonce, plaintext.encode(), column.encode())
        )

    def open(self, nonce: bytes, body: bytes, column: str) -> str:
        return self._aead.decrypt(nonce, body, column.encode()).decode()

    def mac_hex(self, value: str, context: str) -> str:
        return hmac.new(self._mac_key, f"{context}\x00{value}".encode(), "sha256").hexdigest()

    def chain_mac(self, data: bytes) -> str:
        return hmac.new(self._chain_key, data, "sha256").hexdigest()

    def chain_hmac(self) -> hmac.HMAC:
        """An HMAC of the chain key with nothing fed yet (fed, copied and finished by the
        audit trail; the digest is `chain_mac` of everything fed)."""
        return hmac.new(self._chain_key, digestmod="sha256")

    def short_tag(self, value: str, context: str) -> str:
        """A 16-bit keyed tag (BLAKE2b): a pointer to a changed column, not a proof."""
        data = f"{context}\x00{value}".encode()
        return hashlib.blake2b(data, key=self._tag_key, digest_size=2).hexdigest()

    def short_tagger(self, context: str) -> Callable[[str], str]:
        """``short_tag`` for one context, with the key and context absorbed once (a bulk ingest
        tags two columns of every row)."""
        base = hashlib.blake2b(f"{context}\x00".encode(), key=self._tag_key, digest_size=2)

        def tag(value: str) -> str:
            h = base.copy()
            h.update(value.encode())
            return h.hexdigest()

        return tag


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    kcv: str
    is_current: bool


class KeyRing:
    """The current key (encrypts and seals) and retired keys (read and verify only)."""

    def __init__(self, current_b64: str, retired_b64: Iterable[str] = ()) -> None:
        self.current = FieldKey(current_b64)
        self._keys = {self.current.kid: self.current}
        for n, text in enumerate(retired_b64, start=1):
            key = FieldKey(text, f"retired key {n}")
            self._keys.setdefault(key.kid, key)

    def key(self, kid: str) -> FieldKey:
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownKeyError(f"key id {kid} is not in the key ring") from None

    def has(self, kid: str) -> bool:
        return kid in self._keys

    def key_infos(self) -> list[KeyInfo]:
        return [KeyInfo(k.kid, k.kcv, k is self.current) for k in self._keys.values()]

    # ---- identifiers

    def encrypt(self, plaintext: str, column: str) -> bytes:
        return self.current.encrypt(plaintext, column)

    def decrypt(self, blob: bytes, column: str) -> str:
        version = blob[:1]
        try:
            if version == _V2:
                kid = blob[1 : 1 + _KID_LEN].decode("ascii", "replace")
                if not self.has(kid):
                    raise CiphertextError(f"{column}: written under key {kid}, not in the key ring")
                start = 1 + _KID_LEN
                return self._keys[kid].open(blob[start : start + 12], blob[start + 12 :], column)
            if version == _V1:
                for key in self._keys.values():
                    try:
                        return key.open(blob[1:13], blob[13:], column)
                    except InvalidTag:
                        continue
                raise InvalidTag
        except InvalidTag:
            raise CiphertextError(
                f"{column}: ciphertext does not open under the key it names "
                "(altered, moved from another column, or written under another key)"
            ) from None
        raise CiphertextError(f"{column}: unknown ciphertext version")

    @staticmethod
    def key_id_of(blob: bytes) -> str | None:
        """The key id a ciphertext names (None for version 1, which names none)."""
        return blob[1 : 1 + _KID_LEN].decode("ascii", "replace") if blob[:1] == _V2 else None

    # ---- sealed values (audit trail)

    def seal(self, value: str, column: str) -> str:
        salt = os.urandom(16).hex()
        mac = self.current.mac_hex(f"{salt}\x00{value}", column)
        return f"{SEAL_SCHEME}:{self.current.kid}:{salt}:{mac}"

    def seal_matches(self, sealed: object, value: str, column: str) -> bool:
        """Whether `sealed` seals `value` (under the key it names; UnknownKeyError if absent)."""
        if not isinstance(sealed, str):
            return False
        if sealed.startswith("hmac:"):
            digest = sealed[5:]
            return any(
                hmac.compare_digest(k.mac_hex(value, column), digest) for k in self._keys.values()
            )
        parts = sealed.split(":")
        if len(parts) == 3 and parts[0] == "s1":
            return hmac.compare_digest(self.key(parts[1]).mac_hex(value, column), parts[2])
        if len(parts) == 4 and parts[0] == "s2" and len(parts[2]) == 32:
            mac = self.key(parts[1]).mac_hex(f"{parts[2]}\x00{value}", column)
            return hmac.compare_digest(mac, parts[3])
        return False

    @staticmethod
    def sealed_key_id(sealed: object) -> str | None:
        """The key id a sealed value names; None for the pre-key-id format and for anything that
        is not the current scheme (``dtx keys rotate`` reseals those)."""
        if isinstance(sealed, str) and sealed.startswith(SEAL_SCHEME + ":"):
            return sealed.split(":")[1]
        return None

    def mac_hex(self, value: str, context: str) -> str:
        """A keyed digest under the current key (short-lived secrets such as one-time codes)."""
        return self.current.mac_hex(value, context)

    # ---- audit chain

    def chain_mac(self, kid: str, data: bytes) -> str:
        return self.key(kid).chain_mac(data)

    def chain_hmac(self, kid: str) -> hmac.HMAC:
        return self.key(kid).chain_hmac()


_ring: KeyRing | None = None


def configure(key_b64: str, retired: Iterable[str] = ()) -> KeyRing | None:
    """Install the process-wide key ring (called by the app factory); return the ring it
    replaced (None: the first), which `restore` puts back."""
    global _ring
    replaced, _ring = _ring, KeyRing(key_b64, retired)
    return replaced


def restore(ring: KeyRing | None, installed: KeyRing) -> None:
    """Reinstall a ring `configure` replaced by `installed`, unless another ring was installed
    since: an app whose key is refused (a wrong key) leaves the process's ring as it found it,
    so another app of the process never writes under the refused key."""
    global _ring
    if _ring is installed:
        _ring = ring


def cipher() -> KeyRing:
    if _ring is None:
        raise FieldKeyError("field encryption is not configured (set DTX_FIELD_KEY)")
    return _ring


def generate_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def split_keys(text: str | None) -> list[str]:
    """Keys listed in a variable or file: separated by commas, spaces or new lines."""
    return [part for part in (text or "").replace(",", " ").split() if part]


class EncryptedText(TypeDecorator[str]):
    """A text column stored as AES-GCM ciphertext; ``column`` is bound as associated data."""

    impl = LargeBinary
    cache_ok = True

    def __init__(self, column: str) -> None:
        super().__init__()
        self.column = column

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        return None if value is None else cipher().encrypt(value, self.column)

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return None if value is None else cipher().decrypt(bytes(value), self.column)
