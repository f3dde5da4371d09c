"""Session configuration: validation of Gladia's POST /v2/live body and what the service enforces."""

from __future__ import annotations

import pytest

from webhook_service.gladia import session_config as sc
from webhook_service.gladia import session_schema

pytestmark = pytest.mark.dbless


def test_a_full_valid_body_passes():
    body = {
        "model": "solaria-1", "endpointing": 0.3, "maximum_duration_without_endpointing": 30,
        "language_config": {"languages": ["en", "fr"], "code_switching": True},
        "pre_processing": {"audio_enhancer": True, "speech_threshold": 0.4},
        "realtime_processing": {
            "custom_vocabulary": True,
            "custom_vocabulary_config": {"vocabulary": ["Gladia", {"value": "Solaria", "intensity": 0.8}],
                                         "default_intensity": 0.5},
            "custom_spelling": True,
            "custom_spelling_config": {"spelling_dictionary": {"SQL": ["sequel"]}},
            "translation": True, "translation_config": {"target_languages": ["wo"], "model": "enhanced"},
            "named_entity_recognition": True, "sentiment_analysis": True,
        },
        "post_processing": {"summarization": True, "summarization_config": {"type": "bullet_points"},
                            "chapterization": True},
        "callback_config": {"receive_partial_transcripts": True},
        "custom_metadata": {"customer": "acme"},
        "_stream": {"chunk_ms": 50, "speed": 0},
    }
    assert sc.validate(body) is body


def test_every_problem_is_reported_with_its_path():
    with pytest.raises(sc.SessionConfigError) as exc:
        sc.validate({
            "sample_rate": 22050, "endpointing": 20, "language_config": {"languages": ["xx"], "extra": 1},
            "realtime_processing": {"translation": True}, "callback": False,
            "callback_config": {"url": "http://evil.example/"}, "messages_config": {"receive_acknowledgments": False},
            "custom_metadata": {"job_id": "forged"}, "_stream": {"chunk_ms": 1}, "region": "eu-west",
        })
    text = str(exc.value)
    for expected in ("sample_rate: must be one of", "endpointing: must be between", "languages[0]",
                     "language_config.extra: unknown option", "translation_config.target_languages: required",
                     "callback: set by the service (CALLBACKS=on or off)", "callback_config.url: set by the service",
                     "receive_acknowledgments", "custom_metadata.job_id: reserved", "_stream.chunk_ms",
                     "region: unknown option"):
        assert expected in text, expected
    assert len(exc.value.errors) == 11


def test_booleans_are_not_numbers_and_numbers_are_not_booleans():
    with pytest.raises(sc.SessionConfigError, match="endpointing: must be a number"):
        sc.validate({"endpointing": True})
    with pytest.raises(sc.SessionConfigError, match="must be true or false"):
        sc.validate({"pre_processing": {"audio_enhancer": 1}})


def test_job_config_and_post_body():
    config = sc.job_config({"language_config": {"languages": ["en"]}, "messages_config": {"receive_final_transcripts": True},
                            "custom_metadata": {"team": "a"}}, {"custom_metadata": {"file": "x"}},
                           channels=2, sample_rate=44100, bit_depth=16)
    assert config["channels"] == 2 and config["sample_rate"] == 44100 and config["encoding"] == "wav/pcm"
    assert config["messages_config"]["receive_final_transcripts"] is True  # the user's choice kept
    assert config["messages_config"]["receive_acknowledgments"] is True
    assert "url" not in config["callback_config"]  # the secret is never stored
    body = sc.post_body(config, callback_url="https://h/callbacks/gladia/tok", job_id="j1", batch_id="b1")
    assert body["callback"] is True and body["callback_config"]["url"] == "https://h/callbacks/gladia/tok"
    assert body["custom_metadata"] == {"team": "a", "file": "x", "job_id": "j1", "batch_id": "b1"}
    assert "_stream" not in body
    assert "url" not in config["callback_config"]  # post_body did not write into the stored config


def test_post_body_asks_the_socket_for_what_the_callbacks_want_when_socket_results_are_stored():
    config = sc.job_config({"callback_config": {"receive_partial_transcripts": True},
                            "messages_config": {"receive_speech_events": True}}, None,
                           channels=1, sample_rate=16000, bit_depth=16)
    plain = sc.post_body(config, callback_url="https://h/cb/t", job_id="j1", batch_id=None)
    assert plain["messages_config"] == {**sc.DEFAULT_MESSAGES_CONFIG, "receive_speech_events": True}

    body = sc.post_body(config, callback_url="https://h/cb/t", job_id="j1", batch_id=None, socket_results=True)
    wanted = sc.callback_flags(config)
    assert wanted["receive_partial_transcripts"] and wanted["receive_final_transcripts"]
    assert body["messages_config"] == {flag: wanted[flag] or plain["messages_config"][flag] for flag in wanted}
    assert body["messages_config"]["receive_acknowledgments"] is True  # the worker resumes from them
    assert body["callback"] is True and body["callback_config"]["url"] == "https://h/cb/t"
    assert config["messages_config"] == plain["messages_config"]  # the stored config is left as it was


def test_post_body_without_callbacks_sends_no_callback_url():
    config = sc.job_config({}, None, channels=1, sample_rate=16000, bit_depth=16)
    body = sc.post_body(config, callback_url=None, job_id="j1", batch_id=None, socket_results=True)
    assert body["callback"] is False and "callback_config" not in body
    assert body["messages_config"]["receive_final_transcripts"] is True
    assert sc.callback_flags(config) == sc.DEFAULT_CALLBACK_CONFIG  # what reconciliation expects, all the same
    assert session_schema.problems(body) == []


def test_yaml_and_json_files(tmp_path):
    yaml_file = tmp_path / "s.yml"
    yaml_file.write_text("language_config:\n  languages: [de]\n")
    assert sc.load_file(yaml_file) == {"language_config": {"languages": ["de"]}}
    json_file = tmp_path / "s.json"
    json_file.write_text('["not", "an", "object"]')
    with pytest.raises(sc.SessionConfigError, match="must hold an object"):
        sc.load_file(json_file)
    with pytest.raises(sc.SessionConfigError, match="cannot read"):
        sc.load_file(tmp_path / "missing.json")
