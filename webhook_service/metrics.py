"""Prometheus metrics shared by the receiver, the worker and the reconciler.

With several gunicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` (the Procfile
does) so /metrics adds up every process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

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
RECONCILIATIONS = Counter("webhook_reconciliations_total", "Reconciliation runs, by outcome", ["outcome"])
RECONCILE_REPAIRED = Counter("webhook_reconcile_repaired_total", "Messages backfilled by reconciliation")
STREAM_BYTES_SENT = Counter("webhook_stream_bytes_sent_total", "Audio bytes sent to Gladia")
STREAM_RECONNECTS = Counter("webhook_stream_reconnects_total", "WebSocket reconnects while streaming")


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
