"""A session's final utterances read from the store one at a time, for the writers in :mod:`.formats`."""

from __future__ import annotations

from typing import Iterator, Optional

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Job, Utterance
from .cues import Line, timed_words
from .formats import Header

FETCH_ROWS = 500  # rows per round trip: the memory an export holds, whatever the session's length


class TranscriptUnavailable(LookupError):
    """The job has no transcript to give: its content was deleted, or the channel asked for has none."""


class TranscriptDeleted(TranscriptUnavailable):
    """The job's content was erased (an operator's delete, or retention)."""


def _final(job: Job):
    return (Utterance.gladia_id == job.gladia_id, Utterance.is_final.is_(True))


def channels_of(session: Session, job: Job) -> tuple[int, ...]:
    if not job.gladia_id:
        return ()
    return tuple(sorted(session.scalars(select(Utterance.channel).where(*_final(job)).distinct())))


def transcript_header(session: Session, job: Job, channel: Optional[int] = None) -> Header:
    """The header of a job's transcript; raises :class:`TranscriptUnavailable` when there is none to give."""
    if job.content_deleted_at is not None:
        raise TranscriptDeleted(f"the transcript of job {job.id} was deleted on "
                                    f"{job.content_deleted_at:%Y-%m-%d %H:%M} UTC")
    present = channels_of(session, job)
    if channel is not None:
        if channel not in present:
            shown = ", ".join(map(str, present)) or "none"
            raise TranscriptUnavailable(f"job {job.id} has no utterance on channel {channel} "
                                        f"(channels with speech: {shown})")
        present = (channel,)
    elif (job.audio_channels or 1) > 1 and len(present) == 1:
        present = tuple(range(job.audio_channels or 1))  # a stereo call where one side said nothing
    return Header(job_id=job.id, gladia_id=job.gladia_id, source_path=job.source_path, channels=present,
                  audio_duration_s=job.audio_duration_s)


def iter_lines(session: Session, job: Job, channel: Optional[int] = None) -> Iterator[Line]:
    """The job's final utterances in time order, fetched FETCH_ROWS at a time."""
    if not job.gladia_id:
        return
    query = (select(Utterance.start_s, Utterance.end_s, Utterance.channel, Utterance.text, Utterance.words,
                    Utterance.language, Utterance.confidence, Utterance.utterance_id)
             .where(*_final(job))
             .order_by(Utterance.start_s, Utterance.channel, Utterance.utterance_id)
             .execution_options(yield_per=FETCH_ROWS))
    if channel is not None:
        query = query.where(Utterance.channel == channel)
    for start, end, chan, text, words, language, confidence, uid in session.execute(query):
        yield Line(start=float(start), end=float(end), channel=int(chan), text=text or "",
                   words=timed_words(words), language=language, confidence=confidence, utterance_id=uid)
