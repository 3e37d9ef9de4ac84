"""`dtx demo`: load the example protocols, populate them with simulated participants through
the services, then run each trial's analysis plan and write its standard exports."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dtx_trials.services.access import command_line

console = Console(soft_wrap=True)
EXPORT_FORMATS = ("csv", "xpt", "odm", "fhir")


def _protocol_code(path: Path) -> str:
    from dtx_trials.services.protocols import parse_protocol

    return parse_protocol(path.read_text(encoding="utf-8"), str(path)).code


@click.command()
@click.option(
    "--protocol",
    "protocol_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Protocol YAML file (repeatable); default: every protocol in protocols/library.",
)
@click.option("--participants", "n_participants", default=240, show_default=True, type=int)
@click.option("--seed", default=20261123, show_default=True, type=int)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="Folder for the database (unless DATABASE_URL is set), reports, exports, summaries.",
)
def demo(protocol_files: tuple[Path, ...], n_participants: int, seed: int, out: Path) -> None:
    """Build a demonstration instance: protocols, simulated trial data, analyses, exports."""
    from dtx_trials import create_app, ensure_instance_secrets, instance_path_from_env
    from dtx_trials.services.demo import library_files

    if n_participants < 1:
        raise click.BadParameter("must be at least 1", param_hint="--participants")
    files = list(protocol_files) or library_files()
    if not files:
        click.echo("error: no protocol files given and protocols/library is empty", err=True)
        sys.exit(2)
    out.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {}
    if not os.environ.get("DATABASE_URL"):
        database = (out / "demo.sqlite").resolve()
        for stale in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            stale.unlink(missing_ok=True)
        overrides["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{database}"
    if not os.environ.get("DTX_FIELD_KEY"):
        ensure_instance_secrets(instance_path_from_env())
    app = create_app(overrides)
    with app.app_context():
        from flask_migrate import upgrade

        from dtx_trials.cli import _safe_url

        upgrade()
        written = [_demo_trial(path, n_participants, seed, out) for path in files]
        _print_demo_accounts()
        console.print()
        console.print(f"[bold]database[/bold]  {_safe_url(app)}")
        for summary_path in written:
            console.print(f"[bold]summary[/bold]   {summary_path}", highlight=False)
        console.print(f"everything is under {out.resolve()}", highlight=False)
        if "SQLALCHEMY_DATABASE_URI" in overrides:
            console.print(
                f"browse it: DATABASE_URL={overrides['SQLALCHEMY_DATABASE_URI']} dtx serve",
                highlight=False,
            )


def _print_demo_accounts() -> None:
    """Give the demo database accounts that can sign in; their passwords are printed once."""
    from dtx_trials.cli import cli_actor
    from dtx_trials.services.demo import create_demo_accounts

    created = create_demo_accounts(cli_actor())
    if created:
        console.print()
        console.print(
            "[bold]Demo accounts (shown once; reset with `dtx users set-password`):[/bold]"
        )
        for username, password, roles in created:
            console.print(f"  {username:<22} {password}  {roles}", highlight=False)


def _demo_trial(path: Path, n_participants: int, seed: int, out: Path) -> Path:
    from sqlalchemy import select

    from dtx_trials.cli import _run, cli_actor
    from dtx_trials.extensions import db
    from dtx_trials.models import Trial
    from dtx_trials.services import protocols, simulation

    console.print(_run(lambda: protocols.load_library_file(db.session, cli_actor(), path)))
    code = _protocol_code(path)
    trial = db.session.scalars(select(Trial).where(Trial.code == code)).one()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(f"{code}: simulating participants", total=n_participants)
        summary = _run(
            lambda: simulation.populate_trial(
                db.session,
                trial,
                n_participants=n_participants,
                seed=seed,
                progress=lambda step, total: bar.update(task, completed=step, total=total),
            )
        )
    counts = {
        name: getattr(summary, name) for name in simulation.SimulationSummary.__dataclass_fields__
    }
    console.print(
        f"{code}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()),
        highlight=False,
    )
    trial_out = out / code
    report: dict[str, Any] = {"trial": code, "protocol_file": str(path), "counts": counts}
    report.update(_code_terms(trial))
    report.update(_analyse(trial, trial_out))
    report.update(_export(trial, trial_out))
    target = out / f"{code}.summary.json"
    target.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


SYNTHETIC_DICTIONARY = (
    Path(__file__).resolve().parents[2] / "protocols" / "library" / "dictionaries"
    / "synthetic_ae_dictionary.csv"
)


def _code_terms(trial: Any) -> dict[str, Any]:
    """Load the synthetic demo dictionary (never MedDRA) and auto-code exact matches."""
    from dtx_trials.cli import _run
    from dtx_trials.extensions import db
    from dtx_trials.services import coding

    actor = command_line(trial.id, "data_manager")
    text = SYNTHETIC_DICTIONARY.read_text(encoding="utf-8")
    _run(lambda: coding.load_dictionary(db.session, actor, trial, name="DTX-SYNTHETIC",
                                        version="1.0", text=text))
    coded = _run(lambda: coding.auto_code(db.session, actor, trial))
    left = _run(lambda: coding.coding_queue(db.session, actor, trial))
    console.print(f"{trial.code}: {coded} AE term(s) auto-coded against the synthetic "
                  f"dictionary, {len(left)} left in the coding queue", highlight=False)
    return {"coding": {"dictionary": "DTX-SYNTHETIC 1.0", "auto_coded": coded,
                       "queue": len(left)}}


def _analyse(trial: Any, trial_out: Path) -> dict[str, Any]:
    """Run the unblinded analysis (when the analysis service is installed); write the PDF."""
    try:
        from dtx_trials.services import analyses
    except ImportError:
        return {"analysis": "not available in this installation"}
    from dtx_trials.cli import _run
    from dtx_trials.extensions import db

    actor = command_line(trial.id, "unblinded_statistician")
    with console.status(f"{trial.code}: running the statistical analysis plan"):
        run = _run(
            lambda: analyses.run_analysis(db.session, actor, trial, cutoff_on=None, unblinded=True)
        )
    result: dict[str, Any] = {"analysis_run_id": run.id, "analysis_status": run.status}
    if run.status != "succeeded":
        console.print(f"[red]{trial.code}: analysis failed[/red]: {run.error}", highlight=False)
        result["analysis_error"] = run.error
        return result
    trial_out.mkdir(parents=True, exist_ok=True)
    pdf = trial_out / (run.report_name or "report.pdf")
    pdf.write_bytes(run.report_pdf or b"")
    results = trial_out / "results.json"
    results.write_text(json.dumps(run.results, indent=2, ensure_ascii=False), encoding="utf-8")
    console.print(f"{trial.code}: analysis run {run.id} → {pdf}", highlight=False)
    result.update(report_pdf=str(pdf), results_json=str(results), data_sha256=run.data_sha256)
    # the Chinese edition on A4 paper, from the same data
    with console.status(f"{trial.code}: Chinese edition of the report"):
        zh = _run(lambda: analyses.run_analysis(db.session, actor, trial, cutoff_on=None,
                                                unblinded=True, language="zh", paper="a4"))
    if zh.status != "succeeded":
        console.print(f"[red]{trial.code}: Chinese report failed[/red]: {zh.error}",
                      highlight=False)
        result["report_zh_error"] = zh.error
        return result
    pdf_zh = trial_out / (zh.report_name or "report-zh.pdf")
    pdf_zh.write_bytes(zh.report_pdf or b"")
    console.print(f"{trial.code}: analysis run {zh.id} → {pdf_zh}", highlight=False)
    result["report_pdf_zh"] = str(pdf_zh)
    return result


def _export(trial: Any, trial_out: Path) -> dict[str, Any]:
    """Write the standard exports (when the export service is installed)."""
    try:
        from dtx_trials.services import exports
    except ImportError:
        return {"exports": "not available in this installation"}
    from dtx_trials.cli import _run
    from dtx_trials.extensions import db
    from dtx_trials.services.protocols import active_protocol_model

    actor = command_line(trial.id, "unblinded_statistician")
    folder = trial_out / "exports"
    # SDTM (and the package built on it) exists only from a declared mapping: never guessed
    mapped = active_protocol_model(db.session, trial).cdisc is not None
    db.session.rollback()
    formats = EXPORT_FORMATS if mapped else tuple(f for f in EXPORT_FORMATS if f != "xpt")
    with console.status(f"{trial.code}: writing exports"):
        written = _run(
            lambda: exports.export_trial(
                db.session, actor, trial, formats=formats, out_dir=folder
            )
        )
    console.print(f"{trial.code}: {len(written)} export file(s) → {folder}", highlight=False)
    result: dict[str, Any] = {"exports_dir": str(folder),
                              "export_files": [str(p) for p in written]}
    if not mapped:
        note = "not written: the protocol declares no cdisc mapping (SDTM comes only from one)"
        console.print(f"{trial.code}: SDTM/ADaM package {note}", highlight=False)
        result["cdisc_package"] = note
        return result
    result.update(_cdisc_package(trial, trial_out))
    return result


def _cdisc_package(trial: Any, trial_out: Path) -> dict[str, Any]:
    """Write the CDISC package (SDTM + ADaM XPT, Dataset-JSON, define.xml, conformance)."""
    from dtx_trials.cli import _run
    from dtx_trials.extensions import db
    from dtx_trials.services import cdisc_package

    actor = command_line(trial.id, "unblinded_statistician")
    folder = trial_out / "package"
    with console.status(f"{trial.code}: writing the CDISC package"):
        written, report = _run(
            lambda: cdisc_package.export_cdisc_package(db.session, actor, trial, folder)
        )
    console.print(
        f"{trial.code}: CDISC package, {len(written)} file(s) → {folder}; conformance: "
        f"{len(report.findings)} finding(s) ({report.n_errors} error(s), "
        f"{report.n_warnings} warning(s)) → {folder / 'conformance.json'}",
        highlight=False,
    )
    return {
        "cdisc_package_dir": str(folder),
        "cdisc_package_files": [str(p) for p in written],
        "conformance_findings": len(report.findings),
        "conformance_errors": report.n_errors,
        "conformance_warnings": report.n_warnings,
    }
