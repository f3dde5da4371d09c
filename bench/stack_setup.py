"""What the benchmarks that run the whole stack (chaos, makespan) share: a work folder and a fresh database,
and the teardown of the stack.

``database`` is ``sqlite`` (a file in the work folder) or a PostgreSQL URL next to
which a new database is created, migrated, and dropped by :func:`tear_down`.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
sys.path.insert(0, str(ROOT))

from conftest import _create_pg_database, _drop_pg_database  # noqa: E402
from test_e2e_chaos import ChaosRun, EmulatorProcess, release_redis  # noqa: E402

from webhook_service.migrate import upgrade  # noqa: E402


def prepare(workdir: Optional[Path], database: str, name: str) -> tuple[Path, str, Optional[str]]:
    """(work folder, migrated database URL, PostgreSQL database name or None).

    ``workdir`` given: emptied first and kept; else a new temporary folder named after ``name``.
    """
    folder = workdir or Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    if workdir and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if database == "sqlite":
        database_url, pg_name = f"sqlite:///{folder / f'{name}.sqlite3'}", None
    else:
        database_url, pg_name = _create_pg_database(database)
    upgrade(database_url)
    return folder, database_url, pg_name


def drop_database(database: str, pg_name: Optional[str]) -> None:
    """Drop the PostgreSQL database :func:`prepare` created (nothing for SQLite)."""
    if pg_name:
        _drop_pg_database(database, pg_name)


def tear_down(run: ChaosRun, emulator: EmulatorProcess, broker: str, database: str, pg_name: Optional[str]) -> None:
    """Stop the service's processes, then the emulator; empty the Redis database and drop the fresh database."""
    run.stop()
    emulator.stop()
    release_redis(broker)
    drop_database(database, pg_name)
    print(f"logs in {run.logs}", file=sys.stderr)
