"""A small, hand-checked data set for the report tests (written with the ORM).

The expected values in tests/test_reports.py are computed by hand from the
numbers below; keep the comments in step with the data.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from webhook_service.db import session_scope
from webhook_service.models import Batch, Event, InboxItem, Job, ReconciliationRun, SessionResult, Utterance


def at(day: int, hour: int, minute: int = 0, second: float = 0.0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=timezone.utc) + timedelta(seconds=second)


_counter = 0


def _key() -> str:
    global _counter
    _counter += 1
    return f"{_counter:064d}"


def utterance(job: str, gladia: str, uid: str, start: float, end: float, *, language="en", confidence=None,
              words=0, final=True, channel=0, text="x") -> Utterance:
    return Utterance(job_id=job, gladia_id=gladia, utterance_id=uid, is_final=final, channel=channel,
                     start_s=start, end_s=end, text=text, language=language, confidence=confidence,
                     word_count=words, words=[], source="callback")


def event(job: str, gladia: str, source: str, *, created=None, received=None, type_="transcript") -> Event:
    return Event(job_id=job, gladia_id=gladia, message_key=_key(), type=type_, source=source,
                 created_at=created, received_at=received or at(1, 0), payload={})


def inbox(job, status: str, *, received, duplicates=0, error=None, gladia=None) -> InboxItem:
    return InboxItem(dedupe_key=_key(), job_id=job, status=status, received_at=received, duplicates=duplicates,
                     error=error, body=b"{}", gladia_id=gladia, event="live.transcript")


def load(database_url: str) -> None:
    """Five sessions over two days, two batches, one callback that matches no session."""
    with session_scope(database_url) as s:
        calls = Batch(id="batch-calls", name="calls", created_at=at(1, 9))
        other = Batch(id="batch-other", name="other", created_at=at(1, 9))
        s.add_all([calls, other])
        s.flush()
        # A: reconciled; 120 s x 2 channels; four finals (en, en, fr, en) and one partial.
        s.add(Job(id="job-a", batch_id="batch-calls", source_path="/audio/a.wav", state="reconciled",
                  created_at=at(1, 10), queued_at=at(1, 10), streaming_at=at(1, 10, 0, 2),
                  stream_closed_at=at(1, 10, 2, 2.5), done_at=at(1, 10, 2, 6), reconciled_at=at(1, 10, 2, 10),
                  gladia_id="g-a", audio_duration_s=120.0, audio_channels=2))
        # B: failed; Gladia reported error 500; a rejected callback; a failed reconciliation.
        s.add(Job(id="job-b", batch_id="batch-calls", source_path="/audio/b.wav", state="failed",
                  created_at=at(1, 15), queued_at=at(1, 15), failed_at=at(1, 15, 0, 30),
                  last_error="stream: connection refused", gladia_id="g-b", audio_duration_s=60.0,
                  audio_channels=1))
        # E: done; no utterance; one callback message.
        s.add(Job(id="job-e", batch_id="batch-calls", source_path="/audio/e.wav", state="done",
                  created_at=at(1, 18), queued_at=at(1, 18), streaming_at=at(1, 18, 0, 1),
                  stream_closed_at=at(1, 18, 1), done_at=at(1, 18, 1, 6), gladia_id="g-e",
                  audio_duration_s=30.0, audio_channels=1))
        # C: done, other batch, duration unknown; one final without language or confidence.
        s.add(Job(id="job-c", batch_id="batch-other", source_path="/audio/c.wav", state="done",
                  created_at=at(2, 9), queued_at=at(2, 9), streaming_at=at(2, 9, 0, 1),
                  stream_closed_at=at(2, 9, 5), done_at=at(2, 9, 5, 2), gladia_id="g-c"))
        # D: still queued, nothing received.
        s.add(Job(id="job-d", source_path="/audio/d.wav", state="queued", created_at=at(2, 12),
                  queued_at=at(2, 12)))
        s.flush()

        s.add_all([
            utterance("job-a", "g-a", "00_1", 0.0, 2.0, confidence=0.9, words=3, text=" Thanks for calling."),
            utterance("job-a", "g-a", "00_2", 2.5, 4.0, confidence=0.8, words=2, text=" Hello there."),
            utterance("job-a", "g-a", "00_3", 5.0, 8.5, language="fr", confidence=0.6, words=4,
                      text=" Je voudrais un rendez-vous."),
            utterance("job-a", "g-a", "01_1", 9.0, 9.5, confidence=0.95, words=1, channel=1, text=" Sure."),
            utterance("job-a", "g-a", "00_4", 10.0, 20.0, confidence=0.1, words=5, final=False,
                      text=" partial words never reported"),
            utterance("job-c", "g-c", "00_1", 0.0, 1.25, language=None, words=2, text=" Good morning."),
        ])
        s.add_all([
            # A: callback delays 0.2, 0.4, 1.0 s (median 0.4, max 1.0); one websocket, one reconcile.
            event("job-a", "g-a", "callback", created=at(1, 10, 1, 0), received=at(1, 10, 1, 0.2)),
            event("job-a", "g-a", "callback", created=at(1, 10, 1, 5), received=at(1, 10, 1, 5.4)),
            event("job-a", "g-a", "callback", created=at(1, 10, 2, 4), received=at(1, 10, 2, 5)),
            event("job-a", "g-a", "websocket", created=at(1, 10, 1, 1), received=at(1, 10, 1, 1.1)),
            event("job-a", "g-a", "reconcile", created=at(1, 10, 1, 2), received=at(1, 10, 2, 9)),
            # E: one callback delayed 0.8 s.
            event("job-e", "g-e", "callback", created=at(1, 18, 0, 30), received=at(1, 18, 0, 30.8)),
        ])
        s.add_all([
            inbox("job-a", "processed", received=at(1, 10, 1), duplicates=2, gladia="g-a"),
            inbox("job-a", "processed", received=at(1, 10, 1, 5), gladia="g-a"),
            inbox("job-a", "failed", received=at(1, 10, 2, 5), error="boom: bad payload", gladia="g-a"),
            inbox("job-b", "rejected", received=at(1, 15, 0, 10), error="malformed body", gladia="g-b"),
            inbox(None, "rejected", received=at(2, 8), duplicates=1, error="bad token"),
        ])
        s.add_all([
            SessionResult(gladia_id="g-a", job_id="job-a", audio_duration_s=120.0, billing_time_s=240.0,
                          languages=["en", "fr"], post_final_received_at=at(1, 10, 2, 5.75),
                          gladia_status="done"),
            SessionResult(gladia_id="g-b", job_id="job-b", gladia_status="error", gladia_error_code=500,
                          gladia_completed_at=at(1, 15, 0, 40)),
            SessionResult(gladia_id="g-e", job_id="job-e", post_final_received_at=at(1, 18, 1, 5.25)),
            SessionResult(gladia_id="g-c", job_id="job-c", post_final_received_at=at(2, 9, 5, 1.5)),
        ])
        s.add_all([
            ReconciliationRun(job_id="job-a", gladia_id="g-a", trigger="end_session", started_at=at(1, 10, 2, 8),
                              outcome="retry", expected=10, received=8, missing=2, duplicates=1, repaired=2),
            ReconciliationRun(job_id="job-a", gladia_id="g-a", trigger="sweep", started_at=at(1, 10, 2, 9),
                              outcome="reconciled", expected=12, received=11, missing=1, repaired=1),
            ReconciliationRun(job_id="job-b", gladia_id="g-b", trigger="sweep", started_at=at(1, 15, 1),
                              outcome="failed", reason="session not found"),
        ])


def load_once(database_url: str) -> None:
    """:func:`load`, unless the database holds its rows already (a fixture may have emptied it in between)."""
    with session_scope(database_url) as s:
        if s.get(Job, "job-a") is not None:
            return
    load(database_url)
