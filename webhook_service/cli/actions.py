"""`webhook-service retry` and `cancel`: run failed jobs again with a fresh Gladia session, or stop jobs.

Both take a job by its id, its Gladia session id or the 8-character prefix
`status` shows, or a whole batch (`--batch`, id or name); `retry --failed`
takes every failed job (`--since` a day or a time, UTC). The domain's rules are
in :mod:`webhook_service.jobs.redrive`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import click

from .common import CLIError, load_settings


def _parse_since(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise CLIError(f"--since must be a date (YYYY-MM-DD) or an ISO-8601 time, got {raw!r}") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _echo(result, verb: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
        return
    for item in result.done:
        extra = ""
        if "retries" in item:
            extra = f"  run {item['retries'] + 1}" + (f", replaces session {item['previous_session']}"
                                                      if item.get("previous_session") else "")
        if item.get("gladia"):
            extra = f"  ({item['gladia']})"
        click.echo(f"{item['job_id']}  {verb:<9} {item['source_path']}{extra}")
    for item in result.skipped:
        click.echo(f"{item['job_id']}  skipped   {item['source_path']}  ({item['reason']})")
    click.echo(f"{len(result.done)} {verb}, {len(result.skipped)} skipped")


@click.command()
@click.argument("job", required=False)
@click.option("--batch", help="Every failed job of this batch (id or name), cancelled ones excepted.")
@click.option("--failed", "all_failed", is_flag=True, help="Every failed job (cancelled ones excepted).")
@click.option("--since", help="With --failed: only jobs that failed since this day or time (UTC).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def retry(job: str | None, batch: str | None, all_failed: bool, since: str | None, as_json: bool) -> None:
    """Run failed jobs again, each with a fresh Gladia session.

    JOB is a job id, its Gladia session id or a unique prefix (8 characters or
    more). The job keeps its id; its previous session is kept in its history
    (`status --json`, the API) and that session's results are replaced once the
    new session is reconciled.
    """
    from ..jobs.redrive import ActionError, retry as retry_jobs
    from ..worker.dispatch import dispatcher_for

    if sum(bool(x) for x in (job, batch, all_failed)) != 1:
        raise CLIError("give exactly one of JOB, --batch B or --failed")
    if since is not None and not all_failed:
        raise CLIError("--since goes with --failed")
    when = _parse_since(since)
    settings = load_settings()
    try:
        result = retry_jobs(settings, job=job, batch=batch, failed=all_failed, since=when,
                            dispatcher=dispatcher_for(settings))
    except ActionError as exc:
        raise CLIError(str(exc)) from None
    _echo(result, "retried", as_json)


@click.command()
@click.argument("job", required=False)
@click.option("--batch", help="Every job of this batch (id or name) that has not finished streaming.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cancel(job: str | None, batch: str | None, as_json: bool) -> None:
    """Cancel jobs: queued ones never start, streaming ones are stopped (stop_recording).

    A session that received no audio is deleted at Gladia; one that did is kept
    and reconciled, so its partial transcript is stored. The job ends `failed`
    ("cancelled by ..."); `retry JOB` runs it again.
    """
    import getpass

    from ..jobs.redrive import ActionError, cancel as cancel_jobs

    if bool(job) == bool(batch):
        raise CLIError("give exactly one of JOB or --batch B")
    settings = load_settings()
    try:
        who = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in this environment
        who = "cli"
    try:
        result = cancel_jobs(settings, job=job, batch=batch, who=f"{who} (cli)")
    except ActionError as exc:
        raise CLIError(str(exc)) from None
    _echo(result, "cancelled", as_json)


COMMANDS = (retry, cancel)
