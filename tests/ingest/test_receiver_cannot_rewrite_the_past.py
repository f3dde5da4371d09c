"""The public receiver cannot rewrite the past: each finding of the perimeter review, over a real socket.

A callback URL is a write credential that Gladia (or anyone who saw the URL)
holds for as long as the service accepts it. These tests post what an
attacker holding the URL (or the webhook endpoint) would post and check that
nothing is written: a settled job takes no callback (410), out-of-range values
are refused (400), a callback never binds a session to a job, and account
webhooks are off without a secret, move no job with one, and are dropped for
sessions this service does not know.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
import requests
from sqlalchemy import func, select, update
from standardwebhooks.webhooks import Webhook as StandardWebhook

from conftest import LiveServer
from message_fixtures import GID, callback_body, msg, transcript
from webhook_service.db import session_scope
from webhook_service.models import Event, InboxItem, Job, SessionResult, Utterance
from webhook_service.reports.filters import Filters
from webhook_service.reports.queries import language_mix
from webhook_service.reports.stats_cache import refresh_session_stats
from webhook_service.tokens import callback_token

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a-32-byte-secret-for-the-tests!!").decode()
OTHER_GID = "0b9e2c1a-7f43-4c53-9a34-0d6c2f1e0e11"


def add_job(settings, **fields: Any) -> str:
    with session_scope(settings.database_url) as s:
        job = Job(source_path="/audio/a.wav", **fields)
        s.add(job)
        s.flush()
        return job.id


def streaming_job(settings, duration_s: float | None = 60.0) -> str:
    return add_job(settings, gladia_id=GID, ws_url="wss://api.gladia.io/v2/live?token=test", state="streaming",
                   audio_duration_s=duration_s, audio_channels=1)


def send(server: LiveServer, settings, job_id: str, body: Any) -> requests.Response:
    url = server.url + "/callbacks/gladia/" + callback_token(job_id, settings.callback_signing_key)
    return requests.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=10)


def rows(settings) -> dict[str, int]:
    with session_scope(settings.database_url) as s:
        return {name: s.scalar(select(func.count()).select_from(model)) for name, model in
                (("inbox", InboxItem), ("events", Event), ("utterances", Utterance), ("results", SessionResult))}


def utterance_text(settings) -> str:
    with session_scope(settings.database_url) as s:
        return s.scalars(select(Utterance.text)).one()


def final_transcript(duration_s: float = 20.0) -> dict[str, Any]:
    return msg("post_final_transcript", 30, data={
        "transcription": {"full_transcript": " Hello world", "languages": ["en"], "utterances": []},
        "metadata": {"audio_duration": duration_s, "number_of_distinct_channels": 1, "billing_time": duration_s,
                     "transcription_time": 1.5},
    })


# ------------------------------------------------------------------ settled is settled


@pytest.mark.parametrize("settled_by", ["reconciled", "failed", "ended_long_ago"])
def test_a_settled_job_takes_no_callback(live_app, settings, settled_by):
    """After reconciliation a modified final transcript replaced the stored text; now 410, nothing written."""
    job_id = streaming_job(settings)
    assert send(live_app, settings, job_id, callback_body(transcript(text=" Hello world"))).status_code == 200
    long_ago = datetime.now(timezone.utc) - timedelta(seconds=settings.callback_grace_s + 60)
    with session_scope(settings.database_url) as s:
        values: dict[str, Any] = {"state": settled_by, f"{settled_by}_at": long_ago}
        if settled_by == "ended_long_ago":
            values = {"state": "done", "done_at": long_ago, "updated_at": long_ago}
        s.execute(update(Job).where(Job.id == job_id).values(**values))
    before = rows(settings)
    # The receiver has this job cached as open: the INSERT itself must see that it closed.
    for body in (callback_body(transcript(text=" Goodbye world", at=5.0)), callback_body(final_transcript(1e3)),
                 callback_body(msg("end_session", 40))):
        r = send(live_app, settings, job_id, body)
        assert r.status_code == 410 and r.json()["error"]["status"] == 410
    assert rows(settings) == before
    assert utterance_text(settings) == " Hello world"
    # Settled is remembered: asked again, still 410 and still nothing written.
    assert send(live_app, settings, job_id, callback_body(transcript(text=" Again", at=6.0))).status_code == 410
    assert rows(settings) == before


def test_a_job_within_its_grace_still_takes_callbacks(live_app, settings):
    """Late callbacks of a session that just ended are still stored (reconciliation has not run yet)."""
    job_id = streaming_job(settings)
    assert send(live_app, settings, job_id, callback_body(msg("end_session", 31))).status_code == 200
    assert send(live_app, settings, job_id, callback_body(final_transcript())).status_code == 200
    with session_scope(settings.database_url) as s:
        assert s.get(SessionResult, GID).audio_duration_s == 20.0


# ------------------------------------------------------------------ range checks


def _with_utterance(**utt: Any) -> dict[str, Any]:
    body = callback_body(transcript())
    body["payload"]["data"]["utterance"].update(utt)
    return body


def _with_word(**word: Any) -> dict[str, Any]:
    body = callback_body(transcript())
    body["payload"]["data"]["utterance"]["words"][0].update(word)
    return body


def _with_metadata(**meta: Any) -> dict[str, Any]:
    body = callback_body(final_transcript())
    body["payload"]["data"]["metadata"].update(meta)
    return body


OUT_OF_RANGE = {
    "audio_duration 1e300": _with_metadata(audio_duration=1e300),
    "negative billing_time": _with_metadata(billing_time=-1),
    "transcription_time 1e300": _with_metadata(transcription_time=1e300),
    "audio_duration beyond the job's audio": _with_metadata(audio_duration=3600.0),
    "utterance start -1e308": _with_utterance(start=-1e308),
    "utterance end 1e308": _with_utterance(end=1e308),
    "utterance start after its end": _with_utterance(start=2.0, end=1.0),
    "utterance beyond the job's audio": _with_utterance(start=100.0, end=101.0),
    "confidence 1.5": _with_utterance(confidence=1.5),
    "negative confidence": _with_utterance(confidence=-0.1),
    "word start -1": _with_word(start=-1),
    "word confidence 2": _with_word(confidence=2),
    "word beyond the job's audio": _with_word(start=500.0, end=501.0),
}


@pytest.mark.parametrize("case", sorted(OUT_OF_RANGE))
def test_out_of_range_values_are_400_and_write_nothing(live_app, settings, case):
    job_id = streaming_job(settings, duration_s=60.0)
    before = rows(settings)
    r = send(live_app, settings, job_id, OUT_OF_RANGE[case])
    assert r.status_code == 400 and r.json()["error"]["status"] == 400, r.text
    assert rows(settings) == before


def test_an_utterance_at_minus_1e308_leaves_language_mix_alone(live_app, settings):
    """An utterance with start=-1e308 made language_mix report 1e308 speech seconds."""
    job_id = streaming_job(settings)
    assert send(live_app, settings, job_id, callback_body(transcript(start=0.5, end=2.5))).status_code == 200
    forged = _with_utterance(start=-1e308)
    forged["payload"]["data"]["id"] = "00_00000009"
    assert send(live_app, settings, job_id, forged).status_code == 400
    refresh_session_stats(settings.database_url)
    with session_scope(settings.database_url) as s:
        mix = language_mix(s, Filters())
    speech = mix["rows"] if isinstance(mix, dict) else mix
    assert [round(row["speech_s"], 3) for row in speech] == [2.0]


def test_durations_are_bounded_by_the_cap_when_the_job_does_not_know_its_audio(live_app, settings):
    job_id = streaming_job(settings, duration_s=None)
    assert send(live_app, settings, job_id, _with_metadata(audio_duration=1e300)).status_code == 400
    assert send(live_app, settings, job_id, _with_metadata(audio_duration=3600.0, billing_time=3600.0)).status_code == 200


# ------------------------------------------------------------------ no binding by callback


def test_a_forged_start_session_binds_nothing(live_app, settings):
    """A forged start_session for a queued job bound any session id no other job held; now it binds none."""
    job_id = add_job(settings, state="queued")
    r = send(live_app, settings, job_id, callback_body(msg("start_session", 0, gid=OTHER_GID), gid=OTHER_GID))
    assert r.status_code == 202
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        assert (job.gladia_id, job.state) == (None, "queued")
        assert s.scalars(select(InboxItem.status)).one() == "pending"
        assert s.scalar(select(func.count()).select_from(Event)) == 0


def test_a_waiting_callback_for_another_session_is_rejected_once_the_worker_records_its_own(live_app, settings):
    from webhook_service.ingest import process_inbox_item

    job_id = add_job(settings, state="starting")
    assert send(live_app, settings, job_id, callback_body(msg("start_session", 0, gid=OTHER_GID),
                                                          gid=OTHER_GID)).status_code == 202
    with session_scope(settings.database_url) as s:
        inbox_id = s.scalars(select(InboxItem.id)).one()
    assert process_inbox_item(settings, inbox_id) == "pending"  # still no session recorded: it waits
    with session_scope(settings.database_url) as s:
        s.get(Job, job_id).gladia_id = GID  # what the worker records: the session it created
    assert process_inbox_item(settings, inbox_id) == "rejected"
    with session_scope(settings.database_url) as s:
        assert s.get(Job, job_id).gladia_id == GID
        assert s.scalar(select(func.count()).select_from(Event)) == 0


# ------------------------------------------------------------------ account webhooks


def _signed(body: bytes) -> dict[str, str]:
    when = datetime.now(timezone.utc)
    sig = StandardWebhook(WEBHOOK_SECRET).sign("msg_1", when, body.decode())
    return {"webhook-id": "msg_1", "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": sig,
            "Content-Type": "application/json"}


@pytest.fixture
def signed_app(settings) -> Iterator[LiveServer]:
    from webhook_service.web import create_app

    server = LiveServer(create_app(replace(settings, gladia_webhook_secret=WEBHOOK_SECRET), TESTING=True)).start()
    yield server
    server.stop()


def test_an_unsigned_end_session_webhook_moves_no_streaming_job(live_app, settings):
    job_id = streaming_job(settings)
    body = json.dumps({"event": "live.end_session", "payload": {"id": GID}})
    r = requests.post(live_app.url + "/webhooks/gladia", data=body, headers={"Content-Type": "application/json"},
                      timeout=10)
    assert r.status_code == 404 and r.json()["error"]["status"] == 404
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        assert (job.state, job.done_at, job.reconcile_after) == ("streaming", None, None)
    assert rows(settings)["inbox"] == 0


def test_a_signed_end_session_webhook_only_schedules_reconciliation(signed_app, settings):
    job_id = streaming_job(settings)
    body = json.dumps({"event": "live.end_session", "payload": {"id": GID}}).encode()
    r = requests.post(signed_app.url + "/webhooks/gladia", data=body, headers=_signed(body), timeout=10)
    assert r.status_code == 200, r.text
    with session_scope(settings.database_url) as s:
        job = s.get(Job, job_id)
        assert (job.state, job.done_at) == ("streaming", None)
        assert job.reconcile_after is not None


def _metric(server: LiveServer, prefix: str, headers: dict[str, str]) -> float:
    response = requests.get(server.url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.status_code
    for line in response.text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_webhooks_for_unknown_sessions_are_counted_and_dropped(live_app, signed_app, settings, operator_headers):
    """20 unsigned 900 KB bodies for unknown sessions were all stored (18 MB); now nothing is."""
    filler = "x" * 900_000
    bodies = [json.dumps({"event": "live.end_session", "payload": {"id": f"unknown-{i}"}, "pad": filler}).encode()
              for i in range(20)]
    for body in bodies:
        r = requests.post(live_app.url + "/webhooks/gladia", data=body,
                          headers={"Content-Type": "application/json"}, timeout=10)
        assert r.status_code == 404
    counter = 'webhook_account_webhooks_unknown_session_total{event="live.end_session"}'
    before = _metric(signed_app, counter, operator_headers)
    for body in bodies:
        r = requests.post(signed_app.url + "/webhooks/gladia", data=body, headers=_signed(body), timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "dropped"
    assert rows(settings)["inbox"] == 0
    assert _metric(signed_app, counter, operator_headers) == before + 20
