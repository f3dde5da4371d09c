"""The one POST /v2/live schema: a valid JSON Schema, Gladia's defaults, and both callers reading it."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from webhook_service import audio
from webhook_service.emulator.schema import validate_request
from webhook_service.gladia import session_config, session_schema
from webhook_service.gladia.messages import MESSAGE_FLAGS

pytestmark = pytest.mark.dbless

# The full body of gladia-live-v2.md section 1.1 ("every default"), without custom_metadata and the callback.
DOCUMENTED_DEFAULTS = {
    "encoding": "wav/pcm", "bit_depth": 16, "sample_rate": 16000, "channels": 1, "model": "solaria-1",
    "endpointing": 0.05, "maximum_duration_without_endpointing": 5,
    "language_config": {"languages": [], "code_switching": False},
    "pre_processing": {"audio_enhancer": False, "speech_threshold": 0.6},
    "realtime_processing": {"custom_vocabulary": False, "custom_spelling": False, "translation": False,
                            "named_entity_recognition": False, "sentiment_analysis": False},
    "post_processing": {"summarization": False, "summarization_config": {"type": "general"}, "chapterization": False},
    "messages_config": session_schema.GLADIA_MESSAGES_DEFAULTS,
    "callback": False,
    "callback_config": session_schema.GLADIA_CALLBACK_DEFAULTS,
}


@pytest.mark.parametrize("schema", [session_schema.STREAMING_REQUEST, session_config.SERVICE_SCHEMA])
def test_both_variants_are_valid_json_schemas_that_serialize(schema):
    Draft202012Validator.check_schema(schema)
    assert json.loads(json.dumps(schema)) == schema


def test_an_empty_body_gets_every_documented_default():
    assert session_schema.with_defaults({}) == DOCUMENTED_DEFAULTS
    assert session_schema.problems(session_schema.with_defaults({})) == []


def test_the_flag_lists_are_the_catalogue():
    for name in ("messages_config", "callback_config"):
        flags = [k for k in session_schema.STREAMING_REQUEST["properties"][name]["properties"] if k != "url"]
        assert flags == list(MESSAGE_FLAGS)


def test_the_worker_variant_differs_only_where_the_service_says():
    gladia, service = session_schema.STREAMING_REQUEST, session_config.SERVICE_SCHEMA
    assert service["properties"]["encoding"]["enum"] == ["wav/pcm"]
    assert set(service["properties"]) - set(gladia["properties"]) == {session_config.STREAM_KEY}
    for name in ("bit_depth", "sample_rate", "channels", "endpointing", "language_config", "post_processing"):
        assert service["properties"][name] == gladia["properties"][name], name
    assert "then" in gladia and "then" not in service  # the worker's URL is added when the request is sent
    assert audio.SAMPLE_RATES == session_schema.SAMPLE_RATES and audio.BIT_DEPTHS == session_schema.BIT_DEPTHS


@pytest.mark.parametrize("body, path", [
    ({"sample_rate": 22050}, ("sample_rate",)),
    ({"endpointing": 20}, ("endpointing",)),
    ({"endpointing": float("nan")}, ("endpointing",)),
    ({"channels": True}, ("channels",)),
    ({"language_config": {"languages": ["xx"]}}, ("language_config", "languages", 0)),
    ({"post_processing": {"summarization_config": {"type": "long"}}}, ("post_processing", "summarization_config", "type")),
    ({"realtime_processing": {"translation": True}}, ("realtime_processing", "translation_config")),
    ({"bogus": 1}, ("bogus",)),
])
def test_one_problem_reaches_both_callers_with_the_same_path(body, path):
    assert [p.path for p in session_schema.problems(body)] == [path]
    with pytest.raises(session_config.SessionConfigError):
        session_config.validate(body)
    _, _, errors = validate_request(body)
    assert errors == [e for e in errors if f'"{".".join(map(str, path))}"' in e] and len(errors) == 1


# What real clients send that Gladia's OpenAPI description does not list (LiveKit's plugin always sends the flag).
UNLISTED_BODIES = [
    {"realtime_processing": {"words_accurate_timestamps": False}},
    {"realtime_processing": {"translation": True,
                             "translation_config": {"target_languages": ["fr"], "model": "batch"}}},
]


@pytest.mark.parametrize("body", UNLISTED_BODIES)
def test_documented_but_unlisted_fields_are_accepted_by_both_callers_unless_strict(body):
    assert session_schema.problems(body) == []
    assert session_config.validate(body) == body
    params, _, errors = validate_request(body)
    assert errors == [] and params["realtime_processing"]["translation"] == body["realtime_processing"].get(
        "translation", False)

    strict = session_schema.problems(body, session_schema.STRICT_STREAMING_REQUEST)
    assert [p.kind for p in strict] in (["unknown"], ["enum"])
    _, _, errors = validate_request(body, strict=True)
    assert len(errors) == 1 and ("is not allowed" in errors[0] or "must be one of" in errors[0]), errors


def test_an_unlisted_field_gets_no_default_and_is_echoed_only_when_sent():
    assert "words_accurate_timestamps" not in session_schema.with_defaults({})["realtime_processing"]
    sent = session_schema.with_defaults({"realtime_processing": {"words_accurate_timestamps": True}})
    assert sent["realtime_processing"]["words_accurate_timestamps"] is True
    assert session_schema.problems({"realtime_processing": {"words_accurate_timestamps": "yes"}})[0].kind == "type"


def test_the_strict_variant_is_the_lenient_one_without_the_unlisted_fields():
    Draft202012Validator.check_schema(session_schema.STRICT_STREAMING_REQUEST)
    lenient, strict = session_schema.STREAMING_REQUEST, session_schema.STRICT_STREAMING_REQUEST
    rt_lenient, rt_strict = lenient["properties"]["realtime_processing"], strict["properties"]["realtime_processing"]
    assert set(rt_lenient["properties"]) - set(rt_strict["properties"]) == set(session_schema.UNLISTED_REALTIME_FLAGS)
    models = rt_strict["properties"]["translation_config"]["properties"]["model"]["enum"]
    assert models == list(session_schema.TRANSLATION_MODELS)
    assert {k: v for k, v in lenient["properties"].items() if k != "realtime_processing"} == {
        k: v for k, v in strict["properties"].items() if k != "realtime_processing"}


def test_chapterization_is_marked_deprecated():
    post = session_schema.STREAMING_REQUEST["properties"]["post_processing"]["properties"]
    assert post["chapterization"]["deprecated"] is True and post["chapterization"]["default"] is False
