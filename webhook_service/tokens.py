"""Per-job callback tokens.

Gladia signs nothing it sends to a live callback URL, so the URL itself is the
credential: ``/callbacks/gladia/<job_id>.<hmac>``. The HMAC of the job id under
``CALLBACK_SIGNING_KEY`` needs no storage, cannot be guessed from a job id, and
is compared in constant time.

A rotation keeps running sessions alive: a URL made under one of
``CALLBACK_SIGNING_KEYS_PREVIOUS`` is still accepted, while new sessions get
URLs under the current key. Every key is tried, whichever matches, so the time
taken says nothing about which key (or whether any) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Iterable

_TAG_HEX = 32  # 128 bits of the SHA-256 HMAC


def _tag(job_id: str, key: str) -> str:
    return hmac.new(key.encode(), job_id.encode(), hashlib.sha256).hexdigest()[:_TAG_HEX]


def callback_token(job_id: str, key: str) -> str:
    return f"{job_id}.{_tag(job_id, key)}"


def job_id_from_token(token: str, keys: str | Iterable[str]) -> str | None:
    """The job id the token was made for under one of ``keys``, or None when it is not a valid token."""
    job_id, sep, tag = token.rpartition(".")
    if not sep or not job_id or len(tag) != _TAG_HEX or len(job_id) > 64:
        return None
    matched = False
    for key in (keys,) if isinstance(keys, str) else keys:
        matched |= hmac.compare_digest(tag, _tag(job_id, key))
    return job_id if matched else None


# A callback URL's token (a write credential of ours), and the ``token`` of a URL's query (how Gladia's
# WebSocket URL carries its credential), wherever a URL, an error message or a stored body may hold them.
_TOKENS_IN_TEXT = re.compile(r"(/callbacks/gladia/|[?&]token=)[^/\s\"'?#&<>]+")
REDACTED = "<redacted>"


def redact_tokens(text: str) -> str:
    """``text`` with every callback token and every URL's ``token=`` value replaced by ``<redacted>``."""
    return _TOKENS_IN_TEXT.sub(lambda m: m.group(1) + REDACTED, text)


# ---------------------------------------------------------------- reachability probe (`webhook-service doctor`)
#
# The doctor checks that PUBLIC_BASE_URL reaches this receiver by sending it a nonce it signed with
# CALLBACK_SIGNING_KEY; the receiver's public probe route answers only a fresh, correctly signed
# challenge (anything else gets the same 404 as an unknown URL), and its answer is another HMAC of the
# nonce, under its own label: the doctor learns that the URL reaches a receiver holding the same key, an
# outsider learns nothing (no version, no data, and no oracle: a valid challenge needs the key).

PROBE_MAX_AGE_S = 120  # a challenge older than this (or this far in the future) is refused
_PROBE_CHALLENGE = b"webhook_service doctor probe challenge v1|"
_PROBE_ANSWER = b"webhook_service doctor probe answer v1|"
_NONCE = re.compile(r"[0-9a-f]{32}")


def probe_signature(key: str, nonce: str, issued_at: int) -> str:
    return hmac.new(key.encode(), _PROBE_CHALLENGE + f"{nonce}|{issued_at}".encode(), hashlib.sha256).hexdigest()


def probe_answer(key: str, nonce: str) -> str:
    return hmac.new(key.encode(), _PROBE_ANSWER + nonce.encode(), hashlib.sha256).hexdigest()


def check_probe(key: str, nonce: str, issued_at: str, signature: str, now: float) -> str | None:
    """The answer to a valid challenge, or None (malformed, stale, or not signed with ``key``)."""
    if not _NONCE.fullmatch(nonce) or not issued_at.isdigit() or len(issued_at) > 12 or len(signature) != 64:
        return None
    if abs(now - int(issued_at)) > PROBE_MAX_AGE_S:
        return None
    if not hmac.compare_digest(signature, probe_signature(key, nonce, int(issued_at))):
        return None
    return probe_answer(key, nonce)
