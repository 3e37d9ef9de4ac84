"""`dtx visits sweep TRIAL`: mark visits whose window closed without a date as missed (each a
protocol deviation); run it daily (cron) or let the worker's schedule do it."""

from __future__ import annotations

import click
from flask import Flask


@click.group()
def visits() -> None:
    """Visit windows and protocol deviations."""


@visits.command("sweep")
@click.argument("trial_code")
def sweep(trial_code: str) -> None:
    """Raise a missed-visit deviation for every planned visit whose window has closed (in the
    site's local calendar) without a visit date."""
    from dtx_trials.cli import _run, cli_actor, with_app

    @with_app
    def run(app: Flask) -> None:
        from dtx_trials.extensions import db
        from dtx_trials.services import deviations, trials

        actor = cli_actor()
        trial = _run(lambda: trials.get_trial(db.session, actor, trial_code))
        raised = _run(lambda: deviations.detect_missed_visits(db.session, actor, trial))
        click.echo(f"{trial.code}: {len(raised)} missed visit(s) recorded as deviations")

    run()
