"""How ingestion's writers wait for each other: row locks, retried conflicts, SQLite's one writer.

Every normalization transaction takes its locks in one order (the job row,
then the inbox row, then the normalized rows), so none waits on another in a
cycle; what is left (a deadlock or serialization failure PostgreSQL reports
anyway) is retried a few times. On SQLite the receiver's writers queue on a
lock of their own instead of polling in SQLite's busy handler.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, ContextManager

try:
    import fcntl
except ImportError:  # not POSIX: threads still queue on the mutex
    fcntl = None  # type: ignore[assignment]
from sqlalchemy import Connection

# Row locks for read-modify-write of jobs and session results (FOR NO KEY UPDATE).
ROW_LOCK = {"key_share": True}
# Transient PostgreSQL conflicts worth another try: deadlock, serialization failure.
RETRY_SQLSTATES = frozenset({"40P01", "40001"})
ATTEMPTS = 3


def retryable(exc: BaseException) -> bool:
    """Whether a database error is a transient conflict that another try can get past."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in RETRY_SQLSTATES


class SQLiteWriterLock:
    """SQLite has one writer at a time: make the receiver's writers queue, not poll.

    Without it, a writer that finds the database locked waits in SQLite's busy
    handler, which sleeps in steps of 1 to 100 ms; under a burst of callbacks
    from several gunicorn processes that sleeping dominates the latency. Here
    threads queue on a mutex and processes on an ``flock`` of a file beside
    the database, and the kernel wakes the next writer as soon as the lock is
    released. Other writers (worker, sweeper) still work through the busy timeout.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._files: dict[tuple[int, str], Any] = {}

    def _file(self, database: str):
        key = (os.getpid(), database)  # a lock file descriptor must not cross a fork
        handle = self._files.get(key)
        if handle is None:
            handle = self._files[key] = open(database + ".writelock", "a+b")  # noqa: SIM115 - kept open
        return handle

    @contextlib.contextmanager
    def hold(self, conn: Connection):
        database = conn.engine.url.database or ""
        with self._mutex:
            if not database or database == ":memory:" or fcntl is None:
                yield
                return
            handle = self._file(database)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


_sqlite_writer = SQLiteWriterLock()


def write_lock(conn: Connection) -> ContextManager[None]:
    """The receiver's writer lock on SQLite; nothing on PostgreSQL (row locks do the work there)."""
    return _sqlite_writer.hold(conn) if conn.dialect.name == "sqlite" else contextlib.nullcontext()
