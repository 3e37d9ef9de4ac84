"""`dtx epro tick`: issue the protocol's scheduled ePRO links and reminders (e-mail, outbox)."""

from __future__ import annotations

import time

import click
from flask import Flask


@click.group()
def epro() -> None:
    """Scheduled ePRO questionnaires."""


@epro.command("tick")
@click.argument("trial_codes", nargs=-1)
@click.option(
    "--every",
    type=click.IntRange(60, 86_400),
    default=None,
    help="Keep running, one pass every this many seconds (default: one pass).",
)
def tick(trial_codes: tuple[str, ...], every: int | None) -> None:
    """Issue due links and reminders (every trial with an active protocol, or those named);
    links point at DTX_PUBLIC_URL; messages go through the outbox."""
    from dtx_trials.cli import _run, cli_actor, with_app

    @with_app
    def run(app: Flask) -> None:
        from sqlalchemy import select

        from dtx_trials.extensions import db
        from dtx_trials.models import Trial
        from dtx_trials.services import epro_schedule, trials

        base = str(app.config["PUBLIC_URL"]).rstrip("/") + "/epro"
        while True:
            if trial_codes:
                chosen = [
                    _run(lambda c=code: trials.get_trial(db.session, cli_actor(), c))
                    for code in trial_codes
                ]
            else:
                chosen = list(db.session.scalars(
                    select(Trial).where(Trial.active_protocol_version_id.is_not(None))
                    .order_by(Trial.code)
                ))
            for trial in chosen:
                report = _run(lambda t=trial: epro_schedule.tick(db.session, t, link_base=base))
                click.echo(
                    f"{trial.code}: {report.open_windows} open questionnaire(s), "
                    f"{report.issued} link(s) issued, {report.reminded} reminder(s)"
                )
            if every is None:
                return
            time.sleep(every)

    run()
