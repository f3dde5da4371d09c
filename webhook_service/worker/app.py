"""The Celery app: its binding to the Flask app, and the worker's signals (its configuration is in config.py).

Bound to Flask as in Flask's ``examples/celery``: every task runs inside the
application context. This package is the only place that binds the two.
"""

from __future__ import annotations

import logging

from celery import Celery, Task
from celery.signals import beat_init, worker_process_init, worker_ready, worker_shutting_down
from flask import Flask, current_app

from ..config import Settings
from ..db import dispose_engines, warm_pool
from ..jobs import runtime
from .config import celery_config

log = logging.getLogger(__name__)


def celery_init_app(app: Flask) -> Celery:
    settings: Settings = app.config["SETTINGS"]
    settings.ensure_dirs()

    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(celery_config(settings))
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    return celery_app


def current_settings() -> Settings:
    """The settings of the Flask app whose context the running task is in."""
    return current_app.config["SETTINGS"]


@worker_process_init.connect
def _reset_pools(**_kwargs) -> None:
    # Connections must not cross a fork.
    dispose_engines()


@worker_shutting_down.connect
def _hand_back_streams(**_kwargs) -> None:
    # A warm shutdown would otherwise wait for every stream to finish (up to 3 hours): drop the
    # sockets without ending the sessions and re-queue the jobs, which resume on another worker.
    count = runtime.interrupt_all()
    if count:
        log.warning("worker shutting down: %d stream(s) handed back", count)


@worker_ready.connect
def _warm_up(**_kwargs) -> None:
    """Open what every stream needs before the first task arrives: the event loop, database connections.

    A worker that says "ready" then starts its first sessions as fast as its
    later ones (bench/bench_makespan.py measures the first POST after a submit).
    Best effort: a database out of reach now is the tasks' problem, reported there.
    """
    settings = Settings.from_env()
    runtime.runtime(settings)
    try:
        warm_pool(settings.database_url, min(settings.db_pool_size, settings.worker_concurrency))
    except Exception as exc:  # noqa: BLE001 - never keep the worker from starting
        log.warning("could not open database connections at start: %s", exc)


@worker_ready.connect
@beat_init.connect
def _serve_metrics(**_kwargs) -> None:
    # METRICS_PORT (`--metrics-port`): this process's /metrics, for a machine without an operator side.
    from .metrics_server import start_metrics_server

    settings = Settings.from_env()
    try:
        start_metrics_server(settings)
    except OSError as exc:  # the port is taken: the process runs on, its samples still reach METRICS_DIR
        log.error("cannot serve metrics on 127.0.0.1:%d: %s", settings.metrics_port, exc)
