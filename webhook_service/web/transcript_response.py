"""A session's transcript as a streamed download, shared by the JSON API and the dashboard.

The checks (the session exists, its content was not deleted, the channel has speech) run before the
first byte; the body then streams from a database session of its own, a few hundred utterances at a
time, so a long session is served with bounded memory.
"""

from __future__ import annotations

from typing import Optional
from urllib.parse import quote

from flask import Response, stream_with_context

from ..db import session_scope
from ..jobs.queries import find_job
from ..models import Job
from ..transcripts import MEDIA_TYPES, render
from ..transcripts.export import file_stem
from ..transcripts.source import transcript_header
from .context import db, settings


class TranscriptNotFound(LookupError):
    """No session by this id (or an ambiguous prefix); the message says which."""


def transcript_response(ref: str, fmt: str, channel: Optional[int]) -> Response:
    """The download of ``ref``'s transcript; raises TranscriptNotFound or TranscriptUnavailable first."""
    job = find_job(db(), ref)  # AmbiguousReference is a LookupError
    if job is None:
        raise TranscriptNotFound("no session or job with this id")
    transcript_header(db(), job, channel)  # raises TranscriptUnavailable before anything is sent
    job_id, name = job.id, f"{file_stem(job.source_path)}.{fmt}"
    url = settings().database_url

    def body():
        with session_scope(url) as session:
            yield from render(session, session.get(Job, job_id), fmt, channel)

    response = Response(stream_with_context(body()), mimetype=None, content_type=MEDIA_TYPES[fmt])
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    response.headers["Content-Disposition"] = (f"attachment; filename=\"{ascii_name}\"; "
                                               f"filename*=UTF-8''{quote(name)}")
    return response
