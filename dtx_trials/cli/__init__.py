"""The `dtx` command line: one click group per area. The app is built lazily per command."""

from __future__ import annotations

import functools
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from flask import Flask
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=False, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def with_app(func: F) -> F:
    """Run the command inside an application context (database, config, keys)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from dtx_trials import create_app

        app = create_app()
        with app.app_context():
            return func(app, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def cli_actor() -> Any:
    from dtx_trials.services.access import command_line

    return command_line()


class CheckedGroup(click.Group):
    """The top-level group: refuses, before any command runs, an argument holding what no
    layer can store (NUL, control characters, or the lone surrogates Python makes of bytes
    that are not UTF-8), the same rule the web edge applies to requests (``ecrf.text``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        from ecrf.text import shown_safely, text_problem

        for position, arg in enumerate(args, start=1):
            problem = text_problem(arg)
            if problem is not None:
                _fail(f"argument {position} ({shown_safely(arg)!r}) {problem}")
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        """A missing, malformed or wrong field key is a message and exit status 2, not a
        traceback: nothing has been written under it (the key check runs at start-up)."""
        from dtx_trials.crypto import FieldKeyError
        from dtx_trials.services.errors import DomainError

        try:
            return super().invoke(ctx)
        except FieldKeyError as exc:
            _fail(f"field key: {exc}")
        except DomainError as exc:  # what a command did not catch itself: a message, not a trace
            _fail(_domain_message(exc))


@click.group(cls=CheckedGroup)
@click.version_option(package_name="dtx-trials")
def cli() -> None:
    """dtx-trials: decentralized digital-therapeutics trials."""


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations are the only schema path)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@with_app
def db_upgrade(app: Flask, revision: str) -> None:
    """Apply migrations up to REVISION."""
    from flask_migrate import upgrade

    upgrade(revision=revision)
    console.print(f"database at {revision}: {_safe_url(app)}")


def _safe_url(app: Flask) -> str:
    from sqlalchemy.engine import make_url

    return make_url(app.config["SQLALCHEMY_DATABASE_URI"]).render_as_string(hide_password=True)


@cli.command()
@click.option("--demo-accounts/--no-demo-accounts", default=True, show_default=True)
def bootstrap(demo_accounts: bool) -> None:
    """Prepare a development instance: keys (field, session, anchor and report signing),
    migrations, example protocols, demo accounts. Existing keys are never replaced."""
    from dtx_trials import create_app, ensure_instance_secrets, instance_path_from_env
    from dtx_trials.cli.report import ensure_report_key

    ensure_instance_secrets(instance_path_from_env())
    app = create_app()
    console.print(ensure_report_key(app))
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        from dtx_trials.services import demo

        loaded = demo.load_library_protocols(cli_actor())
        for line in loaded:
            console.print(line)
        if demo_accounts:
            created = demo.create_demo_accounts(cli_actor())
            if created:
                console.print(
                    "[bold]Demo accounts (shown once; reset with `dtx users set-password`):[/bold]"
                )
                for username, password, roles in created:
                    console.print(f"  {username:<22} {password}  {roles}")
    console.print(f"ready: {_safe_url(app)}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the application (development server; use gunicorn in production)."""
    from dtx_trials import create_app

    app = create_app()
    app.run(host=host, port=port, threaded=True, use_reloader=False)


@cli.group()
def users() -> None:
    """Accounts and role grants."""


@users.command("create")
@click.argument("username")
@click.option("--name", "printed_name", required=True, help="Printed name used on signatures.")
@click.option("--email", default=None)
@click.option("--password", default=None, help="Omit to generate one (printed once).")
@click.option("--superuser", is_flag=True, default=False)
@with_app
def users_create(
    app: Flask,
    username: str,
    printed_name: str,
    email: str | None,
    password: str | None,
    superuser: bool,
) -> None:
    """Create an account."""
    from dtx_trials.extensions import db as sa
    from dtx_trials.services import accounts

    generated = password is None
    password = password or secrets.token_urlsafe(12)
    user = _run(
        lambda: accounts.create_user(
            sa.session,
            cli_actor(),
            username=username,
            printed_name=printed_name,
            email=email,
            password=password,
            is_superuser=superuser,
        )
    )
    console.print(
        f"created {user.username} (user id {user.id})"
        + (f" with password {password}" if generated else ""),
        highlight=False,
    )


@cli.command("init-trial")
@click.argument("trial_code")
@click.option("--title", required=True, help="The trial's title.")
@click.option("--admin", "username", required=True, help="Username of its sponsor admin.")
@click.option("--name", "printed_name", default=None, help="Printed name (new account).")
@click.option("--email", default=None)
@click.option(
    "--protocol",
    "protocol_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Protocol YAML to store and activate (its code must be TRIAL_CODE).",
)
@with_app
def init_trial(
    app: Flask,
    trial_code: str,
    title: str,
    username: str,
    printed_name: str | None,
    email: str | None,
    protocol_file: Path | None,
) -> None:
    """Create a new trial and its first sponsor admin (the account too, if it is new).

    All or nothing: the account, the trial, the grant and the protocol commit together. A new
    account's password is generated and printed once.
    """
    from sqlalchemy import select

    from dtx_trials.db import deferred_commit
    from dtx_trials.extensions import db as sa
    from dtx_trials.models import User
    from dtx_trials.services import accounts, trials
    from dtx_trials.services import protocols as protocol_service
    from dtx_trials.services.access import with_role

    session = sa.session
    text = None
    if protocol_file is not None:
        from protocols.loader import load_protocol_report

        text = protocol_file.read_text(encoding="utf-8")
        report = load_protocol_report(text, str(protocol_file))
        if report.errors:
            for issue in report.issues:
                err_console.print(str(issue), highlight=False)
            _fail(f"{protocol_file}: {len(report.errors)} error(s); nothing was created")
        assert report.protocol is not None
        if report.protocol.code != trial_code:
            _fail(
                f"{protocol_file}: code '{report.protocol.code}' is not the trial code "
                f"'{trial_code}'; nothing was created"
            )
    user = session.scalars(select(User).where(User.username == username.strip().lower())).first()
    if user is None and not printed_name:
        _fail(f"user {username} does not exist: give --name to create the account")
    password = None if user is not None else secrets.token_urlsafe(12)
    actor = cli_actor()
    try:
        with deferred_commit(session):
            if user is None:
                assert printed_name is not None
                user = _run(
                    lambda: accounts.create_user(
                        session,
                        actor,
                        username=username,
                        printed_name=printed_name,
                        email=email,
                        password=password,
                    )
                )
            trial = _run(lambda: trials.create_trial(session, actor, code=trial_code, title=title))
            _run(
                lambda: accounts.grant_role(
                    session, actor, trial_id=trial.id, user_id=user.id, role="sponsor_admin"
                )
            )
            if text is not None and protocol_file is not None:
                admin = with_role(actor, trial.id, "sponsor_admin")
                version, _ = _run(
                    lambda: protocol_service.upload_version(
                        session, admin, trial, text, protocol_file.name
                    )
                )
                _run(
                    lambda: protocol_service.activate_version(
                        session, admin, trial, version.version_no
                    )
                )
        session.commit()
    except BaseException:
        session.rollback()
        raise
    console.print(
        f"trial {trial.code} (trial id {trial.id}) created"
        + (f", protocol version 1 active ({protocol_file.name})" if protocol_file else ""),
        highlight=False,
    )
    console.print(
        f"sponsor admin {user.username} (user id {user.id})"
        + (f" password {password}  (shown once)" if password else " (existing account)"),
        highlight=False,
    )
    if protocol_file is None:
        console.print(
            f"next: sign in at /login, or store the protocol with "
            f"`dtx protocol load FILE` (its code: {trial.code})",
            highlight=False,
        )


@users.command("grant")
@click.argument("username")
@click.argument("trial_code")
@click.argument("role")
@click.option("--site", "site_code", default=None, help="Site code (required for site roles).")
@with_app
def users_grant(
    app: Flask, username: str, trial_code: str, role: str, site_code: str | None
) -> None:
    """Give USERNAME the ROLE in TRIAL_CODE."""
    from sqlalchemy import select

    from dtx_trials.extensions import db as sa
    from dtx_trials.models import Site, Trial, User
    from dtx_trials.services import accounts

    user = sa.session.scalars(select(User).where(User.username == username.lower())).first()
    trial = sa.session.scalars(select(Trial).where(Trial.code == trial_code)).first()
    if user is None or trial is None:
        _fail(f"unknown {'user ' + username if user is None else 'trial ' + trial_code}")
    site_id = None
    if site_code:
        site = sa.session.scalars(
            select(Site).where(Site.trial_id == trial.id, Site.code == site_code)
        ).first()
        if site is None:
            _fail(f"unknown site {site_code} in {trial_code}")
        site_id = site.id
    _run(
        lambda: accounts.grant_role(
            sa.session, cli_actor(), trial_id=trial.id, user_id=user.id, role=role, site_id=site_id
        )
    )
    console.print(
        f"{username} is {role} in {trial_code}" + (f" at {site_code}" if site_code else "")
    )


@users.command("set-password")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@with_app
def users_set_password(app: Flask, username: str, password: str) -> None:
    """Reset a password (revokes the user's API tokens)."""
    from sqlalchemy import select

    from dtx_trials.extensions import db as sa
    from dtx_trials.models import User
    from dtx_trials.services import accounts

    user = sa.session.scalars(select(User).where(User.username == username.lower())).first()
    if user is None:
        _fail(f"unknown user {username}")
    _run(lambda: accounts.set_password(sa.session, cli_actor(), user.id, password))
    console.print(f"password of {username} changed")


@cli.group()
def audit() -> None:
    """Audit trail."""


@audit.command("verify")
@click.argument("trial_code", required=False)
@click.option(
    "--anchors",
    "anchor_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also check the database against every signed anchor in this directory.",
)
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    help="Trusted anchor key (ed25519:<base64>, or a file); default: the instance's signer "
    "and DTX_ANCHOR_PUBLIC_KEYS.",
)
@with_app
def audit_verify(
    app: Flask, trial_code: str | None, anchor_dir: Path | None, public_keys: tuple[str, ...]
) -> None:
    """Recompute the hash chain(s) and compare the data with the trail; exit 1 on any problem."""
    from sqlalchemy import select

    from dtx_trials.anchors import AnchorError, DirectoryStore, public_key_id, read_public_key
    from dtx_trials.extensions import db as sa
    from dtx_trials.models import Trial
    from dtx_trials.services import checkpoints
    from dtx_trials.services.integrity import check_integrity

    trial_id = None
    if trial_code:
        trial = sa.session.scalars(select(Trial).where(Trial.code == trial_code)).first()
        if trial is None:
            _fail(f"unknown trial {trial_code}")
        trial_id = trial.id
    report = check_integrity(sa.session, trial_id)
    problems = list(report.problems)
    anchor_summary = ""
    if anchor_dir is not None:
        anchoring = app.extensions.get("dtx_anchoring")
        trusted = dict(anchoring.trusted) if anchoring else {}
        try:
            for text in public_keys:
                raw = read_public_key(text)
                trusted[public_key_id(raw)] = raw
        except AnchorError as exc:
            _fail(str(exc))
        if not trusted:
            _fail("no trusted anchor key: pass --public-key or configure DTX_ANCHOR_PUBLIC_KEYS")
        anchors = checkpoints.verify_anchors(
            sa.session,
            DirectoryStore(anchor_dir),
            trusted,
            anchoring.tsa_cert if anchoring else None,
        )
        problems.extend(anchors.problems)
        anchor_summary = f", {anchors.n_trusted} of {anchors.n_anchors} anchor(s) trusted"
    for problem in problems:
        console.print(f"[red]FAIL[/red] {problem.kind:<14} {problem.message}", highlight=False)
    summary = (
        f"{report.chains} chain(s), {report.events} events, "
        f"{report.rows_checked} rows checked{anchor_summary}, {len(problems)} problem(s)"
    )
    if not problems:
        console.print(f"[green]OK[/green] {summary}")
        return
    console.print(f"[red]FAILED[/red] {summary}")
    sys.exit(1)


@audit.command("anchor")
@click.option("--reason", default="manual", show_default=True)
@with_app
def audit_anchor(app: Flask, reason: str) -> None:
    """Sign the head of every chain into a new anchor in the anchor store (checkpoint)."""
    from dtx_trials.anchors import AnchorError
    from dtx_trials.extensions import db as sa
    from dtx_trials.services import checkpoints

    try:
        anchor = checkpoints.write_checkpoint(sa.session, reason, actor=cli_actor())
    except checkpoints.CheckpointRefusedError as exc:
        for problem in exc.problems:
            err_console.print(f"FAIL {problem.kind:<14} {problem.message}", highlight=False)
        _fail(str(exc))
    except AnchorError as exc:
        _fail(str(exc))
    stamp = (
        f", time-stamped {anchor.timestamp.gen_time:%Y-%m-%dT%H:%M:%SZ}" if anchor.timestamp else ""
    )
    console.print(
        f"anchor {anchor.name}: {len(anchor.chains)} chain(s), signed by {anchor.key_id}{stamp}"
    )


@audit.command("export")
@click.argument("trial_code")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "pdf"]), default="pdf", show_default=True
)
@click.option("--subject", default=None, help="Only this participant's trail.")
@click.option("--record", "record_id", type=int, default=None, help="Only this form record's.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@with_app
def audit_export(
    app: Flask, trial_code: str, fmt: str, subject: str | None, record_id: int | None, out: Path
) -> None:
    """Write the trail for inspectors (who, when, what, old -> new, why) as CSV or PDF."""
    from sqlalchemy import select

    from dtx_trials.extensions import db as sa
    from dtx_trials.models import Trial
    from dtx_trials.services.access import command_line
    from dtx_trials.services.trail_export import export_trail

    trial = sa.session.scalars(select(Trial).where(Trial.code == trial_code)).first()
    if trial is None:
        _fail(f"unknown trial {trial_code}")
    actor = command_line(trial.id, "auditor")
    name, content = _run(
        lambda: export_trail(sa.session, actor, trial, fmt, subject=subject, record_id=record_id)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(content)
    console.print(f"wrote {out / name}")


@cli.group()
def keys() -> None:
    """Field keys: generate, status, rotate (see README: key custody)."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new random field key (urlsafe base64 of 32 bytes) and its key id."""
    from dtx_trials import crypto

    key = crypto.generate_key()
    console.print(key)
    err_console.print(f"key id {crypto.FieldKey(key).kid}")


@keys.command("status")
@click.option("--check/--no-check", default=True, help="Compare with the database's KCV.")
def keys_status(check: bool) -> None:
    """Show the configured key ring and the key the database's data are written under."""
    from sqlalchemy import select

    from dtx_trials import create_app, crypto
    from dtx_trials.extensions import db as sa
    from dtx_trials.models import KeyCheck

    app = create_app({"KEY_CHECK_AT_START": False})
    with app.app_context():
        for info in crypto.cipher().key_infos():
            console.print(f"{info.kid}  {'current' if info.is_current else 'retired'}")
        if check:
            for row in sa.session.scalars(select(KeyCheck).order_by(KeyCheck.created_at)):
                console.print(f"database: {row.kid}  {row.status}")


@keys.command("rotate")
def keys_rotate() -> None:
    """Move identifiers and sealed values to DTX_FIELD_KEY (old key in DTX_FIELD_KEYS_RETIRED).

    Stop the app servers first; start them again with the new key afterwards.
    """
    from dtx_trials import create_app
    from dtx_trials.extensions import db as sa
    from dtx_trials.services import keys as key_service

    app = create_app({"KEY_CHECK_AT_START": False})
    with app.app_context():
        result = _run(lambda: key_service.rotate_keys(sa.session, cli_actor()))
    console.print(
        f"rotated {', '.join(result.from_kids) or '(none)'} -> {result.to_kid}: "
        f"{result.n_reencrypted} row(s) re-encrypted, {result.n_resealed} row(s) re-sealed"
    )


from dtx_trials.cli import analysis as _analysis  # noqa: E402
from dtx_trials.cli import coding as _coding  # noqa: E402
from dtx_trials.cli import demo as _demo  # noqa: E402
from dtx_trials.cli import devices as _devices  # noqa: E402
from dtx_trials.cli import epro as _epro  # noqa: E402
from dtx_trials.cli import notifications as _notifications  # noqa: E402
from dtx_trials.cli import protocol as _protocol  # noqa: E402
from dtx_trials.cli import randomization as _randomization  # noqa: E402
from dtx_trials.cli import report as _report  # noqa: E402
from dtx_trials.cli import safety as _safety  # noqa: E402
from dtx_trials.cli import visits as _visits  # noqa: E402

cli.add_command(_protocol.protocol)
cli.add_command(_randomization.randomization)
cli.add_command(_analysis.analyze)
cli.add_command(_analysis.export)
cli.add_command(_analysis.worker)
cli.add_command(_demo.demo)
cli.add_command(_devices.devices)
cli.add_command(_coding.coding)
cli.add_command(_notifications.notifications)
cli.add_command(_visits.visits)
cli.add_command(_epro.epro)
cli.add_command(_safety.safety)
cli.add_command(_report.report)


@cli.command("init-key")
@click.option("--instance", type=click.Path(path_type=Path), default=None)
def init_key(instance: Path | None) -> None:
    """Create instance/field.key and instance/secret.key if they do not exist."""
    from dtx_trials import ensure_instance_secrets, instance_path_from_env

    ensure_instance_secrets(str(instance or instance_path_from_env()))
    console.print("keys present")


def _fail(message: str) -> Any:
    err_console.print(f"error: {message}")
    sys.exit(2)


def _run(call: Callable[[], Any]) -> Any:
    from dtx_trials.services.errors import DomainError

    try:
        return call()
    except DomainError as exc:
        _fail(_domain_message(exc))


def _domain_message(exc: Any) -> str:
    """A domain error's message with its field errors, as the command line prints it."""
    details = "; ".join(
        f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in exc.errors.items()
    )
    return str(exc.message + (f" ({details})" if details else ""))
