"""Transcripts out: a session's stored utterances as TXT, SRT, WebVTT, JSON or CSV, one or a batch at a time.

* :mod:`.cues`: subtitle cues (line length, cue duration) from utterances and their word timings;
* :mod:`.formats`: the writers, generators of text over the utterances (bounded memory);
* :mod:`.source`: a job's final utterances read from the store a few hundred rows at a time;
* :mod:`.export`: many sessions to a folder, one file each, a manifest beside them, resumable.
"""

from __future__ import annotations

from typing import Iterator, Optional

from sqlalchemy.orm import Session

from ..models import Job
from .formats import FORMATS, MEDIA_TYPES, WRITERS, Header
from .source import TranscriptDeleted, TranscriptUnavailable, iter_lines, transcript_header

TRANSCRIPT_FORMATS = ("txt", "srt", "vtt", "json")  # one session's transcript (the CLI, the API)


def render(session: Session, job: Job, fmt: str, channel: Optional[int] = None) -> Iterator[str]:
    """A job's transcript in ``fmt``, as text chunks; the session must stay open while it is read.

    Raises :class:`TranscriptUnavailable` (before anything is produced) when there is none to give.
    """
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    header = transcript_header(session, job, channel)
    return WRITERS[fmt](header, iter_lines(session, job, channel))


__all__ = ["FORMATS", "MEDIA_TYPES", "TRANSCRIPT_FORMATS", "Header", "TranscriptDeleted", "TranscriptUnavailable", "render"]
