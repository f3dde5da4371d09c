"""`webhook-service token`: operator API tokens for the JSON API, /metrics and the dashboard's login.

A token's secret is printed once, as the last line of `token create` (so a
script can take it with ``tail -n 1``); only its SHA-256 is stored.
"""

from __future__ import annotations

import click

from .common import CLIError, load_settings


@click.group()
def token() -> None:
    """Operator API tokens (Authorization: Bearer <token>)."""


@token.command("create")
@click.option("--name", required=True, help="Who or what holds the token (unique among tokens in force).")
@click.option("--scope", default="read", show_default=True,
              help="read: every page and report; admin: also the actions that change or erase.")
@click.option("--expires", "expires_days", type=int, default=None, help="Days until it expires (default: never).")
def token_create(name: str, scope: str, expires_days: int | None) -> None:
    """Create a token; its secret is the last line of the output, shown only this once."""
    from ..auth import TokenError, create_token
    from ..db import session_scope

    settings = load_settings()
    try:
        with session_scope(settings.database_url) as session:
            row, secret = create_token(session, name, scope, expires_days)
            expires = row.expires_at.strftime("%Y-%m-%d %H:%M UTC") if row.expires_at else "never"
    except TokenError as exc:
        raise CLIError(str(exc)) from None
    click.echo(f"created {scope} token {name!r} (expires: {expires}); store it now, it is not shown again:")
    click.echo(secret)


@token.command("list")
def token_list() -> None:
    """Every token with its scope and dates (never a secret)."""
    from ..auth import list_tokens
    from ..db import session_scope
    from ..models import utcnow

    settings = load_settings()
    now = utcnow()
    with session_scope(settings.database_url) as session:
        rows = list_tokens(session)
        if not rows:
            click.echo("no tokens; create one with `webhook-service token create --name NAME`")
            return
        click.echo(f"{'NAME':<24} {'SCOPE':<6} {'STATUS':<8} {'CREATED':<17} {'EXPIRES':<17} LAST USED")
        for row in rows:
            status = ("revoked" if row.revoked_at else
                      "expired" if row.expires_at and row.expires_at <= now else "active")
            click.echo(f"{row.name:<24} {row.scope:<6} {status:<8} {_when(row.created_at):<17} "
                       f"{_when(row.expires_at) or 'never':<17} {_when(row.last_used_at) or '-'}")


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value else ""


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke the token in force with this name; it stops working at once."""
    from ..auth import TokenError, revoke_token
    from ..db import session_scope

    settings = load_settings()
    try:
        with session_scope(settings.database_url) as session:
            revoke_token(session, name)
    except TokenError as exc:
        raise CLIError(str(exc)) from None
    click.echo(f"revoked token {name!r}")


COMMANDS = (token,)
