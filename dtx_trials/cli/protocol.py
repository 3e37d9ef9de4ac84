"""`dtx protocol ...`: validate, load, diff, schema, REDCap import."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import Flask

from dtx_trials.services.access import with_role
from protocols.document import Issue
from protocols.loader import load_protocol_report
from protocols.model import Protocol


def _echo(text: str, err: bool = False) -> None:
    click.echo(text, err=err)


@click.group()
def protocol() -> None:
    """Protocol documents: validate, load, diff, schema, import from REDCap."""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        _echo(f"{path}:1:1: <document>: cannot read file: {exc}", err=True)
        sys.exit(2)


@protocol.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check protocol files; print every problem as file:line:col: path: message.

    Exit status 0 when every file is valid (warnings allowed), 1 when any has errors.
    """
    n_errors = 0
    for path in files:
        result = load_protocol_report(_read(path), str(path))
        for issue in result.issues:
            _echo(str(issue))
        n_errors += len(result.errors)
        status = "ok" if not result.errors else f"{len(result.errors)} error(s)"
        warnings = f", {len(result.warnings)} warning(s)" if result.warnings else ""
        _echo(f"{path}: {status}{warnings}")
        if result.protocol is not None and not result.errors:
            _echo(f"{path}: languages: {_coverage_line(result.protocol)}")
    sys.exit(1 if n_errors else 0)


def _coverage_line(protocol: Protocol) -> str:
    """Each language's share of the protocol's texts, e.g. ``en 100% (310/310), zh-Hans 97%``."""
    from protocols.validation import language_coverage

    return ", ".join(
        f"{lang} {100 * done // max(total, 1)}% ({done}/{total})"
        for lang, (done, total) in language_coverage(protocol).items()
    )


@protocol.command("load")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--accept",
    "accepted",
    multiple=True,
    help="Id of a breaking change the sponsor accepts as a data migration.",
)
@click.option("--activate/--no-activate", default=True, show_default=True)
def load(file: Path, accepted: tuple[str, ...], activate: bool) -> None:
    """Store FILE as a new version of its trial (created if needed) and activate it."""
    from dtx_trials.cli import _fail, _run, cli_actor, with_app

    @with_app
    def run(app: Flask) -> None:
        from sqlalchemy import select

        from dtx_trials.extensions import db
        from dtx_trials.models import Trial
        from dtx_trials.services import protocols as service
        from dtx_trials.services import trials

        text = _read(file)
        result = load_protocol_report(text, str(file))
        if result.errors:
            for issue in result.issues:
                _echo(str(issue), err=True)
            _fail(f"{file}: {len(result.errors)} error(s); nothing was loaded")
        assert result.protocol is not None
        actor = cli_actor()
        trial = db.session.scalars(select(Trial).where(Trial.code == result.protocol.code)).first()
        if trial is None:
            trial = _run(
                lambda: trials.create_trial(
                    db.session,
                    actor,
                    code=result.protocol.code,
                    title=result.protocol.title.en[:300],
                )
            )
        admin = with_role(actor, trial.id, "sponsor_admin")
        version, created = _run(
            lambda: service.upload_version(db.session, admin, trial, text, file.name)
        )
        _echo(
            f"{trial.code}: version {version.version_no} "
            f"{'stored' if created else 'already stored'} (sha256 {version.sha256[:12]})"
        )
        if activate and trial.active_protocol_version_id != version.id:
            _, changes = _run(
                lambda: service.activate_version(
                    db.session, admin, trial, version.version_no, accepted
                )
            )
            for change in changes:
                _echo(f"  {_change_line(change)}")
            _echo(f"{trial.code}: version {version.version_no} active")

    run()


def _change_line(change: object) -> str:
    kind = getattr(change, "kind", "")
    mark = {"added": "+", "removed": "-", "changed": "~"}.get(kind, "?")
    breaking = (
        " [breaking: " + (getattr(change, "breaking_reason", "") or "") + "]"
        if getattr(change, "is_breaking", False)
        else ""
    )
    return f"{mark} {getattr(change, 'description', '')}{breaking}"


@protocol.command("diff")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
def diff(old: Path, new: Path) -> None:
    """Show a readable change list between two protocol files (exit 1 when they differ)."""
    from protocols.diff import diff_protocols

    protocols = []
    for path in (old, new):
        result = load_protocol_report(_read(path), str(path))
        if result.protocol is None:
            for issue in result.errors:
                _echo(str(issue), err=True)
            sys.exit(2)
        protocols.append(result.protocol)
    changes = diff_protocols(protocols[0], protocols[1])
    for change in changes:
        _echo(_change_line(change))
    _echo(f"{len(changes)} change(s), {sum(c.is_breaking for c in changes)} potentially breaking")
    sys.exit(1 if changes else 0)


@protocol.command("schema")
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option(
    "--descriptive",
    is_flag=True,
    default=False,
    help="Instead, list the keys that only describe (no behaviour depends on them), with why.",
)
def schema(out: Path | None, descriptive: bool) -> None:
    """Print (or write) the JSON Schema of the protocol format for editor autocompletion."""
    from protocols.schema import DESCRIPTIVE_KEYS, json_schema, schema_leaves

    if descriptive:
        leaves = schema_leaves()
        for key in leaves:
            if key in DESCRIPTIVE_KEYS:
                _echo(f"{key}\t{DESCRIPTIVE_KEYS[key]}")
        _echo(
            f"{len(DESCRIPTIVE_KEYS)} of {len(leaves)} keys are descriptive; the others change "
            "what the platform does, each proven by a test (or listed there as pending another "
            "issue): tests/dtx_trials/test_protocol_key_effects.py"
        )
        return
    text = json.dumps(json_schema(), indent=2, ensure_ascii=False)
    if out is None:
        _echo(text)
    else:
        out.write_text(text + "\n", encoding="utf-8")
        _echo(f"wrote {out}")


@protocol.command("import-redcap")
@click.argument("dictionary", type=click.Path(path_type=Path))
@click.option("--code", required=True, help="Trial code of the new protocol.")
@click.option("--title", required=True, help="English title of the new protocol.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the protocol YAML here (default: print it).",
)
def import_redcap(dictionary: Path, code: str, title: str, out: Path | None) -> None:
    """Turn a REDCap data dictionary (CSV) into a protocol skeleton and a translation report."""
    from protocols.redcap import RedcapImportError, import_redcap_dictionary

    try:
        result = import_redcap_dictionary(_read(dictionary), code=code, title=title)
    except RedcapImportError as exc:
        _echo(f"{dictionary}:1:1: {exc}", err=True)
        sys.exit(2)
    for line in result.report:
        _echo(f"note: {line}", err=True)
    if out is None:
        _echo(result.protocol_yaml)
    else:
        out.write_text(result.protocol_yaml, encoding="utf-8")
        _echo(
            f"wrote {out}; {len(result.report)} item(s) need attention; next: "
            f"dtx protocol validate {out}",
            err=True,
        )


__all__ = ["Issue", "protocol"]
