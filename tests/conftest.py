"""Shared fixtures. Database tests run once per backend: SQLite always, PostgreSQL when
TEST_DATABASE_URL is set (under CI=true a missing PostgreSQL is a failure, not a skip).

Each backend gets a fresh database migrated with Alembic once per session; every test then
starts from empty tables (rows are deleted after each test, audit trigger bypassed), so services
run with their real commits and real locks.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from dtx_trials import create_app
from dtx_trials.db import Base
from dtx_trials.extensions import db
from tests import IN_CI, absent

# Property tests check behaviour, not speed: no per-example deadline (CI machines are shared).
settings.register_profile("dtx", deadline=None)
settings.load_profile("dtx")

FIELD_KEY = base64.urlsafe_b64encode(b"k" * 32).decode()


def _require_postgres() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        absent("PostgreSQL tests need TEST_DATABASE_URL")
    return url


def create_postgres_database(base_url: str) -> tuple[str, str]:
    """Create an empty database beside TEST_DATABASE_URL's; return (url, name)."""
    name = f"dtx_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        if IN_CI:
            raise
        pytest.skip(f"PostgreSQL unreachable: {type(exc).__name__}")
    finally:
        admin.dispose()
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    return url, name


def drop_postgres_database(base_url: str, name: str) -> None:
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def make_test_app(url: str, **extra: Any) -> Flask:
    return create_app(app_config(url, **extra))


def app_config(url: str, **extra: Any) -> dict[str, Any]:
    """The test app's configuration on the database at `url`."""
    return {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": url,
        "FIELD_KEY": FIELD_KEY,
        "SECRET_KEY": "test-secret",
        # still argon2id, at a cost that keeps hundreds of logins in the suite fast
        "ARGON2_TIME_COST": 1,
        "ARGON2_MEMORY_KIB": 1024,
        **extra,
    }


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A freshly created, empty database for one backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite'}"
        return
    base = _require_postgres()
    url, name = create_postgres_database(base)
    try:
        yield url
    finally:
        drop_postgres_database(base, name)


@pytest.fixture(scope="session")
def migrated_app(database_url: str) -> Iterator[Flask]:
    from flask_migrate import upgrade

    app = make_test_app(database_url)
    with app.app_context():
        upgrade()
    yield app
    with app.app_context():
        db.engine.dispose()


def _clean(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        with db.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SET LOCAL session_replication_role = replica"))
            else:
                conn.execute(text("PRAGMA defer_foreign_keys = ON"))
            conn.execute(text("UPDATE trial SET active_protocol_version_id = NULL"))
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture
def app(migrated_app: Flask) -> Iterator[Flask]:
    """The application on a migrated database with empty tables."""
    with migrated_app.app_context():
        yield migrated_app
        db.session.remove()
    _clean(migrated_app)


@pytest.fixture
def cached_tokens(app: Flask) -> Iterator[None]:
    """API tokens stay in the process's cache for the test (an hour, not TOKEN_CACHE_SECONDS'
    2 s): a test that counts a request's statements counts the request's own, however slow the
    machine (an entry that aged past 2 s between two requests added the token's read)."""
    from dtx_trials.services import accounts

    cache = accounts.token_cache()
    lifetime, cache.seconds = cache.seconds, 3600.0
    try:
        yield
    finally:
        cache.seconds = lifetime
        cache.clear()


@pytest.fixture
def backend(app: Flask) -> str:
    return db.engine.dialect.name


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
