"""`webhook-service report`: the reports catalogue as a terminal table, CSV or JSON."""

from __future__ import annotations

import json
import sys

import click

from .common import CLIError, load_settings

LEFT_ALIGNED = ("day", "job_id", "batch", "state", "language", "languages", "source", "error")


@click.command()
@click.argument("name", required=False)
@click.option("--since", help="First UTC day included (YYYY-MM-DD).")
@click.option("--until", help="Last UTC day included (YYYY-MM-DD).")
@click.option("--batch", help="Only this batch (id or name).")
@click.option("--limit", help="At most this many rows (default: all).")
@click.option("--offset", help="Skip this many rows first (with --limit: the next page).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def report(name: str | None, since: str | None, until: str | None, batch: str | None, limit: str | None,
           offset: str | None, fmt: str) -> None:
    """Print a report (without NAME: list the reports)."""
    from .. import reports

    if name is None:
        for item in reports.REPORTS.values():
            click.echo(f"{item.name:<18} {item.description}")
        return
    settings = load_settings()
    try:
        result = reports.run_report(settings.database_url, name, since=since, until=until, batch=batch,
                                    limit=limit, offset=offset)
    except reports.ReportError as exc:
        raise CLIError(str(exc)) from None
    except Exception as exc:  # database unreachable, schema not migrated...
        from ..db import database_problem

        problem = database_problem(exc, settings.database_url)
        raise CLIError(problem or f"report failed: {type(exc).__name__}: {_first_line(exc)}") from None
    if fmt == "json":
        click.echo(json.dumps(result.as_json(), indent=2))
    elif fmt == "csv":
        _print_csv(result)
    else:
        _print_table(result)


def _print_csv(result) -> None:
    from ..reports import write_csv

    write_csv(sys.stdout, result.report.columns, result.rows)


def _print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    shown = result.report.table_columns
    filters = ", ".join(f"{k}={v}" for k, v in result.filters.as_dict().items() if v)
    table = Table(title=result.report.title + (f" ({filters})" if filters else ""))
    for column in shown:
        table.add_column(column, justify="left" if column in LEFT_ALIGNED else "right")
    for row in result.rows:
        table.add_row(*(_report_cell(row[c]) for c in shown))
    # Piped output is not wrapped to 80 columns: a report table is wide.
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    if not result.rows:
        click.echo("no rows", err=True)


def _report_cell(value) -> str:
    """A value as the terminal table shows it: short, with NULL visible as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    return str(value)


COMMANDS = (report,)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:300]
