"""`webhook-service db`: the database schema (Alembic migrations)."""

from __future__ import annotations

import click

from .common import CLIError, load_settings


@click.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Apply migrations to DATABASE_URL."""
    from ..config import redact_url
    from ..migrate import upgrade

    settings = load_settings()
    try:
        upgrade(settings.database_url, revision)
    except Exception as exc:  # connection refused, unknown revision...
        from ..db import database_problem

        problem = database_problem(exc, settings.database_url)
        if problem and "no schema" not in problem:
            raise CLIError(f"migration failed: {problem}") from None
        raise CLIError(f"migration failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}") from None
    click.echo(f"database at {redact_url(settings.database_url)} is at revision {revision}")


COMMANDS = (db,)
