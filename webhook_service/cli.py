"""The `webhook-service` command.

Every sub-command reads its settings from the environment (see config.py); a
bad setting or bad input ends with a one-line message and exit status 2,
never a traceback.
"""

from __future__ import annotations

import json
import os
import sys

import click

from .config import ConfigError, Settings
from .db import configure_pool
from .logging_setup import configure_logging


class CLIError(click.ClickException):
    exit_code = 2


def load_settings() -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise CLIError(f"invalid setting: {exc}") from None
    settings.ensure_dirs()
    configure_logging(settings.log_level)
    configure_pool(settings.db_pool_size, settings.db_max_overflow)
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Stream audio files into Gladia live sessions and keep every result in SQL."""


# ----------------------------------------------------------------------------- db

@cli.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Apply migrations to DATABASE_URL."""
    from .config import redact_url
    from .migrate import upgrade

    settings = load_settings()
    try:
        upgrade(settings.database_url, revision)
    except Exception as exc:  # connection refused, unknown revision...
        raise CLIError(f"migration failed: {type(exc).__name__}: {exc}") from None
    click.echo(f"database at {redact_url(settings.database_url)} is at revision {revision}")


# -------------------------------------------------------------------- processes

@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=4, show_default=True, type=int, help="gunicorn worker processes.")
@click.option("--dev", is_flag=True, help="Flask's development server instead of gunicorn.")
def web(host: str, port: int, workers: int, dev: bool) -> None:
    """Run the receiver, JSON API and dashboard."""
    settings = load_settings()
    if dev:
        from .web import create_app

        create_app(settings).run(host=host, port=port, threaded=True)
        return
    os.execvp(
        sys.executable,
        [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(workers),
         "--threads", "2", "--access-logfile", "-", "webhook_service.wsgi:app"],
    )


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", default=None, type=int,
              help="Worker threads, i.e. concurrent streams and tasks (default WORKER_CONCURRENCY).")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None) -> None:
    """Run a Celery worker (extra arguments go to celery).

    The pool is Celery's `threads`: every stream of the process runs on one
    shared asyncio loop, and a thread per task only waits for its stream.
    """
    settings = load_settings()
    args = [sys.executable, "-m", "celery", "-A", "webhook_service.worker.celery_app", "worker",
            "--loglevel", settings.log_level.upper(), "-Q", "webhook_service,streams", "--pool", "threads",
            "--concurrency", str(concurrency or settings.worker_concurrency)]
    os.execvp(sys.executable, args + list(ctx.args))


@cli.command()
def beat() -> None:
    """Run Celery beat (the periodic sweeper)."""
    load_settings()
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", "webhook_service.worker.celery_app",
                               "beat", "--loglevel", "INFO"])


# ------------------------------------------------------------------------ submit

def _parse_metadata(items: tuple[str, ...]) -> dict[str, str]:
    metadata = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--metadata expects KEY=VALUE, got {item!r}")
        metadata[key.strip()] = value
    return metadata


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--batch", "batch_name", help="Batch name (created, or added to when it exists).")
@click.option("--wait", "wait_", is_flag=True, help="Show progress until every job is finished or failed.")
@click.option("--until", type=click.Choice(["streamed", "done", "reconciled"]), default="done", show_default=True,
              help="With --wait: the state that counts as finished.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="Session options for Gladia's POST /v2/live, as a JSON or YAML file.")
@click.option("--language", "languages", multiple=True, help="Language code (repeat for several; none = detect).")
@click.option("--code-switching/--no-code-switching", default=None, help="Detect the language per utterance.")
@click.option("--translate-to", multiple=True, help="Real-time translation target language (repeatable).")
@click.option("--sample-rate", type=click.Choice(["8000", "16000", "32000", "44100", "48000"]),
              help="Session sample rate (default: the file's when Gladia accepts it, else 16000).")
@click.option("--bit-depth", type=click.Choice(["8", "16", "24", "32"]), help="PCM bit depth (default 16).")
@click.option("--endpointing", type=float, help="Seconds of silence that end an utterance (0.01-10).")
@click.option("--chunk-ms", type=int, help="Audio per WebSocket frame, in ms (default CHUNK_MS).")
@click.option("--speed", type=float, help="Pace: 1 = real time, 0 = as fast as acknowledgements allow (default STREAM_SPEED).")
@click.option("--metadata", multiple=True, help="KEY=VALUE added to every session's custom_metadata (repeatable).")
@click.option("--no-enqueue", is_flag=True, hidden=True, help="Write the jobs but send no task (the sweeper sends them).")
def submit(paths: tuple[str, ...], batch_name: str | None, wait_: bool, until: str, timeout: float | None,
           as_json: bool, config_file: str | None, languages: tuple[str, ...], code_switching: bool | None,
           translate_to: tuple[str, ...], sample_rate: str | None, bit_depth: str | None,
           endpointing: float | None, chunk_ms: int | None, speed: float | None, metadata: tuple[str, ...],
           no_enqueue: bool) -> None:
    """Stream audio files into Gladia live sessions: files, folders, glob patterns or a CSV manifest.

    A CSV manifest has a `path` column and optional `language`, `chunk_ms`, `speed`, `sample_rate`,
    `config` (JSON) columns; any other column goes to the session's custom_metadata. Prints the job ids.
    """
    from .gladia import session_config as sc
    from .jobs import submit as submission
    from .worker.dispatch import dispatcher_for

    settings = load_settings()
    if batch_name is not None and not (0 < len(batch_name) <= 200):
        raise CLIError("--batch must be 1 to 200 characters")
    try:
        config = sc.load_file(config_file) if config_file else {}
        options = sc.from_options(
            languages=languages, code_switching=code_switching, translate_to=translate_to,
            sample_rate=int(sample_rate) if sample_rate else None, bit_depth=int(bit_depth) if bit_depth else None,
            endpointing=endpointing, chunk_ms=chunk_ms, speed=speed, metadata=_parse_metadata(metadata))
        config = sc.validate(sc.merge(config, options))
        plans = submission.plan(settings, paths, config)
    except (sc.SessionConfigError, submission.SubmitError) as exc:
        raise CLIError(str(exc)) from None
    result = submission.record(settings, plans, batch_name, config)
    queued = [j["id"] for j in result.jobs if j["state"] == "queued"]
    unsent = [] if no_enqueue or not queued else submission.enqueue(queued, dispatcher_for(settings))
    if not as_json:
        click.echo(f"batch {result.batch_name} ({result.batch_id}): {len(queued)} queued, "
                   f"{len(result.jobs) - len(queued)} failed")
        for job in result.jobs:
            line = f"{job['id']}  {job['state']:<7} {job['path']}"
            click.echo(line + (f"  ({job['error']})" if job["error"] else ""))
        if unsent:
            click.echo(f"warning: the broker refused {len(unsent)} task(s); the sweeper will send them", err=True)
    refused = len(result.jobs) - len(queued)  # files that failed at submit (unreadable, empty, too long)
    if wait_ and queued:
        final = _wait_with_progress(settings, queued, until, timeout, quiet=as_json)
        if as_json:
            _print_submission_json(settings, result, final)
        sys.exit(0 if final.failed == 0 and final.settled and not refused else 1)
    if as_json:
        _print_submission_json(settings, result, None)
    if wait_ and refused:
        sys.exit(1)


def _print_submission_json(settings, result, final) -> None:
    from .jobs.queries import job_summaries

    jobs = job_summaries(settings, result.batch_id) if final is not None else result.jobs
    ids = {j["id"] for j in result.jobs}
    body = {"batch_id": result.batch_id, "batch": result.batch_name,
            "jobs": [j for j in jobs if j["id"] in ids]}
    if final is not None:
        body["summary"] = {"total": final.total, "finished": final.finished, "failed": final.failed,
                           "states": final.states, "audio_seconds": round(final.audio_s_total, 3)}
    click.echo(json.dumps(body, indent=2, default=str))


def _wait_with_progress(settings, job_ids: list[str], until: str, timeout: float | None, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .jobs import submit as submission

    if quiet:
        return submission.wait(settings, job_ids, until, timeout_s=timeout)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[extra]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        files = bar.add_task(f"files {until}", total=len(job_ids), extra="")
        audio = bar.add_task("audio seconds streamed", total=None, extra="")

        def show(p) -> None:
            bar.update(files, completed=p.finished + p.failed, extra=f"{p.failed} failed")
            bar.update(audio, total=max(p.audio_s_total, 0.001), completed=p.audio_s_streamed,
                       extra=" ".join(f"{k}:{v}" for k, v in sorted(p.states.items())))

        final = submission.wait(settings, job_ids, until, timeout_s=timeout, on_progress=show)
    click.echo(f"{final.finished} {until}, {final.failed} failed, {final.total - final.finished - final.failed} "
               f"unfinished, of {final.total}")
    return final


# ------------------------------------------------------------------------ status

@cli.command()
@click.argument("job_or_batch", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(job_or_batch: str | None, as_json: bool) -> None:
    """Show jobs: one job, one batch (by id or name), or the latest jobs."""
    from .jobs.queries import job_summaries
    from .models import STREAMED_STATES

    settings = load_settings()
    try:
        rows = job_summaries(settings, job_or_batch)
    except LookupError as exc:
        raise CLIError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="jobs")
    for column in ("job", "batch", "file", "state", "audio", "streamed", "tries", "gladia id", "error"):
        table.add_column(column, justify="right" if column in ("audio", "streamed", "tries") else "left")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
        duration = row.get("audio_duration_s")
        streamed = ""
        if row["state"] in STREAMED_STATES and duration:
            streamed = "100%"
        elif row["bytes_total"]:
            share = min(1.0, (row["bytes_acked"] or 0) / row["bytes_total"])
            streamed = f"{100 * share:.0f}%" + (f" ({share * duration:.0f}s)" if duration else "")
        tries = f"{row.get('attempts') or 0}" + (f"/{row['reconnects']}r" if row.get("reconnects") else "")
        state = row["state"]
        if state == "queued" and row.get("retry_at"):  # deferred: waiting for a session slot or Gladia's 429
            state += f" (retry {row['retry_at'][11:19]})"
        table.add_row(row["id"][:8], row["batch"] or "", os.path.basename(row["source_path"]), state,
                      f"{duration:.1f}s" if duration else "", streamed, tries, row["gladia_id"] or "",
                      (row["last_error"] or "")[:60])
    console = Console()
    console.print(table)
    if rows:
        console.print(", ".join(f"{state}: {n}" for state, n in sorted(counts.items())) + f" (total {len(rows)})")


# --------------------------------------------------------------------- reconcile

@cli.command()
@click.argument("session_id", required=False)
@click.option("--pending", is_flag=True, help="Every job whose stream ended and that is not settled yet.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def reconcile(session_id: str | None, pending: bool, as_json: bool) -> None:
    """Check sessions against GET /v2/live/:id and repair what callbacks missed.

    SESSION_ID is a Gladia session id or a job id. Runs in this process (no
    broker needed). Exit status 1 when a reconciliation failed.
    """
    from .reconcile import JobNotFound, find_job_id, pending_job_ids, reconcile_job

    if bool(session_id) == pending:
        raise CLIError("give either a SESSION_ID or --pending")
    settings = load_settings()
    if pending:
        job_ids = pending_job_ids(settings)
    else:
        try:
            job_ids = [find_job_id(settings, session_id or "")]
        except JobNotFound as exc:
            raise CLIError(str(exc)) from None
    results = []
    for job_id in job_ids:
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
            line = (f"{r.gladia_id or r.job_id}: {r.outcome}  expected={r.expected} received={r.received} "
                    f"missing={r.missing} duplicates={r.duplicates} mismatched={r.mismatched} "
                    f"repaired={r.repaired}")
            if r.reason:
                line += f"  ({r.reason})"
            if r.next_attempt_at:
                line += f"  next attempt at {r.next_attempt_at:%H:%M:%S} UTC"
            click.echo(line)
    if any(r.outcome == "failed" for r in results):
        sys.exit(1)


# ---------------------------------------------------------------------- emulator

@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--engine", type=click.Choice(["sphinx", "vad"]), default="sphinx", show_default=True,
              help="sphinx: real English recognition; vad: energy detection with placeholder words (cheap).")
@click.option("--api-key", "api_keys", multiple=True,
              help="Accepted x-gladia-key (repeatable). Default: $GLADIA_API_KEY or local-dev-key.")
@click.option("--max-sessions-per-key", default=30, show_default=True, type=click.IntRange(min=1),
              help="Live sessions running at once per key; more -> 429.")
@click.option("--idle-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds without audio on an open socket before the session ends.")
@click.option("--resume-grace", default=30.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a disconnected (or never connected) session waits for a connection.")
@click.option("--max-session-seconds", default=10800.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Audio cap per session (Gladia: 3 hours).")
@click.option("--callback-timeout", default=10.0, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--callback-retries", default=3, show_default=True, type=click.IntRange(min=0),
              help="Retries of a callback answered non-2xx or timed out.")
@click.option("--callback-backoff", default=0.5, show_default=True, type=click.FloatRange(min=0),
              help="First retry delay in seconds (doubles each retry, at most 10 s).")
@click.option("--spool-dir", default="", help="Folder for received audio (default: a temporary folder).")
@click.option("--seed", default=None, type=int, help="Seed of the fault generator (reproducible runs).")
@click.option("--drop-callbacks", default=0.0, type=click.FloatRange(0, 1), help="Fraction of callbacks dropped.")
@click.option("--duplicate-callbacks", default=0.0, type=click.FloatRange(0, 1),
              help="Fraction of callbacks delivered twice.")
@click.option("--delay-callbacks", default=0.0, type=click.FloatRange(0, 1),
              help="Fraction of callbacks delayed by --callback-delay.")
@click.option("--callback-delay", default=1.0, show_default=True, type=click.FloatRange(min=0))
@click.option("--reorder-callbacks", default=0.0, type=click.FloatRange(0, 1),
              help="Fraction of callbacks swapped with the next one of their session.")
@click.option("--rest-errors", default=0.0, type=click.FloatRange(0, 1), help="Fraction of REST calls failing 5xx.")
@click.option("--rest-error-status", default=503, show_default=True, type=click.IntRange(500, 599))
@click.option("--rest-429", default=0.0, type=click.FloatRange(0, 1), help="Fraction of REST calls answered 429.")
@click.option("--rest-fault-route", "rest_fault_routes", multiple=True,
              help="Limit REST faults to these routes: a method ('GET') or 'METHOD /path' "
                   "('GET /v2/live/{id}'). Repeatable.")
@click.option("--cut-after-chunks", default=0, type=click.IntRange(min=0),
              help="Cut each WebSocket connection after N audio chunks (0 = never).")
@click.option("--cut-rate", default=0.0, type=click.FloatRange(0, 1),
              help="Probability, per audio chunk, of cutting the connection.")
@click.option("--cut-code", default=1011, show_default=True, type=int,
              help="Close code of a cut (1006 = drop the TCP connection without a close frame).")
@click.option("--ack-delay", default=0.0, type=click.FloatRange(min=0), help="Seconds before each ack is sent.")
def emulator(host: str, port: int, engine: str, api_keys: tuple[str, ...], max_sessions_per_key: int,
             idle_timeout: float, resume_grace: float, max_session_seconds: float, callback_timeout: float,
             callback_retries: int, callback_backoff: float, spool_dir: str, seed: int | None,
             drop_callbacks: float, duplicate_callbacks: float, delay_callbacks: float, callback_delay: float,
             reorder_callbacks: float, rest_errors: float, rest_error_status: int, rest_429: float,
             rest_fault_routes: tuple[str, ...], cut_after_chunks: int, cut_rate: float, cut_code: int,
             ack_delay: float) -> None:
    """Run the local Gladia-compatible live v2 server (REST + WebSocket + callbacks + faults)."""
    from .emulator.options import EmulatorOptions, Faults, OptionError
    from .emulator.server import run

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    keys = api_keys or (os.environ.get("GLADIA_API_KEY") or "local-dev-key",)
    try:
        faults = Faults(seed=seed, callback_drop_rate=drop_callbacks, callback_duplicate_rate=duplicate_callbacks,
                        callback_delay_rate=delay_callbacks, callback_delay_s=callback_delay,
                        callback_reorder_rate=reorder_callbacks, rest_error_rate=rest_errors,
                        rest_error_status=rest_error_status, rest_429_rate=rest_429,
                        rest_fault_routes=rest_fault_routes, ws_cut_after_chunks=cut_after_chunks,
                        ws_cut_rate=cut_rate, ws_cut_code=cut_code, ack_delay_s=ack_delay)
        options = EmulatorOptions(host=host, port=port, engine=engine, api_keys=keys,
                                  max_sessions_per_key=max_sessions_per_key, idle_timeout_s=idle_timeout,
                                  resume_grace_s=resume_grace, max_session_s=max_session_seconds,
                                  callback_timeout_s=callback_timeout, callback_retries=callback_retries,
                                  callback_backoff_s=callback_backoff, spool_dir=spool_dir,
                                  faults=faults).validated()
    except OptionError as exc:
        raise CLIError(f"invalid emulator option: {exc}") from None
    click.echo(f"Gladia emulator ({engine}) on http://{host}:{port} (admin API under /_emulator/)", err=True)
    try:
        run(options)
    except OSError as exc:  # port in use, bad host
        raise CLIError(f"cannot serve on {host}:{port}: {exc}") from None


# ------------------------------------------------------------------------ report

def _report_cell(value) -> str:
    """A value as the terminal table shows it: short, with NULL visible as a dash."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
    return str(value)


@cli.command()
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
    from . import reports

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
        raise CLIError(f"report failed: {type(exc).__name__}: {exc}") from None
    if fmt == "json":
        click.echo(json.dumps(result.as_json(), indent=2))
        return
    columns = [c.name for c in result.report.columns]
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in result.rows:
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
        return
    from rich.console import Console
    from rich.table import Table

    shown = result.report.table_columns
    filters = ", ".join(f"{k}={v}" for k, v in result.filters.as_dict().items() if v)
    table = Table(title=result.report.title + (f" ({filters})" if filters else ""))
    for column in shown:
        table.add_column(column, justify="left" if column in ("day", "job_id", "batch", "state", "language",
                                                              "languages", "source", "error") else "right")
    for row in result.rows:
        table.add_row(*(_report_cell(row[c]) for c in shown))
    # Piped output is not wrapped to 80 columns: a report table is wide.
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    if not result.rows:
        click.echo("no rows", err=True)


def main() -> None:
    cli(prog_name="webhook-service")


if __name__ == "__main__":
    main()
