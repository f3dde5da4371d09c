"""Shared fixtures.

The database under test comes from ``TEST_DATABASE_URL``: unset means a SQLite
file; a ``postgresql+psycopg://.../NAME`` URL means a fresh database created
next to NAME for this pytest run (so parallel runs never share one) and dropped
afterwards. The schema is always built by the Alembic migrations.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from webhook_service.config import Settings
from webhook_service.db import dispose_engines, session_scope
from webhook_service.migrate import upgrade
from webhook_service.models import Base

DATA_DIR = Path(__file__).parent / "data"

# A strong signing key per test run: outside the embedded, loopback setup (PostgreSQL) the service refuses
# the development key. Exported too, so every CLI run and subprocess of the tests starts with it.
TEST_SIGNING_KEY = secrets.token_urlsafe(48)
os.environ["CALLBACK_SIGNING_KEY"] = TEST_SIGNING_KEY


def _create_pg_database(base_url: str) -> tuple[str, str]:
    url = make_url(base_url)
    name = f"wst_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False), name


def _drop_pg_database(base_url: str, name: str) -> None:
    dispose_engines()
    admin = create_engine(make_url(base_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    """A migrated, empty database for this test run."""
    base = os.environ.get("TEST_DATABASE_URL", "")
    if base.startswith("postgresql"):
        url, name = _create_pg_database(base)
        upgrade(url)
        yield url
        _drop_pg_database(base, name)
    else:
        path = tmp_path_factory.mktemp("db") / "test.sqlite3"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url
        dispose_engines()


def truncate_all(url: str) -> None:
    with session_scope(url) as session:
        if session.get_bind().dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            session.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(table.delete())


@pytest.fixture
def db_url(database_url: str) -> Iterator[str]:
    """The test database, emptied before each test that uses it."""
    truncate_all(database_url)
    yield database_url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings for one test: the test database and a private data folder."""
    return Settings.from_env(
        environ={},
        data_dir=str(tmp_path / "data"),
        database_url=db_url,
        celery_broker_url="memory://",
        callback_signing_key=TEST_SIGNING_KEY,
    )


@pytest.fixture
def app(settings: Settings):
    from webhook_service.web import create_app

    return create_app(settings, TESTING=True)


def make_operator_token(database_url: str, name: str, scope: str, expires_days: int | None = None) -> str:
    """A new operator token in the test database; returns its secret."""
    from webhook_service.auth import create_token

    with session_scope(database_url) as session:
        _, secret = create_token(session, name, scope, expires_days)
    return secret


@pytest.fixture
def admin_token(settings: Settings) -> str:
    """An admin operator token (``Authorization: Bearer <it>``)."""
    return make_operator_token(settings.database_url, "test-admin", "admin")


@pytest.fixture
def read_token(settings: Settings) -> str:
    """A read-only operator token."""
    return make_operator_token(settings.database_url, "test-read", "read")


@pytest.fixture
def client(app, admin_token):
    """A test client that sends an admin bearer token with every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {admin_token}"
    return client


@pytest.fixture
def operator_headers(admin_token: str) -> dict[str, str]:
    """The headers of an operator allowed everything, for requests over a real socket."""
    return {"Authorization": f"Bearer {admin_token}"}


@pytest.fixture
def anonymous_client(app):
    """A test client with no credential: what an outsider gets."""
    return app.test_client()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A WSGI app served on a real socket in a background thread."""

    def __init__(self, wsgi_app, host: str = "127.0.0.1", port: int = 0):
        self._server = make_server(host, port, wsgi_app, threaded=True)
        self.host = host
        self.port = self._server.server_port
        self.url = f"http://{host}:{self.port}"
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, paid by every test's teardown.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    def start(self) -> "LiveServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def live_app(app) -> Iterator[LiveServer]:
    """The Flask app on a real port (the receiver as Gladia reaches it)."""
    server = LiveServer(app).start()
    yield server
    server.stop()


# ------------------------------------------------------------------ emulator

@pytest.fixture
def emulator_factory() -> Iterator:
    """Start local Gladia emulators: ``emulator_factory(engine="vad", faults={...}, idle_timeout_s=...)``.

    Each runs in a background thread with its own event loop on a free port and
    returns a handle with ``.url`` (for ``GLADIA_API_URL``), ``.api_key``,
    ``.set_faults(**kw)``, ``.reset_faults()``, ``.ledger(session_id=None)``,
    ``.wait_callbacks(timeout)``, ``.wait_session_done(id)``,
    ``.received_audio(id)`` and ``.stop()``. All are stopped after the test.
    """
    from webhook_service.emulator import start_emulator

    started = []

    def start(**options):
        options.setdefault("api_keys", (f"test-key-{uuid.uuid4().hex[:8]}",))
        handle = start_emulator(**options)
        started.append(handle)
        return handle

    yield start
    for handle in started:
        handle.stop()


@pytest.fixture
def emulator(emulator_factory):
    """An emulator with the fast ``vad`` engine and no faults."""
    return emulator_factory()


@pytest.fixture(scope="module")
def module_server(database_url: str, tmp_path_factory) -> Iterator["LiveServer"]:
    """The app on a real port, shared by one module's read-only requests (emptied before and after)."""
    from webhook_service.web import create_app

    truncate_all(database_url)
    settings = Settings.from_env(environ={}, data_dir=str(tmp_path_factory.mktemp("data")),
                                 database_url=database_url, celery_broker_url="memory://",
                                 callback_signing_key=TEST_SIGNING_KEY)
    server = LiveServer(create_app(settings, TESTING=True)).start()
    yield server
    server.stop()
    truncate_all(database_url)


@pytest.fixture
def report_site(module_server: "LiveServer", database_url: str, operator_headers: dict[str, str]) -> str:
    """The shared server's URL over the report fixtures (loaded after the operator's token, whose
    fixture empties the database first)."""
    import report_fixtures

    report_fixtures.load_once(database_url)
    return module_server.url
