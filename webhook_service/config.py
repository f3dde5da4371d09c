"""Settings, read once from the environment (12-factor), with embedded defaults.

Every setting has a default that works on one machine with no server: a SQLite
file and kombu's filesystem broker under ``DATA_DIR``, and the local emulator
as the Gladia API. Production overrides them with PostgreSQL, Redis and the
real API. An invalid value stops the program at start with a message that
names the variable, rather than failing later in the middle of a job.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse, urlsplit, urlunsplit

WEB_SURFACES = ("all", "receiver", "operator")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


# The signing key the embedded setup starts with. It is in the source, so anyone can sign callbacks with
# it: accepted only where nobody else can reach the receiver (the embedded SQLite and a loopback base URL).
DEV_SIGNING_KEY = "change-me-local-signing-key"
MIN_SIGNING_KEY_BYTES = 32
# Settings whose name has one of these words hold a credential: shown as *** by repr() and str().
_SECRET_NAME_WORDS = frozenset({"key", "keys", "secret", "secrets", "password", "passwords", "token", "tokens"})
# Query parameters of a URL setting that carry a credential (libpq and redis accept a password there).
_SECRET_QUERY_PARAMS = frozenset({"password", "pass", "passwd", "secret", "token", "sslpassword"})


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


# Seconds a worker needs, after the sweeper re-sends a stream, to take the task and reconnect (with margin).
RESUME_START_S = 5.0


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
    callback_signing_key: str = DEV_SIGNING_KEY
    gladia_webhook_secret: str = ""
    # Keys of before a rotation: callback URLs signed with them stay valid (comma-separated).
    callback_signing_keys_previous: tuple[str, ...] = ()
    # Worker and streaming
    max_concurrent_sessions: int = 30
    slot_retry_s: float = 30.0  # a new stream with no free slot retries after about this, unless a freed slot wakes it
    # Per worker process: new streams that wait on their thread for the next free slot. As many as the
    # default slots, so that every slot freed in a process can find its successor there (bench/README.md).
    slot_standby: int = 30
    chunk_ms: int = 100
    stream_speed: float = 1.0  # 1.0 = real time; 0 = as fast as acknowledgements allow
    close_mode: str = "close"  # "close": close 1000 after the last ack; "stop": stop_recording and wait
    # Results by callback (on: Gladia must reach PUBLIC_BASE_URL) or not at all (off: socket and reconciliation).
    callbacks: bool = True
    # Store every result the session's socket carries (the same normalization as callbacks, source websocket).
    store_socket_messages: bool = True
    heartbeat_interval_s: float = 2.0
    # A stream silent this long is resumed by the sweeper: with SWEEP_INTERVAL_S, inside Gladia's reconnect window.
    stale_heartbeat_s: float = 10.0
    # How long Gladia keeps a disconnected session waiting for its socket (not documented; the emulator's 30 s).
    gladia_reconnect_window_s: float = 30.0
    # Celery threads per worker process: each live stream occupies one (they share one event loop).
    worker_concurrency: int = 100
    # Reconciliation and sweeping
    reconcile_delay_s: float = 10.0
    reconcile_deadline_s: float = 3600.0
    sweep_interval_s: float = 5.0
    stale_queued_s: float = 300.0  # a job queued this long that no worker touched is re-sent
    inbox_retry_after_s: float = 10.0  # an inbox row still pending after this is normalized again
    inbox_max_attempts: int = 5  # normalization attempts of a failed inbox row by the sweeper
    # Retention (retention/policy.py, applied by the sweeper): 0 keeps forever
    retention_days: int = 365  # a settled session's transcript and results are erased this long after it ended
    inbox_retention_days: int = 30  # the raw body of a callback request is erased this long after receipt
    gladia_delete_after_reconcile: bool = False  # delete Gladia's copy once a session is reconciled
    # Receiver
    max_callback_bytes: int = 1_048_576
    # A callback for a job past its end_session by more than this is refused (410): reconciliation has the last word.
    callback_grace_s: float = 900.0
    log_level: str = "INFO"
    log_format: str = "text"  # text (for a terminal) | json (one object per line, for a log pipeline)
    # Where every process of this machine keeps its Prometheus counters (one subfolder per process
    # kind, wiped when that kind starts); the operator's /metrics adds them all up. Default $DATA_DIR/metrics.
    metrics_dir: str = ""
    # `webhook-service worker`/`beat`: serve this process's metrics on 127.0.0.1:PORT (0: off), bearer token.
    metrics_port: int = 0
    # Operator authentication (web/auth.py). An authenticating proxy's identity header is trusted only
    # when both are set and the request's peer address is one of TRUSTED_PROXIES (IPs or CIDRs).
    trusted_proxy_auth_header: str = ""
    trusted_proxies: str = ""
    trusted_proxy_scope: str = "read"  # the scope of an identity the proxy vouches for
    operator_session_hours: float = 12.0  # a dashboard login lasts this long
    web_surface: str = "all"  # receiver | operator | all: the routes this web process serves
    # Reverse proxy (`webhook-service proxy`) and the client addresses it forwards
    forwarded_allow_ips: str = ""  # proxies (IPs or CIDRs, comma-separated) whose X-Forwarded-* are trusted
    proxy_client_timeout_s: float = 10.0  # nginx: whole request header, and each read of a body
    proxy_max_conn_per_ip: int = 200  # nginx: concurrent connections from one client address

    _INT_MIN = {"max_concurrent_sessions": 1, "chunk_ms": 10, "max_callback_bytes": 1024, "inbox_max_attempts": 1,
                "worker_concurrency": 1, "db_pool_size": 1, "db_max_overflow": 0, "slot_standby": 0,
                "retention_days": 0, "inbox_retention_days": 0}
    _FLOAT_MIN = {
        "stream_speed": 0.0,
        "heartbeat_interval_s": 0.1,
        "stale_heartbeat_s": 1.0,
        "reconcile_delay_s": 0.0,
        "reconcile_deadline_s": 1.0,
        "sweep_interval_s": 0.5,
        "gladia_reconnect_window_s": 1.0,
        "slot_retry_s": 0.5,
        "stale_queued_s": 1.0,
        "inbox_retry_after_s": 0.0,
        "operator_session_hours": 0.01,
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
            elif f.type in ("tuple[str, ...]", tuple):
                values[f.name] = tuple(item.strip() for item in raw.split(",") if item.strip())
            else:
                values[f.name] = raw.strip()
        values.update(overrides)
        settings = cls(**values)
        return settings.with_defaults().validated()

    def with_defaults(self) -> "Settings":
        """Fill the settings whose default depends on ``data_dir``; normalize a Heroku-style database URL."""
        data = Path(self.data_dir)
        updates: dict[str, Any] = {}
        if not self.database_url:
            updates["database_url"] = f"sqlite:///{data / 'webhook_service.sqlite3'}"
        elif normalize_database_url(self.database_url) != self.database_url:
            updates["database_url"] = normalize_database_url(self.database_url)
        if not self.metrics_dir:
            updates["metrics_dir"] = str(data / "metrics")
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
        self._check_gladia_api_url()
        self._check_signing_keys()
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
        if self.log_format not in {"text", "json"}:
            raise ConfigError(f"LOG_FORMAT must be text or json, got {self.log_format!r}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"METRICS_PORT must be between 0 and 65535, got {self.metrics_port!r}")
        if self.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {self.log_level!r}")
        self._validate_operator_auth()
        _check_proxy_settings(self)
        return self

    def _validate_operator_auth(self) -> None:
        if self.web_surface not in WEB_SURFACES:
            raise ConfigError(f"WEB_SURFACE must be one of {', '.join(WEB_SURFACES)}, got {self.web_surface!r}")
        if self.trusted_proxy_scope not in ("read", "admin"):
            raise ConfigError(f"TRUSTED_PROXY_SCOPE must be read or admin, got {self.trusted_proxy_scope!r}")
        header = self.trusted_proxy_auth_header
        if header and not all(c.isalnum() or c == "-" for c in header):
            raise ConfigError(f"TRUSTED_PROXY_AUTH_HEADER must be an HTTP header name, got {header!r}")
        self.trusted_proxy_networks  # raises ConfigError on a bad entry

    @property
    def trusted_proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """TRUSTED_PROXIES parsed: the peers whose TRUSTED_PROXY_AUTH_HEADER is believed."""
        return parse_networks("TRUSTED_PROXIES", self.trusted_proxies)

    def _check_gladia_api_url(self) -> None:
        """The API key travels with every request: only over TLS, or to a server on this machine."""
        parsed = urlsplit(self.gladia_api_url)
        if parsed.scheme != "https" and not is_loopback_host(parsed.hostname):
            raise ConfigError(f"GLADIA_API_URL must be an https:// URL (http:// only on loopback, for the "
                              f"local emulator), got {_redact(self.gladia_api_url)!r}")

    @property
    def is_embedded_loopback(self) -> bool:
        """The embedded SQLite database and a receiver only this machine can reach."""
        return (self.database_url.startswith("sqlite")
                and is_loopback_host(urlsplit(self.public_base_url).hostname))

    def _check_signing_keys(self) -> None:
        """Refuse a signing key anyone could know or guess, outside the embedded, loopback setup."""
        if self.is_embedded_loopback:
            return
        named = [("CALLBACK_SIGNING_KEY", self.callback_signing_key)]
        named += [("CALLBACK_SIGNING_KEYS_PREVIOUS", key) for key in self.callback_signing_keys_previous]
        hint = ("set a random key of at least 32 bytes, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`")
        for name, key in named:
            if key == DEV_SIGNING_KEY:
                raise ConfigError(f"{name} is the development default, which is public; {hint} (the default "
                                  "is only accepted with the embedded SQLite and a loopback PUBLIC_BASE_URL)")
            if len(key.encode()) < MIN_SIGNING_KEY_BYTES:
                raise ConfigError(f"{name} is shorter than {MIN_SIGNING_KEY_BYTES} bytes; {hint}")

    @property
    def callback_verification_keys(self) -> tuple[str, ...]:
        """The keys a callback URL may be signed with: the current one, then those of before a rotation."""
        return (self.callback_signing_key, *self.callback_signing_keys_previous)

    def resume_window_problem(self) -> str | None:
        """Why a stream whose worker dies could not be resumed inside Gladia's reconnect window, or None.

        After a SIGKILL the job's heartbeat goes stale after STALE_HEARTBEAT_S, the
        sweeper sees it within SWEEP_INTERVAL_S, and a worker needs a few seconds
        (RESUME_START_S) to take the task and reconnect.
        """
        worst = self.stale_heartbeat_s + self.sweep_interval_s + RESUME_START_S
        if worst <= self.gladia_reconnect_window_s:
            return None
        return (f"STALE_HEARTBEAT_S ({self.stale_heartbeat_s:g}) + SWEEP_INTERVAL_S ({self.sweep_interval_s:g}) "
                f"+ ~{RESUME_START_S:g} s to restart = {worst:g} s, beyond GLADIA_RECONNECT_WINDOW_S "
                f"({self.gladia_reconnect_window_s:g} s): a stream whose worker dies would find its Gladia session "
                "ended (job failed incomplete); lower them (defaults 10 and 5)")

    def __repr__(self) -> str:
        """Every setting, with credentials masked: safe for logs, tracebacks and debuggers."""
        shown = ", ".join(f"{f.name}={_shown_value(f.name, getattr(self, f.name))}"
                          for f in fields(self) if not f.name.startswith("_"))
        return f"Settings({shown})"

    __str__ = __repr__

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


def normalize_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` (what Heroku, Render or Fly hand out) -> the psycopg 3 driver's URL."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def is_loopback_host(host: str | None) -> bool:
    """``localhost``, 127.0.0.0/8 or ::1: a host only this machine reaches."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME_WORDS.intersection(name.lower().split("_")))


def _shown_value(name: str, value: Any) -> str:
    if _is_secret_name(name):
        if isinstance(value, (tuple, list)):
            return "(" + ", ".join("'***'" for _ in value) + ("," if len(value) == 1 else "") + ")"
        return "'***'" if value else "''"
    if name.endswith("_url") and isinstance(value, str):
        return repr(_redact(value))
    return repr(value)


def parse_networks(name: str, value: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """A comma-separated list of IPs or CIDRs (setting ``name``); empty means none."""
    networks = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(f"{name} must be comma-separated IPs or CIDRs, got {item!r}") from None
    return tuple(networks)


def forwarded_proxy_networks(value: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """The networks of ``FORWARDED_ALLOW_IPS``: proxies whose X-Forwarded-* headers are believed."""
    return parse_networks("FORWARDED_ALLOW_IPS", value)


def _check_proxy_settings(settings: "Settings") -> None:
    forwarded_proxy_networks(settings.forwarded_allow_ips)
    if not 1.0 <= settings.proxy_client_timeout_s <= 3600.0:
        raise ConfigError(f"PROXY_CLIENT_TIMEOUT_S must be between 1 and 3600, got {settings.proxy_client_timeout_s!r}")
    if settings.proxy_max_conn_per_ip < 1:
        raise ConfigError(f"PROXY_MAX_CONN_PER_IP must be >= 1, got {settings.proxy_max_conn_per_ip!r}")


def _redact(url: str) -> str:
    """Hide a password embedded in a URL (user info or query), so settings can be printed safely."""
    try:
        parsed = urlsplit(url)
        password = parsed.password
    except ValueError:
        return "***"
    netloc = parsed.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = "&".join(
        f"{item.partition('=')[0]}=***" if item.partition("=")[0].lower() in _SECRET_QUERY_PARAMS else item
        for item in parsed.query.split("&")
    ) if parsed.query else ""
    if netloc == parsed.netloc and query == parsed.query:
        return url
    return urlunsplit((parsed.scheme, netloc, parsed.path, query, parsed.fragment))


redact_url = _redact
