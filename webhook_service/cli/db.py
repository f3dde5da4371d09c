"""`webhook-service db`: the database schema (Alembic migrations)."""

from __future__ import annotations

import click

from .common import CLIError, load_settings


@click.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


def _migrating(action, settings, *args) -> None:
    try:
        action(settings.database_url, *args)
    except Exception as exc:  # connection refused, unknown revision...
        from ..db import database_problem

        problem = database_problem(exc, settings.database_url)
        if problem and "no schema" not in problem:
            raise CLIError(f"migration failed: {problem}") from None
        raise CLIError(f"migration failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}") from None


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing when it succeeds.")
def db_upgrade(revision: str, quiet: bool) -> None:
    """Apply migrations to DATABASE_URL (one process at a time: the others wait, then find nothing to do)."""
    from ..config import redact_url
    from ..migrate import upgrade

    settings = load_settings()
    _migrating(upgrade, settings, revision)
    if not quiet:
        click.echo(f"database at {redact_url(settings.database_url)} is at revision {revision}")


@db.command("downgrade", context_settings={"ignore_unknown_options": True})
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Undo migrations down to REVISION (`base`: every table dropped; `-1`: one step)."""
    from ..config import redact_url
    from ..migrate import current, downgrade

    settings = load_settings()
    _migrating(downgrade, settings, revision)
    now = ", ".join(_current(current, settings)) or "base (no migration applied)"
    click.echo(f"database at {redact_url(settings.database_url)} is at revision {now}")


def _current(current, settings) -> tuple[str, ...]:
    try:
        return current(settings.database_url)
    except Exception as exc:
        raise CLIError(f"cannot read the database's revision: {type(exc).__name__}: {exc}".splitlines()[0]) from None


@db.command("current")
def db_current() -> None:
    """The revision DATABASE_URL is at, and whether it is the latest."""
    from ..migrate import current, heads

    settings = load_settings()
    revisions = _current(current, settings)
    latest = set(heads())
    if not revisions:
        click.echo("base (no migration applied; run `webhook-service db upgrade`)")
        return
    for revision in revisions:
        click.echo(f"{revision} ({'head' if revision in latest else 'behind: run `webhook-service db upgrade`'})")


@db.command("history")
def db_history() -> None:
    """Every migration, newest first (the one the database is at is marked)."""
    from ..migrate import current, history

    settings = load_settings()
    try:
        applied = set(current(settings.database_url))
    except Exception:  # history is readable without a database
        applied = set()
    for revision, parent, message in history():
        mark = " (current)" if revision in applied else ""
        click.echo(f"{parent or '<base>'} -> {revision}{mark}, {message}")


COMMANDS = (db,)
