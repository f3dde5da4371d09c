"""What a session asked for and what its stored result must match: pure comparisons, no I/O.

The session's ``callback_config`` says which messages Gladia was to post;
``result.messages`` of ``GET /v2/live/:id`` are JSON strings; a final utterance
is matched to the stored one by its id, or by (channel, start, end) when no
transcript message names it.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from ..gladia.session_config import GLADIA_CALLBACK_DEFAULTS, callback_flags, is_expected

# A flag absent from the session's callback_config takes Gladia's documented default.
CALLBACK_DEFAULTS: dict[str, bool] = GLADIA_CALLBACK_DEFAULTS

# Float tolerance when comparing utterance times (JSON and database round trips).
TIME_TOLERANCE_S = 1e-6

__all__ = ["CALLBACK_DEFAULTS", "callback_flags", "differs", "is_expected", "parse_messages",
           "synthetic_utterance_id", "utterance_key"]


def parse_messages(raw: Iterable[Any]) -> tuple[list[dict[str, Any]], int]:
    """Decode ``result.messages`` (JSON strings); returns (messages, undecodable count)."""
    messages: list[dict[str, Any]] = []
    bad = 0
    for item in raw or ():
        if isinstance(item, dict):
            messages.append(item)
            continue
        try:
            value = json.loads(item)
        except (TypeError, ValueError):
            bad += 1
            continue
        if isinstance(value, dict):
            messages.append(value)
        else:
            bad += 1
    return messages, bad


def synthetic_utterance_id(utterance: dict[str, Any]) -> str:
    """A stable id for a final utterance no transcript message names.

    Used only when ``result.messages`` lacks the transcript of an utterance
    that ``result.transcription`` has; deterministic so that a second run
    finds the row the first one wrote.
    """
    channel = int(utterance.get("channel") or 0)
    start_ms = int(round(float(utterance.get("start") or 0.0) * 1000))
    return f"reconcile_{channel:02d}_{start_ms:010d}"


def utterance_key(utterance: dict[str, Any]) -> tuple[int, float, float]:
    return (int(utterance.get("channel") or 0), round(float(utterance.get("start") or 0.0), 3),
            round(float(utterance.get("end") or 0.0), 3))


def differs(row: Any, ref: dict[str, Any]) -> bool:
    """Whether a stored utterance (a row or a snapshot of one) differs from the reference in what is compared."""
    return (
        row.text != (ref.get("text") or "")
        or row.channel != int(ref.get("channel") or 0)
        or not math.isclose(row.start_s, float(ref.get("start") or 0.0), abs_tol=TIME_TOLERANCE_S)
        or not math.isclose(row.end_s, float(ref.get("end") or 0.0), abs_tol=TIME_TOLERANCE_S)
    )
