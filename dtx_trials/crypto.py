"""Encryption of direct identifiers at rest (AES-256-GCM) and keyed fingerprints for the trail.

The key comes from ``DTX_FIELD_KEY`` (urlsafe base64 of 32 bytes). Ciphertext layout:
``b"\\x01" + nonce(12) + AES-GCM(ciphertext || tag)``, with the column name as associated data
so a value copied into another column does not decrypt. The audit trail never holds an
identifier, only ``HMAC-SHA256(fingerprint key, column || value)`` ("sealed" values), which lets
``dtx audit verify`` compare the current row with the trail without revealing the value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import LargeBinary
from sqlalchemy.types import TypeDecorator

_VERSION = b"\x01"


class FieldKeyError(RuntimeError):
    """The field key is missing or malformed."""


class FieldCipher:
    def __init__(self, key_b64: str) -> None:
        try:
            key = base64.urlsafe_b64decode(key_b64.encode())
        except (ValueError, TypeError) as exc:
            raise FieldKeyError("DTX_FIELD_KEY is not valid base64") from exc
        if len(key) != 32:
            raise FieldKeyError("DTX_FIELD_KEY must decode to 32 bytes")
        self._aead = AESGCM(hashlib.sha256(b"dtx-field-enc|" + key).digest())
        self._mac_key = hashlib.sha256(b"dtx-field-mac|" + key).digest()

    def encrypt(self, plaintext: str, column: str) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), column.encode())

    def decrypt(self, blob: bytes, column: str) -> str:
        if blob[:1] != _VERSION:
            raise FieldKeyError("unknown ciphertext version")
        return self._aead.decrypt(blob[1:13], blob[13:], column.encode()).decode()

    def seal(self, value: str, column: str) -> str:
        digest = hmac.new(self._mac_key, f"{column}\x00{value}".encode(), hashlib.sha256)
        return "hmac:" + digest.hexdigest()


_cipher: FieldCipher | None = None


def configure(key_b64: str) -> None:
    """Install the process-wide cipher (called by the app factory)."""
    global _cipher
    _cipher = FieldCipher(key_b64)


def cipher() -> FieldCipher:
    if _cipher is None:
        raise FieldKeyError("field encryption is not configured (set DTX_FIELD_KEY)")
    return _cipher


def generate_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


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
