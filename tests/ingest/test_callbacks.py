"""The callback receiver and the account-webhook endpoint, over HTTP against a real database."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
import requests
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from sqlalchemy import func, select, text
from standardwebhooks.webhooks import Webhook as StandardWebhook

from message_fixtures import GID, all_messages, callback_body, msg, sent_ago, transcript
from webhook_service.db import session_scope
from webhook_service.ingest.handlers import schedule_reconciliation
from webhook_service.models import Event, InboxItem, Job, Utterance
from webhook_service.tokens import callback_token

OTHER_GID = "0b9e2c1a-7f43-4c53-9a34-0d6c2f1e0e11"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"a-32-byte-secret-for-the-tests!!").decode()


@pytest.fixture
def job(settings) -> Job:
    with session_scope(settings.database_url) as s:
        j = Job(source_path="/audio/a.wav", gladia_id=GID, ws_url="wss://api.gladia.io/v2/live?token=test")
        j.advance("starting")
        j.advance("streaming")
        s.add(j)
    return j


def url_for(job_id: str, settings) -> str:
    return "/callbacks/gladia/" + callback_token(job_id, settings.callback_signing_key)


def post(client, path, body, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    kw.setdefault("content_type", "application/json")
    return client.post(path, data=data, **kw)


def counts(settings) -> dict[str, int]:
    with session_scope(settings.database_url) as s:
        return {
            "inbox": s.scalar(select(func.count()).select_from(InboxItem)),
            "events": s.scalar(select(func.count()).select_from(Event)),
            "utterances": s.scalar(select(func.count()).select_from(Utterance)),
        }


# --------------------------------------------------------------------- happy paths


def test_every_event_type_is_accepted_and_stored(client, settings, job):
    messages = all_messages()
    for m in messages:
        r = post(client, url_for(job.id, settings), callback_body(m))
        assert r.status_code == 200, r.get_json()
        assert r.get_json()["status"] == "stored" and r.get_json()["normalized"] == "processed"
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(InboxItem)).all()
        assert len(rows) == len(messages)
        assert {r.status for r in rows} == {"processed"}
        assert {r.event for r in rows} == {f"live.{m['type']}" for m in messages}
        assert all(r.job_id == job.id and r.gladia_id == GID and r.kind == "callback" for r in rows)
        assert json.loads(rows[0].body) == callback_body(messages[0])
        assert rows[0].headers["content-type"] == "application/json"
        assert s.scalar(select(func.count()).select_from(Event)) == len(messages)
        assert s.scalars(select(Utterance.text)).one() == " Hola mundo"
        j = s.get(Job, job.id)
        assert j.state == "done" and j.reconcile_after is not None


def test_end_session_schedules_reconciliation_once_callbacks_in_flight_have_landed(client, settings, job):
    """An end_session scheduled reconciliation at once: its run only fetched the whole session to learn it had
    completed less than RECONCILE_DELAY_S ago, stored it and scheduled itself again (30 such runs at once when
    a wave of sessions ended, on the cores that start the next wave)."""
    with session_scope(settings.database_url) as s:
        s.get(Job, job.id).reconcile_after = datetime.now(timezone.utc) + timedelta(seconds=1)  # as the close set it
    end_session, sent = sent_ago("end_session", 2.0)
    assert post(client, url_for(job.id, settings), callback_body(end_session)).status_code == 200
    delay = timedelta(seconds=settings.reconcile_delay_s)
    assert delay > timedelta(seconds=3)
    with session_scope(settings.database_url) as s:
        due = s.get(Job, job.id).reconcile_after.replace(tzinfo=timezone.utc)
    assert due == sent + delay  # later than the close's time, which could only come too soon
    # The same message again (Gladia retrying it) changes nothing.
    assert post(client, url_for(job.id, settings), callback_body(end_session)).status_code == 200
    with session_scope(settings.database_url) as s:
        assert s.get(Job, job.id).reconcile_after.replace(tzinfo=timezone.utc) == due


def test_an_end_session_from_a_clock_ahead_is_reconciled_no_later_than_the_delay_from_now():
    job = Job()
    before = datetime.now(timezone.utc)
    schedule_reconciliation(job, 10.0, ended_at=before + timedelta(hours=1))
    assert before + timedelta(seconds=10) <= job.reconcile_after <= datetime.now(timezone.utc) + timedelta(seconds=10)


def test_same_body_twice_is_one_row(client, settings, job):
    body = callback_body(transcript())
    first = post(client, url_for(job.id, settings), body)
    second = post(client, url_for(job.id, settings), json.dumps(body, indent=2))  # same JSON, other bytes
    assert first.status_code == second.status_code == 200
    assert second.get_json()["status"] == "duplicate"
    with session_scope(settings.database_url) as s:
        row = s.scalars(select(InboxItem)).one()
        assert row.duplicates == 1 and row.last_duplicate_at is not None
    assert counts(settings) == {"inbox": 1, "events": 1, "utterances": 1}


def test_a_delivery_without_a_session_is_deduplicated_too(settings):
    """The inbox's unique key on PostgreSQL leads with the session; rows without one share the empty session."""
    from webhook_service.ingest import store_inbox

    body = {"event": "account.notice", "payload": {"text": "no session named"}}
    raw = json.dumps(body).encode()
    now = datetime.now(timezone.utc)
    stored = []
    for _ in range(2):
        with session_scope(settings.database_url) as s:
            stored.append(store_inbox(s, kind="webhook", raw=raw, body=body, headers={}, event=body["event"],
                                      gladia_id=None, job_id=None, received_at=now))
    assert [x.duplicate for x in stored] == [False, True] and stored[0].inbox_id == stored[1].inbox_id
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(InboxItem.duplicates)).one() == 1


def test_postgresql_deduplicates_the_inbox_on_a_key_led_by_the_session(settings, job):
    """A key alone is random: on a large inbox each callback would change an index leaf of its own (a full-page
    image in the WAL after every checkpoint). The receiver's statements must use the session-led index."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: SQLite keeps the constraint on the key alone")
    from webhook_service.ingest.statements import pg_receive_statements, statements
    from webhook_service.models import INBOX_KEY_INDEX

    with session_scope(settings.database_url) as s:
        unique = {name for (name,) in s.execute(text(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indisunique "
            "AND indrelid = 'callback_inbox'::regclass"))}
        assert unique == {"pk_callback_inbox", INBOX_KEY_INDEX}
        conn = s.connection().connection.driver_connection
        conn.execute("SET LOCAL enable_seqscan = off")
        lookup = statements("postgresql").inbox_duplicate.compile(dialect=s.get_bind().dialect)
        params = {**lookup.params, "b_gladia": GID, "b_key": "k" * 64, "b_at": datetime.now(timezone.utc)}
        plan = [row[0] for row in conn.execute("EXPLAIN " + str(lookup), params)]
        assert any(f"Index Scan using {INBOX_KEY_INDEX}" in line for line in plan), plan
        # Both columns in the condition: a lookup by the key alone scans the whole index for it.
        condition = next(line for line in plan if "Index Cond" in line)
        assert "COALESCE(gladia_id" in condition and "dedupe_key" in condition, plan
        unbound = dict.fromkeys(("i_key", "i_at", "i_headers", "i_body", "i_event", "gladia", "job", "now", "cutoff",
                                 "e_key", "e_type", "created", "e_payload"))
        receive = "\n".join(row[0] for row in conn.execute("EXPLAIN " + pg_receive_statements().event_only, unbound))
        assert f"Conflict Arbiter Indexes: {INBOX_KEY_INDEX}" in receive


def test_same_body_concurrently_over_a_real_socket_is_one_row(live_app, settings, job):
    body = json.dumps(callback_body(transcript())).encode()
    url = live_app.url + url_for(job.id, settings)
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def send():
        barrier.wait()
        statuses.append(requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert counts(settings) == {"inbox": 1, "events": 1, "utterances": 1}
    with session_scope(settings.database_url) as s:
        row = s.scalars(select(InboxItem)).one()
        assert (row.duplicates, row.status) == (7, "processed")


def test_many_distinct_callbacks_concurrently_lose_nothing(live_app, settings, job):
    bodies = [json.dumps(callback_body(transcript(f"00_{i:08d}", text=f" word {i}", at=i))).encode() for i in range(40)]
    url = live_app.url + url_for(job.id, settings)
    lock = threading.Lock()
    statuses: list[int] = []

    def send(chunk):
        with requests.Session() as http:
            for b in chunk:
                code = http.post(url, data=b, headers={"Content-Type": "application/json"}, timeout=30).status_code
                with lock:
                    statuses.append(code)

    threads = [threading.Thread(target=send, args=(bodies[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 40
    assert counts(settings) == {"inbox": 40, "events": 40, "utterances": 40}


def test_a_whole_session_sent_concurrently_twice(live_app, settings, job):
    """Lifecycle, transcripts, add-ons and their duplicates at once: no deadlock, no 5xx, one row each."""
    bodies = [json.dumps(callback_body(m)).encode() for m in all_messages()] * 2
    url = live_app.url + url_for(job.id, settings)
    lock = threading.Lock()
    statuses: list[int] = []

    def send(chunk):
        with requests.Session() as http:
            for b in chunk:
                code = http.post(url, data=b, headers={"Content-Type": "application/json"}, timeout=60).status_code
                with lock:
                    statuses.append(code)

    threads = [threading.Thread(target=send, args=(bodies[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * len(bodies)
    n = len(all_messages())
    assert counts(settings) == {"inbox": n, "events": n, "utterances": 1}
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.sum(InboxItem.duplicates))) == n
        assert set(s.scalars(select(InboxItem.status))) == {"processed"}
        assert s.get(Job, job.id).state == "done"
        assert s.scalars(select(Utterance.text)).one() == " Hola mundo"


def test_out_of_order_callbacks(client, settings, job):
    for m in reversed(all_messages()):
        assert post(client, url_for(job.id, settings), callback_body(m)).status_code == 200
    with session_scope(settings.database_url) as s:
        assert s.get(Job, job.id).state == "done"
        utt = s.scalars(select(Utterance)).one()
        assert (utt.is_final, utt.text) == (True, " Hola mundo")


class _Dispatched:
    """A dispatcher that records what the sweeper sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def reconcile(self, job_id: str, trigger: str) -> None:
        self.sent.append(("reconcile", job_id))

    def stream(self, job_id: str, resume: bool) -> None:
        self.sent.append(("stream", job_id))


def test_callback_before_the_worker_stored_the_session_id(client, settings):
    """A callback never binds a session: it waits raw until the worker records the session it created."""
    from webhook_service.jobs.sweeper import sweep

    with session_scope(settings.database_url) as s:
        j = Job(source_path="/audio/b.wav")
        j.advance("starting")
        s.add(j)
    r = post(client, url_for(j.id, settings), callback_body(msg("start_session", 0)))
    assert r.status_code == 202 and r.get_json()["normalized"] == "pending"
    with session_scope(settings.database_url) as s:
        assert s.get(Job, j.id).gladia_id is None
        assert s.scalars(select(InboxItem.job_id)).one() == j.id
        assert s.scalar(select(func.count()).select_from(Event)) == 0
    # The worker records the session it created; the sweeper then normalizes the waiting row.
    with session_scope(settings.database_url) as s:
        s.get(Job, j.id).gladia_id = GID
    sweep(settings, dispatcher=_Dispatched(), now=datetime.now(timezone.utc) + timedelta(minutes=1))
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(InboxItem.status)).one() == "processed"
        assert s.scalar(select(func.count()).select_from(Event)) == 1
    # Now that the job holds GID, another session's body is refused.
    r = post(client, url_for(j.id, settings), callback_body(msg("start_session", 0, gid=OTHER_GID), gid=OTHER_GID))
    assert r.status_code == 403


def test_an_orphan_sessions_end_does_not_end_the_job(client, settings):
    # The worker died between recording the session and recording its socket (a row written before the
    # session and its socket were recorded together): the session never got audio and Gladia ends it after
    # its grace. The job's next run replaces the session; its end must not make the job done (nor due for
    # reconciliation).
    with session_scope(settings.database_url) as s:
        j = Job(source_path="/audio/b.wav", gladia_id=GID)
        j.advance("starting")
        s.add(j)
    for m in (msg("start_session", 0), msg("end_recording", 30), msg("end_session", 31)):
        assert post(client, url_for(j.id, settings), callback_body(m)).status_code == 200
    with session_scope(settings.database_url) as s:
        row = s.get(Job, j.id)
        assert (row.gladia_id, row.state, row.reconcile_after) == (GID, "starting", None)
        assert s.scalar(select(func.count()).select_from(Event).where(Event.gladia_id == GID)) == 3


def test_a_session_replaced_by_the_worker_is_followed(client, settings, job):
    """The worker may replace a session it could not use; the receiver must not trust what it saw before."""
    assert post(client, url_for(job.id, settings), callback_body(transcript())).status_code == 200
    with session_scope(settings.database_url) as s:
        s.get(Job, job.id).gladia_id = OTHER_GID
    new_body = callback_body(transcript(gid=OTHER_GID), gid=OTHER_GID)
    assert post(client, url_for(job.id, settings), new_body).status_code == 200
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(Utterance).where(Utterance.gladia_id == OTHER_GID)) == 1


def test_job_without_session_id_cannot_take_another_jobs_session(client, settings, job):
    with session_scope(settings.database_url) as s:
        other = Job(source_path="/audio/c.wav")
        s.add(other)
    before = counts(settings)
    r = post(client, url_for(other.id, settings), callback_body(transcript()))  # GID belongs to `job`
    assert r.status_code == 403
    assert counts(settings) == before
    with session_scope(settings.database_url) as s:
        assert s.get(Job, other.id).gladia_id is None


def _install_failing_trigger(settings) -> None:
    with session_scope(settings.database_url) as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("CREATE OR REPLACE FUNCTION wst_fail() RETURNS trigger AS $$ "
                           "BEGIN RAISE EXCEPTION 'utterances are read-only'; END $$ LANGUAGE plpgsql"))
            s.execute(text("CREATE TRIGGER wst_fail BEFORE INSERT ON utterances FOR EACH ROW EXECUTE FUNCTION wst_fail()"))
        else:
            s.execute(text("CREATE TRIGGER wst_fail BEFORE INSERT ON utterances "
                           "BEGIN SELECT RAISE(ABORT, 'utterances are read-only'); END"))


def _drop_failing_trigger(settings) -> None:
    with session_scope(settings.database_url) as s:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("DROP TRIGGER IF EXISTS wst_fail ON utterances"))
            s.execute(text("DROP FUNCTION IF EXISTS wst_fail()"))
        else:
            s.execute(text("DROP TRIGGER IF EXISTS wst_fail"))


def test_normalization_failure_keeps_the_raw_row_and_answers_2xx(client, settings, job):
    from webhook_service.ingest import process_inbox_item

    _install_failing_trigger(settings)
    try:
        r = post(client, url_for(job.id, settings), callback_body(transcript()))
        assert r.status_code == 200 and r.get_json()["normalized"] == "failed"
        with session_scope(settings.database_url) as s:
            row = s.scalars(select(InboxItem)).one()
            assert row.status == "failed" and "read-only" in row.error and row.attempts == 1
        assert counts(settings) == {"inbox": 1, "events": 0, "utterances": 0}  # no partial write
    finally:
        _drop_failing_trigger(settings)
    # A duplicate delivery of a failed row is a retry.
    r = post(client, url_for(job.id, settings), callback_body(transcript()))
    assert r.get_json() == {"status": "duplicate", "normalized": "processed", "inbox_id": row.id}
    assert process_inbox_item(settings, row.id) == "processed"
    assert counts(settings) == {"inbox": 1, "events": 1, "utterances": 1}


def test_a_normalization_that_ends_the_whole_transaction_still_keeps_the_raw_row(client, settings, job):
    """SQLite: a failure that rolls back the receiver's whole transaction (not only its savepoint) while a
    callback is stored and normalized in one; the raw row is then stored on its own, as for any failure."""
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("RAISE(ROLLBACK) is SQLite's; PostgreSQL stores a callback in one statement")
    with session_scope(settings.database_url) as s:
        s.execute(text("CREATE TRIGGER wst_rollback BEFORE INSERT ON utterances "
                       "BEGIN SELECT RAISE(ROLLBACK, 'utterances roll everything back'); END"))
    try:
        r = post(client, url_for(job.id, settings), callback_body(transcript()))
        assert r.status_code == 200 and r.get_json()["normalized"] == "failed"
        with session_scope(settings.database_url) as s:
            row = s.scalars(select(InboxItem)).one()
            assert row.status == "failed" and "roll everything back" in row.error
        assert counts(settings) == {"inbox": 1, "events": 0, "utterances": 0}
    finally:
        with session_scope(settings.database_url) as s:
            s.execute(text("DROP TRIGGER IF EXISTS wst_rollback"))


def _stored_rows(settings) -> tuple[list[tuple], list[tuple]]:
    """Events and utterances as the two receiver paths must both write them (ids and clocks aside)."""
    with session_scope(settings.database_url) as s:
        events = [(e.gladia_id, e.job_id, e.message_key, e.type, e.source, e.created_at, e.payload)
                  for e in s.scalars(select(Event).order_by(Event.message_key))]
        utterances = [(u.gladia_id, u.job_id, u.utterance_id, u.is_final, u.channel, u.start_s, u.end_s, u.text,
                       u.language, u.confidence, u.words, u.word_count, u.source, u.created_at)
                      for u in s.scalars(select(Utterance).order_by(Utterance.utterance_id))]
    return events, utterances


def test_the_one_statement_path_stores_what_the_general_path_stores(client, settings, job, monkeypatch):
    """A common callback is stored and normalized in one transaction (one statement on PostgreSQL, one
    savepoint on SQLite); normalizing the same raw rows again through the general path (the sweeper's)
    must give the very same rows."""
    from webhook_service.ingest import process_inbox_item, receive

    def second_step(*args, **kwargs):
        raise AssertionError("a common callback took the two-step path")

    bare = transcript("00_00000009")
    bare["data"]["utterance"].pop("words")
    bare["data"]["utterance"]["language"] = None
    bodies = [callback_body(transcript("00_00000001")), callback_body(bare), callback_body(msg("speech_start"))]
    with monkeypatch.context() as patched:
        patched.setattr(receive, "normalize_inbox", second_step)
        patched.setattr(receive, "_normalize_single", second_step)
        for body in bodies:
            r = post(client, url_for(job.id, settings), body)
            assert r.status_code == 200 and r.get_json()["normalized"] == "processed"
    fast = _stored_rows(settings)
    assert len(fast[0]) == 3 and len(fast[1]) == 2 and {u[10] == [] for u in fast[1]} == {True, False}

    with session_scope(settings.database_url) as s:
        s.execute(Utterance.__table__.delete())
        s.execute(Event.__table__.delete())
        s.execute(InboxItem.__table__.update().values(status="pending"))
        ids = s.scalars(select(InboxItem.id)).all()
    assert [process_inbox_item(settings, inbox_id) for inbox_id in ids] == ["processed"] * 3
    assert _stored_rows(settings) == fast
    with session_scope(settings.database_url) as s:
        assert {row.status for row in s.scalars(select(InboxItem))} == {"processed"}


# ----------------------------------------------------------------------- bad input

HUGE = b'{"id": "' + b"x" * 2_000_000 + b'"}'


def _bad_cases():
    good = callback_body(transcript())
    t = transcript()
    return [
        ("malformed json", "POST", None, b'{"id": "x", "event": ', "application/json", 400),
        ("not utf-8", "POST", None, b"\xff\xfe{}", "application/json", 400),
        ("json array", "POST", None, b"[]", "application/json", 400),
        ("NaN", "POST", None, json.dumps(good).replace('"start": 0.188', '"start": NaN', 1).encode(), "application/json", 400),
        ("id not a string", "POST", None, {**good, "id": 5}, "application/json", 400),
        ("event not live.*", "POST", None, {**good, "event": "transcript"}, "application/json", 400),
        ("missing payload", "POST", None, {"id": GID, "event": "live.transcript"}, "application/json", 400),
        ("payload type disagrees", "POST", None, {**good, "event": "live.end_session"}, "application/json", 400),
        ("session_id disagrees", "POST", None, {**good, "payload": {**t, "session_id": OTHER_GID}}, "application/json", 400),
        ("is_final not bool", "POST", None,
         {**good, "payload": {**t, "data": {**t["data"], "is_final": "true"}}}, "application/json", 400),
        ("utterance missing", "POST", None,
         {**good, "payload": {**t, "data": {"id": "00_1", "is_final": True}}}, "application/json", 400),
        ("words not a list", "POST", None,
         {**good, "payload": {**t, "data": {**t["data"], "utterance": {**t["data"]["utterance"], "words": "a b"}}}},
         "application/json", 400),
        ("channel huge", "POST", None,
         {**good, "payload": {**t, "data": {**t["data"], "utterance": {**t["data"]["utterance"], "channel": 2**70}}}},
         "application/json", 400),
        ("utterance id too long", "POST", None,
         {**good, "payload": {**t, "data": {**t["data"], "id": "x" * 65}}}, "application/json", 400),
        ("NUL in text", "POST", None,
         {**good, "payload": {**t, "data": {**t["data"], "utterance": {**t["data"]["utterance"], "text": "a\x00b"}}}},
         "application/json", 400),
        ("text/plain", "POST", None, good, "text/plain", 400),
        ("form", "POST", None, b"id=1", "application/x-www-form-urlencoded", 400),
        ("empty body", "POST", None, b"", "application/json", 400),
        ("huge body", "POST", None, HUGE, "application/json", 413),
        ("garbage token", "POST", "/callbacks/gladia/nope", good, "application/json", 404),
        ("forged token", "POST", "forged", good, "application/json", 404),
        ("token of a missing job", "POST", "missing", good, "application/json", 404),
        ("token of another session", "POST", "other", good, "application/json", 403),
        ("wrong method", "GET", None, None, None, 405),
        ("wrong method PUT", "PUT", None, good, "application/json", 405),
    ]


def test_bad_input_gets_the_right_status_and_writes_nothing(client, settings, job):
    """One test walks the whole table (a database reset per case would cost more than the cases)."""
    with session_scope(settings.database_url) as s:
        other = Job(source_path="/audio/o.wav", gladia_id=OTHER_GID)
        s.add(other)
    paths = {
        None: url_for(job.id, settings),
        "forged": url_for(job.id, settings)[:-4] + "0000",
        "missing": url_for("7d7f4a5e-0000-4000-8000-000000000000", settings),
        "other": url_for(other.id, settings),
    }
    for name, method, path, body, content_type, status in _bad_cases():
        kwargs = {}
        if body is not None:
            kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body)
        if content_type:
            kwargs["content_type"] = content_type
        r = client.open(paths.get(path, path), method=method, **kwargs)
        assert r.status_code == status, name
        assert r.is_json and r.get_json()["error"]["status"] == status, name
        assert counts(settings) == {"inbox": 0, "events": 0, "utterances": 0}, name
        with session_scope(settings.database_url) as s:
            assert s.get(Job, job.id).state == "streaming", name
            assert s.get(Job, other.id).gladia_id == OTHER_GID, name


def test_chunked_body_over_the_limit_is_413(live_app, settings, job):
    def chunks():
        for _ in range(settings.max_callback_bytes // 65536 + 2):
            yield b" " * 65536

    url = live_app.url + url_for(job.id, settings)
    r = requests.post(url, data=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["status"] == 413
    assert counts(settings)["inbox"] == 0


def test_unknown_event_is_stored_not_refused(client, settings, job):
    m = msg("speaker_change", 1.0, data={"speaker": 1})
    r = post(client, url_for(job.id, settings), callback_body(m))
    assert r.status_code == 200 and r.get_json()["normalized"] == "processed"
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(Event.type)).one() == "speaker_change"
        assert s.scalars(select(InboxItem.event)).one() == "live.speaker_change"


def test_secret_headers_are_not_stored(client, settings, job):
    post(client, url_for(job.id, settings), callback_body(transcript()),
         headers={"Authorization": "Bearer s3cret", "X-Gladia-Key": "k3y", "X-Trace": "t"})
    with session_scope(settings.database_url) as s:
        headers = s.scalars(select(InboxItem.headers)).one()
    assert headers["x-trace"] == "t"
    assert "authorization" not in headers and "x-gladia-key" not in headers
    assert "s3cret" not in json.dumps(headers)


# --------------------------------------------------------------- property-based

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _near_valid_bodies():
    """Valid bodies with one field replaced by a random JSON value, to reach deep validation."""
    base = [callback_body(m) for m in all_messages()]

    @st.composite
    def build(draw):
        body = json.loads(json.dumps(draw(st.sampled_from(base))))
        target = body
        path = draw(st.lists(st.sampled_from(["payload", "data", "utterance", "words", "id", "event", "type",
                                              "is_final", "start", "text", "target_language", "metadata",
                                              "transcription", "results", "error", "channel", "created_at"]),
                             min_size=1, max_size=4))
        for key in path[:-1]:
            nxt = target.get(key) if isinstance(target, dict) else None
            if not isinstance(nxt, dict):
                break
            target = nxt
        target[path[-1]] = draw(json_values)
        return json.dumps(body).encode()

    return build()


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()), _near_valid_bodies()))
def test_random_bodies_never_give_a_500(client, settings, job, body):
    r = client.post(url_for(job.id, settings), data=body, content_type="application/json")
    assert r.status_code in (200, 400, 403), r.get_data()
    assert r.is_json


# ------------------------------------------------------------------- webhooks


def _signed(body: bytes, *, secret=WEBHOOK_SECRET, when=None, prefix="webhook") -> dict[str, str]:
    when = when or datetime.now(timezone.utc)
    sig = StandardWebhook(secret).sign("msg_1", when, body.decode())
    return {f"{prefix}-id": "msg_1", f"{prefix}-timestamp": str(int(when.timestamp())), f"{prefix}-signature": sig}


@pytest.fixture
def signed_client(settings):
    from webhook_service.web import create_app

    return create_app(replace(settings, gladia_webhook_secret=WEBHOOK_SECRET), TESTING=True).test_client()


def test_signed_end_session_webhook_schedules_reconciliation(signed_client, settings, job):
    body = json.dumps({"event": "live.end_session", "payload": {"id": GID}}).encode()
    before = datetime.now(timezone.utc)
    r = signed_client.post("/webhooks/gladia", data=body, content_type="application/json", headers=_signed(body))
    assert r.status_code == 200, r.get_json()
    delay = timedelta(seconds=settings.reconcile_delay_s)
    with session_scope(settings.database_url) as s:
        j = s.get(Job, job.id)
        # A webhook moves no job (this one is streaming): it only schedules reconciliation, RECONCILE_DELAY_S on.
        assert j.state == "streaming"
        assert before + delay <= j.reconcile_after.replace(tzinfo=timezone.utc) <= datetime.now(timezone.utc) + delay
        row = s.scalars(select(InboxItem)).one()
        assert (row.kind, row.event, row.gladia_id, row.job_id, row.status) == (
            "webhook", "live.end_session", GID, job.id, "processed")
    again = signed_client.post("/webhooks/gladia", data=body, content_type="application/json", headers=_signed(body))
    assert again.get_json()["status"] == "duplicate"
    # Another delivery never postpones a reconciliation already due sooner.
    sooner = datetime.now(timezone.utc) + timedelta(seconds=1)
    with session_scope(settings.database_url) as s:
        s.get(Job, job.id).reconcile_after = sooner
    body = json.dumps({"event": "live.end_session", "payload": {"id": GID}, "again": True}).encode()
    r = signed_client.post("/webhooks/gladia", data=body, content_type="application/json", headers=_signed(body))
    assert r.get_json()["status"] != "duplicate"
    with session_scope(settings.database_url) as s:
        assert s.get(Job, job.id).reconcile_after.replace(tzinfo=timezone.utc) == sooner


def test_svix_headers_are_accepted(signed_client, settings, job):
    body = json.dumps({"event": "live.start_recording", "payload": {"id": GID}}).encode()
    r = signed_client.post("/webhooks/gladia", data=body, content_type="application/json",
                           headers=_signed(body, prefix="svix"))
    assert r.status_code == 200


def test_bad_webhook_signature_is_401_and_writes_nothing(signed_client, settings, job):
    body = json.dumps({"event": "live.end_session", "payload": {"id": GID}}).encode()
    cases = {
        "unsigned": {},
        "wrong secret": _signed(body, secret="whsec_" + base64.b64encode(b"another secret").decode()),
        "stale timestamp": _signed(body, when=datetime.now(timezone.utc) - timedelta(minutes=10)),
        "signature of another body": _signed(b'{"event": "live.end_session", "payload": {"id": "someone else"}}'),
        "garbage signature": {**_signed(body), "webhook-signature": "v1,not base64!"},
    }
    for name, headers in cases.items():
        r = signed_client.post("/webhooks/gladia", data=body, content_type="application/json", headers=headers)
        assert r.status_code == 401 and r.is_json, name
        assert counts(settings)["inbox"] == 0, name
        with session_scope(settings.database_url) as s:
            assert s.get(Job, job.id).reconcile_after is None, name


def test_webhooks_are_off_without_a_secret(client, settings, job):
    """Unsigned account webhooks were accepted; an unsigned live.end_session moved a streaming job to done."""
    body = {"event": "live.end_session", "payload": {"id": GID}}
    r = post(client, "/webhooks/gladia", body)
    assert r.status_code == 404 and r.is_json
    assert counts(settings)["inbox"] == 0
    with session_scope(settings.database_url) as s:
        j = s.get(Job, job.id)
        assert (j.state, j.done_at, j.reconcile_after) == ("streaming", None, None)


def test_bad_webhook_body_is_400(signed_client, settings):
    for body in [b"{", b"[]", b'{"event": "live.end_session"}', b'{"event": 1, "payload": {"id": "x"}}',
                 b'{"event": "live.end_session", "payload": {"id": ""}}']:
        r = signed_client.post("/webhooks/gladia", data=body, content_type="application/json",
                               headers=_signed(body))
        assert r.status_code == 400 and r.is_json, body
    assert counts(settings)["inbox"] == 0


def _metric(client, line_prefix: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_received_duplicate_rejected(client, settings, job):
    received = 'webhook_callbacks_received_total{event="live.transcript"}'
    duplicate = 'webhook_callbacks_duplicate_total{event="live.transcript"}'
    rejected = 'webhook_callbacks_rejected_total{reason="unknown_token"}'
    latency = "webhook_callback_processing_seconds_count"
    before = {name: _metric(client, name) for name in (received, duplicate, rejected, latency)}
    body = callback_body(transcript())
    post(client, url_for(job.id, settings), body)
    post(client, url_for(job.id, settings), body)
    post(client, "/callbacks/gladia/not-a-token", body)
    after = {name: _metric(client, name) for name in before}
    assert after[received] - before[received] == 2
    assert after[duplicate] - before[duplicate] == 1
    assert after[rejected] - before[rejected] == 1
    assert after[latency] - before[latency] == 1


def test_database_down_is_503_not_500(settings, job):
    """With the database unreachable nothing can be stored: a 503 tells a retrying sender to retry."""
    from webhook_service.web import create_app

    down = replace(settings, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    client = create_app(down, TESTING=True).test_client()
    r = post(client, url_for(job.id, down), callback_body(transcript()))
    assert r.status_code == 503 and r.get_json()["error"]["status"] == 503


@pytest.mark.dbless
def test_malformed_webhook_secret_stops_at_start():
    from webhook_service.config import ConfigError, Settings

    with pytest.raises(ConfigError, match="GLADIA_WEBHOOK_SECRET"):
        Settings.from_env(environ={"GLADIA_WEBHOOK_SECRET": "not base64!"})
    assert Settings.from_env(environ={"GLADIA_WEBHOOK_SECRET": WEBHOOK_SECRET}).gladia_webhook_secret == WEBHOOK_SECRET


# ------------------------------------------------------------ connection loss (PostgreSQL)


def test_callback_after_the_database_dropped_its_connections_is_stored(client, settings, job):
    """The receiver's pool has no pre-ping: a dead pooled connection must cost a retry, not a 503."""
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL: terminating server connections")
    assert post(client, url_for(job.id, settings), callback_body(transcript("00_00000001"))).status_code == 200
    with session_scope(settings.database_url) as s:  # every other connection of this database is cut
        cut = s.scalar(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    assert cut >= 1
    r = post(client, url_for(job.id, settings), callback_body(transcript("00_00000002")))
    assert r.status_code == 200 and r.get_json()["status"] == "stored" and r.get_json()["normalized"] == "processed"
    assert counts(settings) == {"inbox": 2, "events": 2, "utterances": 2}
