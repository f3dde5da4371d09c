"""Reconciliation: check what callbacks delivered against Gladia's own record.

Gladia documents no retries for live callbacks, so a callback can be lost for
good. ``GET /v2/live/:id`` is the reference: once a session is ``done`` its
``result.messages`` holds every message of the session and
``result.transcription.utterances`` the final transcript. For each session the
reconciler

1. fetches that result (retrying 429, 5xx, timeouts; a session still
   ``queued``/``processing`` is looked at again later with a growing delay,
   up to ``RECONCILE_DEADLINE_S`` after the stream closed);
2. stores it whole in ``session_results``;
3. compares the messages the session's ``callback_config`` asked for with
   the events stored, and backfills every missing one through the receiver's
   own normalization (``ingest.normalize_message``, source ``reconcile``), so a
   repaired message is stored exactly as if its callback had arrived;
4. compares the final utterances with the stored ones and repairs any that
   are missing or differ (text, start, end, channel) through the receiver's
   own utterance upsert (``ingest.repair_utterance``);
5. records a ``reconciliation_runs`` row and settles the job: ``reconciled``,
   or ``failed`` with the reason (404, error status, deadline).

One module per step: ``fetch`` (the GET), ``expected`` (pure comparisons),
``compare`` (steps 2 to 4 and the settling), ``records`` (the job view and
the run rows), ``run`` (the decisions around them).

Everything is keyed on natural keys (message key, utterance id), so a second
run finds nothing missing and changes nothing: it records a run with
``missing=0`` and ``repaired=0``.

HTTP calls are made outside any database transaction: SQLite allows one
writer at a time and the receiver must never wait behind a slow GET.
"""

from __future__ import annotations

from .expected import CALLBACK_DEFAULTS, callback_flags, is_expected, parse_messages, synthetic_utterance_id
from .fetch import FetchResult, SessionFetcher, default_fetcher
from .records import JobNotFound, ReconcileResult, find_job_id, pending_job_ids
from .run import reconcile_job, retry_delay

__all__ = [
    "CALLBACK_DEFAULTS",
    "FetchResult",
    "JobNotFound",
    "ReconcileResult",
    "SessionFetcher",
    "callback_flags",
    "default_fetcher",
    "find_job_id",
    "is_expected",
    "parse_messages",
    "pending_job_ids",
    "reconcile_job",
    "retry_delay",
    "synthetic_utterance_id",
]
