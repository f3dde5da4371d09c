"""Gladia messages as tests build them: one of every type, in the WebSocket and callback shapes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

GID = "45463597-20b7-4af7-b3b3-f5fb778203ab"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


# ------------------------------------------------------------------ payload builders


def gladia_time(when: datetime) -> str:
    """Gladia's created_at format: ISO-8601, millisecond precision, Z."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ts(offset_s: float = 0.0) -> str:
    return gladia_time(T0 + timedelta(seconds=offset_s))


def utterance(text: str = " Hello world", start: float = 0.188, end: float = 1.284, language: str = "en",
              channel: int = 0) -> dict[str, Any]:
    words = text.split()
    span = (end - start) / max(1, len(words))
    return {
        "start": start, "end": end, "confidence": 1, "channel": channel,
        "words": [
            {"word": f" {w}", "start": round(start + i * span, 3), "end": round(start + (i + 1) * span, 3), "confidence": 1}
            for i, w in enumerate(words)
        ],
        "text": text, "language": language,
    }


def msg(mtype: str, at: float = 0.0, gid: str = GID, **fields: Any) -> dict[str, Any]:
    return {"session_id": gid, "created_at": ts(at), "type": mtype, **fields}


def sent_ago(mtype: str, seconds: float, gid: str = GID) -> tuple[dict[str, Any], datetime]:
    """A message Gladia sent ``seconds`` ago, and that time (to the millisecond its created_at keeps)."""
    sent = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    sent = sent.replace(microsecond=sent.microsecond // 1000 * 1000)
    return {**msg(mtype, gid=gid), "created_at": gladia_time(sent)}, sent


def transcript(uid: str = "00_00000000", is_final: bool = True, text: str = " Hello world", at: float = 1.0,
               gid: str = GID, **utt: Any) -> dict[str, Any]:
    return msg("transcript", at, gid, data={"id": uid, "is_final": is_final, "utterance": utterance(text, **utt)})


def all_messages(gid: str = GID) -> list[dict[str, Any]]:
    """One message of each of the 16 types, in the typical order of section 2.4."""
    u = utterance(" Hola mundo", language="es")
    return [
        msg("start_session", 0.0, gid),
        msg("start_recording", 0.1, gid),
        msg("audio_chunk", 0.2, gid, acknowledged=True, error=None,
            data={"byte_range": [0, 3200], "time_range": [0.0, 0.1]}),
        msg("speech_start", 0.3, gid, data={"time": 0.188, "channel": 0}),
        transcript("00_00000000", False, " Hola", 0.5, gid),
        transcript("00_00000000", True, " Hola mundo", 1.3, gid, language="es"),
        msg("translation", 1.4, gid, error=None, data={
            "utterance_id": "00_00000000", "utterance": u, "original_language": "es", "target_language": "en",
            "translated_utterance": utterance(" Hello world")}),
        msg("translation", 1.45, gid, error=None, data={
            "utterance_id": "00_00000000", "utterance": u, "original_language": "es", "target_language": "fr",
            "translated_utterance": utterance(" Bonjour le monde", language="fr")}),
        msg("named_entity_recognition", 1.5, gid, error=None, data={
            "utterance_id": "00_00000000", "utterance": u,
            "results": [{"entity_type": "PHONE_NUMBER", "text": "06 09 23 70 70", "start": 5.794, "end": 7.6455625}]}),
        msg("sentiment_analysis", 1.6, gid, error=None, data={
            "utterance_id": "00_00000000", "utterance": u,
            "results": [{"sentiment": "positive", "emotion": "elation", "text": " Hola mundo", "start": 0.188,
                         "end": 1.284, "channel": 0}]}),
        msg("speech_end", 1.7, gid, data={"time": 1.284, "channel": 0}),
        msg("stop_recording", 2.0, gid, acknowledged=True, error=None,
            data={"recording_duration": 2.0, "recording_left_to_process": 0.1}),
        msg("end_recording", 2.1, gid, data={"recording_duration": 2.0}),
        msg("post_transcript", 2.2, gid, data={"full_transcript": " Hola mundo", "languages": ["es"],
                                               "utterances": [u]}),
        msg("post_final_transcript", 2.3, gid, data={
            "metadata": {"audio_duration": 2.0, "number_of_distinct_channels": 1, "billing_time": 2.0,
                         "transcription_time": 0.4},
            "transcription": {"full_transcript": "Hola mundo", "languages": ["es"], "utterances": [u]}}),
        msg("post_summarization", 2.4, gid, error=None, data={"results": "A greeting."}),
        msg("post_chapterization", 2.5, gid, error=None, data={"results": [
            {"headline": "Greeting", "gist": "Hello", "keywords": ["hola"], "start": 0.188, "end": 1.284,
             "sentences": [{"sentence": "Hola mundo", "start": 0.188, "end": 1.284, "words": []}],
             "text": "Hola mundo"}]}),
        msg("end_session", 3.0, gid),
    ]


def callback_body(message: dict[str, Any], gid: str = GID) -> dict[str, Any]:
    """The per-session callback envelope of section 4.1."""
    return {"id": gid, "event": f"live.{message['type']}", "payload": message}
