"""`webhook-service reconcile`: check sessions against GET /v2/live/:id in this process, one line per session."""

from __future__ import annotations

import json
import sys

import click

from .common import CLIError, load_settings


@click.command()
@click.argument("session_id", required=False)
@click.option("--pending", is_flag=True, help="Every job whose stream ended and that is not settled yet.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reconcile(session_id: str | None, pending: bool, as_json: bool) -> None:
    """Check sessions against GET /v2/live/:id and repair what callbacks missed.

    SESSION_ID is a Gladia session id or a job id. Runs in this process (no
    broker needed). Exit status 1 when a reconciliation failed.
    """
    from ..reconcile import JobNotFound, reconcile_job

    if bool(session_id) == pending:
        raise CLIError("give either a SESSION_ID or --pending")
    settings = load_settings()
    results = []
    for job_id in _job_ids(settings, session_id, pending):
        try:
            results.append(reconcile_job(settings, job_id, trigger="cli", settle=False))
        except JobNotFound:  # deleted meanwhile
            continue
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2, default=str))
    else:
        if not results:
            click.echo("nothing to reconcile")
        for r in results:
            click.echo(_result_line(r))
    if any(r.outcome == "failed" for r in results):
        sys.exit(1)


def _job_ids(settings, session_id: str | None, pending: bool) -> list[str]:
    from ..reconcile import JobNotFound, find_job_id, pending_job_ids

    if pending:
        return pending_job_ids(settings)
    try:
        return [find_job_id(settings, session_id or "")]
    except JobNotFound as exc:
        raise CLIError(str(exc)) from None


def _result_line(r) -> str:
    line = (f"{r.gladia_id or r.job_id}: {r.outcome}  expected={r.expected} received={r.received} "
            f"missing={r.missing} duplicates={r.duplicates} mismatched={r.mismatched} "
            f"repaired={r.repaired}")
    if r.reason:
        line += f"  ({r.reason})"
    if r.next_attempt_at:
        line += f"  next attempt at {r.next_attempt_at:%H:%M:%S} UTC"
    return line


COMMANDS = (reconcile,)
