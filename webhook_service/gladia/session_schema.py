"""Gladia's ``POST /v2/live`` body (schema ``StreamingRequest``), defined once as a JSON Schema.

Both sides of the service read this one definition, so its enums, ranges and
defaults cannot drift apart:

* the worker validates the session options a user gives (``session_config``),
  through a variant that narrows a few fields to what the service produces
  (:func:`streaming_request` with its keyword options);
* the emulator validates a request the way Gladia does, then fills in Gladia's
  documented defaults (:func:`with_defaults`).

Gladia's documents disagree in places. The schema follows the OpenAPI
description, and also accepts what Gladia documents elsewhere and real
clients send (``UNLISTED_*``); ``strict=True`` refuses those, as the
OpenAPI alone would.

The definition is a JSON Schema (draft 2020-12, the dialect of OpenAPI 3.1),
checked with ``jsonschema``: it can be published in an OpenAPI description as
it is, it states defaults next to the constraints, and its validator reports
every problem at once, with its path. What a caller shows for a problem is the
caller's affair: :func:`problems` returns :class:`Problem` values that name the
kind of failure, never a message of the library. A subschema's ``x-error``
gives the one wording both sides use where a generic one would say too little.

Reference: gladia-live-v2.md section 1.1. Pure protocol: no storage, no framework.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from .messages import MESSAGE_FLAGS

ENCODINGS = ("wav/pcm", "wav/alaw", "wav/ulaw")
BIT_DEPTHS = (8, 16, 24, 32)
SAMPLE_RATES = (8000, 16000, 32000, 44100, 48000)
MODELS = ("solaria-1",)
SUMMARY_TYPES = ("general", "bullet_points", "concise")
TRANSLATION_MODELS = ("base", "enhanced")
MAX_CHANNELS = 8
CUSTOM_METADATA_MAX_CHARS = 2000  # custom_metadata, stringified
LANGUAGES = tuple(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu "
    "hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt "
    "ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh".split()
)
TRANSLATION_LANGUAGES = LANGUAGES + ("wo",)

# Documented, and sent by real clients, but not in Gladia's OpenAPI description: accepted unless a
# schema is built strict (the README's list of the emulator's choices says which source says what).
# * realtime_processing.words_accurate_timestamps, a boolean without default (echoed only when sent):
#   Gladia's v2 migration guide and HLS sample; LiveKit's plugin always sends it, pipecat's config has it.
# * translation_config.model "batch": the official SDKs' generated types (base|batch|enhanced), pipecat's.
UNLISTED_REALTIME_FLAGS = ("words_accurate_timestamps",)
UNLISTED_TRANSLATION_MODELS = ("batch",)

# The two default sets differ (gladia-live-v2.md section 1.1): a flag absent from a
# session's messages_config / callback_config takes these values.
GLADIA_MESSAGES_DEFAULTS = {
    "receive_partial_transcripts": False,
    "receive_final_transcripts": True,
    "receive_speech_events": True,
    "receive_pre_processing_events": True,
    "receive_realtime_processing_events": True,
    "receive_post_processing_events": True,
    "receive_acknowledgments": True,
    "receive_errors": True,
    "receive_lifecycle_events": False,
}
GLADIA_CALLBACK_DEFAULTS = {
    "receive_partial_transcripts": False,
    "receive_final_transcripts": True,
    "receive_speech_events": False,
    "receive_pre_processing_events": True,
    "receive_realtime_processing_events": True,
    "receive_post_processing_events": True,
    "receive_acknowledgments": False,
    "receive_errors": False,
    "receive_lifecycle_events": True,
}
assert list(GLADIA_MESSAGES_DEFAULTS) == list(GLADIA_CALLBACK_DEFAULTS) == list(MESSAGE_FLAGS)

# A section required when a flag of its parent is on: (parent, flag, section, the key that makes the section).
REQUIRED_WHEN_ON = (
    ("realtime_processing", "custom_vocabulary", "custom_vocabulary_config", "vocabulary"),
    ("realtime_processing", "custom_spelling", "custom_spelling_config", "spelling_dictionary"),
    ("realtime_processing", "translation", "translation_config", "target_languages"),
)


# ------------------------------------------------------------------ building blocks

def _bool(default: Optional[bool] = None) -> dict:
    return _with_default({"type": "boolean"}, default)


def _number(low: float, high: float, default: Optional[float] = None, *, integer: bool = False) -> dict:
    return _with_default({"type": "integer" if integer else "number", "minimum": low, "maximum": high}, default)


def _enum(values: Iterable, default: Any = None) -> dict:
    return _with_default({"enum": list(values)}, default)


def _language(values: tuple[str, ...]) -> dict:
    return {"enum": list(values), "x-error": "must be a valid language code"}


def _object(properties: dict, *, required: Iterable[str] = (), default: Optional[dict] = None) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return _with_default(schema, default)


def _with_default(schema: dict, default: Any) -> dict:
    if default is not None:
        schema["default"] = default
    return schema


def _flags(defaults: Mapping[str, bool]) -> dict:
    return {flag: _bool(default) for flag, default in defaults.items()}


def _required_when_on(flag: str, section: str) -> dict:
    return {"if": {"properties": {flag: {"const": True}}, "required": [flag]}, "then": {"required": [section]}}


# ------------------------------------------------------------------ the schema

def _vocabulary_config(min_vocabulary: int) -> dict:
    entry_error = "must be a string or an object with a string value"
    entry = {
        "type": ["string", "object"], "x-error": entry_error, "required": ["value"], "additionalProperties": False,
        "properties": {
            "value": {"type": "string", "x-error": entry_error},
            "intensity": _number(0, 1),
            "pronunciations": {"type": "array", "x-error": "must be a list of strings",
                               "items": {"type": "string", "x-error": "must be a list of strings"}},
            "language": _language(LANGUAGES),
        },
    }
    vocabulary = {"type": "array", "items": entry}
    if min_vocabulary:
        vocabulary["minItems"] = min_vocabulary
    return _object({"vocabulary": vocabulary, "default_intensity": _number(0, 1, 0.5)}, required=["vocabulary"])


def _spelling_config() -> dict:
    words = {"type": "array", "items": {"type": "string"}}
    dictionary = {"type": "object", "additionalProperties": words}
    error = "must map each spelling to a list of strings"
    for node in (dictionary, words, words["items"]):
        node["x-error"] = error
    return _object({"spelling_dictionary": dictionary}, required=["spelling_dictionary"])


def _translation_config(strict: bool) -> dict:
    models = TRANSLATION_MODELS if strict else TRANSLATION_MODELS + UNLISTED_TRANSLATION_MODELS
    return _object({
        "target_languages": {"type": "array", "items": _language(TRANSLATION_LANGUAGES), "minItems": 1},
        "model": _enum(models, "base"),
        "match_original_utterances": _bool(True),
        "lipsync": _bool(True),
        "context_adaptation": _bool(True),
        "informal": _bool(False),
        "context": {"type": "string"},
    }, required=["target_languages"])


def _realtime_processing(min_vocabulary: int, strict: bool) -> dict:
    unlisted = {} if strict else {flag: _bool() for flag in UNLISTED_REALTIME_FLAGS}
    section = _object({
        **unlisted,
        "custom_vocabulary": _bool(False),
        "custom_spelling": _bool(False),
        "translation": _bool(False),
        "named_entity_recognition": _bool(False),
        "sentiment_analysis": _bool(False),
        "custom_vocabulary_config": _vocabulary_config(min_vocabulary),
        "custom_spelling_config": _spelling_config(),
        "translation_config": _translation_config(strict),
    }, default={})
    section["allOf"] = [_required_when_on(flag, sub) for parent, flag, sub, _ in REQUIRED_WHEN_ON
                        if parent == "realtime_processing"]
    return section


def _callback_config() -> dict:
    url = {"type": "string", "pattern": "^https?://", "minLength": 10, "x-error": "must be an URL address"}
    return _object({"url": url, **_flags(GLADIA_CALLBACK_DEFAULTS)}, default={})


def streaming_request(*, encodings: tuple[str, ...] = ENCODINGS, min_vocabulary: int = 0,
                      callback_needs_url: bool = True, extra_properties: Optional[dict] = None,
                      strict: bool = False) -> dict:
    """The ``StreamingRequest`` schema with Gladia's defaults.

    The keyword options are the only ways a caller's variant may differ:
    fewer ``encodings``, a non-empty vocabulary, no rule that ``callback: true``
    needs ``callback_config.url`` (for a body whose URL is added later),
    properties of its own, and ``strict``: only what the OpenAPI description
    lists (none of the ``UNLISTED_*`` fields and values).
    """
    schema = _object({
        "encoding": _enum(encodings, "wav/pcm"),
        "bit_depth": _enum(BIT_DEPTHS, 16),
        "sample_rate": _enum(SAMPLE_RATES, 16000),
        "channels": _number(1, MAX_CHANNELS, 1, integer=True),
        "custom_metadata": {"type": "object"},
        "model": _enum(MODELS, "solaria-1"),
        "endpointing": _number(0.01, 10, 0.05),
        "maximum_duration_without_endpointing": _number(5, 60, 5),
        "language_config": _object({"languages": {"type": "array", "items": _language(LANGUAGES), "default": []},
                                    "code_switching": _bool(False)}, default={}),
        "pre_processing": _object({"audio_enhancer": _bool(False), "speech_threshold": _number(0, 1, 0.6)},
                                  default={}),
        "realtime_processing": _realtime_processing(min_vocabulary, strict),
        "post_processing": _object({
            "summarization": _bool(False),
            "summarization_config": _object({"type": _enum(SUMMARY_TYPES, "general")}, default={}),
            # The official SDKs: "Deprecated: this parameter is ignored". Kept for the clients that send it.
            "chapterization": {**_bool(False), "deprecated": True},
        }, default={}),
        "messages_config": _object(_flags(GLADIA_MESSAGES_DEFAULTS), default={}),
        "callback": _bool(False),
        "callback_config": _callback_config(),
        **(extra_properties or {}),
    })
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "StreamingRequest"
    if callback_needs_url:
        schema["if"] = {"properties": {"callback": {"const": True}}, "required": ["callback"]}
        schema["then"] = {"required": ["callback_config"], "properties": {"callback_config": {"required": ["url"]}}}
    return schema


STREAMING_REQUEST = streaming_request()
STRICT_STREAMING_REQUEST = streaming_request(strict=True)


# ------------------------------------------------------------------ validation

def _is_integer(_checker, value: Any) -> bool:
    """Integers only: ``2.0`` is a number, not a channel count."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_checker, value: Any) -> bool:
    """JSON numbers only: not booleans, not NaN or infinities."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_TYPES = Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
_Validator = validators.extend(Draft202012Validator, type_checker=_TYPES)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request, independent of how a caller words it.

    ``kind``: ``unknown`` (a key the schema does not know), ``type``, ``enum``,
    ``range``, ``min_items``, ``required`` or ``invalid`` (a
    subschema's own wording, in ``message``). ``when`` names the flag that
    makes a ``required`` section necessary; ``key`` is the section's first key.
    """

    path: tuple
    kind: str
    value: Any = None
    expected: Any = None  # type name(s), enum values, (low, high) or the minimum item count
    message: str = ""
    when: str = ""
    key: str = ""


_validators: dict[int, tuple[dict, Any]] = {}


def _validator(schema: dict) -> Any:
    """One compiled validator per schema object (the schemas are built once, at import)."""
    known = _validators.get(id(schema))
    if known is None or known[0] is not schema:
        known = _validators[id(schema)] = (schema, _Validator(schema))
    return known[1]


def problems(body: Any, schema: dict = STREAMING_REQUEST) -> list[Problem]:
    """Every problem of ``body`` against ``schema``, in the order the schema lists its fields."""
    found: list[Problem] = []
    for error in _validator(schema).iter_errors(body):
        for problem in _problems_of(error):
            if problem not in found:
                found.append(problem)
    return found


def _problems_of(error: ValidationError) -> list[Problem]:
    path = tuple(error.absolute_path)
    keyword, schema = error.validator, error.schema
    if keyword == "additionalProperties":
        known = schema.get("properties", {})
        return [Problem(path + (key,), "unknown") for key in error.instance if key not in known]
    if isinstance(schema, dict) and schema.get("x-error"):
        return [Problem(path, "invalid", error.instance, message=schema["x-error"])]
    if keyword == "required":
        return [_missing(path, key) for key in error.validator_value if key not in error.instance]
    if keyword in ("minimum", "maximum"):
        return [Problem(path, "range", error.instance, (schema.get("minimum"), schema.get("maximum")))]
    if keyword == "minItems":
        return [Problem(path, "min_items", error.instance, error.validator_value)]
    if keyword == "enum":
        return [Problem(path, "enum", error.instance, tuple(error.validator_value))]
    return [Problem(path, "type", error.instance, error.validator_value)]


def _missing(path: tuple, key: str) -> Problem:
    for parent, flag, section, first_key in REQUIRED_WHEN_ON:
        if path == (parent,) and key == section:
            return Problem(path + (key,), "required", when=flag, key=first_key)
    if (path, key) in (((), "callback_config"), (("callback_config",), "url")):
        return Problem(("callback_config", "url"), "required", when="callback")
    return Problem(path + (key,), "required")


# ------------------------------------------------------------------ defaults

def without_null_sections(body: Mapping[str, Any], schema: dict = STREAMING_REQUEST) -> dict[str, Any]:
    """``body`` as Gladia reads it: a null where the schema's default is an object counts as absent."""
    properties = schema.get("properties", {})
    out: dict[str, Any] = {}
    for key, value in body.items():
        child = properties.get(key, {})
        if value is None and isinstance(child.get("default"), dict):
            continue
        if isinstance(value, dict) and "properties" in child:
            value = without_null_sections(value, child)
        out[key] = value
    return out


def with_defaults(body: Mapping[str, Any], schema: dict = STREAMING_REQUEST) -> dict[str, Any]:
    """``body`` with every default of ``schema`` filled in, fields in the schema's order.

    A null where the schema's default is an object counts as absent (what
    Gladia does for an optional section). Values of the wrong type are left
    as they are, for :func:`problems` to report.
    """
    properties = schema.get("properties", {})
    out: dict[str, Any] = {}
    for key, child in properties.items():
        if key in body and not (body[key] is None and isinstance(child.get("default"), dict)):
            value = body[key]
        elif "default" in child:
            value = _json_copy(child["default"])
        else:
            continue
        if isinstance(value, dict) and child.get("type") == "object" and "properties" in child:
            value = with_defaults(value, child)
        out[key] = value
    out.update((key, value) for key, value in body.items() if key not in properties)
    return out


def _json_copy(value: Any) -> Any:
    """A copy of a JSON value (cheaper than ``copy.deepcopy`` for defaults, which are small)."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    return value
