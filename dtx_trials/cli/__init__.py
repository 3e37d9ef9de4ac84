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
    from dtx_trials.services.access import Actor

    return Actor(
        user_id=None, username="cli", printed_name="Command line", via="cli", is_superuser=True
    )


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
    """Prepare a development instance: keys, migrations, example protocols, demo accounts."""
    from dtx_trials import create_app, ensure_instance_secrets, instance_path_from_env

    ensure_instance_secrets(instance_path_from_env())
    app = create_app()
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
    _run(
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
    console.print(f"created {username}" + (f" with password {password}" if generated else ""))


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
@with_app
def audit_verify(app: Flask, trial_code: str | None) -> None:
    """Recompute the hash chain(s) and compare the data with the trail; exit 1 on any problem."""
    from sqlalchemy import select

    from dtx_trials.extensions import db as sa
    from dtx_trials.models import Trial
    from dtx_trials.services.integrity import check_integrity

    trial_id = None
    if trial_code:
        trial = sa.session.scalars(select(Trial).where(Trial.code == trial_code)).first()
        if trial is None:
            _fail(f"unknown trial {trial_code}")
        trial_id = trial.id
    report = check_integrity(sa.session, trial_id)
    for problem in report.problems:
        console.print(f"[red]FAIL[/red] {problem.kind:<14} {problem.message}", highlight=False)
    summary = (
        f"{report.chains} chain(s), {report.events} events, "
        f"{report.rows_checked} rows checked, {len(report.problems)} problem(s)"
    )
    if report.ok:
        console.print(f"[green]OK[/green] {summary}")
        return
    console.print(f"[red]FAILED[/red] {summary}")
    sys.exit(1)


from dtx_trials.cli import analysis as _analysis  # noqa: E402
from dtx_trials.cli import demo as _demo  # noqa: E402
from dtx_trials.cli import notifications as _notifications  # noqa: E402
from dtx_trials.cli import protocol as _protocol  # noqa: E402
from dtx_trials.cli import randomization as _randomization  # noqa: E402

cli.add_command(_protocol.protocol)
cli.add_command(_randomization.randomization)
cli.add_command(_analysis.analyze)
cli.add_command(_analysis.export)
cli.add_command(_analysis.worker)
cli.add_command(_demo.demo)
cli.add_command(_notifications.notifications)


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
        details = "; ".join(
            f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in exc.errors.items()
        )
        _fail(exc.message + (f" ({details})" if details else ""))
