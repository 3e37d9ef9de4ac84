"""`dtx devices partitions --months-ahead 3`: create the monthly partitions of the device
observations ahead of time (PostgreSQL; run it daily from cron, it is idempotent)."""

from __future__ import annotations

import datetime

import click
from flask import Flask


@click.group()
def devices() -> None:
    """Device and DTx-app observations."""


@devices.command("partitions")
@click.option("--months-ahead", type=click.IntRange(0, 36), default=3, show_default=True,
              help="Months after the current one to create partitions for.")
def partitions(months_ahead: int) -> None:
    """Create the partitions of device_observation for the current month and the months
    ahead, and move rows that landed in the default partition into their month's partition.
    SQLite keeps one plain table: nothing to do there."""
    from dtx_trials.cli import _fail, with_app

    @with_app
    def run(app: Flask) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import OperationalError

        from dtx_trials.extensions import db
        from dtx_trials.services.device_partitions import ensure_partitions, is_partitioned

        try:
            with db.engine.begin() as connection:
                if connection.dialect.name != "postgresql":
                    click.echo("SQLite: device_observation is one plain table; nothing to do")
                    return
                if not is_partitioned(connection):
                    _fail("device_observation is not partitioned: run `dtx db upgrade` first")
                # creating a partition waits for every open transaction on the table, and
                # ingest queues behind that wait: give up after 5 s rather than stall ingest
                connection.execute(text("SET LOCAL lock_timeout = '5s'"))
                report = ensure_partitions(
                    connection, today=datetime.datetime.now(datetime.UTC).date(),
                    ahead=months_ahead,
                )
        except OperationalError as exc:
            if "lock timeout" not in str(exc):
                raise
            _fail("device_observation stayed busy for 5 s; nothing changed: run it again later")
        created = ", ".join(report.created) or "none"
        click.echo(f"partitions created: {created}; rows moved out of the default "
                   f"partition: {report.moved}; partitions now: {len(report.existing)}")

    run()
