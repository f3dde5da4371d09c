"""Settings, read once from the environment (12-factor), with embedded defaults.

Every setting has a default that works on one machine with no server: a SQLite
file and kombu's filesystem broker under ``DATA_DIR``, and the local emulator
as the Gladia API. Production overrides them with PostgreSQL, Redis and the
real API. An invalid value stops the program at start with a message that
names the variable, rather than failing later in the middle of a job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"{name} must be a boolean (true/false), got {raw!r}")


def _parse_number(name: str, raw: str, kind: type, minimum: float | None) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {raw!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """All runtime settings. Field names are the environment variable names, lower-cased."""

    data_dir: str = field(default_factory=lambda: str(_project_root() / "data"))
    database_url: str = ""
    # PostgreSQL connections per process and engine: a pool this size, plus this many more at peaks.
    # Their sum over every process must stay below the server's max_connections (100 by default).
    db_pool_size: int = 5
    db_max_overflow: int = 10
    celery_broker_url: str = ""
    gladia_api_url: str = "http://127.0.0.1:8765"
    gladia_api_key: str = "local-dev-key"
    gladia_region: str = ""
    public_base_url: str = "http://127.0.0.1:8000"
    callback_signing_key: str = "change-me-local-signing-key"
    gladia_webhook_secret: str = ""
    # Worker and streaming
    max_concurrent_sessions: int = 30
    chunk_ms: int = 100
    stream_speed: float = 1.0  # 1.0 = real time; 0 = as fast as acknowledgements allow
    close_mode: str = "close"  # "close": close 1000 after the last ack; "stop": stop_recording and wait
    heartbeat_interval_s: float = 5.0
    stale_heartbeat_s: float = 60.0
    # Celery threads per worker process: each live stream occupies one (they share one event loop).
    worker_concurrency: int = 100
    # Reconciliation and sweeping
    reconcile_delay_s: float = 10.0
    reconcile_deadline_s: float = 3600.0
    sweep_interval_s: float = 30.0
    stale_queued_s: float = 300.0  # a job queued this long that no worker touched is re-sent
    inbox_retry_after_s: float = 10.0  # an inbox row still pending after this is normalized again
    inbox_max_attempts: int = 5  # normalization attempts of a failed inbox row by the sweeper
    # Receiver
    max_callback_bytes: int = 1_048_576
    # A callback for a job past its end_session by more than this is refused (410): reconciliation has the last word.
    callback_grace_s: float = 900.0
    log_level: str = "INFO"

    _INT_MIN = {"max_concurrent_sessions": 1, "chunk_ms": 10, "max_callback_bytes": 1024, "inbox_max_attempts": 1,
                "worker_concurrency": 1, "db_pool_size": 1, "db_max_overflow": 0}
    _FLOAT_MIN = {
        "stream_speed": 0.0,
        "heartbeat_interval_s": 0.1,
        "stale_heartbeat_s": 1.0,
        "reconcile_delay_s": 0.0,
        "reconcile_deadline_s": 1.0,
        "sweep_interval_s": 0.5,
        "stale_queued_s": 1.0,
        "inbox_retry_after_s": 0.0,
        "callback_grace_s": 0.0,
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name.startswith("_"):
                continue
            raw = env.get(f.name.upper())
            if raw is None:
                continue
            if f.type in ("int", int):
                values[f.name] = _parse_number(f.name.upper(), raw, int, cls._INT_MIN.get(f.name))
            elif f.type in ("float", float):
                values[f.name] = _parse_number(f.name.upper(), raw, float, cls._FLOAT_MIN.get(f.name))
            elif f.type in ("bool", bool):
                values[f.name] = _parse_bool(f.name.upper(), raw)
            else:
                values[f.name] = raw.strip()
        values.update(overrides)
        settings = cls(**values)
        return settings.with_defaults().validated()

    def with_defaults(self) -> "Settings":
        """Fill the settings whose default depends on ``data_dir``."""
        data = Path(self.data_dir)
        updates: dict[str, Any] = {}
        if not self.database_url:
            updates["database_url"] = f"sqlite:///{data / 'webhook_service.sqlite3'}"
        if not self.celery_broker_url:
            updates["celery_broker_url"] = "filesystem://"
        return replace(self, **updates) if updates else self

    def validated(self) -> "Settings":
        db = self.database_url
        if not (db.startswith("sqlite") or db.startswith("postgresql")):
            raise ConfigError(f"DATABASE_URL must be a sqlite:/// or postgresql:// URL, got {_redact(db)!r}")
        broker = self.celery_broker_url
        if broker.split("://", 1)[0] not in {"filesystem", "redis", "rediss", "memory", "amqp", "pyamqp"}:
            raise ConfigError(f"CELERY_BROKER_URL must be filesystem://, redis:// or amqp://, got {_redact(broker)!r}")
        for name in ("gladia_api_url", "public_base_url"):
            parsed = urlparse(getattr(self, name))
            if parsed.scheme not in {"http", "https"} or not parsed.netloc:
                raise ConfigError(f"{name.upper()} must be an http(s) URL, got {getattr(self, name)!r}")
        if not self.callback_signing_key:
            raise ConfigError("CALLBACK_SIGNING_KEY must not be empty")
        if self.gladia_webhook_secret:
            import base64
            import binascii

            secret = self.gladia_webhook_secret.removeprefix("whsec_").rstrip("=")
            try:
                base64.b64decode(secret + "=" * (-len(secret) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError("GLADIA_WEBHOOK_SECRET must be a Svix secret (whsec_ + base64)") from None
        if self.close_mode not in {"close", "stop"}:
            raise ConfigError(f"CLOSE_MODE must be 'close' or 'stop', got {self.close_mode!r}")
        if self.gladia_region not in {"", "eu-west", "us-west"}:
            raise ConfigError(f"GLADIA_REGION must be eu-west or us-west, got {self.gladia_region!r}")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {self.log_level!r}")
        return self

    @property
    def broker_dir(self) -> Path:
        return Path(self.data_dir) / "broker"

    def ensure_dirs(self) -> None:
        """Create the data folders the embedded defaults write into."""
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        if self.celery_broker_url.startswith("filesystem"):
            for sub in ("in", "processed", "control"):
                (self.broker_dir / sub).mkdir(parents=True, exist_ok=True)
        if self.database_url.startswith("sqlite:///"):
            path = self.database_url[len("sqlite:///"):]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)


def _redact(url: str) -> str:
    """Hide a password embedded in a URL, so settings can be printed safely."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


redact_url = _redact
