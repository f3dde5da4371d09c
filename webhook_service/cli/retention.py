"""`webhook-service delete` and `webhook-service purge`: erasing a session, and applying retention now."""

from __future__ import annotations

import click

from .common import CLIError, load_settings

CLI_ACTOR = "cli"


@click.command()
@click.argument("session_or_job")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def delete(session_or_job: str, yes: bool) -> None:
    """Erase a session here and at Gladia (DELETE /v2/live/:id), with an audit row.

    Its transcript, messages, callback requests and results go; the job row stays with its durations,
    so usage and billing reports still count it.
    """
    from ..retention import DeleteRefused, delete_session, describe

    settings = load_settings()
    try:
        found = describe(settings, session_or_job)
    except LookupError as exc:
        raise CLIError(str(exc)) from None
    if not yes:
        what = (f"job {found['job_id']} ({found['source_path']}, {found['state']}, "
                f"{found['utterances']} utterances), Gladia session {found['gladia_id'] or '-'}")
        click.confirm(f"Erase {what} here and at Gladia? This cannot be undone", abort=True, err=True)
    try:
        erased = delete_session(settings, found["job_id"], actor=CLI_ACTOR)
    except (LookupError, DeleteRefused) as exc:
        raise CLIError(str(exc)) from None
    rows = ", ".join(f"{name} {count}" for name, count in erased.rows.items() if count)
    click.echo(f"deleted job {erased.job_id} (Gladia session {erased.gladia_id or '-'}: {erased.gladia}); "
               f"rows: {rows or 'none'}")


@click.command()
@click.option("--dry-run", is_flag=True, help="Say what would be erased, erase nothing.")
def purge(dry_run: bool) -> None:
    """Apply retention now: RETENTION_DAYS, INBOX_RETENTION_DAYS, GLADIA_DELETE_AFTER_RECONCILE.

    The sweeper does the same a batch at a time; this runs until nothing is left.
    """
    from ..retention import plan, purge as run_purge

    settings = load_settings()
    if dry_run:
        found = plan(settings)
        click.echo(_line("transcripts and results of", found.sessions, "settled sessions", found.sessions_before,
                         "RETENTION_DAYS", settings.retention_days))
        click.echo(_line("raw bodies of", found.inbox_bodies, "callback requests", found.inbox_before,
                         "INBOX_RETENTION_DAYS", settings.inbox_retention_days, since="received"))
        if settings.gladia_delete_after_reconcile:
            click.echo(f"would delete {found.gladia_sessions} reconciled sessions at Gladia "
                       "(GLADIA_DELETE_AFTER_RECONCILE=on)")
        else:
            click.echo("would delete no session at Gladia (GLADIA_DELETE_AFTER_RECONCILE=off)")
        return
    done = run_purge(settings)
    click.echo(f"erased the transcripts and results of {len(done.sessions)} sessions, the raw bodies of "
               f"{done.inbox_bodies} callback requests; deleted {len(done.gladia_deleted)} sessions at Gladia"
               + (f" ({done.gladia_errors} refused, retried by the sweeper)" if done.gladia_errors else ""))


def _line(what: str, count: int, unit: str, before, setting: str, days: int, since: str = "ended") -> str:
    if not days:
        return f"would erase no {what.removesuffix(' of')} ({setting}=0: kept forever)"
    return f"would erase the {what} {count} {unit} ({since} before {before:%Y-%m-%d %H:%M} UTC, {setting}={days})"


COMMANDS = (delete, purge)
