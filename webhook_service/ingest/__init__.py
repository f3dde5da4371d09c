"""Callback inbox and normalization: every Gladia message lands in SQL exactly once.

Two layers, as Standard Webhooks and Stripe recommend:

1. **Inbox** (``inbox``): the raw body of each callback or account webhook,
   committed before the receiver answers 2xx, deduplicated on the sha256 of
   its canonical JSON.
2. **Normalized tables** (``events``, ``utterances``, ``addon_results``,
   ``session_results`` and the job's state), written by
   :func:`normalize_message` (``normalize``, through the registry of message
   handlers in ``handlers``) in a transaction of its own (``delivery``). A
   failure there leaves the inbox row ``failed``; :func:`process_inbox_item`
   re-runs it later.

The receiver's routes call :func:`receive_callback` and :func:`receive_webhook`
(``receive``); the worker and reconciliation call :func:`normalize_message`;
the sweeper calls :func:`process_inbox_item`. The message format itself
(validation, keys, timestamps) is Gladia's protocol and lives in ``gladia``;
it is re-exported here for the callers that have always found it here.
"""

from __future__ import annotations

from ..gladia.keys import callback_key, canonical_json, message_key
from ..gladia.messages import KNOWN_TYPES
from ..gladia.validation import (
    Callback,
    InvalidMessage,
    Webhook,
    parse_json_body,
    validate_callback,
    validate_message,
    validate_webhook,
)
from ..metrics import UNKNOWN_EVENTS
from .delivery import metric_event, normalize_inbox, process_inbox_item
from .handlers import handler_for, handles
from .inbox import (
    Forbidden,
    Gone,
    Stored,
    UnknownJob,
    check_job_session,
    forget_job_session,
    safe_headers,
    store_inbox,
)
from .normalize import apply_webhook, normalize_message
from .receive import receive_callback, receive_webhook
from .repair import repair_utterance

__all__ = [
    "KNOWN_TYPES",
    "UNKNOWN_EVENTS",
    "Callback",
    "Forbidden",
    "Gone",
    "InvalidMessage",
    "Stored",
    "UnknownJob",
    "Webhook",
    "apply_webhook",
    "callback_key",
    "canonical_json",
    "check_job_session",
    "forget_job_session",
    "handler_for",
    "handles",
    "message_key",
    "metric_event",
    "normalize_inbox",
    "normalize_message",
    "parse_json_body",
    "process_inbox_item",
    "receive_callback",
    "receive_webhook",
    "repair_utterance",
    "safe_headers",
    "store_inbox",
    "validate_callback",
    "validate_message",
    "validate_webhook",
]
