"""Gladia's messages as they arrive on the wire: strict JSON, then typed, validated messages.

The receiver refuses a bad body with a 400 before anything is written, and
normalization relies on every field it reads having the right shape, so the
checks live here, once, beside the catalogue they follow. Strict on what is
used, lenient on the rest: Gladia may add fields, and a type this version does
not know is accepted as long as it is an object with a string ``type``.

The checks of a message's ``data`` are registered per family of the catalogue
(``gladia.messages``), or per type where one type of a family differs: a new
type of an existing family needs no new check.

Pure protocol: no storage, no framework.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .messages import (
    ACK,
    CATALOGUE,
    POST_ADDON,
    REALTIME_ADDON,
    SPEECH,
    TRANSCRIPT,
)

MAX_ID_LEN = 64  # width of gladia_id / utterance_id columns
MAX_LANG_LEN = 16
MAX_EVENT_LEN = 64
MAX_JSON_DEPTH = 32
MAX_CHANNEL = 2**15  # far above Gladia's 8, far below any integer column's limit
# Gladia ends a live session after 3 hours of audio; with a margin, no time or duration of a session can exceed it.
MAX_SESSION_S = 3 * 3600 + 600.0
# Beyond a session's own audio duration (when the job knows it), times and durations may run over by this much.
AUDIO_TOLERANCE_S = 5.0
AUDIO_TOLERANCE_RATIO = 0.05


class InvalidMessage(ValueError):
    """A body or message that cannot be accepted; the text says which field and why."""


# ---------------------------------------------------------------------- strict JSON


def _reject_constant(name: str) -> Any:
    raise InvalidMessage(f"JSON constant {name} is not allowed")


def _finite_float(text: str) -> float:
    # The parser's hook for every number with a fraction or an exponent: one that
    # overflows (1e400, or 400 digits and ".0") would become infinity.
    value = float(text)
    if math.isinf(value):
        raise InvalidMessage("JSON numbers must be finite")
    return value


# Made once: json.loads with hooks would build a decoder for every body.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


# A NUL or a lone surrogate (which databases cannot store) can only come from a
# \u escape in valid JSON text. Bodies without one, and with too few brackets to
# nest deeper than the limit, are not walked after parsing.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def parse_json_body(raw: bytes) -> Any:
    """Parse a request body as strict JSON that every database can store.

    Refused: invalid UTF-8 or JSON, NaN/Infinity (and numbers that overflow to
    infinity), NUL characters and lone surrogates (PostgreSQL cannot store
    them), nesting deeper than :data:`MAX_JSON_DEPTH`.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMessage("body is not valid UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except InvalidMessage:
        raise
    except RecursionError:
        raise InvalidMessage("JSON is nested too deeply") from None
    except ValueError as exc:
        raise InvalidMessage(f"body is not valid JSON: {exc}") from None
    # Fewer brackets than the depth limit cannot nest deeper than it.
    if _RISKY_ESCAPE.search(text) or text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_storable(value)
    return value


def _check_storable(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidMessage("JSON is nested too deeply")
        if isinstance(item, dict):
            for key, sub in item.items():
                _check_string(key)
                stack.append((sub, depth + 1))
        elif isinstance(item, list):
            stack.extend((sub, depth + 1) for sub in item)
        elif isinstance(item, str):
            _check_string(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidMessage("JSON numbers must be finite")


def _check_string(value: str) -> None:
    if "\x00" in value:
        raise InvalidMessage("JSON strings must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidMessage("JSON strings must be valid Unicode (lone surrogate)") from None


# ------------------------------------------------------------------- field checks


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_CHANNEL


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidMessage(message)


def _check_id(value: Any, field: str) -> None:
    _require(isinstance(value, str) and 0 < len(value) <= MAX_ID_LEN,
             f"{field} must be a string of 1 to {MAX_ID_LEN} characters")


def _check_optional_lang(value: Any, field: str) -> None:
    _require(value is None or (isinstance(value, str) and len(value) <= MAX_LANG_LEN),
             f"{field} must be a language code")


def _check_span(item: Mapping[str, Any], field: str, *, required: bool) -> None:
    """``start``/``end`` of an utterance or a word: finite seconds within a session, start <= end."""
    for name in ("start", "end"):
        value = item.get(name)
        if value is None and not required:
            continue
        _require(_is_number(value), f"{field}.{name} must be a number")
        _require(math.isfinite(value) and 0 <= value <= MAX_SESSION_S,
                 f"{field}.{name} must be between 0 and {MAX_SESSION_S:g} seconds")
    start, end = item.get("start"), item.get("end")
    if _is_number(start) and _is_number(end):
        _require(start <= end, f"{field}.start must not be after its end")


def _check_confidence(value: Any, field: str) -> None:
    _require(value is None or (_is_number(value) and 0 <= value <= 1), f"{field} must be a number in [0, 1]")


_NUMBER_TYPES = (int, float)  # exactly: a bool is not a number here


def _words_valid(words: list[Any]) -> bool:
    """Whether every word passes the checks of :func:`_check_utterance`, in one tight loop.

    The receiver's hot path: a transcript carries a word list, and the detailed
    checks (which name the faulty field) run only when this says no.
    """
    for word in words:
        if type(word) is not dict:
            return False
        start, end, confidence = word.get("start"), word.get("end"), word.get("confidence")
        # Chained comparisons are False for NaN, and infinity exceeds the maximum.
        if start is not None and not (type(start) in _NUMBER_TYPES and 0 <= start <= MAX_SESSION_S):
            return False
        if end is not None and not (type(end) in _NUMBER_TYPES and 0 <= end <= MAX_SESSION_S):
            return False
        if start is not None and end is not None and start > end:
            return False
        if confidence is not None and not (type(confidence) in _NUMBER_TYPES and 0 <= confidence <= 1):
            return False
    return True


def _check_utterance(utt: Any, field: str) -> None:
    _require(isinstance(utt, dict), f"{field} must be an object")
    _check_span(utt, field, required=True)
    _require(isinstance(utt.get("text"), str), f"{field}.text must be a string")
    _check_confidence(utt.get("confidence"), f"{field}.confidence")
    _require(_is_count(utt.get("channel", 0)), f"{field}.channel must be a non-negative integer")
    _check_optional_lang(utt.get("language"), f"{field}.language")
    words = utt.get("words", [])
    _require(isinstance(words, list), f"{field}.words must be a list")
    if _words_valid(words):
        return
    # Something is wrong: the checks below say which word and why.
    if not all(isinstance(word, dict) for word in words):
        bad = next(i for i, word in enumerate(words) if not isinstance(word, dict))
        raise InvalidMessage(f"{field}.words[{bad}] must be an object")
    for i, word in enumerate(words):
        _check_span(word, f"{field}.words[{i}]", required=False)
        _check_confidence(word.get("confidence"), f"{field}.words[{i}].confidence")


def _check_error_field(message: Mapping[str, Any]) -> None:
    error = message.get("error")
    _require(error is None or isinstance(error, dict), "payload.error must be an object or null")


def _check_optional_data(data: Any) -> None:
    _require(data is None or isinstance(data, dict), "payload.data must be an object or null")


def _check_transcription(data: Mapping[str, Any], field: str) -> None:
    full = data.get("full_transcript")
    _require(full is None or isinstance(full, str), f"{field}.full_transcript must be a string")
    languages = data.get("languages")
    _require(languages is None or isinstance(languages, list), f"{field}.languages must be a list")
    utterances = data.get("utterances")
    _require(utterances is None or isinstance(utterances, list), f"{field}.utterances must be a list")
    for i, utt in enumerate(utterances or []):
        _require(isinstance(utt, dict), f"{field}.utterances[{i}] must be an object")
        _check_span(utt, f"{field}.utterances[{i}]", required=False)
        _check_confidence(utt.get("confidence"), f"{field}.utterances[{i}].confidence")


# ------------------------------------------------------- the checks of each message type

# (message, its data) -> None, raising InvalidMessage.
DataCheck = Callable[[Mapping[str, Any], Any], None]
_CHECKS_BY_FAMILY: dict[str, DataCheck] = {}
_CHECKS_BY_TYPE: dict[str, DataCheck] = {}


def _checks(*, families: tuple[str, ...] = (), types: tuple[str, ...] = ()) -> Callable[[DataCheck], DataCheck]:
    """Register a check for every message of ``families`` and for the ``types`` named (a type wins)."""
    def register(check: DataCheck) -> DataCheck:
        _CHECKS_BY_FAMILY.update(dict.fromkeys(families, check))
        _CHECKS_BY_TYPE.update(dict.fromkeys(types, check))
        return check
    return register


def _check_for(mtype: str) -> DataCheck | None:
    """The registered check of a type, else of its family; None when only the envelope is checked."""
    check = _CHECKS_BY_TYPE.get(mtype)
    if check is None and mtype in CATALOGUE:
        check = _CHECKS_BY_FAMILY.get(CATALOGUE[mtype].family)
    return check


@_checks(families=(TRANSCRIPT,))
def _check_transcript(message: Mapping[str, Any], data: Any) -> None:
    _require(isinstance(data, dict), "payload.data must be an object")
    _check_id(data.get("id"), "payload.data.id")
    _require(isinstance(data.get("is_final"), bool), "payload.data.is_final must be a boolean")
    _check_utterance(data.get("utterance"), "payload.data.utterance")


@_checks(families=(REALTIME_ADDON,))
def _check_realtime_addon(message: Mapping[str, Any], data: Any) -> None:
    _check_error_field(message)
    _check_optional_data(data)
    if not isinstance(data, dict):
        return
    _check_id(data.get("utterance_id"), "payload.data.utterance_id")
    if message["type"] == "translation":
        _require(
            isinstance(data.get("target_language"), str) and 0 < len(data["target_language"]) <= MAX_LANG_LEN,
            "payload.data.target_language must be a language code",
        )
    else:
        _require(isinstance(data.get("results", []), list), "payload.data.results must be a list")


@_checks(families=(POST_ADDON,))
def _check_post_addon(message: Mapping[str, Any], data: Any) -> None:
    _check_error_field(message)
    _check_optional_data(data)


@_checks(types=("post_transcript",))
def _check_post_transcript(message: Mapping[str, Any], data: Any) -> None:
    _require(isinstance(data, dict), "payload.data must be an object")
    _check_transcription(data, "payload.data")


@_checks(types=("post_final_transcript",))
def _check_post_final_transcript(message: Mapping[str, Any], data: Any) -> None:
    _require(isinstance(data, dict), "payload.data must be an object")
    meta = data.get("metadata")
    _require(meta is None or isinstance(meta, dict), "payload.data.metadata must be an object")
    channels = (meta or {}).get("number_of_distinct_channels")
    _require(channels is None or _is_count(channels),
             "payload.data.metadata.number_of_distinct_channels must be a non-negative integer")
    for name in ("audio_duration", "billing_time", "transcription_time"):
        value = (meta or {}).get(name)
        _require(value is None or _is_number(value), f"payload.data.metadata.{name} must be a number")
        # Billing counts every channel's audio.
        cap = MAX_SESSION_S * (max(1, channels or 1) if name == "billing_time" else 1)
        _require(value is None or (math.isfinite(value) and 0 <= value <= cap),
                 f"payload.data.metadata.{name} must be between 0 and {cap:g} seconds")
    transcription = data.get("transcription")
    _require(transcription is None or isinstance(transcription, dict), "payload.data.transcription must be an object")
    if transcription is not None:
        _check_transcription(transcription, "payload.data.transcription")


# The other lifecycle messages (start_session, start_recording, end_session) carry nothing that is read.
@_checks(families=(ACK, SPEECH), types=("end_recording",))
def _check_plain(message: Mapping[str, Any], data: Any) -> None:
    _check_optional_data(data)


# ---------------------------------------------------------------- typed messages


def validate_message(message: Any) -> None:
    """Check a Gladia message (the WebSocket shape) has the fields normalization relies on."""
    _require(isinstance(message, dict), "payload must be an object")
    mtype = message.get("type")
    _require(isinstance(mtype, str) and 0 < len(mtype) <= MAX_EVENT_LEN, "payload.type must be a non-empty string")
    session_id = message.get("session_id")
    _require(session_id is None or isinstance(session_id, str), "payload.session_id must be a string")
    created = message.get("created_at")
    _require(created is None or isinstance(created, str), "payload.created_at must be a string")
    check = _check_for(mtype)
    if check is not None:
        check(message, message.get("data"))


@dataclass(frozen=True)
class Callback:
    """A validated per-session callback body ``{id, event, payload}``."""

    gladia_id: str
    event: str
    payload: dict[str, Any]


def validate_callback(body: Any) -> Callback:
    """Check the envelope of a per-session callback and the message inside it."""
    _require(isinstance(body, dict), "body must be a JSON object")
    _check_id(body.get("id"), "id")
    event = body.get("event")
    _require(isinstance(event, str) and event.startswith("live.") and len(event) <= MAX_EVENT_LEN + 5,
             "event must be a string 'live.<type>'")
    payload = body.get("payload")
    validate_message(payload)
    _require(payload["type"] == event[len("live."):], "event and payload.type disagree")
    session_id = payload.get("session_id")
    _require(session_id is None or session_id == body["id"], "payload.session_id differs from id")
    return Callback(gladia_id=body["id"], event=event, payload=payload)


def audio_bound(duration_s: float) -> float:
    """The latest time a message may name in a session of ``duration_s`` seconds of audio."""
    return duration_s + max(AUDIO_TOLERANCE_S, AUDIO_TOLERANCE_RATIO * duration_s)


def check_within_audio(message: Mapping[str, Any], duration_s: float, channels: int = 1) -> None:
    """Refuse a (validated) message whose times or durations go beyond the session's ``duration_s`` of audio.

    Complements :func:`validate_message` for a caller that knows the session's
    audio (the job's file): utterance and word times, and the durations of
    ``post_final_transcript``, must fall within it, give or take a tolerance.
    """
    bound = audio_bound(duration_s)
    data = message.get("data")
    if not isinstance(data, dict):
        return
    spans: list[tuple[Mapping[str, Any], str]] = []
    utterance = data.get("utterance")
    if isinstance(utterance, dict):
        spans.append((utterance, "payload.data.utterance"))
        spans.extend((w, f"payload.data.utterance.words[{i}]") for i, w in enumerate(utterance.get("words") or []))
    transcription = data.get("transcription")
    if isinstance(transcription, dict):
        spans.extend((u, f"payload.data.transcription.utterances[{i}]")
                     for i, u in enumerate(transcription.get("utterances") or []))
    for item, field in spans:
        for name in ("start", "end"):
            value = item.get(name) if isinstance(item, dict) else None
            _require(not _is_number(value) or value <= bound,
                     f"{field}.{name} is beyond the session's {duration_s:g} s of audio")
    meta = data.get("metadata")
    if isinstance(meta, dict):
        for name, cap in (("audio_duration", bound), ("billing_time", bound * max(1, channels))):
            value = meta.get(name)
            _require(not _is_number(value) or value <= cap,
                     f"payload.data.metadata.{name} is beyond the session's {duration_s:g} s of audio")


@dataclass(frozen=True)
class Webhook:
    """A validated account webhook body ``{event, payload: {id}}``."""

    gladia_id: str
    event: str


def validate_webhook(body: Any) -> Webhook:
    """Check an account webhook: an event name and the session id it is about."""
    _require(isinstance(body, dict), "body must be a JSON object")
    event = body.get("event")
    _require(isinstance(event, str) and 0 < len(event) <= MAX_EVENT_LEN, "event must be a non-empty string")
    payload = body.get("payload")
    _require(isinstance(payload, dict), "payload must be an object")
    _check_id(payload.get("id"), "payload.id")
    return Webhook(gladia_id=payload["id"], event=event)
