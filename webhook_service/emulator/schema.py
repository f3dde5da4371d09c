"""Validation of the ``POST /v2/live`` body (schema ``StreamingRequest``).

The emulator is stricter than lenient on purpose: every field is checked
against the documented enums and ranges, and unknown fields are refused, so a
client that works here does not send anything Gladia would reject (the
``region``-in-the-body 400 is a known field report). The validated request
comes back with every default filled in, which is what ``request_params``
shows and what the session obeys.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..gladia.messages import MESSAGE_FLAGS

ENCODINGS = ("wav/pcm", "wav/alaw", "wav/ulaw")
BIT_DEPTHS = (8, 16, 24, 32)
SAMPLE_RATES = (8000, 16000, 32000, 44100, 48000)
MODELS = ("solaria-1",)
LANGUAGES = tuple("""af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw
he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa
pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh""".split())
TRANSLATION_LANGUAGES = LANGUAGES + ("wo",)
SUMMARY_TYPES = ("general", "bullet_points", "concise")

# The two default sets differ (reference §1.1).
MESSAGES_CONFIG_DEFAULTS = {
    "receive_partial_transcripts": False, "receive_final_transcripts": True, "receive_speech_events": True,
    "receive_pre_processing_events": True, "receive_realtime_processing_events": True,
    "receive_post_processing_events": True, "receive_acknowledgments": True, "receive_errors": True,
    "receive_lifecycle_events": False,
}
CALLBACK_CONFIG_DEFAULTS = {
    "receive_partial_transcripts": False, "receive_final_transcripts": True, "receive_speech_events": False,
    "receive_pre_processing_events": True, "receive_realtime_processing_events": True,
    "receive_post_processing_events": True, "receive_acknowledgments": False, "receive_errors": False,
    "receive_lifecycle_events": True,
}
CUSTOM_METADATA_MAX_CHARS = 2000


class _Errors(list):
    def add(self, path: str, message: str) -> None:
        self.append(f'Field "{path}" {message}')


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_keys(obj: dict, allowed: set[str], path: str, errors: _Errors) -> None:
    for key in obj:
        if key not in allowed:
            errors.add(f"{path}{key}", "is not allowed")


def _bool(obj: dict, key: str, default: bool, path: str, errors: _Errors) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        errors.add(f"{path}{key}", "must be a boolean")
        return default
    return value


def _number(obj: dict, key: str, default: float, low: float, high: float, path: str, errors: _Errors) -> float:
    value = obj.get(key, default)
    if not _is_number(value):
        errors.add(f"{path}{key}", "must be a number")
        return default
    if not low <= value <= high:
        errors.add(f"{path}{key}", f"must be between {low:g} and {high:g}")
        return default
    return value


def _enum(obj: dict, key: str, default: Any, allowed: tuple, path: str, errors: _Errors) -> Any:
    value = obj.get(key, default)
    if isinstance(value, bool) or value not in allowed:
        errors.add(f"{path}{key}", f"must be one of the following values: {', '.join(map(str, allowed))}")
        return default
    return value


def _object(body: dict, key: str, errors: _Errors, path: str = "") -> dict | None:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.add(f"{path}{key}", "must be an object")
        return None
    return value


def _messages_config(raw: dict | None, defaults: dict, name: str, errors: _Errors, with_url: bool) -> dict:
    raw = raw or {}
    allowed = set(MESSAGE_FLAGS) | ({"url"} if with_url else set())
    _check_keys(raw, allowed, f"{name}.", errors)
    out = {flag: _bool(raw, flag, default, f"{name}.", errors) for flag, default in defaults.items()}
    if with_url and "url" in raw:
        url = raw["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) < 10:
            errors.add(f"{name}.url", "must be an URL address")
        else:
            out = {"url": url, **out}
    return out


def _vocabulary(raw: Any, errors: _Errors) -> dict | None:
    path = "realtime_processing.custom_vocabulary_config."
    if not isinstance(raw, dict):
        errors.add(path[:-1], "must be an object")
        return None
    _check_keys(raw, {"vocabulary", "default_intensity"}, path, errors)
    vocab = raw.get("vocabulary")
    if not isinstance(vocab, list):
        errors.add(f"{path}vocabulary", "must be an array")
        return None
    for i, item in enumerate(vocab):
        if isinstance(item, str):
            continue
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            errors.add(f"{path}vocabulary.{i}", "must be a string or an object with a string value")
            continue
        _check_keys(item, {"value", "intensity", "pronunciations", "language"}, f"{path}vocabulary.{i}.", errors)
        if "intensity" in item:
            _number(item, "intensity", 0.5, 0, 1, f"{path}vocabulary.{i}.", errors)
        if "pronunciations" in item and not (isinstance(item["pronunciations"], list)
                                             and all(isinstance(p, str) for p in item["pronunciations"])):
            errors.add(f"{path}vocabulary.{i}.pronunciations", "must be an array of strings")
        if "language" in item:
            _enum(item, "language", None, LANGUAGES, f"{path}vocabulary.{i}.", errors)
    out = {"vocabulary": vocab, "default_intensity": _number(raw, "default_intensity", 0.5, 0, 1, path, errors)}
    return out


def _spelling(raw: Any, errors: _Errors) -> dict | None:
    path = "realtime_processing.custom_spelling_config"
    if not isinstance(raw, dict):
        errors.add(path, "must be an object")
        return None
    _check_keys(raw, {"spelling_dictionary"}, path + ".", errors)
    dictionary = raw.get("spelling_dictionary")
    if not isinstance(dictionary, dict) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in dictionary.values()):
        errors.add(f"{path}.spelling_dictionary", "must be an object of string arrays")
        return None
    return {"spelling_dictionary": dictionary}


def _translation(raw: Any, errors: _Errors) -> dict | None:
    path = "realtime_processing.translation_config."
    if not isinstance(raw, dict):
        errors.add(path[:-1], "must be an object")
        return None
    _check_keys(raw, {"target_languages", "model", "match_original_utterances", "lipsync",
                      "context_adaptation", "context", "informal"}, path, errors)
    targets = raw.get("target_languages")
    if not isinstance(targets, list) or not targets:
        errors.add(f"{path}target_languages", "must contain at least 1 elements")
        targets = []
    for i, lang in enumerate(targets):
        if lang not in TRANSLATION_LANGUAGES:
            errors.add(f"{path}target_languages.{i}", "must be a valid language code")
    out = {
        "target_languages": targets,
        "model": _enum(raw, "model", "base", ("base", "enhanced"), path, errors),
        "match_original_utterances": _bool(raw, "match_original_utterances", True, path, errors),
        "lipsync": _bool(raw, "lipsync", True, path, errors),
        "context_adaptation": _bool(raw, "context_adaptation", True, path, errors),
        "informal": _bool(raw, "informal", False, path, errors),
    }
    if "context" in raw:
        if not isinstance(raw["context"], str):
            errors.add(f"{path}context", "must be a string")
        else:
            out["context"] = raw["context"]
    return out


def validate_request(body: Any) -> tuple[dict, dict | None, list[str]]:
    """Check a POST /v2/live body.

    Returns ``(request_params, custom_metadata, errors)``: the request with
    every default applied (without ``custom_metadata``, as GET shows it) and
    the list of ``validation_errors`` (empty when valid).
    """
    errors = _Errors()
    if not isinstance(body, dict):
        errors.append("Body must be a JSON object")
        return {}, None, errors
    body = copy.deepcopy(body)
    allowed = {"encoding", "bit_depth", "sample_rate", "channels", "custom_metadata", "model", "endpointing",
               "maximum_duration_without_endpointing", "language_config", "pre_processing",
               "realtime_processing", "post_processing", "messages_config", "callback", "callback_config"}
    _check_keys(body, allowed, "", errors)

    params: dict[str, Any] = {
        "encoding": _enum(body, "encoding", "wav/pcm", ENCODINGS, "", errors),
        "bit_depth": _enum(body, "bit_depth", 16, BIT_DEPTHS, "", errors),
        "sample_rate": _enum(body, "sample_rate", 16000, SAMPLE_RATES, "", errors),
        "channels": 1,
        "model": _enum(body, "model", "solaria-1", MODELS, "", errors),
        "endpointing": _number(body, "endpointing", 0.05, 0.01, 10, "", errors),
        "maximum_duration_without_endpointing": _number(body, "maximum_duration_without_endpointing",
                                                        5, 5, 60, "", errors),
    }
    channels = body.get("channels", 1)
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 8:
        errors.add("channels", "must be an integer between 1 and 8")
    else:
        params["channels"] = channels

    custom_metadata = body.get("custom_metadata")
    if custom_metadata is not None:
        if not isinstance(custom_metadata, dict):
            errors.add("custom_metadata", "must be an object")
            custom_metadata = None
        elif len(json.dumps(custom_metadata)) > CUSTOM_METADATA_MAX_CHARS:
            errors.add("custom_metadata", f"must be at most {CUSTOM_METADATA_MAX_CHARS} characters long")
            custom_metadata = None

    lang = _object(body, "language_config", errors)
    if lang is not None:
        _check_keys(lang, {"languages", "code_switching"}, "language_config.", errors)
        languages = lang.get("languages", [])
        if not isinstance(languages, list):
            errors.add("language_config.languages", "must be an array")
            languages = []
        for i, code in enumerate(languages):
            if code not in LANGUAGES:
                errors.add(f"language_config.languages.{i}", "must be a valid language code")
        params["language_config"] = {"languages": languages,
                                     "code_switching": _bool(lang, "code_switching", False, "language_config.",
                                                             errors)}

    pre = _object(body, "pre_processing", errors)
    if pre is not None:
        _check_keys(pre, {"audio_enhancer", "speech_threshold"}, "pre_processing.", errors)
        params["pre_processing"] = {
            "audio_enhancer": _bool(pre, "audio_enhancer", False, "pre_processing.", errors),
            "speech_threshold": _number(pre, "speech_threshold", 0.6, 0, 1, "pre_processing.", errors),
        }

    rt = _object(body, "realtime_processing", errors)
    if rt is not None:
        p = "realtime_processing."
        _check_keys(rt, {"custom_vocabulary", "custom_vocabulary_config", "custom_spelling",
                         "custom_spelling_config", "translation", "translation_config",
                         "named_entity_recognition", "sentiment_analysis"}, p, errors)
        out = {
            "custom_vocabulary": _bool(rt, "custom_vocabulary", False, p, errors),
            "custom_spelling": _bool(rt, "custom_spelling", False, p, errors),
            "translation": _bool(rt, "translation", False, p, errors),
            "named_entity_recognition": _bool(rt, "named_entity_recognition", False, p, errors),
            "sentiment_analysis": _bool(rt, "sentiment_analysis", False, p, errors),
        }
        for flag, key, check in (("custom_vocabulary", "custom_vocabulary_config", _vocabulary),
                                 ("custom_spelling", "custom_spelling_config", _spelling),
                                 ("translation", "translation_config", _translation)):
            if key in rt:
                checked = check(rt[key], errors)
                if checked is not None:
                    out[key] = checked
            elif out[flag]:
                errors.add(f"{p}{key}", f"is required when {flag} is true")
        params["realtime_processing"] = out

    post = _object(body, "post_processing", errors)
    if post is not None:
        p = "post_processing."
        _check_keys(post, {"summarization", "summarization_config", "chapterization"}, p, errors)
        summary_cfg = post.get("summarization_config") or {}
        if not isinstance(summary_cfg, dict):
            errors.add(f"{p}summarization_config", "must be an object")
            summary_cfg = {}
        _check_keys(summary_cfg, {"type"}, f"{p}summarization_config.", errors)
        params["post_processing"] = {
            "summarization": _bool(post, "summarization", False, p, errors),
            "summarization_config": {"type": _enum(summary_cfg, "type", "general", SUMMARY_TYPES,
                                                   f"{p}summarization_config.", errors)},
            "chapterization": _bool(post, "chapterization", False, p, errors),
        }

    mc = _object(body, "messages_config", errors)
    params["messages_config"] = _messages_config(mc, MESSAGES_CONFIG_DEFAULTS, "messages_config", errors, False)
    params["callback"] = _bool(body, "callback", False, "", errors)
    cc = _object(body, "callback_config", errors)
    params["callback_config"] = _messages_config(cc, CALLBACK_CONFIG_DEFAULTS, "callback_config", errors, True)
    if params["callback"] and "url" not in params["callback_config"] and not any("callback_config.url" in e
                                                                                 for e in errors):
        errors.add("callback_config.url", "is required when callback is true")
    return params, custom_metadata, list(errors)
