"""`dtx coding`: load a sponsor coding dictionary, auto-code exact matches, list the queue."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask

from dtx_trials.services.access import command_line


@click.group()
def coding() -> None:
    """Medical coding of adverse-event terms and medications (AEDECOD, CMDECOD)."""


@coding.command("load")
@click.argument("trial_code")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="Dictionary name, e.g. MedDRA.")
@click.option("--version", "version", required=True, help="Dictionary version, e.g. 28.1.")
def load(trial_code: str, file: Path, name: str, version: str) -> None:
    """Load a dictionary CSV (term,preferred_term,body_system) for a trial, then auto-code."""
    from dtx_trials.cli import _run, cli_actor, with_app

    @with_app
    def run(app: Flask) -> None:
        from dtx_trials.extensions import db
        from dtx_trials.services import coding as service
        from dtx_trials.services import trials

        trial = _run(lambda: trials.get_trial(db.session, cli_actor(), trial_code))
        actor = command_line(trial.id, "data_manager")
        text = file.read_text(encoding="utf-8")
        n = _run(lambda: service.load_dictionary(db.session, actor, trial, name=name,
                                                 version=version, text=text))
        coded = _run(lambda: service.auto_code(db.session, actor, trial))
        left = _run(lambda: service.coding_queue(db.session, actor, trial))
        click.echo(f"{trial.code}: {n} dictionary term(s) loaded; {coded} verbatim term(s) "
                   f"auto-coded; {len(left)} left in the coding queue")

    run()


@coding.command("queue")
@click.argument("trial_code")
def queue(trial_code: str) -> None:
    """Auto-code exact matches, then list the verbatim terms still uncoded."""
    from dtx_trials.cli import _run, cli_actor, with_app

    @with_app
    def run(app: Flask) -> None:
        from dtx_trials.extensions import db
        from dtx_trials.services import coding as service
        from dtx_trials.services import trials

        trial = _run(lambda: trials.get_trial(db.session, cli_actor(), trial_code))
        actor = command_line(trial.id, "data_manager")
        coded = _run(lambda: service.auto_code(db.session, actor, trial))
        left = _run(lambda: service.coding_queue(db.session, actor, trial))
        click.echo(f"{trial.code}: {coded} auto-coded, {len(left)} uncoded")
        for item in left:
            click.echo(f"  {item.kind}  {item.n_records:4d}  {item.verbatim}")

    run()
