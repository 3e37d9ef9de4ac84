"""dtx-trials Flask application: the imperative shell around the four pure cores."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter

from dtx_trials import crypto, edge
from dtx_trials.config import DefaultConfig, database_url_from_env, normalise_database_url
from dtx_trials.extensions import db, migrate

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


def instance_path_from_env() -> str:
    return os.environ.get("DTX_INSTANCE_PATH") or str(
        Path(__file__).resolve().parent.parent / "instance"
    )


def ensure_instance_secrets(instance_path: str) -> None:
    """Create instance/ with a field-encryption key, a session secret and an anchor signing key
    if absent (development; production keeps them in a secret store or an HSM)."""
    path = Path(instance_path)
    path.mkdir(parents=True, exist_ok=True)
    for name, make in (("field.key", crypto.generate_key), ("secret.key", crypto.generate_key)):
        target = path / name
        if not target.exists():
            target.write_text(make() + "\n")
            target.chmod(0o600)
    if not (path / "anchor-signing.key").exists():
        from dtx_trials.anchors import generate_signing_key

        generate_signing_key(path / "anchor-signing.key")


def _read_secret(instance_path: str, name: str) -> str | None:
    target = Path(instance_path) / name
    return target.read_text().strip() if target.exists() else None


class RowIdConverter(IntegerConverter):
    """``<int:...>`` in every route is a row id: 0..2**63 - 1, so a larger number is a 404
    instead of an overflow in the database driver."""

    def __init__(self, url_map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**63 - 1)
        super().__init__(url_map, *args, **kwargs)


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the application: config, database, API, pages, CLI."""
    app = Flask(__name__, instance_path=instance_path_from_env())
    app.config.from_object(DefaultConfig)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url_from_env(app.instance_path)
    app.config.from_prefixed_env("DTX")
    app.config.update(overrides or {})
    app.config["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(
        app.config["SQLALCHEMY_DATABASE_URI"]
    )
    app.config["FIELD_KEY"] = app.config.get("FIELD_KEY") or _read_secret(
        app.instance_path, "field.key"
    )
    app.config["SECRET_KEY"] = app.config.get("SECRET_KEY") or _read_secret(
        app.instance_path, "secret.key"
    )
    if not app.config["FIELD_KEY"]:
        raise crypto.FieldKeyError(
            "DTX_FIELD_KEY is not set and instance/field.key does not exist; "
            "run `dtx bootstrap` or set DTX_FIELD_KEY"
        )
    from dtx_trials import trust

    trust.configure_keys(app)

    from dtx_trials import models  # noqa: F401  (register tables)

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True, compare_type=True)

    from dtx_trials.api import register_api
    from dtx_trials.web import register_web

    app.url_map.converters["int"] = RowIdConverter
    trust.init_app(app)  # key check (refuses a wrong key), request guard, anchoring
    from dtx_trials.services import accounts

    accounts.init_app(app)  # its own password hasher and token cache
    register_api(app)
    register_web(app)
    edge.init_app(app)
    return app
