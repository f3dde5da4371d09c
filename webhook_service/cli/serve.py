"""`webhook-service web`, `worker` and `beat`: the long-running processes of the Procfile.

Each replaces the current process (``exec``) with gunicorn or Celery, so a
process manager signals the server itself, not a wrapper. Before that it
points the process at its own folder of ``METRICS_DIR`` (``web-<surface>``,
``worker``, ``beat``; emptied as it starts), which the operator side's
/metrics adds up.
"""

from __future__ import annotations

import os
import re
import sys

import click

from .common import load_settings


def warn_resume_window(settings) -> None:
    """At start: say so when a killed worker's streams could not be resumed in time."""
    problem = settings.resume_window_problem()
    if problem:
        click.echo(f"warning: {problem}", err=True)

CELERY_APP = "webhook_service.worker.celery_app"
# gunicorn's options (workers class, logs with callback tokens redacted, trusted proxies).
GUNICORN_CONFIG = "python:webhook_service.gunicorn_conf"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=os.cpu_count() or 1, show_default="one per core", type=int,
              envvar="WEB_CONCURRENCY", help="gunicorn worker processes (or WEB_CONCURRENCY), 4 threads each.")
@click.option("--dev", is_flag=True, help="Flask's development server instead of gunicorn.")
@click.option("--surface", type=click.Choice(["receiver", "operator", "all"]), default=None,
              help="Routes to serve: the public receiver, the private operator side, or all "
                   "(default WEB_SURFACE, else all).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="gunicorn's access log on stdout, callback tokens redacted. Behind `webhook-service proxy`, "
                   "whose log has a line for every request it passes, the Procfile's receiver turns it off.")
def web(host: str, port: int, workers: int, dev: bool, surface: str | None, access_log: bool) -> None:
    """Run the receiver, JSON API and dashboard."""
    if surface:
        os.environ["WEB_SURFACE"] = surface  # read by webhook_service.wsgi in gunicorn's workers
    settings = load_settings()
    if dev:
        import logging

        from ..log_redaction import RedactCallbackTokens
        from ..web import create_app

        logging.getLogger("werkzeug").addFilter(RedactCallbackTokens())
        create_app(settings).run(host=host, port=port, threaded=True)
        return
    # gunicorn's master empties it at start (gunicorn_conf.on_starting)
    _metrics_folder(settings, f"web-{settings.web_surface}", wipe=False)
    os.execvp(
        sys.executable,
        [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG, "--bind", f"{host}:{port}",
         "--workers", str(workers), *(["--access-logfile", "-"] if access_log else []), "webhook_service.wsgi:app"],
    )


def _metrics_folder(settings, kind: str, *, wipe: bool) -> None:
    from ..metrics import use_process_dir

    use_process_dir(settings.metrics_dir, kind, wipe=wipe)


_METRICS_PORT = click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=None,
    help="Serve this process's /metrics on 127.0.0.1:PORT (bearer token; default METRICS_PORT, 0: off).")
def _folder_name(_ctx, _param, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}", value):
        raise click.BadParameter("letters, digits, '.', '_' and '-' only (a folder name)")
    return value


_METRICS_NAME = click.option(
    "--metrics-name", default=None, callback=_folder_name,
    help="Its folder of METRICS_DIR (default: the command's name); give each process of one machine its own.")


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", default=None, type=int,
              help="Worker threads, i.e. concurrent streams and tasks (default WORKER_CONCURRENCY).")
@_METRICS_PORT
@_METRICS_NAME
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, metrics_port: int | None, metrics_name: str | None) -> None:
    """Run a Celery worker (extra arguments go to celery).

    The pool is Celery's `threads`: every stream of the process runs on one
    shared asyncio loop, and a thread per task only waits for its stream.
    """
    if metrics_port is not None:
        os.environ["METRICS_PORT"] = str(metrics_port)
    settings = load_settings()
    warn_resume_window(settings)
    _metrics_folder(settings, metrics_name or "worker", wipe=True)
    args = [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker",
            "--loglevel", settings.log_level.upper(), "-Q", "webhook_service,streams", "--pool", "threads",
            "--concurrency", str(concurrency or settings.worker_concurrency)]
    os.execvp(sys.executable, args + list(ctx.args))


@click.command()
@_METRICS_PORT
@_METRICS_NAME
def beat(metrics_port: int | None, metrics_name: str | None) -> None:
    """Run Celery beat (the periodic sweeper)."""
    if metrics_port is not None:
        os.environ["METRICS_PORT"] = str(metrics_port)
    settings = load_settings()
    warn_resume_window(settings)
    _metrics_folder(settings, metrics_name or "beat", wipe=True)
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", CELERY_APP, "beat", "--loglevel", "INFO"])


COMMANDS = (web, worker, beat)
