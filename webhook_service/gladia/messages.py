"""The catalogue of Gladia live v2 messages: one entry per type, defined once.

Every part of the service that sorts messages by type reads this table: the
receiver (which family a message normalizes as, which lifecycle state it
proves), reconciliation (which ``callback_config`` flag asked for it), the
session schema (the list of flags) and the emulator (which flag lets it
through). Adding an event type is one :class:`MessageType` entry here; a type
of a new family also needs one handler (``ingest.handlers``) and, if its
``data`` is read, one check of it (``gladia.validation``), both registered for the family.

Pure protocol: no storage, no framework.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional

# Families: how a message is stored and which flag of messages_config / callback_config governs it.
ACK = "ack"  # acknowledgements of what the client sent
LIFECYCLE = "lifecycle"  # the session's lifecycle; each proves a job state
SPEECH = "speech"  # voice activity
TRANSCRIPT = "transcript"  # partial and final utterances
REALTIME_ADDON = "realtime_addon"  # per-utterance add-on results
POST_TRANSCRIPT = "post_transcript"  # the session's whole transcription
POST_ADDON = "post_addon"  # per-session add-on results

FAMILY_FLAGS = {
    ACK: "receive_acknowledgments",
    LIFECYCLE: "receive_lifecycle_events",
    SPEECH: "receive_speech_events",
    REALTIME_ADDON: "receive_realtime_processing_events",
    POST_TRANSCRIPT: "receive_post_processing_events",
    POST_ADDON: "receive_post_processing_events",
}

# Every flag of messages_config and callback_config (gladia-live-v2.md section 1.1), in Gladia's order.
MESSAGE_FLAGS = (
    "receive_partial_transcripts",
    "receive_final_transcripts",
    "receive_speech_events",
    "receive_pre_processing_events",
    "receive_realtime_processing_events",
    "receive_post_processing_events",
    "receive_acknowledgments",
    "receive_errors",
    "receive_lifecycle_events",
)


@dataclass(frozen=True)
class MessageType:
    """One WebSocket message type (its callback event is ``live.<name>``)."""

    name: str
    family: str
    job_state: Optional[str] = None  # lifecycle only: the job state this message proves was reached
    addon_kind: Optional[str] = None  # add-ons only: the kind stored in addon_results

    @property
    def event(self) -> str:
        return f"live.{self.name}"


CATALOGUE: dict[str, MessageType] = {m.name: m for m in (
    MessageType("audio_chunk", ACK),
    MessageType("stop_recording", ACK),
    MessageType("start_session", LIFECYCLE, job_state="starting"),
    MessageType("start_recording", LIFECYCLE, job_state="streaming"),
    MessageType("end_recording", LIFECYCLE, job_state="processing"),
    MessageType("end_session", LIFECYCLE, job_state="done"),
    MessageType("speech_start", SPEECH),
    MessageType("speech_end", SPEECH),
    MessageType("transcript", TRANSCRIPT),
    MessageType("translation", REALTIME_ADDON, addon_kind="translation"),
    MessageType("named_entity_recognition", REALTIME_ADDON, addon_kind="named_entity_recognition"),
    MessageType("sentiment_analysis", REALTIME_ADDON, addon_kind="sentiment_analysis"),
    MessageType("post_transcript", POST_TRANSCRIPT),
    MessageType("post_final_transcript", POST_TRANSCRIPT),
    MessageType("post_summarization", POST_ADDON, addon_kind="summarization"),
    MessageType("post_chapterization", POST_ADDON, addon_kind="chapterization"),
)}

MESSAGE_TYPES = tuple(CATALOGUE)
KNOWN_TYPES = frozenset(CATALOGUE)
KNOWN_EVENTS = frozenset(m.event for m in CATALOGUE.values())


def of_family(*families: str) -> tuple[str, ...]:
    """The type names of the given families, in catalogue order."""
    return tuple(m.name for m in CATALOGUE.values() if m.family in families)


# Lifecycle message -> the job state it proves was reached.
LIFECYCLE_STATES = {m.name: m.job_state for m in CATALOGUE.values() if m.job_state}
# Account webhooks carry only the session id; these events move the job too.
WEBHOOK_EVENTS = frozenset(f"live.{name}" for name in LIFECYCLE_STATES)
REALTIME_ADDONS = of_family(REALTIME_ADDON)
SESSION_ADDONS = {m.name: m.addon_kind for m in CATALOGUE.values() if m.family == POST_ADDON}


def flag_for(message: Mapping[str, Any]) -> Optional[str]:
    """The messages_config / callback_config flag that governs ``message``; None for a type not listed.

    A transcript depends on ``data.is_final``; Gladia's ``error`` message on ``receive_errors``.
    """
    kind = message.get("type")
    if kind == "error":
        return "receive_errors"
    entry = CATALOGUE.get(kind) if isinstance(kind, str) else None
    if entry is None:
        return None
    if entry.family == TRANSCRIPT:
        data = message.get("data")
        final = isinstance(data, dict) and bool(data.get("is_final"))
        return "receive_final_transcripts" if final else "receive_partial_transcripts"
    return FAMILY_FLAGS[entry.family]


def parse_timestamp(value: Any) -> Optional[datetime]:
    """Gladia's ISO-8601 timestamp (``created_at``) as an aware UTC datetime; None when absent or unreadable.

    A value without a zone is taken as UTC, as Gladia writes every timestamp in UTC.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)
