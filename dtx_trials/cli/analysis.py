"""`dtx analyze`, `dtx export`, `dtx worker`."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

import click
from flask import Flask
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from dtx_trials.services.access import command_line

console = Console(soft_wrap=True)


def _trial(code: str) -> Any:
    from sqlalchemy import select

    from dtx_trials.extensions import db
    from dtx_trials.models import Trial

    trial = db.session.scalars(select(Trial).where(Trial.code == code)).first()
    if trial is None:
        click.echo(f"error: unknown trial {code}", err=True)
        sys.exit(2)
    return trial


@click.command()
@click.argument("trial_code")
@click.option(
    "--cutoff",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="Data cut-off date (YYYY-MM-DD); later data are ignored.",
)
@click.option(
    "--unblinded",
    is_flag=True,
    default=False,
    help="Analyse with real arms (acts as the unblinded statistician).",
)
@click.option(
    "--review",
    type=click.Choice(["pooled", "comparative"]),
    default=None,
    help="blinded runs: pooled data review (default) or comparative under dummy labels "
    "(roles named in blinding.comparative_review)",
)
@click.option(
    "--lang",
    "language",
    type=click.Choice(["en", "zh"]),
    default="en",
    show_default=True,
    help="Report language: English, or Simplified Chinese (labels from the protocol's zh texts).",
)
@click.option(
    "--paper",
    type=click.Choice(["letter", "a4"]),
    default="letter",
    show_default=True,
    help="Report paper size.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def analyze(
    trial_code: str,
    cutoff: datetime.datetime | None,
    unblinded: bool,
    review: str | None,
    language: str,
    paper: str,
    out: Path,
) -> None:
    """Run the protocol's statistical analysis plan; write results.json and the PDF report."""
    from dtx_trials.cli import with_app

    @with_app
    def run(app: Flask) -> None:
        from dtx_trials.extensions import db
        from dtx_trials.services import analyses

        trial = _trial(trial_code)
        actor = command_line(trial.id, "unblinded_statistician" if unblinded else "statistician")
        with Progress(
            TextColumn("{task.description}"), BarColumn(), console=console, transient=True
        ) as progress:
            task = progress.add_task(f"analysing {trial_code}", total=3)
            request = analyses.request_analysis(
                db.session,
                actor,
                trial,
                cutoff_on=cutoff.date() if cutoff else None,
                unblinded=unblinded,
                review=review,
                language=language,
                paper=paper,
            )
            progress.update(task, advance=1, description="running the SAP")
            result = analyses.execute_analysis(db.session, request.id)
            progress.update(task, advance=2)
        if result.status != "succeeded":
            click.echo(f"analysis failed: {result.error}", err=True)
            sys.exit(1)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result.results, indent=2, ensure_ascii=False))
        (out / "provenance.json").write_text(
            json.dumps(
                {**result.provenance, "run_id": result.id, "report_sha256": result.report_sha256},
                indent=2,
            )
        )
        from analysis.report_builder import fmt, p_phrase

        pdf = out / (result.report_name or "report.pdf")
        pdf.write_bytes(result.report_pdf or b"")
        for endpoint in (result.results or {}).get("endpoints", []):
            h = endpoint.get("headline") or {}
            line = f"{endpoint['id']:<24} {endpoint['model']:<16} " + (
                f"{h.get('contrast')}: {fmt(h.get('estimate'))} "
                f"({fmt(h.get('ci_low'))}, {fmt(h.get('ci_high'))}) {p_phrase(h.get('p_value'))}"
                if h.get("estimate") is not None and h.get("p_value") is not None
                else endpoint.get("error") or "see results.json"
            )
            console.print(line, highlight=False)
        console.print(f"run {result.id}: data sha256 {result.data_sha256}")
        console.print(f"wrote {out / 'results.json'}, {pdf}")

    run()


@click.command("export")
@click.argument("trial_code")
@click.option(
    "--format",
    "formats",
    multiple=True,
    required=True,
    type=click.Choice(["csv", "xpt", "odm", "fhir", "cdisc"]),
    help="cdisc: the SDTM + ADaM package (XPT, Dataset-JSON, define.xml, conformance.json) "
    "under OUT/cdisc.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option(
    "--unblinded",
    is_flag=True,
    default=False,
    help="Include real arms (acts as the unblinded statistician).",
)
@click.option(
    "--profile",
    type=click.Choice(["limited", "safe_harbor"]),
    default="limited",
    show_default=True,
    help="De-identification: limited (ISO dates, identifiers dropped) or safe_harbor (dates "
    "shifted per participant, ages 90+, free text scrubbed or dropped, quasi-identifiers "
    "dropped, no audit trail; not with cdisc).",
)
def export(
    trial_code: str, formats: tuple[str, ...], out: Path, unblinded: bool, profile: str
) -> None:
    """Write de-identified exports (CSV, SAS XPORT v5, CDISC ODM 1.3.2, FHIR R4, CDISC package)."""
    from dtx_trials.cli import _run, with_app

    @with_app
    def run(app: Flask) -> None:
        from dtx_trials.extensions import db
        from dtx_trials.services import cdisc_package, exports

        trial = _trial(trial_code)
        actor = command_line(trial.id, "unblinded_statistician" if unblinded else "data_manager")
        plain = tuple(f for f in formats if f != "cdisc")
        written = _run(
            lambda: exports.export_trial(db.session, actor, trial, formats=plain, out_dir=out,
                                         profile=profile)
        ) if plain else []
        if "cdisc" in formats:
            package, report = _run(lambda: cdisc_package.export_cdisc_package(
                db.session, actor, trial, out / "cdisc", profile))
            written += package
            console.print(
                f"conformance: {len(report.findings)} finding(s) ({report.n_errors} error(s), "
                f"{report.n_warnings} warning(s)) in {out / 'cdisc' / 'conformance.json'}",
                highlight=False,
            )
        for path in written:
            console.print(str(path), highlight=False)
        console.print(f"{len(written)} file(s) in {out}")

    run()


@click.command()
@click.option("--burst", is_flag=True, default=False, help="Stop when the queue is empty.")
def worker(burst: bool) -> None:
    """Run analysis and notification jobs from the RQ queue at DTX_QUEUE_URL.

    The worker also runs RQ's scheduler, which starts the notification retries it planned.
    """
    from dtx_trials.cli import with_app

    @with_app
    def run(app: Flask) -> None:
        from redis import Redis
        from rq import Queue, Worker

        from dtx_trials.jobs import queue_name, queue_url

        url = queue_url(app)
        if not url:
            click.echo("error: set DTX_QUEUE_URL (e.g. redis://127.0.0.1:6379/0)", err=True)
            sys.exit(2)
        connection = Redis.from_url(url)
        Worker([Queue(queue_name(app), connection=connection)], connection=connection).work(
            burst=burst, with_scheduler=True
        )

    run()
