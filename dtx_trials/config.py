"""Configuration defaults; the environment is read in the factory, never at import time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar


class DefaultConfig:
    """Settings a development instance runs with; each may be overridden by `DTX_*` variables."""

    SECRET_KEY: str | None = None
    SQLALCHEMY_DATABASE_URI: str | None = None
    FIELD_KEY: str | None = None
    FIELD_KEYS_RETIRED: str | None = None  # earlier keys, read/verify only (after a rotation)
    KEY_CHECK_AT_START = True
    # anchors (services/checkpoints.py): store, signing key, trusted public keys, RFC 3161 TSA
    ANCHOR_DIR: str | None = None
    ANCHOR_SIGNING_KEY: str | None = None
    ANCHOR_PUBLIC_KEYS: str | None = None
    ANCHOR_EVERY_EVENTS = 1000
    ANCHOR_EVERY_MINUTES = 60
    TSA_URL: str | None = None
    TSA_CERT: str | None = None
    # final reports are signed (PAdES) with this key and certificate (PEM files; default outside
    # tests: instance/report-signing.key and .crt, written by `dtx report init-key`); the TSA
    # above time-stamps the signature when both TSA settings are set
    REPORT_SIGNING_KEY: str | None = None
    REPORT_SIGNING_CERT: str | None = None
    QUEUE_URL: str | None = None
    # the RQ queue's name: instances (or test runs) sharing one Redis database keep apart
    QUEUE_NAME: str = "dtx"
    # Notification channels (dtx_trials/channels.py): e-mail when SMTP_HOST is set, SMS when
    # SMS_PROVIDER names a provider factory; messages of a channel left unset stay pending.
    SMTP_HOST: str | None = None
    SMTP_PORT = 25
    SMTP_SENDER: str | None = None
    SMTP_USERNAME: str | None = None
    SMTP_PASSWORD: str | None = None
    SMTP_SECURITY = "none"  # none | starttls | tls
    SMS_PROVIDER: str | None = None
    # the address participants reach this server at (links sent by `dtx epro tick`)
    PUBLIC_URL = "http://localhost:5000"
    ENV_NAME = "development"
    SESSION_COOKIE_NAME = "dtx_session"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    SESSION_IDLE_MINUTES = 30
    SESSION_MAX_HOURS = 12
    TOKEN_HOURS = 12
    # how long a worker process reuses a token's actor without reading the database again;
    # a revocation elsewhere is refused by every process within this time (0: no cache)
    TOKEN_CACHE_SECONDS = 2.0
    # the DTx app: a participant's token (redeemed once from the activation code) lasts this
    # many days; a service token (client credentials) this many minutes
    APP_TOKEN_DAYS = 365
    SERVICE_TOKEN_MINUTES = 60
    LOCKOUT_THRESHOLD = 5
    LOCKOUT_MINUTES = 15
    PASSWORD_MIN_LENGTH = 12
    ARGON2_TIME_COST = 3  # argon2id, OWASP's 64 MiB / t=3 profile
    ARGON2_MEMORY_KIB = 65536
    MAX_CONTENT_LENGTH = 32 * 1024 * 1024
    API_TITLE = "dtx-trials"
    API_VERSION = "v1"
    OPENAPI_VERSION = "3.0.3"
    OPENAPI_URL_PREFIX = "/api/v1"
    OPENAPI_JSON_PATH = "openapi.json"
    API_SPEC_OPTIONS: ClassVar[dict[str, Any]] = {
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


def database_url_from_env(instance_path: str) -> str:
    """Return the SQLAlchemy URL: `DATABASE_URL` if set, else SQLite under instance/."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        return f"sqlite:///{Path(instance_path) / 'dtx.sqlite'}"
    return normalise_database_url(url)


def normalise_database_url(url: str) -> str:
    """Use psycopg 3 for plain `postgres://` / `postgresql://` URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url
