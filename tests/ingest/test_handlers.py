"""The registry of message handlers: every catalogue type is handled, lifecycle messages move the job."""

from __future__ import annotations

import pytest

from webhook_service.gladia.messages import CATALOGUE, LIFECYCLE_STATES
from webhook_service.ingest import handler_for
from webhook_service.ingest.handlers import SINGLE_STATEMENT_TYPES


@pytest.mark.dbless
def test_every_catalogue_type_has_a_handler_of_its_own_family():
    unknown = handler_for("a_type_this_version_does_not_know")
    for name in CATALOGUE:
        assert handler_for(name) is not unknown, name


@pytest.mark.dbless
def test_only_lifecycle_messages_move_the_job():
    assert {name for name in CATALOGUE if handler_for(name).moves_job} == set(LIFECYCLE_STATES)
    assert not handler_for("a_type_this_version_does_not_know").moves_job


@pytest.mark.dbless
def test_the_single_statement_fast_path_takes_only_event_and_utterance_types():
    assert SINGLE_STATEMENT_TYPES == {"transcript", "speech_start", "speech_end", "audio_chunk", "stop_recording"}
