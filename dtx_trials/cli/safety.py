"""`dtx safety escalate`: escalate unacknowledged alerts and overdue SAE reports."""

from __future__ import annotations

import click
from flask import Flask


@click.group()
def safety() -> None:
    """Safety events (SAE clock, alerts)."""


@safety.command("escalate")
@click.argument("trial_codes", nargs=-1)
def escalate(trial_codes: tuple[str, ...]) -> None:
    """E-mail the escalation roles for every alert not acknowledged in time and every SAE whose
    initial report is overdue (each once); run it every few minutes (cron or worker)."""
    from dtx_trials.cli import _run, cli_actor, with_app

    @with_app
    def run(app: Flask) -> None:
        from sqlalchemy import select

        from dtx_trials.extensions import db
        from dtx_trials.models import Trial
        from dtx_trials.services import safety as service
        from dtx_trials.services import trials

        if trial_codes:
            chosen = [_run(lambda c=code: trials.get_trial(db.session, cli_actor(), c))
                      for code in trial_codes]
        else:
            chosen = list(db.session.scalars(
                select(Trial).where(Trial.active_protocol_version_id.is_not(None))
                .order_by(Trial.code)))
        for trial in chosen:
            done = _run(lambda t=trial: service.escalate_overdue(db.session, t))
            click.echo(f"{trial.code}: {len(done)} safety event(s) escalated")

    run()
