"""`webhook-service transcript` and `webhook-service export`: transcripts out of the store."""

from __future__ import annotations

import sys

import click

from .common import CLIError, load_settings

TRANSCRIPT_FORMATS = ("txt", "srt", "vtt", "json")
EXPORT_FORMATS = ("txt", "srt", "vtt", "json", "csv")


@click.command()
@click.argument("session_or_job")
@click.option("--format", "fmt", type=click.Choice(TRANSCRIPT_FORMATS), default="txt", show_default=True)
@click.option("--channel", type=click.IntRange(min=0), help="Only this audio channel (0 is the first).")
def transcript(session_or_job: str, fmt: str, channel: int | None) -> None:
    """Print a session's transcript (by job id, Gladia id, or an 8+ character prefix of either)."""
    from ..db import session_scope
    from ..jobs.queries import require_job
    from ..transcripts import TranscriptUnavailable, render

    settings = load_settings()
    with session_scope(settings.database_url) as session:
        try:
            job = require_job(session, session_or_job)
        except LookupError as exc:  # unknown, or a prefix of several jobs
            raise CLIError(str(exc)) from None
        try:
            chunks = render(session, job, fmt, channel)
        except TranscriptUnavailable as exc:
            raise CLIError(str(exc)) from None
        for chunk in chunks:
            click.echo(chunk, nl=False)


@click.command()
@click.option("--batch", help="Only this batch (id or name).")
@click.option("--since", help="Sessions created on or after this UTC day (YYYY-MM-DD).")
@click.option("--until", help="Sessions created on or before this UTC day (YYYY-MM-DD).")
@click.option("--state", default="reconciled", show_default=True,
              help="Job states to export, comma-separated.")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), required=True)
@click.option("--out", "out", required=True, help="The folder to write into (created if needed).")
@click.option("--force", is_flag=True, help="Write again the sessions the folder's manifest already lists.")
def export(batch: str | None, since: str | None, until: str | None, state: str, fmt: str, out: str,
           force: bool) -> None:
    """Write one transcript file per session into a folder, with a manifest.csv beside them.

    Files are named after the audio files; an export that stopped is resumed by running it again.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..transcripts.export import ExportError, export as run_export, make_selection

    settings = load_settings()
    try:
        selection = make_selection(batch, since, until, state)
        with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.description}"), transient=True,
                      console=Console(stderr=True), disable=not sys.stderr.isatty()) as bar:
            task = bar.add_task("", total=None)

            def advance(done: int, total: int, name: str) -> None:
                bar.update(task, completed=done, total=total, description=name)

            summary = run_export(settings.database_url, out, fmt, selection, force=force, progress=advance)
    except ExportError as exc:
        raise CLIError(str(exc)) from None
    line = f"{len(summary.exported)} exported, {summary.skipped} already there (skipped)"
    if summary.unavailable:
        line += f", {len(summary.unavailable)} without a transcript (deleted)"
    click.echo(f"{line}; {summary.selected} sessions selected; manifest: {out.rstrip('/')}/manifest.csv")


COMMANDS = (transcript, export)
