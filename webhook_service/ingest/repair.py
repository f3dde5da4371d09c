"""Reconciliation's repair of a final utterance, through the receiver's own upsert.

``GET /v2/live/:id`` gives the session's final transcript; an utterance that a
callback never delivered, or delivered only as a partial, is written with the
same ``INSERT ... ON CONFLICT DO UPDATE`` as a callback's (the most advanced
version wins, and a final beats any partial). A stored final that differs
from the reference cannot win that ranking (both are final, and the
reference has no later ``created_at``), so it takes the same upsert with the
reference winning (``statements.utterance_upsert(reference_wins=True)``).
The row keeps what the reference does not say: its job, its language when
the reference has none, Gladia's ``created_at`` and when it was received.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol

from sqlalchemy.orm import Session

from ..models import utcnow
from .statements import statements


class StoredUtterance(Protocol):
    """What the repair keeps of the stored row (the ORM row, or a snapshot of it)."""

    job_id: Optional[str]
    is_final: bool
    language: Optional[str]
    created_at: Any


def _num(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def repair_utterance(session: Session, reference: Mapping[str, Any], *, gladia_id: str, utterance_id: str,
                     job_id: str, stored: Optional[StoredUtterance]) -> dict[str, Any]:
    """Make the stored utterance equal to ``reference`` (an item of ``result.transcription.utterances``).

    Runs in the caller's transaction; returns the row's values as written (source ``reconcile``).
    """
    words = reference.get("words") if isinstance(reference.get("words"), list) else []
    language = reference.get("language") if isinstance(reference.get("language"), str) else None
    now = utcnow()
    values = dict(
        gladia_id=gladia_id,
        utterance_id=utterance_id,
        job_id=(stored.job_id if stored is not None else None) or job_id,
        is_final=True,
        text=reference.get("text") or "",
        channel=int(reference.get("channel") or 0),
        start_s=float(reference.get("start") or 0.0),
        end_s=float(reference.get("end") or 0.0),
        language=language if language is not None or stored is None else stored.language,
        confidence=_num(reference.get("confidence")),
        words=words,
        word_count=len(words),
        source="reconcile",
        created_at=stored.created_at if stored is not None else None,
        received_at=now,
        updated_at=now,
    )
    sql = statements(session.connection().dialect.name)
    reference_wins = stored is not None and stored.is_final
    session.execute(sql.utterance_repair if reference_wins else sql.utterance_upsert, values)
    return values
