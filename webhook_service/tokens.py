"""Per-job callback tokens.

Gladia signs nothing it sends to a live callback URL, so the URL itself is the
credential: ``/callbacks/gladia/<job_id>.<hmac>``. The HMAC of the job id under
``CALLBACK_SIGNING_KEY`` needs no storage, cannot be guessed from a job id, and
is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac

_TAG_HEX = 32  # 128 bits of the SHA-256 HMAC


def _tag(job_id: str, key: str) -> str:
    return hmac.new(key.encode(), job_id.encode(), hashlib.sha256).hexdigest()[:_TAG_HEX]


def callback_token(job_id: str, key: str) -> str:
    return f"{job_id}.{_tag(job_id, key)}"


def job_id_from_token(token: str, key: str) -> str | None:
    """The job id the token was made for, or None when it is not a valid token."""
    job_id, sep, tag = token.rpartition(".")
    if not sep or not job_id or len(tag) != _TAG_HEX or len(job_id) > 64:
        return None
    if not hmac.compare_digest(tag, _tag(job_id, key)):
        return None
    return job_id
