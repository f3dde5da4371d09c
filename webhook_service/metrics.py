"""Prometheus metrics of every process: the receiver, the operator side, the worker and beat.

Multiprocess collection, the way prometheus-client documents it: each process
kind of a machine writes its samples under its own folder of ``METRICS_DIR``
(``PROMETHEUS_MULTIPROC_DIR``, set by :func:`use_process_dir` before the
client library is imported), wiped when that kind starts; gunicorn's
``child_exit`` hook marks a dead worker (``gunicorn_conf.py``). The operator
side's ``/metrics`` adds up every folder of the machine (:func:`render`), so
one scrape covers the receiver, the operator, the worker and beat of one
machine; a worker on another machine serves its own with ``--metrics-port``.
Gauges of the whole service (jobs by state, slots in use, inbox backlog) are
read from the database at scrape time (``jobs/gauges.py``), not kept in a
process.

Per-event costs stay small: a sample is an increment in a memory-mapped file.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Optional

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

ENV = "PROMETHEUS_MULTIPROC_DIR"

# --- the receiver ------------------------------------------------------------------------------
CALLBACKS_RECEIVED = Counter(
    "webhook_callbacks_received_total", "Callbacks and webhooks received, by event", ["event"]
)
CALLBACKS_DUPLICATE = Counter(
    "webhook_callbacks_duplicate_total", "Callbacks already in the inbox (deduplicated), by event", ["event"]
)
CALLBACKS_REJECTED = Counter(
    "webhook_callbacks_rejected_total", "Callbacks refused with a 4xx, by reason", ["reason"]
)
CALLBACKS_FAILED = Counter(
    "webhook_callbacks_failed_total", "Callbacks stored but whose normalization failed, by event", ["event"]
)
UNKNOWN_EVENTS = Counter(
    "webhook_unknown_events_total", "Messages of a type this version does not know, stored raw", ["source"]
)
WEBHOOKS_UNKNOWN_SESSION = Counter(
    "webhook_account_webhooks_unknown_session_total",
    "Account webhooks about a session this service does not know: counted and dropped, never stored",
    ["event"],
)
CALLBACK_PROCESSING_SECONDS = Histogram(
    "webhook_callback_processing_seconds",
    "Time from receiving a callback to its normalized commit",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
JOBS_STATE_CHANGES = Counter("webhook_job_state_changes_total", "Job state transitions", ["state"])

# --- streaming (the worker) --------------------------------------------------------------------
STREAM_BYTES_SENT = Counter("webhook_stream_bytes_sent_total", "Audio bytes sent to Gladia")
STREAM_RECONNECTS = Counter("webhook_stream_reconnects_total",
                            "WebSocket reconnects while streaming (each resumes from the last acknowledged byte)")
STREAM_SESSIONS = Counter("webhook_stream_sessions_total",
                          "Stream runs by session: created (POST /v2/live), adopted (an orphan of a crash), "
                          "resumed (a session recorded by an earlier run)", ["how"])
STREAM_RUNS = Counter("webhook_stream_runs_total", "Stream runs ended, by outcome", ["outcome"])
STREAM_ACK_SECONDS = Histogram(
    "webhook_stream_ack_seconds", "Time from sending an audio chunk to its acknowledgement",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SLOT_WAITS = Counter("webhook_slot_waits_total",
                     "Stream runs that found every session slot busy and went back to the queue, by kind "
                     "(new session or resumption)", ["kind"])
SLOT_WAIT_SECONDS = Histogram(
    "webhook_slot_wait_seconds", "Time from a job's submission (or its resumption) to holding a session slot",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
GLADIA_ERRORS = Counter("webhook_gladia_http_errors_total",
                        "Gladia REST answers >= 400 and connection failures (status 0), by method and status",
                        ["method", "status"])

# --- reconciliation and the sweeper ------------------------------------------------------------
RECONCILIATIONS = Counter("webhook_reconciliations_total", "Reconciliation runs, by outcome", ["outcome"])
RECONCILE_REPAIRED = Counter("webhook_reconcile_repaired_total", "Messages backfilled by reconciliation")
RECONCILE_MISSING = Counter("webhook_reconcile_missing_total",
                            "Messages the callbacks should have delivered that reconciliation found missing")
SWEEPS = Counter("webhook_sweeps_total", "Sweeper runs")
SWEEP_ACTIONS = Counter("webhook_sweeper_actions_total",
                        "What the sweeper did, by action (reconciles, restarted_stale, restarted_queued, "
                        "inbox_retried, inbox_errors, dispatch_errors...)", ["action"])
SWEEP_SECONDS = Histogram("webhook_sweep_seconds", "Duration of one sweep",
                          buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

# The gauges read from the database at scrape time (jobs/gauges.py): name -> help. Listed here so that
# everything this service exports is named in one module.
DATABASE_GAUGES = {
    "webhook_database_up": "1 when the operator side could read the gauges below from the database, else 0",
    "webhook_jobs": "Jobs by state",
    "webhook_jobs_stalled": "Jobs starting or streaming whose heartbeat is older than STALE_HEARTBEAT_S",
    "webhook_jobs_oldest_unsettled_seconds": "Age of the oldest job whose stream ended but that is not settled",
    "webhook_slots_in_use": "Session slots held by a live lease",
    "webhook_slots_limit": "MAX_CONCURRENT_SESSIONS",
    "webhook_inbox_rows": "Callback inbox rows waiting (pending) or failed, by status",
    "webhook_inbox_oldest_pending_seconds": "Age of the oldest inbox row still pending",
}


def use_process_dir(base: str, kind: str, *, wipe: bool) -> str:
    """Point this process (and what it execs) at ``base/kind``; ``wipe`` empties it first.

    Call before prometheus-client is first imported in the process that writes
    (the CLI calls it before it execs gunicorn or Celery).
    """
    folder = Path(base) / kind
    if wipe and folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(folder)
    return str(folder)


def wipe_process_dir() -> None:
    """Empty this process kind's folder (gunicorn's master at start: the documented way)."""
    folder = os.environ.get(ENV)
    if folder:
        for path in glob.glob(os.path.join(folder, "*.db")):
            os.remove(path)


def mark_process_dead(pid: int) -> None:
    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


class _MachineCollector(MultiProcessCollector):
    """The samples of several process kinds' folders, merged (counters and histograms summed)."""

    def __init__(self, registry: CollectorRegistry, folders: list[str]):
        self._folders = folders
        super().__init__(registry, path=folders[0])

    def collect(self):
        files = [path for folder in self._folders for path in glob.glob(os.path.join(folder, "*.db"))]
        return self.merge(files, accumulate=True)


class _Gauges:
    """Adapter: a function returning {name: [(labels, value)]} as a collector."""

    def __init__(self, read: Callable[[], dict[str, list[tuple[dict[str, str], float]]]]):
        self._read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        for name, samples in self._read().items():
            labels = sorted({key for sample_labels, _ in samples for key in sample_labels})
            family = GaugeMetricFamily(name, DATABASE_GAUGES.get(name, name), labels=labels)
            for sample_labels, value in samples:
                family.add_metric([sample_labels.get(key, "") for key in labels], value)
            yield family


def render(gauges: Optional[Callable[[], dict]] = None, machine_dir: Optional[str] = None) -> tuple[bytes, str]:
    """The exposition text for /metrics and its content type.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, this process kind's samples, and
    those of every kind of the machine when the folder is one of
    ``machine_dir`` (``METRICS_DIR``); else this process's. Then
    ``gauges()``, read at scrape time.
    """
    folder = os.environ.get(ENV)
    registry = CollectorRegistry()
    if folder:
        folders = [folder]
        if machine_dir and Path(folder).resolve().parent == Path(machine_dir).resolve():
            folders = sorted({folder, *glob.glob(os.path.join(machine_dir, "*", ""))})
        _MachineCollector(registry, folders)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY if gauges is None else _with_default(registry)
    if gauges is not None:
        registry.register(_Gauges(gauges))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _DefaultRegistry:
    def collect(self):
        from prometheus_client import REGISTRY

        return REGISTRY.collect()


def _with_default(registry: CollectorRegistry) -> CollectorRegistry:
    registry.register(_DefaultRegistry())
    return registry


def exported_names() -> set[str]:
    """Every series name this service exports (counters' ``_total``, histograms' ``_bucket``/``_sum``/``_count``)."""
    names = set(DATABASE_GAUGES)
    for value in globals().values():
        if isinstance(value, Counter):
            names |= {f"{value._name}_total", f"{value._name}_created"}
        elif isinstance(value, Histogram):
            names |= {f"{value._name}{suffix}" for suffix in ("_bucket", "_sum", "_count", "_created")}
    return names
