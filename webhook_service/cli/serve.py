"""`webhook-service web`, `worker` and `beat`: the long-running processes of the Procfile.

Each replaces the current process (``exec``) with gunicorn or Celery, so a
process manager signals the server itself, not a wrapper.
"""

from __future__ import annotations

import os
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
@click.option("--workers", default=4, show_default=True, type=int, help="gunicorn worker processes.")
@click.option("--dev", is_flag=True, help="Flask's development server instead of gunicorn.")
@click.option("--surface", type=click.Choice(["receiver", "operator", "all"]), default=None,
              help="Routes to serve: the public receiver, the private operator side, or all "
                   "(default WEB_SURFACE, else all).")
def web(host: str, port: int, workers: int, dev: bool, surface: str | None) -> None:
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
    os.execvp(
        sys.executable,
        [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG, "--bind", f"{host}:{port}",
         "--workers", str(workers), "webhook_service.wsgi:app"],
    )


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", default=None, type=int,
              help="Worker threads, i.e. concurrent streams and tasks (default WORKER_CONCURRENCY).")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None) -> None:
    """Run a Celery worker (extra arguments go to celery).

    The pool is Celery's `threads`: every stream of the process runs on one
    shared asyncio loop, and a thread per task only waits for its stream.
    """
    settings = load_settings()
    warn_resume_window(settings)
    args = [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker",
            "--loglevel", settings.log_level.upper(), "-Q", "webhook_service,streams", "--pool", "threads",
            "--concurrency", str(concurrency or settings.worker_concurrency)]
    os.execvp(sys.executable, args + list(ctx.args))


@click.command()
def beat() -> None:
    """Run Celery beat (the periodic sweeper)."""
    warn_resume_window(load_settings())
    os.execvp(sys.executable, [sys.executable, "-m", "celery", "-A", CELERY_APP, "beat", "--loglevel", "INFO"])


COMMANDS = (web, worker, beat)
