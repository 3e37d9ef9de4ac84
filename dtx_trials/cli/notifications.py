"""`dtx notifications deliver`: send the outbox's due messages (cron, or when no worker runs)."""

from __future__ import annotations

import sys
import time

import click
from flask import Flask


@click.group()
def notifications() -> None:
    """The notification outbox (e-mail, SMS)."""


@notifications.command("deliver")
@click.option(
    "--every",
    type=click.IntRange(1, 86_400),
    default=None,
    help="Keep running, delivering every this many seconds (default: one pass).",
)
def deliver(every: int | None) -> None:
    """Deliver every due pending notification through the configured channels."""
    from dtx_trials.cli import with_app

    @with_app
    def run(app: Flask) -> None:
        from dtx_trials.channels import channels_from_config
        from dtx_trials.extensions import db
        from dtx_trials.services.notifications import deliver_pending

        channels = channels_from_config(app.config)
        if not channels:
            click.echo(
                "error: no channel configured (set DTX_SMTP_HOST and DTX_SMTP_SENDER, or "
                "DTX_SMS_PROVIDER)",
                err=True,
            )
            sys.exit(2)
        while True:
            report = deliver_pending(db.session, channels)
            click.echo(
                f"sent {report.sent}, retrying {report.retrying}, failed {report.failed}, "
                f"still pending {report.waiting} (channels: {', '.join(sorted(channels))})"
            )
            if every is None:
                return
            time.sleep(every)

    run()
