"""Database engine and sessions.

One code path for SQLite (embedded default) and PostgreSQL (production).
SQLite gets WAL mode and a busy timeout so that the receiver, the worker and
the sweeper, each in its own process, can write to one file at once.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from .config import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
# PostgreSQL pool of each engine (see configure_pool); SQLite has one writer anyway.
_pool = {"pool_size": Settings.db_pool_size, "max_overflow": Settings.db_max_overflow}


def configure_pool(pool_size: int, max_overflow: int) -> None:
    """Size the PostgreSQL pools of engines created from now on (DB_POOL_SIZE, DB_MAX_OVERFLOW).

    Called once per process at start-up, before any engine exists: every
    process of a deployment (web, workers, beat) holds up to
    ``pool_size + max_overflow`` connections per engine, and their sum must
    stay below PostgreSQL's ``max_connections``.
    """
    with _lock:
        _pool.update(pool_size=pool_size, max_overflow=max_overflow)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(conn) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then
    # writes can fail with "database is locked" without waiting for the busy
    # timeout; BEGIN IMMEDIATE waits for it instead. On the sqlite3 connection
    # itself: through SQLAlchemy's execution context it cost about as much as a
    # callback's three statements. Its errors are raised as SQLAlchemy's, as
    # every other statement's.
    try:
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise DBAPIError.instance("BEGIN IMMEDIATE", None, exc, sqlite3.Error) from exc


def make_engine(url: str, **kwargs) -> Engine:
    """Create an engine configured for the service (no caching; see :func:`get_engine`)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_connection, _record):
            dbapi_connection.isolation_level = None

        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", _pool["pool_size"])
        kwargs.setdefault("max_overflow", _pool["max_overflow"])
    return create_engine(url, **kwargs)


def get_engine(url: str) -> Engine:
    """One engine (and pool) per URL per process."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = make_engine(url)
        return engine


def warm_pool(url: str, connections: int) -> None:
    """Open up to ``connections`` pooled connections of ``url``'s engine now, and leave them in its pool.

    Checked out raw, so no transaction begins (on SQLite every one begins with a write lock).
    """
    engine = get_engine(url)
    opened = []
    try:
        for _ in range(max(1, connections)):
            opened.append(engine.raw_connection())
    finally:
        for conn in opened:
            conn.close()


def dispose_engines() -> None:
    """Drop pooled connections, e.g. after a fork (Celery prefork, gunicorn)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any exception."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgres(engine_or_session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "postgresql"


# What a database error means to the person who runs a command (a missing schema, a server not reachable).
_NO_SCHEMA = ("no such table", "no such column", "undefinedtable", "undefinedcolumn")
_UNREACHABLE = ("connection refused", "could not connect", "unable to open database file", "timeout expired",
                "password authentication failed", "could not translate host name", "name or service not known",
                "server closed the connection", "connection timed out", "no route to host")


def database_problem(exc: BaseException, url: str) -> str | None:
    """One line that says what to fix, when ``exc`` is a missing schema or an unreachable database; else None."""
    from sqlalchemy.exc import DBAPIError

    from .config import redact_url

    if not isinstance(exc, DBAPIError):
        return None
    text = f"{type(exc.orig).__name__} {exc.orig}".lower()
    where = redact_url(url)
    if any(marker in text for marker in _NO_SCHEMA) or ("relation" in text and "does not exist" in text):
        return (f"the database at {where} has no schema, or an older one: run `webhook-service db upgrade` "
                "(with the same DATABASE_URL)")
    if "database" in text and "does not exist" in text:
        return f"cannot use the database at {where}: it does not exist; create it, then run `webhook-service db upgrade`"
    for marker in _UNREACHABLE:
        if marker in text:
            return (f"cannot reach the database at {where} ({marker}): check DATABASE_URL and that the "
                    "database server is running")
    return None
