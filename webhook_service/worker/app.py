"""The Celery app: its configuration, and its binding to the Flask app.

Bound to Flask as in Flask's ``examples/celery``: every task runs inside the
application context. This package is the only place that binds the two.
"""

from __future__ import annotations

import logging
import os

from celery import Celery, Task
from celery.signals import beat_init, worker_process_init, worker_ready, worker_shutting_down
from flask import Flask, current_app

from ..config import Settings
from ..db import dispose_engines, warm_pool
from ..jobs import runtime
from .fs_broker import register as _register_filesystem_broker

# Every process that talks to Celery imports this module: the embedded
# filesystem broker gets atomic message files before any connection opens.
_register_filesystem_broker()

log = logging.getLogger(__name__)

# Gladia ends a live session after 3 hours; a streaming task must be allowed to outlive it a little.
SESSION_CAP_S = 3 * 3600
STREAM_SOFT_LIMIT_S = SESSION_CAP_S + 10 * 60
STREAM_HARD_LIMIT_S = SESSION_CAP_S + 20 * 60
# Task names: the tasks register under them, the dispatcher sends by them, the config routes by them.
STREAM_TASK = "webhook_service.stream_job"
RECONCILE_TASK = "webhook_service.reconcile"
INBOX_TASK = "webhook_service.process_inbox"
SWEEP_TASK = "webhook_service.sweep"
# A redelivered task must not reach a second worker while the first still streams.
VISIBILITY_TIMEOUT_S = SESSION_CAP_S + 60 * 60


def celery_config(settings: Settings) -> dict:
    config = dict(
        broker_url=settings.celery_broker_url,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=STREAM_SOFT_LIMIT_S,
        task_time_limit=STREAM_HARD_LIMIT_S,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_default_queue="webhook_service",
        task_routes={STREAM_TASK: {"queue": "streams"}},
        beat_schedule={
            "sweep": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_s},
        },
        beat_schedule_filename=os.path.join(settings.data_dir, "celerybeat-schedule"),
    )
    transport: dict = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    if settings.celery_broker_url.startswith("filesystem"):
        folder = str(settings.broker_dir / "in")
        transport.update(
            data_folder_in=folder,
            data_folder_out=folder,
            processed_folder=str(settings.broker_dir / "processed"),
            store_processed=False,
            control_folder=str(settings.broker_dir / "control"),
            # kombu polls the folder (1 s by default): a slot's wake-up must reach a worker in well under 250 ms.
            polling_interval=0.05,
        )
    config["broker_transport_options"] = transport
    return config


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
