"""Alembic environment: the models' metadata is the target; run inside the Flask app context."""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

config = context.config
if config.config_file_name is not None and not logging.getLogger().handlers:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

db = current_app.extensions["migrate"].db
target_metadata = db.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave out of the model comparison the monthly partitions of device_observation
    (PostgreSQL): tables the maintenance command creates, not models."""
    from dtx_trials.services.device_partitions import PARTITION_NAME

    return not (type_ == "table" and name is not None and PARTITION_NAME.match(name))


def run_migrations_offline() -> None:
    context.configure(url=str(db.engine.url), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True, compare_type=True,
                      include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = db.engine
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_name=include_name,
            **current_app.extensions["migrate"].configure_args,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
