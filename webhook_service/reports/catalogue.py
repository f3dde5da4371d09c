"""The report catalogue: every report's name, title, columns (documented) and the query behind it.

A report is declared once here: the CLI (`webhook-service report`) and the
JSON API (`/api/reports`) list and run these declarations, the dashboard runs
them, and docs/reporting.md documents the same columns. To add a report: write its query
in :mod:`.queries` (usually over a view of a migration) and register it below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy.orm import Session

from . import queries
from .errors import UnknownReport
from .filters import Filters
from .rows import Column, normalize_rows


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    description: str
    columns: tuple[Column, ...]
    table_columns: tuple[str, ...]  # the narrower set the terminal table shows
    query: Callable[[Session, Filters], list[dict[str, Any]]] = field(repr=False)
    # Sums in SQL depend on the database's summation order in the last bits;
    # aggregate reports round them away. Row-level reports need no rounding.
    round_floats: bool = True
    # The query applies the filters' page itself (LIMIT/OFFSET); otherwise run_report slices the rows.
    pages_in_sql: bool = True

    def normalize(self, raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return normalize_rows(self.columns, raw, round_floats=self.round_floats)

    def columns_json(self) -> list[dict[str, str]]:
        """The columns as the JSON API lists them."""
        return [{"name": c.name, "type": c.kind, "description": c.description} for c in self.columns]

    def describe(self) -> dict[str, Any]:
        """The report as `GET /api/reports` lists it."""
        return {"name": self.name, "title": self.title, "description": self.description,
                "columns": self.columns_json()}


REPORTS: dict[str, Report] = {}


def get_report(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        raise UnknownReport(f"unknown report {name!r}; reports: {', '.join(REPORTS)}") from None


def _cols(*specs: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*spec) for spec in specs)


REPORTS: dict[str, Report] = {}


def _register(report: Report) -> None:
    REPORTS[report.name] = report


_register(Report(
    name="daily_usage",
    title="Daily usage",
    description="Sessions, audio, billed time, speech and errors per UTC day of session creation.",
    columns=_cols(
        ("day", "day", "UTC day the sessions were created (YYYY-MM-DD)."),
        ("sessions", "int", "Sessions (jobs) created that day."),
        ("completed_sessions", "int", "Of which done or reconciled."),
        ("failed_sessions", "int", "Of which failed."),
        ("audio_hours", "float", "Audio submitted, hours (NULL when no duration is known)."),
        ("sessions_without_duration", "int", "Sessions whose audio duration is not known yet."),
        ("billed_hours", "float", "Audio that reached Gladia x channels, hours."),
        ("gladia_billed_hours", "float", "Billing time Gladia reported, hours (NULL: none reported)."),
        ("speech_s", "float", "Seconds of speech in final utterances (NULL: nothing received)."),
        ("utterances", "int", "Final utterances."),
        ("words", "int", "Words in final utterances."),
        ("errors", "int", "Error records of these sessions (see error_breakdown)."),
    ),
    table_columns=("day", "sessions", "completed_sessions", "failed_sessions", "audio_hours", "billed_hours",
                   "speech_s", "utterances", "words", "errors"),
    query=queries.daily_usage,
))
_register(Report(
    name="session_summary",
    title="Sessions",
    description="One row per session: state, durations, transcript statistics, callback completeness.",
    columns=_cols(
        ("job_id", "text", "Our job id."),
        ("gladia_id", "text", "Gladia's session id (NULL until the session is created)."),
        ("batch_id", "text", "Batch id."),
        ("batch", "text", "Batch name."),
        ("source_path", "text", "The audio file."),
        ("state", "text", "Job state."),
        ("created_at", "ts", "When the job was submitted (UTC)."),
        ("day", "day", "UTC day of created_at."),
        ("audio_duration_s", "float", "Audio duration measured from the file."),
        ("audio_channels", "int", "Channels of the file."),
        ("billed_s", "float", "Audio that reached Gladia x audio_channels: audio_duration_s x channels, the "
                              "acknowledged share of it when the session ended early, 0 without a session."),
        ("gladia_audio_duration_s", "float", "Audio duration Gladia reported."),
        ("gladia_billing_time_s", "float", "Billing time Gladia reported."),
        ("queue_s", "float", "Queued -> streaming."),
        ("stream_s", "float", "Streaming -> stream closed."),
        ("close_to_final_s", "float", "Stream closed -> post_final_transcript received (0 when the final "
                                      "result came first)."),
        ("total_s", "float", "Created -> reconciled (or failed)."),
        ("utterances", "int", "Final utterances."),
        ("words", "int", "Words in final utterances."),
        ("speech_s", "float", "Sum of end - start of final utterances."),
        ("confidence_mean", "float", "Mean confidence of final utterances."),
        ("confidence_p10", "float", "10th percentile (percentile_cont) of utterance confidence."),
        ("languages", "text", "Languages of final utterances, comma-separated."),
        ("events", "int", "Distinct Gladia messages stored."),
        ("callback_events", "int", "Of which first received by callback."),
        ("websocket_events", "int", "Of which first received on the WebSocket."),
        ("reconcile_events", "int", "Of which only found by reconciliation."),
        ("callback_delay_median_s", "float", "Median of received_at - created_at of callback messages."),
        ("callback_delay_max_s", "float", "Maximum of the same delay."),
        ("callbacks_received", "int", "Callback/webhook requests stored in the inbox for the session."),
        ("callback_duplicates", "int", "Redeliveries of those requests."),
        ("callbacks_rejected", "int", "Requests rejected."),
        ("callbacks_failed", "int", "Requests whose processing failed."),
        ("callbacks_pending", "int", "Requests not processed yet."),
        ("reconciliation_runs", "int", "Reconciliation runs."),
        ("reconciliation_outcome", "text", "Outcome of the latest run."),
        ("expected_messages", "int", "Messages Gladia holds for the session (latest run)."),
        ("missing_found", "int", "Messages found missing, summed over runs."),
        ("duplicates_found", "int", "Duplicates found, summed over runs."),
        ("repaired", "int", "Messages repaired, summed over runs."),
        ("callback_completeness", "float", "(expected - missing) / expected."),
        ("gladia_status", "text", "Status from GET /v2/live/:id."),
        ("gladia_error_code", "int", "Error code from GET /v2/live/:id."),
        ("errors", "int", "Error records of the session."),
        ("last_error", "text", "The job's last error."),
    ),
    table_columns=("job_id", "batch", "state", "audio_duration_s", "utterances", "words", "confidence_mean",
                   "confidence_p10", "languages", "close_to_final_s", "callback_completeness"),
    query=queries.session_summary,
    round_floats=False,
))
_register(Report(
    name="callback_health",
    title="Callback health",
    description="Callbacks received, duplicated, rejected and failed; what reconciliation found missing "
                "and repaired; per UTC day.",
    columns=_cols(
        ("day", "day", "UTC day of session creation (of receipt for callbacks matching no session)."),
        ("sessions", "int", "Sessions created that day."),
        ("callbacks_received", "int", "Distinct callback/webhook requests stored."),
        ("duplicates", "int", "Redeliveries of already stored requests."),
        ("rejected", "int", "Requests rejected (bad token, malformed)."),
        ("failed", "int", "Requests whose processing failed (kept for retry)."),
        ("pending", "int", "Requests not processed yet."),
        ("unmatched", "int", "Requests that match no session."),
        ("reconciled_sessions", "int", "Sessions reconciled at least once."),
        ("expected_messages", "int", "Messages Gladia holds for these sessions."),
        ("missing_found", "int", "Messages reconciliation found missing."),
        ("repaired", "int", "Messages reconciliation repaired."),
        ("callback_completeness", "float", "1 - missing_found / expected_messages."),
    ),
    table_columns=("day", "sessions", "callbacks_received", "duplicates", "rejected", "failed", "unmatched",
                   "missing_found", "repaired", "callback_completeness"),
    query=queries.callback_health,
))
_register(Report(
    name="language_mix",
    title="Language mix",
    description="Final utterances, words and speech per language.",
    columns=_cols(
        ("language", "text", "Language code (NULL: not reported)."),
        ("sessions", "int", "Sessions with speech in that language."),
        ("utterances", "int", "Final utterances."),
        ("words", "int", "Words."),
        ("speech_s", "float", "Seconds of speech."),
        ("speech_share", "float", "Share of all speech in the selection (0-1)."),
    ),
    table_columns=("language", "sessions", "utterances", "words", "speech_s", "speech_share"),
    query=queries.language_mix,
))
_register(Report(
    name="error_breakdown",
    title="Error breakdown",
    description="Errors by source and message: failed sessions, Gladia errors, failed or rejected "
                "callbacks, failed reconciliations.",
    columns=_cols(
        ("source", "text", "session, gladia, callback_failed, callback_rejected or reconciliation."),
        ("error", "text", "The message (first 200 characters)."),
        ("occurrences", "int", "How many times."),
        ("sessions", "int", "Distinct sessions affected."),
        ("first_seen", "ts", "First occurrence (UTC)."),
        ("last_seen", "ts", "Last occurrence (UTC)."),
    ),
    table_columns=("source", "error", "occurrences", "sessions", "first_seen", "last_seen"),
    query=queries.error_breakdown,
))
_register(Report(
    name="latency",
    title="Latency",
    description="Per UTC day: percentiles of stream close -> final result, and of the sessions' median "
                "callback delay (Gladia's created_at -> our received_at).",
    columns=_cols(
        ("day", "day", "UTC day of session creation."),
        ("sessions", "int", "Sessions created that day."),
        ("final_results", "int", "Sessions with both a stream close and a final result."),
        ("close_to_final_p50_s", "float", "Median of close_to_final_s."),
        ("close_to_final_p90_s", "float", "90th percentile."),
        ("close_to_final_p99_s", "float", "99th percentile."),
        ("sessions_with_callbacks", "int", "Sessions with at least one timed callback."),
        ("callback_delay_p50_s", "float", "Median of the sessions' median callback delay."),
        ("callback_delay_p90_s", "float", "90th percentile."),
        ("callback_delay_p99_s", "float", "99th percentile."),
    ),
    table_columns=("day", "sessions", "final_results", "close_to_final_p50_s", "close_to_final_p90_s",
                   "close_to_final_p99_s", "callback_delay_p50_s", "callback_delay_p90_s",
                   "callback_delay_p99_s"),
    query=queries.latency,
    pages_in_sql=False,  # percentiles per day are computed from every session of the day
))
