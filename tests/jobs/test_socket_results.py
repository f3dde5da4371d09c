"""Results the session's WebSocket carries, stored by the worker (STORE_SOCKET_MESSAGES), with or without callbacks.

Real sockets and a real database: the worker streams a job to the emulator,
stores what the socket delivers through the receiver's own normalization
(source ``websocket``), and reconciliation settles the job against
``GET /v2/live/:id``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from message_fixtures import GID, sent_ago
from webhook_service.audio import synth_speechlike
from webhook_service.config import ConfigError, Settings
from webhook_service.db import session_scope
from webhook_service.gladia.client import GladiaClient
from webhook_service.gladia.session_config import callback_flags, is_expected
from webhook_service.ingest import message_key
from webhook_service.jobs import submit
from webhook_service.jobs.socket_results import SocketResults
from webhook_service.jobs.streaming import run_job
from webhook_service.models import Event, InboxItem, Job, Utterance
from webhook_service.reconcile import reconcile_job


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return synth_speechlike(tmp_path_factory.mktemp("audio") / "speech.wav", 4.0)


def make_job(settings: Settings, path) -> str:
    plans = submit.plan(settings, [str(path)], {})
    return submit.record(settings, plans, None, {}).jobs[0]["id"]


def stored(settings: Settings, gladia_id: str) -> tuple[Counter, list[Event]]:
    with session_scope(settings.database_url) as session:
        events = session.scalars(select(Event).where(Event.gladia_id == gladia_id)).all()
        session.expunge_all()
    return Counter(e.message_key for e in events), events


def wanted_messages(settings: Settings, job_id: str, reference: dict) -> dict[str, dict]:
    with session_scope(settings.database_url) as session:
        flags = callback_flags(session.get(Job, job_id).session_config)
    messages = [json.loads(m) for m in reference["result"]["messages"]]
    return {message_key(m): m for m in messages if is_expected(m, flags)}


def test_callbacks_off_the_socket_and_reconciliation_give_every_result(settings, emulator, speech):
    # No public URL at all: the receiver is never started and Gladia is told of no callback.
    settings = replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key, stream_speed=0.0,
                       callbacks=False, public_base_url="http://192.0.2.1:9", reconcile_delay_s=0.0)
    job_id = make_job(settings, speech)
    assert run_job(settings, job_id) == "stream_closed"
    with session_scope(settings.database_url) as session:
        gladia_id = session.get(Job, job_id).gladia_id
    reference = emulator.wait_session_done(gladia_id)

    params = GladiaClient(emulator.url, emulator.api_key).get_live(gladia_id)["request_params"]
    assert params["callback"] is False and "url" not in params["callback_config"]
    assert params["messages_config"]["receive_final_transcripts"] is True  # asked for on the socket
    assert emulator.ledger(gladia_id)["totals"]["messages"] == 0  # not one callback

    keys, events = stored(settings, gladia_id)
    socket_finals = [e for e in events if e.type == "transcript" and e.payload["data"]["is_final"]]
    assert socket_finals and {e.source for e in events} == {"websocket"}
    assert all(n == 1 for n in keys.values())
    assert not any(e.type == "audio_chunk" for e in events)  # acknowledgements are the worker's, not results

    result = reconcile_job(settings, job_id, "stream_closed")
    assert result.outcome == "reconciled", result
    wanted = wanted_messages(settings, job_id, reference)
    keys, events = stored(settings, gladia_id)
    assert set(keys) == set(wanted) and all(n == 1 for n in keys.values())  # nothing missing, nothing twice
    assert result.missing == len(wanted) - len(socket_finals) - sum(
        1 for e in events if e.source == "websocket" and e.type != "transcript")
    with session_scope(settings.database_url) as session:
        finals = session.scalars(select(Utterance.text).where(Utterance.gladia_id == gladia_id,
                                                              Utterance.is_final.is_(True))
                                 .order_by(Utterance.start_s)).all()
    assert finals == [u["text"] for u in reference["result"]["transcription"]["utterances"]]


def test_a_message_received_by_callback_and_by_socket_is_one_row(settings, emulator, live_app, speech):
    # Every callback waits 0.4 s (in order): the socket's copy of each message is stored first, and the
    # callback's copy that follows it is taken by the receiver as the same message.
    emulator.set_faults(callback_delay_rate=1.0, callback_delay_s=0.4)
    settings = replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key, stream_speed=0.0,
                       public_base_url=live_app.url, close_mode="stop")  # stop: the socket carries it all
    job_id = make_job(settings, speech)
    assert run_job(settings, job_id) == "stream_closed"
    with session_scope(settings.database_url) as session:
        gladia_id = session.get(Job, job_id).gladia_id
    reference = emulator.wait_session_done(gladia_id)
    assert emulator.wait_callbacks(60)

    ledger = emulator.ledger(gladia_id)
    delivered = [e["message_key"] for e in ledger["entries"] if e["outcome"] == "delivered"]
    wanted = wanted_messages(settings, job_id, reference)
    assert sorted(delivered) == sorted(wanted)  # every wanted message came by callback, once...
    keys, events = stored(settings, gladia_id)
    assert set(keys) == set(wanted) and all(n == 1 for n in keys.values())  # ...and is stored once
    sources = {e.message_key: e.source for e in events}
    # Only start_session (produced before any socket exists) came by callback alone.
    assert {wanted[k]["type"] for k, source in sources.items() if source == "callback"} == {"start_session"}
    assert sum(source == "websocket" for source in sources.values()) == len(wanted) - 1 >= 5
    with session_scope(settings.database_url) as session:
        inbox = session.scalars(select(InboxItem.status).where(InboxItem.gladia_id == gladia_id)).all()
    assert len(inbox) == len(delivered) and set(inbox) == {"processed"}  # each callback kept raw, processed


def test_the_setting_can_turn_socket_storage_off(settings, emulator, speech):
    settings = replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key, stream_speed=0.0,
                       callbacks=False, store_socket_messages=False)
    job_id = make_job(settings, speech)
    assert run_job(settings, job_id) == "stream_closed"
    with session_scope(settings.database_url) as session:
        gladia_id = session.get(Job, job_id).gladia_id
    params = GladiaClient(emulator.url, emulator.api_key).get_live(gladia_id)["request_params"]
    assert params["messages_config"]["receive_final_transcripts"] is False  # the socket is not asked for results
    assert stored(settings, gladia_id)[0] == Counter()


def test_an_end_session_off_the_socket_schedules_reconciliation_as_its_callback_does(settings, speech):
    job_id = make_job(settings, speech)
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        job.gladia_id, job.ws_url = GID, "wss://api.gladia.io/v2/live?token=test"
        job.advance("starting")
        job.advance("streaming")
    results = SocketResults(settings.database_url, job_id, GID, {}, executor=None, reconcile_delay_s=45.0)
    end_session, sent = sent_ago("end_session", 2.0)
    assert results._store([(end_session, datetime.now(timezone.utc))]) == 1
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job.state == "done"
        assert job.reconcile_after.replace(tzinfo=timezone.utc) == sent + timedelta(seconds=45)


@pytest.mark.parametrize("raw, value", [("off", False), ("on", True), ("false", False), ("1", True)])
def test_callbacks_setting_reads_on_and_off(raw, value):
    assert Settings.from_env(environ={"CALLBACKS": raw}).callbacks is value
    assert Settings.from_env(environ={"STORE_SOCKET_MESSAGES": raw}).store_socket_messages is value


def test_a_bad_callbacks_setting_names_the_variable():
    with pytest.raises(ConfigError, match="CALLBACKS"):
        Settings.from_env(environ={"CALLBACKS": "sometimes"})
