"""`dtx randomization simulate`: compare designs on a protocol before go-live."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dtx_trials.services.randomization import candidate_designs
from protocols.loader import load_protocol_report
from randomization.errors import RandomizationError
from randomization.simulate import SimulationResult, simulate

console = Console(soft_wrap=True, width=160)


@click.group()
def randomization() -> None:
    """Randomization designs."""


def _cell(metric: object) -> str:
    mean, se = getattr(metric, "mean"), getattr(metric, "se")  # noqa: B009
    return f"{mean:.3f} ± {se:.3f}"


@randomization.command("simulate")
@click.argument("protocol_file", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--n",
    "n",
    default=500,
    show_default=True,
    type=click.IntRange(2, 100_000),
    help="Participants per simulated trial.",
)
@click.option("--runs", default=1000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--seed", default=20261123, show_default=True, type=int)
@click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the metrics as JSON.",
)
def simulate_command(
    protocol_file: Path, n: int, runs: int, seed: int, json_out: Path | None
) -> None:
    """Simulate the protocol's design and alternatives; print balance and predictability."""
    result = load_protocol_report(protocol_file.read_text(encoding="utf-8"), str(protocol_file))
    if result.protocol is None:
        for issue in result.errors:
            click.echo(str(issue), err=True)
        sys.exit(2)
    protocol = result.protocol
    factor_levels = {f.id: list(f.level_codes) for f in protocol.randomization.factors}
    sites = [s.code for s in protocol.sites.initial_sites] or ["S1", "S2", "S3", "S4"]
    outcomes: list[tuple[str, SimulationResult]] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        for label, design, stratify_by in candidate_designs(protocol):
            task = progress.add_task(label, total=runs)
            try:
                outcome = simulate(
                    design,
                    n,
                    runs,
                    factor_levels=factor_levels,
                    site_levels=sites,
                    stratify_by=stratify_by,
                    seed=seed,
                    progress=lambda done, t=task: progress.update(t, completed=done),
                )
            except RandomizationError as exc:
                click.echo(f"{label}: {exc}", err=True)
                sys.exit(2)
            outcomes.append((label, outcome))
    table = Table(title=f"{protocol.code}: n={n}, {runs} runs, seed {seed} (mean ± MC SE)")
    table.add_column("metric")
    for label, _ in outcomes:
        table.add_column(label, justify="right")
    rows = [
        ("final |D|", "final_imbalance"),
        ("max |D| during enrolment", "max_imbalance"),
        ("stratum |D| mean", "stratum_imbalance_mean"),
        ("stratum |D| max", "stratum_imbalance_max"),
        ("marginal |D| mean", "marginal_imbalance_mean"),
        ("marginal |D| max", "marginal_imbalance_max"),
        ("correct guesses (CS)", "correct_guess"),
        ("strata used", "n_strata"),
    ]
    for title, name in rows:
        table.add_row(title, *(_cell(getattr(o, name)) for _, o in outcomes))
    for arm in protocol.arms:
        table.add_row(
            f"fraction {arm.code} (target)",
            *(
                f"{o.arm_fractions[arm.code].mean:.3f} ({o.target_fractions[arm.code]:.3f})"
                for _, o in outcomes
            ),
        )
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps({label: o.to_json() for label, o in outcomes}, indent=2))
        console.print(f"wrote {json_out}")
