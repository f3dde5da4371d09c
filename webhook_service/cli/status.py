"""`webhook-service status`: jobs as a table (or JSON), from the job summaries the API and dashboard share."""

from __future__ import annotations

import json
import os

import click

from .common import CLIError, load_settings

COLUMNS = ("job", "batch", "file", "state", "audio", "streamed", "tries", "gladia id", "error")
RIGHT_ALIGNED = ("audio", "streamed", "tries")


@click.command()
@click.argument("job_or_batch", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(job_or_batch: str | None, as_json: bool) -> None:
    """Show jobs: one job, one batch (by id or name), or the latest jobs."""
    from ..jobs.queries import job_summaries

    settings = load_settings()
    try:
        rows = job_summaries(settings, job_or_batch)
    except LookupError as exc:
        raise CLIError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    _print_table(rows)


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="jobs")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in RIGHT_ALIGNED else "left")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
        table.add_row(*_cells(row))
    console = Console()
    console.print(table)
    if rows:
        console.print(", ".join(f"{state}: {n}" for state, n in sorted(counts.items())) + f" (total {len(rows)})")


def _cells(row: dict) -> tuple[str, ...]:
    """One job summary as the table's cells, in COLUMNS order."""
    duration = row.get("audio_duration_s")
    tries = f"{row.get('attempts') or 0}" + (f"/{row['reconnects']}r" if row.get("reconnects") else "")
    state = row["state"]
    if state == "queued" and row.get("retry_at"):  # deferred: waiting for a session slot or Gladia's 429
        state += f" (retry {row['retry_at'][11:19]})"
    return (row["id"][:8], row["batch"] or "", os.path.basename(row["source_path"]), state,
            f"{duration:.1f}s" if duration else "", _streamed(row, duration), tries, row["gladia_id"] or "",
            (row["last_error"] or "")[:100])


def _streamed(row: dict, duration: float | None) -> str:
    """How much of the file Gladia acknowledged: a share, with seconds when the duration is known."""
    from ..models import STREAMED_STATES

    if row["state"] in STREAMED_STATES and duration:
        return "100%"
    if row["bytes_total"]:
        share = min(1.0, (row["bytes_acked"] or 0) / row["bytes_total"])
        return f"{100 * share:.0f}%" + (f" ({share * duration:.0f}s)" if duration else "")
    return ""


COMMANDS = (status,)
