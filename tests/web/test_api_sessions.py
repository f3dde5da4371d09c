"""GET /api/sessions and GET /api/sessions/<gladia_id>."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from message_fixtures import GID, all_messages, callback_body
from webhook_service.db import session_scope
from webhook_service.models import Batch, Job, ReconciliationRun
from webhook_service.tokens import callback_token

BASE = datetime(2026, 2, 1, tzinfo=timezone.utc)


@pytest.fixture
def jobs(settings) -> list[Job]:
    """12 jobs over 12 days, two batches, a mix of states."""
    states = ["queued", "streaming", "done", "reconciled", "failed", "done"] * 2
    with session_scope(settings.database_url) as s:
        a, b = Batch(name="calls-a"), Batch(name="calls-b")
        s.add_all([a, b])
        s.flush()
        out = []
        for i, state in enumerate(states):
            j = Job(source_path=f"/audio/{i}.wav", batch_id=(a if i % 2 == 0 else b).id, state=state,
                    created_at=BASE + timedelta(days=i), gladia_id=f"g-{i:02d}",
                    ws_url=f"wss://api.gladia.io/v2/live?token=secret-token-{i}")
            s.add(j)
            out.append(j)
    return out


def ids(response) -> list[str]:
    return [item["gladia_id"] for item in response.get_json()["items"]]


def test_list_is_newest_first_with_filters(client, jobs):
    r = client.get("/api/sessions")
    assert r.status_code == 200
    assert ids(r) == [f"g-{i:02d}" for i in range(11, -1, -1)]
    assert ids(client.get("/api/sessions?state=done")) == ["g-11", "g-08", "g-05", "g-02"]
    assert ids(client.get("/api/sessions?state=failed,reconciled")) == ["g-10", "g-09", "g-04", "g-03"]
    assert ids(client.get("/api/sessions?batch=calls-a&state=done")) == ["g-08", "g-02"]
    batch_b = jobs[1].batch_id
    assert ids(client.get(f"/api/sessions?batch={batch_b}&state=done")) == ["g-11", "g-05"]
    assert ids(client.get("/api/sessions?since=2026-02-03&until=2026-02-06")) == ["g-04", "g-03", "g-02"]
    assert ids(client.get("/api/sessions?since=2026-02-11T00:00:00Z")) == ["g-11", "g-10"]
    item = client.get("/api/sessions?limit=1").get_json()["items"][0]
    assert item["batch"]["name"] == "calls-b" and item["state"] == "done"
    assert "secret-token" not in client.get("/api/sessions").get_data(as_text=True)


def test_offset_and_cursor_pagination_cover_everything_once(client, jobs):
    assert ids(client.get("/api/sessions?limit=5&offset=10")) == ["g-01", "g-00"]
    seen, cursor = [], None
    while True:
        r = client.get("/api/sessions?limit=5" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200
        seen += ids(r)
        cursor = r.get_json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"g-{i:02d}" for i in range(11, -1, -1)]


def test_bad_query_is_400_json(client, jobs):
    for query in ["limit=0", "limit=501", "limit=ten", "offset=-1", "state=sleeping", "state=", "since=yesterday",
                  "since=2026-02-05&until=2026-02-01", "cursor=!!!", "cursor=e30", "cursor=abc&offset=1",
                  "color=blue"]:
        r = client.get(f"/api/sessions?{query}")
        assert r.status_code == 400, query
        assert r.is_json and r.get_json()["error"]["status"] == 400, query


def test_detail_of_a_fully_received_session(client, settings):
    with session_scope(settings.database_url) as s:
        batch = Batch(name="meetings")
        s.add(batch)
        s.flush()
        job = Job(source_path="/audio/m.wav", batch_id=batch.id, gladia_id=GID, audio_duration_s=2.0,
                  ws_url="wss://api.gladia.io/v2/live?token=very-secret")
        job.advance("starting")
        job.advance("streaming")
        s.add(job)
    token = callback_token(job.id, settings.callback_signing_key)
    for m in all_messages():
        assert client.post(f"/callbacks/gladia/{token}", data=json.dumps(callback_body(m)),
                           content_type="application/json").status_code == 200
    with session_scope(settings.database_url) as s:
        s.add(ReconciliationRun(job_id=job.id, gladia_id=GID, trigger="end_session", outcome="retry",
                                started_at=BASE, reason="not done yet"))
        s.add(ReconciliationRun(job_id=job.id, gladia_id=GID, trigger="sweep", outcome="reconciled",
                                started_at=BASE + timedelta(minutes=1), expected=17, received=17))

    r = client.get(f"/api/sessions/{GID}")
    assert r.status_code == 200
    body = r.get_json()
    raw = r.get_data(as_text=True)
    assert "very-secret" not in raw and token not in raw and "ws_url" not in raw
    assert body["job"]["job_id"] == job.id and body["job"]["batch"]["name"] == "meetings"
    assert body["job"]["state"] == "done"
    assert [t["state"] for t in body["timeline"]] == ["queued", "starting", "streaming", "processing", "done"]
    assert body["durations"]["post_processing_s"] == pytest.approx(0.9)
    assert body["result"]["full_transcript"] == "Hola mundo" and body["result"]["audio_duration_s"] == 2.0
    [utt] = body["utterances"]
    assert (utt["utterance_id"], utt["is_final"], utt["text"], utt["word_count"]) == ("00_00000000", True, " Hola mundo", 2)
    assert [w["word"] for w in utt["words"]] == [" Hola", " mundo"]
    kinds = sorted((a["kind"], a["target_language"]) for a in utt["addons"])
    assert kinds == [("named_entity_recognition", None), ("sentiment_analysis", None),
                     ("translation", "en"), ("translation", "fr")]
    assert body["post_processing"]["summarization"][0]["data"] == {"results": "A greeting."}
    assert body["post_processing"]["chapterization"][0]["data"]["results"][0]["headline"] == "Greeting"
    assert body["events"]["transcript"] == {"callback": 2}
    assert body["callbacks"]["received"] == len(all_messages()) and body["callbacks"]["by_status"] == {
        "processed": len(all_messages())}
    assert body["reconciliation"]["outcome"] == "reconciled" and body["reconciliation"]["runs"] == 2
    assert body["orphan_addons"] == []

    assert client.get(f"/api/sessions/{job.id}").get_json()["job"]["gladia_id"] == GID  # by job id too


def test_detail_of_a_job_without_session_yet(client, settings):
    due = BASE + timedelta(minutes=3)
    with session_scope(settings.database_url) as s:
        job = Job(source_path="/audio/q.wav", retry_at=due)  # deferred: waiting for a session slot
        s.add(job)
    body = client.get(f"/api/sessions/{job.id}").get_json()
    assert body["job"]["state"] == "queued" and body["utterances"] == [] and body["result"] is None
    assert body["job"]["retry_at"] == due.isoformat().replace("+00:00", "Z")
    assert body["reconciliation"] is None and [t["state"] for t in body["timeline"]] == ["queued"]


def test_unknown_session_is_404_json(client, settings):
    r = client.get("/api/sessions/does-not-exist")
    assert r.status_code == 404 and r.get_json()["error"]["status"] == 404
