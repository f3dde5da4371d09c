"""Logging with the job id and Gladia session id on every line that concerns one.

Code that works on a job wraps the work in :func:`job_context`; a filter adds
``job_id`` and ``gladia_id`` to every record emitted meanwhile (contextvars, so
it holds across threads' and asyncio tasks' own contexts).
"""

from __future__ import annotations

import contextvars
import logging
import sys
from contextlib import contextmanager
from typing import Iterator

_job_id: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="-")
_gladia_id: contextvars.ContextVar[str] = contextvars.ContextVar("gladia_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [job=%(job_id)s gladia=%(gladia_id)s] %(message)s"


class JobContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = _job_id.get()
        if not hasattr(record, "gladia_id"):
            record.gladia_id = _gladia_id.get()
        return True


@contextmanager
def job_context(job_id: str | None = None, gladia_id: str | None = None) -> Iterator[None]:
    tokens = []
    if job_id:
        tokens.append((_job_id, _job_id.set(job_id)))
    if job_id or gladia_id:
        # Always set ("-" when not known yet) so that leaving the block also undoes any
        # set_gladia_id() inside it: a worker thread's next job must not log the last one's session.
        tokens.append((_gladia_id, _gladia_id.set(gladia_id or "-")))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def set_gladia_id(gladia_id: str) -> None:
    """Attach the Gladia id once it becomes known inside a :func:`job_context`."""
    _gladia_id.set(gladia_id)


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if any(getattr(h, "_webhook_service", False) for h in root.handlers):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._webhook_service = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(JobContextFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
