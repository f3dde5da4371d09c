"""Normalization of Gladia messages: every type, idempotence, any order.

Payloads are shaped exactly as the wire-format reference (sections 3 and 4);
the builders below are reused by the receiver's tests.
"""

from __future__ import annotations

import itertools
import json
import random
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from webhook_service import ingest
from webhook_service.db import session_scope
from webhook_service.models import AddonResult, Event, InboxItem, Job, SessionResult, Utterance

from message_fixtures import T0, GID, all_messages, callback_body, msg, transcript, utterance


# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def job(settings) -> Job:
    with session_scope(settings.database_url) as s:
        j = Job(source_path="/audio/a.wav", state="streaming", gladia_id=GID, ws_url="wss://api.gladia.io/v2/live?token=test")
        j.advance("starting")
        j.advance("streaming")
        s.add(j)
    return j


def apply(settings, messages, *, source="callback", job_id=None, gid=GID) -> list[bool]:
    out = []
    with session_scope(settings.database_url) as s:
        j = s.get(Job, job_id) if job_id else None
        for m in messages:
            out.append(ingest.normalize_message(s, m, source=source, job=j, gladia_id=gid,
                                                reconcile_delay_s=settings.reconcile_delay_s))
    return out


def snapshot(settings, job_id=None, gid=GID) -> dict[str, Any]:
    """Everything normalization writes, without ids and our own receive times."""
    with session_scope(settings.database_url) as s:
        utts = [
            (u.utterance_id, u.is_final, u.text, u.start_s, u.end_s, u.language, u.word_count, json.dumps(u.words))
            for u in s.scalars(select(Utterance).where(Utterance.gladia_id == gid).order_by(Utterance.utterance_id))
        ]
        addons = [
            (a.kind, a.utterance_id, a.target_language, json.dumps(a.data, sort_keys=True), json.dumps(a.error))
            for a in s.scalars(select(AddonResult).where(AddonResult.gladia_id == gid)
                               .order_by(AddonResult.kind, AddonResult.utterance_id, AddonResult.target_language))
        ]
        events = sorted((e.type, e.message_key) for e in s.scalars(select(Event).where(Event.gladia_id == gid)))
        r = s.get(SessionResult, gid)
        result = None if r is None else (r.full_transcript, r.languages, r.audio_duration_s, r.billing_time_s,
                                         r.transcription_time_s, r.number_of_channels)
        state = None
        if job_id:
            j = s.get(Job, job_id)
            state = (j.state, j.processing_at is not None, j.done_at is not None, j.reconcile_after is not None)
    return {"utterances": utts, "addons": addons, "events": events, "result": result, "job": state}


# ------------------------------------------------------------------------- tests


def test_every_event_type_is_normalized(settings, job):
    messages = all_messages()
    assert {m["type"] for m in messages} == ingest.KNOWN_TYPES
    assert apply(settings, messages, job_id=job.id) == [True] * len(messages)

    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == len(messages)
        utt = s.scalars(select(Utterance)).one()
        assert (utt.utterance_id, utt.is_final, utt.text, utt.language) == ("00_00000000", True, " Hola mundo", "es")
        assert utt.word_count == 2 and [w["word"] for w in utt.words] == [" Hola", " mundo"]
        assert utt.job_id == job.id and utt.source == "callback"
        assert utt.created_at == T0 + timedelta(seconds=1.3)
        addons = {(a.kind, a.utterance_id, a.target_language): a for a in s.scalars(select(AddonResult))}
        assert set(addons) == {
            ("translation", "00_00000000", "en"), ("translation", "00_00000000", "fr"),
            ("named_entity_recognition", "00_00000000", ""), ("sentiment_analysis", "00_00000000", ""),
            ("summarization", "", ""), ("chapterization", "", ""),
        }
        assert addons[("translation", "00_00000000", "fr")].data["translated_utterance"]["text"] == " Bonjour le monde"
        assert addons[("summarization", "", "")].data == {"results": "A greeting."}
        result = s.get(SessionResult, GID)
        assert result.full_transcript == "Hola mundo" and result.languages == ["es"]
        assert (result.audio_duration_s, result.billing_time_s, result.transcription_time_s,
                result.number_of_channels) == (2.0, 2.0, 0.4, 1)
        assert result.post_transcript["full_transcript"] == " Hola mundo"
        assert result.post_final_transcript["metadata"]["audio_duration"] == 2.0
        j = s.get(Job, job.id)
        assert j.state == "done"
        assert j.processing_at == T0 + timedelta(seconds=2.1) and j.done_at == T0 + timedelta(seconds=3)
        assert j.reconcile_after is not None
        acks = s.scalars(select(Event.type).where(Event.type.in_(["audio_chunk", "stop_recording"]))).all()
        assert sorted(acks) == ["audio_chunk", "stop_recording"]


def test_same_messages_twice_change_nothing(settings, job):
    messages = all_messages()
    apply(settings, messages, job_id=job.id)
    first = snapshot(settings, job.id)
    assert apply(settings, messages, job_id=job.id) == [False] * len(messages)
    assert snapshot(settings, job.id) == first


def test_any_order_gives_the_same_end_state(settings, job):
    messages = all_messages()
    apply(settings, messages, job_id=job.id)
    expected = snapshot(settings, job.id)
    expected_events = expected.pop("events")
    for seed in range(6):
        gid = f"shuffled-{seed}"
        with session_scope(settings.database_url) as s:
            j = Job(source_path="/audio/a.wav", gladia_id=gid, ws_url="wss://api.gladia.io/v2/live?token=test")
            j.advance("starting")
            s.add(j)
        shuffled = [{**m, "session_id": gid} for m in messages]
        random.Random(seed).shuffle(shuffled)
        apply(settings, shuffled, job_id=j.id, gid=gid)
        got = snapshot(settings, j.id, gid=gid)
        assert [(t, ) for t, _ in got.pop("events")] == [(t, ) for t, _ in expected_events], seed
        assert got == expected, seed


def test_late_partial_never_overwrites_the_final(settings):
    final = transcript("00_00000003", True, " the final text", at=5.0)
    partial_before = transcript("00_00000003", False, " the fin", at=4.0)
    partial_after = transcript("00_00000003", False, " the fi", at=6.0)  # even with a later created_at
    for n, order in enumerate(itertools.permutations([final, partial_before, partial_after])):
        gid = f"order-{n}"
        apply(settings, [{**m, "session_id": gid} for m in order], gid=gid)
        with session_scope(settings.database_url) as s:
            utt = s.scalars(select(Utterance).where(Utterance.gladia_id == gid)).one()
            assert (utt.is_final, utt.text, utt.word_count) == (True, " the final text", 3), order


def test_newer_partial_replaces_older_partial(settings):
    apply(settings, [transcript("00_1", False, " a b c", at=3.0), transcript("00_1", False, " a", at=2.0)])
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(Utterance.text)).one() == " a b c"


def test_lifecycle_out_of_order_keeps_the_most_advanced_state(settings, job):
    apply(settings, [msg("end_session", 9), msg("start_recording", 1), msg("end_recording", 8),
                     transcript(at=2), msg("start_session", 0)], job_id=job.id)
    with session_scope(settings.database_url) as s:
        j = s.get(Job, job.id)
        assert j.state == "done"
        assert j.processing_at == T0 + timedelta(seconds=8)
        assert j.reconcile_after is not None


def test_reconcile_backfill_of_end_session_does_not_reschedule(settings, job):
    apply(settings, [msg("end_session", 9)], source="reconcile", job_id=job.id)
    with session_scope(settings.database_url) as s:
        j = s.get(Job, job.id)
        assert j.state == "done" and j.reconcile_after is None


def test_same_message_from_callback_and_reconcile_is_one_event(settings, job):
    m = transcript()
    assert apply(settings, [m], source="callback", job_id=job.id) == [True]
    assert apply(settings, [json.loads(json.dumps(m))], source="reconcile", job_id=job.id) == [False]
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 1
        assert s.scalar(select(Event.source)) == "callback"


def test_message_without_a_job_is_stored(settings):
    assert apply(settings, [transcript()]) == [True]
    with session_scope(settings.database_url) as s:
        utt = s.scalars(select(Utterance)).one()
        assert utt.job_id is None and utt.gladia_id == GID


def test_unknown_type_is_stored_raw_and_counted(settings, job):
    before = ingest.UNKNOWN_EVENTS.labels("callback")._value.get()
    m = msg("speaker_change", 1.0, data={"speaker": 2, "whatever": [1, {"x": None}]})
    assert apply(settings, [m], job_id=job.id) == [True]
    assert ingest.UNKNOWN_EVENTS.labels("callback")._value.get() == before + 1
    with session_scope(settings.database_url) as s:
        event = s.scalars(select(Event)).one()
        assert (event.type, event.payload) == ("speaker_change", m)


def test_addon_error_is_kept(settings):
    m = msg("translation", 1.0, error={"message": "translation failed"}, data=None)
    apply(settings, [m])
    with session_scope(settings.database_url) as s:
        a = s.scalars(select(AddonResult)).one()
        assert (a.kind, a.data, a.error) == ("translation", None, {"message": "translation failed"})


def test_post_transcript_after_post_final_does_not_replace_it(settings):
    messages = all_messages()
    post_t = next(m for m in messages if m["type"] == "post_transcript")
    post_f = next(m for m in messages if m["type"] == "post_final_transcript")
    apply(settings, [post_f, post_t])
    with session_scope(settings.database_url) as s:
        assert s.get(SessionResult, GID).full_transcript == "Hola mundo"


BAD_MESSAGES = [
    {"type": "transcript", "data": {"id": "x", "is_final": "yes", "utterance": utterance()}},
    {"type": "transcript", "data": {"id": "", "is_final": True, "utterance": utterance()}},
    {"type": "transcript", "data": {"id": "x", "is_final": True, "utterance": {"start": 0, "end": 1}}},
    {"type": "translation", "data": {"utterance_id": "x"}, "error": None},
    {"type": "post_final_transcript", "data": {"metadata": {"audio_duration": "long"}}},
    {"type": 3},
    [],
]


def test_invalid_message_writes_nothing(settings):
    for bad in BAD_MESSAGES:
        with pytest.raises(ingest.InvalidMessage):
            apply(settings, [transcript("00_ok", at=0.5), bad])  # the valid one before it is rolled back too
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 0
        assert s.scalar(select(func.count()).select_from(Utterance)) == 0


def test_process_inbox_item_retries_a_failed_row(settings, job):
    body = callback_body(transcript())
    raw = json.dumps(body).encode()
    with session_scope(settings.database_url) as s:
        stored = ingest.store_inbox(s, kind="callback", raw=raw, body=body, headers={}, event=body["event"],
                                    gladia_id=GID, job_id=job.id, received_at=T0)
        s.execute(InboxItem.__table__.update().values(status="failed", error="boom"))
    assert ingest.process_inbox_item(settings, stored.inbox_id) == "processed"
    assert ingest.process_inbox_item(settings, stored.inbox_id) == "processed"  # a redelivered task is harmless
    assert ingest.process_inbox_item(settings, 999_999) == "missing"
    with session_scope(settings.database_url) as s:
        row = s.get(InboxItem, stored.inbox_id)
        assert (row.status, row.error, row.attempts) == ("processed", None, 1)
        assert s.scalar(select(func.count()).select_from(Utterance)) == 1
        assert s.scalar(select(Event.inbox_id)) == stored.inbox_id
