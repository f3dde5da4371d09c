"""`webhook-service submit`: audio files in, jobs written and sent to the workers, optionally waited for.

The session options come from a JSON/YAML file and the command-line flags,
merged and validated against the one POST /v2/live schema before any job is
written; ``--wait`` shows progress until every job reaches ``--until``.
"""

from __future__ import annotations

import json
import sys

import click

from .common import CLIError, load_settings


def _parse_metadata(items: tuple[str, ...]) -> dict[str, str]:
    metadata = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--metadata expects KEY=VALUE, got {item!r}")
        metadata[key.strip()] = value
    return metadata


@click.command()
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
@click.option("--resubmit", is_flag=True,
              help="Submit files already reconciled in this batch again (by default they are skipped).")
@click.option("--no-enqueue", is_flag=True, hidden=True, help="Write the jobs but send no task (the sweeper sends them).")
def submit(paths: tuple[str, ...], batch_name: str | None, wait_: bool, until: str, timeout: float | None,
           as_json: bool, config_file: str | None, resubmit: bool, no_enqueue: bool, **session_flags) -> None:
    """Stream audio files into Gladia live sessions: files, folders, glob patterns or a CSV manifest.

    A CSV manifest has a `path` column and optional `language`, `chunk_ms`, `speed`, `sample_rate`,
    `config` (JSON) columns; any other column goes to the session's custom_metadata. Prints the job ids.
    A file whose audio is already reconciled in the same batch is skipped (`--resubmit` to send it again).
    Exit status 1 when no file could be submitted (every one refused).
    """
    # session_flags: --language ... --metadata, named as gladia.session_config.from_options names them.
    from ..jobs import submit as submission
    from ..worker.dispatch import dispatcher_for

    settings = load_settings()
    if batch_name is not None and not (0 < len(batch_name) <= 200):
        raise CLIError("--batch must be 1 to 200 characters")
    config, plans = _plan(settings, paths, config_file, session_flags)
    result = submission.record(settings, plans, batch_name, config, resubmit=resubmit)
    queued = [j["id"] for j in result.jobs if j["state"] == "queued"]
    unsent = [] if no_enqueue or not queued else submission.enqueue(queued, dispatcher_for(settings))
    if not as_json:
        _print_submission(result, queued, unsent)
    refused = len(result.jobs) - len(queued)  # files that failed at submit (unreadable, empty, too long)
    if wait_ and queued:
        final = _wait_with_progress(settings, queued, until, timeout, quiet=as_json)
        if as_json:
            _print_submission_json(settings, result, final)
        sys.exit(0 if final.failed == 0 and final.settled and not refused else 1)
    if as_json:
        _print_submission_json(settings, result, None)
    if refused and (wait_ or not queued):
        sys.exit(1)  # with --wait, any refused file; without, every file refused


def _plan(settings, paths: tuple[str, ...], config_file: str | None, flags: dict) -> tuple[dict, list]:
    """The validated session config (file merged with the flags) and one plan per audio file."""
    from ..gladia import session_config as sc
    from ..jobs import submit as submission

    sample_rate, bit_depth = flags.pop("sample_rate"), flags.pop("bit_depth")
    try:
        config = sc.load_file(config_file) if config_file else {}
        options = sc.from_options(
            sample_rate=int(sample_rate) if sample_rate else None, bit_depth=int(bit_depth) if bit_depth else None,
            metadata=_parse_metadata(flags.pop("metadata")), **flags)
        config = sc.validate(sc.merge(config, options))
        return config, submission.plan(settings, paths, config)
    except (sc.SessionConfigError, submission.SubmitError) as exc:
        raise CLIError(str(exc)) from None


def _print_submission(result, queued: list[str], unsent: list[str]) -> None:
    click.echo(f"batch {result.batch_name} ({result.batch_id}): {len(queued)} queued, "
               f"{len(result.jobs) - len(queued)} failed, {len(result.skipped)} skipped (already reconciled in "
               f"this batch{'; --resubmit sends them again' if result.skipped else ''})")
    for job in result.jobs:
        line = f"{job['id']}  {job['state']:<7} {job['path']}"
        click.echo(line + (f"  ({job['error']})" if job["error"] else ""))
    for item in result.skipped:
        click.echo(f"{item['reconciled_job']}  skipped {item['path']}  (already reconciled)")
    if unsent:
        click.echo(f"warning: the broker refused {len(unsent)} task(s); the sweeper will send them", err=True)


def _print_submission_json(settings, result, final) -> None:
    from ..jobs.queries import job_summaries

    jobs = job_summaries(settings, result.batch_id) if final is not None else result.jobs
    ids = {j["id"] for j in result.jobs}
    body = {"batch_id": result.batch_id, "batch": result.batch_name,
            "jobs": [j for j in jobs if j["id"] in ids], "skipped": result.skipped}
    if final is not None:
        body["summary"] = {"total": final.total, "finished": final.finished, "failed": final.failed,
                           "states": final.states, "audio_seconds": round(final.audio_s_total, 3)}
    click.echo(json.dumps(body, indent=2, default=str))


def _wait_with_progress(settings, job_ids: list[str], until: str, timeout: float | None, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..jobs import submit as submission

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


COMMANDS = (submit,)
