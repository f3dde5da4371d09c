"""Logging with the job id and Gladia session id on every line that concerns one.

Code that works on a job wraps the work in :func:`job_context`; a filter adds
``job_id`` and ``gladia_id`` to every record emitted meanwhile (contextvars, so
it holds across threads' and asyncio tasks' own contexts), and ``worker`` (this
process: host and pid) to every record.

``LOG_FORMAT=text`` (the default, for a terminal) writes one readable line;
``LOG_FORMAT=json`` one JSON object per line (python-json-logger) with ``time``,
``level``, ``logger``, ``message``, ``worker``, and ``job_id``/``gladia_id``
when the line concerns a job, for a log pipeline to index.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import sys
from contextlib import contextmanager
from typing import Iterator

_job_id: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="-")
_gladia_id: contextvars.ContextVar[str] = contextvars.ContextVar("gladia_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [job=%(job_id)s gladia=%(gladia_id)s] %(message)s"


_HOST = socket.gethostname()


class JobContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job_id"):
            record.job_id = _job_id.get()
        if not hasattr(record, "gladia_id"):
            record.gladia_id = _gladia_id.get()
        if not hasattr(record, "worker"):
            record.worker = f"{_HOST}:{os.getpid()}"  # the pid of the process that logs (gunicorn and Celery fork)
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object per record; ``job_id``/``gladia_id`` only when the record concerns a job."""
    from pythonjsonlogger.json import JsonFormatter

    class _Formatter(JsonFormatter):
        def process_log_record(self, log_record: dict) -> dict:
            for key in ("job_id", "gladia_id"):
                if log_record.get(key) in ("-", None):
                    log_record.pop(key, None)
            return log_record

    return _Formatter("%(asctime)s %(levelname)s %(name)s %(message)s %(worker)s %(job_id)s %(gladia_id)s",
                      rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                      datefmt="%Y-%m-%dT%H:%M:%S%z")


def formatter(log_format: str = "text") -> logging.Formatter:
    return json_formatter() if log_format == "json" else logging.Formatter(FORMAT)


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


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "_webhook_service", False):
            root.setLevel(level.upper())
            handler.setFormatter(formatter(log_format))
            return
    handler = logging.StreamHandler(sys.stderr)
    handler._webhook_service = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter(log_format))
    handler.addFilter(JobContextFilter())
    root.addHandler(handler)
    root.setLevel(level.upper())
