"""A few stored sessions with utterances, for the transcript, export and delete tests."""

from __future__ import annotations

from datetime import datetime, timezone

from webhook_service.db import session_scope
from webhook_service.models import Batch, Event, InboxItem, Job, SessionResult, Utterance

A, B, C, D = ("aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002",
              "cccccccc-0000-4000-8000-000000000003", "dddddddd-0000-4000-8000-000000000004")


def words(text: str, start: float) -> list[dict]:
    return [{"word": " " + w, "start": start + i * 0.5, "end": start + i * 0.5 + 0.4, "confidence": 0.9}
            for i, w in enumerate(text.split())]


def utterance(job: str, gladia: str, uid: str, channel: int, start: float, text: str, final: bool = True):
    timed = words(text, start)
    return Utterance(job_id=job, gladia_id=gladia, utterance_id=uid, is_final=final, channel=channel,
                     start_s=start, end_s=timed[-1]["end"], text=" " + text, language="en", confidence=0.9,
                     words=timed, word_count=len(timed), source="callback")


def load(database_url: str) -> None:
    when = datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    with session_scope(database_url) as s:
        s.add_all([Batch(id="batch-calls", name="calls"), Batch(id="batch-other", name="other")])
        s.flush()
        s.add_all([
            Job(id=A, batch_id="batch-calls", source_path="/audio/in/call.wav", state="reconciled", gladia_id="g-aaa",
                created_at=when, reconciled_at=when, audio_duration_s=20.0, audio_channels=2),
            Job(id=B, batch_id="batch-calls", source_path="/audio/other/call.wav", state="reconciled",
                gladia_id="g-bbb", created_at=when.replace(hour=11), reconciled_at=when, audio_duration_s=8.0,
                audio_channels=1),
            Job(id=C, batch_id="batch-calls", source_path="/audio/in/broken.wav", state="failed",
                created_at=when.replace(hour=12), failed_at=when, last_error="refused"),
            Job(id=D, batch_id="batch-other", source_path="/audio/x/memo.mp3", state="reconciled", gladia_id="g-ddd",
                created_at=when.replace(day=5), reconciled_at=when.replace(day=5), audio_duration_s=5.0,
                audio_channels=1),
        ])
        s.flush()
        s.add_all([
            utterance(A, "g-aaa", "00_1", 0, 0.2, "Good morning, this is the front desk of the hotel, how can I help"),
            utterance(A, "g-aaa", "01_1", 1, 6.5, "Hello, I would like to book a room for two nights please"),
            utterance(A, "g-aaa", "00_2", 0, 12.0, "Certainly."),
            utterance(A, "g-aaa", "00_3", 0, 13.0, "partial words", final=False),
            utterance(B, "g-bbb", "00_1", 0, 1.0, "Second call with the same file name"),
            utterance(D, "g-ddd", "00_1", 0, 0.0, "A memo"),
            Event(job_id=A, gladia_id="g-aaa", message_key="k" * 64, type="transcript", source="callback",
                  payload={"text": "Good morning"}),
            InboxItem(dedupe_key="d" * 64, job_id=A, gladia_id="g-aaa", status="processed", body=b'{"text": "x"}',
                      event="live.transcript", received_at=when),
            SessionResult(gladia_id="g-aaa", job_id=A, full_transcript="Good morning ...", audio_duration_s=20.0,
                          billing_time_s=40.0, gladia_status="done", gladia_response={"result": "text"}),
        ])
