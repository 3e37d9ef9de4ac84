"""`dtx randomization simulate`: compare designs on a protocol before go-live."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dtx_trials.services.errors import ValidationError
from dtx_trials.services.randomization import candidate_designs
from protocols.loader import load_protocol_report
from protocols.model import Protocol
from randomization.errors import RandomizationError
from randomization.simulate import RUN_FIELDS, SimulationResult, simulate
from randomization.strata import SITE_FACTOR

console = Console(soft_wrap=True, width=160)


@click.group()
def randomization() -> None:
    """Randomization designs."""


def _cell(metric: object) -> str:
    if metric is None:
        return "—"
    mean, se = getattr(metric, "mean"), getattr(metric, "se")  # noqa: B009
    return f"{mean:.3f} ± {se:.3f}"


def _scalar(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def parse_overrides(items: tuple[str, ...]) -> dict[str, dict[str, object]]:
    """Turn `--set METHOD.PARAM=VALUE` items into {method: {param: value}}.

    VALUE is a number, a comma-separated list of numbers (`block_sizes=4,8`) or a word
    (`imbalance=variance`); `minimization.factors.<id>.weight=2` sets one factor's weight.
    """
    overrides: dict[str, dict[str, object]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, param = key.strip().partition(".")
        if not sep or not dot or not method or not param or not value.strip():
            raise click.BadParameter(
                f"{item!r}: expected METHOD.PARAM=VALUE, e.g. minimization.p=0.9",
                param_hint="--set",
            )
        parsed = (
            [_scalar(v.strip()) for v in value.split(",")]
            if "," in value or param == "block_sizes"
            else _scalar(value.strip())
        )
        overrides.setdefault(method, {})[param] = parsed
    return overrides


def parse_prevalences(
    items: tuple[str, ...], protocol: Protocol, sites: list[str]
) -> dict[str, dict[str, float]]:
    """Turn `--prevalence FACTOR=LEVEL:P,LEVEL:P` items into {factor: {level: p}}."""
    known = {f.id for f in protocol.randomization.factors} | {SITE_FACTOR}
    prevalences: dict[str, dict[str, float]] = {}
    for item in items:
        factor, sep, rest = item.partition("=")
        factor = factor.strip()
        if not sep or factor not in known:
            raise click.BadParameter(
                f"{item!r}: expected FACTOR=LEVEL:P,... with FACTOR one of "
                f"{', '.join(sorted(known))}",
                param_hint="--prevalence",
            )
        levels: dict[str, float] = {}
        for part in rest.split(","):
            level, colon, share = part.partition(":")
            try:
                levels[level.strip()] = float(share)
            except ValueError:
                raise click.BadParameter(
                    f"{item!r}: {part!r} is not LEVEL:PROBABILITY", param_hint="--prevalence"
                ) from None
            if not colon:
                raise click.BadParameter(
                    f"{item!r}: {part!r} is not LEVEL:PROBABILITY", param_hint="--prevalence"
                )
        prevalences[factor] = levels
    return prevalences


@randomization.command("simulate")
@click.argument("protocol_file", type=click.Path(path_type=Path, exists=True))
@click.option(
    "--n",
    "n",
    default=None,
    type=click.IntRange(2, 100_000),
    help="Participants per simulated trial  [default: the protocol's sample_size.n, else 500]",
)
@click.option("--runs", default=1000, show_default=True, type=click.IntRange(2, 100_000))
@click.option("--seed", default=20261123, show_default=True, type=int)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="METHOD.PARAM=VALUE",
    help="Override a design parameter in every design of that method, e.g. minimization.p=0.9, "
    "permuted_block.block_sizes=4,8, minimization.factors.site.weight=2; a method not compared "
    "yet is added (maximal.b=3 with maximal.block_length=10). Repeatable.",
)
@click.option(
    "--prevalence",
    "prevalence_items",
    multiple=True,
    metavar="FACTOR=LEVEL:P,...",
    help="Share of participants at each level of a factor (or site), e.g. "
    "moca_band=moca_18_21:0.3,moca_22_25:0.7; others are equiprobable. Repeatable.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the summary metrics as JSON.",
)
@click.option(
    "--runs-csv",
    "runs_csv",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write every simulated trial's own figures (one row per design and run).",
)
def simulate_command(
    protocol_file: Path,
    n: int | None,
    runs: int,
    seed: int,
    settings: tuple[str, ...],
    prevalence_items: tuple[str, ...],
    json_out: Path | None,
    runs_csv: Path | None,
) -> None:
    """Simulate the protocol's design and alternatives; print balance and predictability."""
    result = load_protocol_report(protocol_file.read_text(encoding="utf-8"), str(protocol_file))
    if result.protocol is None:
        for issue in result.errors:
            click.echo(str(issue), err=True)
        sys.exit(2)
    protocol = result.protocol
    if n is None:
        n = protocol.sample_size.n if protocol.sample_size is not None else 500
    factor_levels = {f.id: list(f.level_codes) for f in protocol.randomization.factors}
    sites = [s.code for s in protocol.sites.initial_sites] or ["S1", "S2", "S3", "S4"]
    prevalences = parse_prevalences(prevalence_items, protocol, sites)
    try:
        candidates = candidate_designs(protocol, parse_overrides(settings))
    except (RandomizationError, ValidationError) as exc:
        click.echo(f"error: --set: {exc}", err=True)
        sys.exit(2)
    outcomes: list[tuple[str, SimulationResult]] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        for label, design, stratify_by in candidates:
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
                    prevalences=prevalences,
                    progress=lambda done, t=task: progress.update(t, completed=done),
                )
            except RandomizationError as exc:
                click.echo(f"{label}: {exc}", err=True)
                sys.exit(2)
            outcomes.append((label, outcome))
    _print_table(protocol, n, runs, seed, outcomes)
    if json_out is not None:
        json_out.write_text(json.dumps({label: o.to_json() for label, o in outcomes}, indent=2))
        console.print(f"wrote {json_out}")
    if runs_csv is not None:
        _write_runs(runs_csv, protocol, outcomes)
        console.print(f"wrote {runs_csv} ({runs * len(outcomes)} rows)")


def _print_table(
    protocol: Protocol, n: int, runs: int, seed: int, outcomes: list[tuple[str, SimulationResult]]
) -> None:
    chance = outcomes[0][1].chance_level
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
        ("exact balance during enrolment (EB)", "exact_balance"),
        ("P(final sizes within 1 of target)", "final_balance"),
        (f"correct guesses (CS; chance 1/{round(1 / chance)} = {chance:.3f})", "correct_guess"),
        ("deterministic allocations", "deterministic_rate"),
        ("strata used", "n_strata"),
    ]
    for title, name in rows:
        table.add_row(title, *(_cell(getattr(o, name)) for _, o in outcomes))
    table.add_row(
        "selection bias (CS − chance)",
        *(f"{o.correct_guess.mean - o.chance_level:+.3f}" for _, o in outcomes),
    )
    for arm in protocol.arms:
        table.add_row(
            f"fraction {arm.code} (target)",
            *(
                f"{o.arm_fractions[arm.code].mean:.3f} ({o.target_fractions[arm.code]:.3f})"
                for _, o in outcomes
            ),
        )
    console.print(table)


def _write_runs(
    path: Path, protocol: Protocol, outcomes: list[tuple[str, SimulationResult]]
) -> None:
    arms = [a.code for a in protocol.arms]
    scalar_fields = [f for f in RUN_FIELDS if f not in ("arm_counts", "level_counts")]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["design", "run", *scalar_fields, *(f"n_{arm}" for arm in arms)])
        for label, outcome in outcomes:
            for index, run in enumerate(outcome.runs_detail, start=1):
                writer.writerow(
                    [
                        label,
                        index,
                        *("" if getattr(run, f) is None else getattr(run, f)
                          for f in scalar_fields),
                        *run.arm_counts,
                    ]
                )
