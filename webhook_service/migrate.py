"""Run Alembic from code, so `webhook-service db ...` needs no alembic.ini.

:func:`upgrade` holds a lock while it migrates (a PostgreSQL advisory lock, or a
lock file beside a SQLite database): every process of the Procfile runs
``db upgrade`` before it starts, the first one migrates, and the others wait
for it and then find nothing to do.
"""

from __future__ import annotations

import fcntl
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool, text

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# pg_advisory_lock key of migrations (any constant shared by every process of the service).
_ADVISORY_KEY = 0x77656268  # "webh"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def script_directory(database_url: str = "sqlite://") -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(database_url))


@contextmanager
def _migration_lock(database_url: str) -> Iterator[Optional[object]]:
    """One migrating process at a time; yields the connection to migrate on (None: Alembic opens its own)."""
    from .db import make_engine

    if database_url.startswith("postgresql"):
        engine = make_engine(database_url, poolclass=pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_KEY})
                connection.commit()
                try:
                    yield connection
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_KEY})
                    connection.commit()
        finally:
            engine.dispose()
        return
    path = database_url.split("///", 1)[1] if database_url.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        yield None
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.migratelock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _migrate(step, database_url: str, revision: str) -> None:
    """Alembic's ``step`` (upgrade or downgrade) to ``revision``, one process at a time."""
    with _migration_lock(database_url) as connection:
        cfg = alembic_config(database_url)
        if connection is not None:
            cfg.attributes["connection"] = connection
        step(cfg, revision)
        if connection is not None:
            connection.commit()


def upgrade(database_url: str, revision: str = "head") -> None:
    _migrate(command.upgrade, database_url, revision)


def downgrade(database_url: str, revision: str) -> None:
    _migrate(command.downgrade, database_url, revision)


def current(database_url: str) -> tuple[str, ...]:
    """The revision(s) the database is at (empty: no migration applied yet)."""
    from .db import make_engine

    engine = make_engine(database_url, poolclass=pool.NullPool)
    quiet = logging.getLogger("alembic.runtime.migration")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # a read: no "Context impl" lines
    try:
        with engine.connect() as connection:
            return tuple(MigrationContext.configure(connection).get_current_heads())
    finally:
        quiet.setLevel(level)
        engine.dispose()


def history(database_url: str = "sqlite://") -> list[tuple[str, Optional[str], str]]:
    """Every revision, newest first: (revision, its parent, its message)."""
    return [(rev.revision, rev.down_revision if isinstance(rev.down_revision, (str, type(None))) else
             ",".join(rev.down_revision), (rev.doc or "").strip().splitlines()[0] if rev.doc else "")
            for rev in script_directory(database_url).walk_revisions()]


def heads(database_url: str = "sqlite://") -> list[str]:
    return list(script_directory(database_url).get_heads())
