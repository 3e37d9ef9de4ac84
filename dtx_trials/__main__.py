"""`python -m dtx_trials` is the `dtx` command."""

from dtx_trials.cli import cli

cli()
