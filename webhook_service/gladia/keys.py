"""The identity of a Gladia message: one canonical serialization, one sha256 key.

Gladia sends no delivery id, so a message is known by its content: the same
message reached through a callback, the WebSocket or ``result.messages`` of
``GET /v2/live/:id`` has the same key, which is what deduplicates the inbox
and the events table and lets reconciliation tell what is missing.

Pure protocol: no storage, no framework.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping


def canonical_json(value: Any) -> str:
    """The one serialization used for every hash, so equal JSON gives equal keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def message_key(message: Mapping[str, Any]) -> str:
    """sha256 hex of the canonical message: the same message has the same key from any source."""
    return sha256_hex(canonical_json(message))


def callback_key(body: Mapping[str, Any], payload_json: str) -> str:
    """``message_key(body)`` of a callback, given the canonical JSON of its payload.

    A callback body is ``{"event", "id", "payload"}``: with sorted keys its
    canonical text is those three in that order, so the payload (nearly all of
    the body) need not be serialized twice. Any other envelope is serialized whole.
    """
    if body.keys() != {"event", "id", "payload"}:
        return message_key(body)
    return sha256_hex(f'{{"event":{canonical_json(body["event"])},"id":{canonical_json(body["id"])},'
                      f'"payload":{payload_json}}}')
