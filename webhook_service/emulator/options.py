"""Emulator settings and fault-injection knobs.

Kept apart from the service's ``config.Settings`` on purpose: the emulator is a
stand-in for Gladia, not a part of the service, and nothing in the package may
depend on it. Every knob here is one of the behaviours the wire-format
reference marks UNCONFIRMED (timeouts, retries, grace periods), so each has a
default and can be changed from the command line or, for faults, at run time
through the admin API.

Each field that ``webhook-service emulator`` exposes carries its command-line
declaration (:class:`Flag`) in the field's metadata, beside its default: the
CLI builds its options from these fields, so a new knob is declared once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

ENGINES = ("sphinx", "vad")
RATE = {"minimum": 0, "maximum": 1}  # bounds of every fault rate, on the command line as at run time


class OptionError(ValueError):
    """An emulator option or fault setting is invalid; the message names it."""


@dataclass(frozen=True)
class Flag:
    """How a field appears on the ``webhook-service emulator`` command line.

    The value type comes from the field's annotation (a ``tuple[str, ...]``
    field is a repeatable option) and the default from the field's default;
    the help shows the default when it is not empty or zero. ``env`` names an
    environment variable read when the option is not given (before the field's
    default).
    """

    name: str
    help: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    minimum_excluded: bool = False
    choices: tuple[str, ...] | None = None
    env: str | None = None


def flag(name: str, help: str | None = None, **bounds: Any) -> dict[str, Flag]:
    """Field metadata declaring the field's command-line option."""
    return {"flag": Flag(name, help, **bounds)}


def flag_of(f: Any) -> Flag | None:
    """The command-line declaration of a dataclass field, or None when the CLI does not expose it."""
    return f.metadata.get("flag")


@dataclass(frozen=True)
class Faults:
    """What to break, and how often. All rates are probabilities in [0, 1].

    A seeded random generator decides each fault, so a run with the same seed
    and the same traffic breaks the same things.
    """

    seed: int | None = field(default=None, metadata=flag(
        "--seed", "Seed of the fault generator (reproducible runs)."))
    # Callbacks (per message; a message can be both delayed and duplicated).
    callback_drop_rate: float = field(default=0.0, metadata=flag(
        "--drop-callbacks", "Fraction of callbacks dropped.", **RATE))
    callback_duplicate_rate: float = field(default=0.0, metadata=flag(
        "--duplicate-callbacks", "Fraction of callbacks delivered twice.", **RATE))
    callback_delay_rate: float = field(default=0.0, metadata=flag(
        "--delay-callbacks", "Fraction of callbacks delayed by --callback-delay.", **RATE))
    callback_delay_s: float = field(default=1.0, metadata=flag(
        "--callback-delay", "Seconds a delayed callback waits.", minimum=0))
    callback_reorder_rate: float = field(default=0.0, metadata=flag(
        "--reorder-callbacks", "Fraction of callbacks swapped with the next one of their session.", **RATE))
    # REST (routes under /v2/ only, never the admin API).
    rest_error_rate: float = field(default=0.0, metadata=flag(
        "--rest-errors", "Fraction of REST calls failing 5xx.", **RATE))
    rest_error_status: int = field(default=503, metadata=flag(
        "--rest-error-status", "Status of a failing REST call.", minimum=500, maximum=599))
    rest_429_rate: float = field(default=0.0, metadata=flag(
        "--rest-429", "Fraction of REST calls answered 429.", **RATE))
    # Which REST calls may fail: "GET", "POST /v2/live", "GET /v2/live/{id}"...; empty = all.
    rest_fault_routes: tuple[str, ...] = field(default=(), metadata=flag(
        "--rest-fault-route", "Limit REST faults to these routes: a method ('GET') or 'METHOD /path' "
                              "('GET /v2/live/{id}'). Repeatable."))
    # WebSocket: cut (close with ws_cut_code) once a connection has taken N chunks, or at random.
    ws_cut_after_chunks: int = field(default=0, metadata=flag(
        "--cut-after-chunks", "Cut each WebSocket connection after N audio chunks (0 = never).", minimum=0))
    ws_cut_rate: float = field(default=0.0, metadata=flag(
        "--cut-rate", "Probability, per audio chunk, of cutting the connection.", **RATE))
    ws_cut_code: int = field(default=1011, metadata=flag(
        "--cut-code", "Close code of a cut (1006 = drop the TCP connection without a close frame)."))
    # Delay before each acknowledgement is sent (messages after it wait too: order is kept).
    ack_delay_s: float = field(default=0.0, metadata=flag(
        "--ack-delay", "Seconds before each ack is sent.", minimum=0))

    _RATES = ("callback_drop_rate", "callback_duplicate_rate", "callback_delay_rate", "callback_reorder_rate",
              "rest_error_rate", "rest_429_rate", "ws_cut_rate")

    def validated(self) -> "Faults":
        for name in self._RATES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise OptionError(f"{name} must be between 0 and 1, got {value!r}")
        if not 500 <= self.rest_error_status <= 599:
            raise OptionError(f"rest_error_status must be a 5xx status, got {self.rest_error_status!r}")
        if self.ws_cut_after_chunks < 0:
            raise OptionError("ws_cut_after_chunks must be >= 0")
        if not (1001 <= self.ws_cut_code <= 4999) or self.ws_cut_code in (1000, 1005):
            raise OptionError(f"ws_cut_code must be a non-1000 close code (1006 = drop the TCP connection), "
                              f"got {self.ws_cut_code!r}")
        for name in ("callback_delay_s", "ack_delay_s"):
            if getattr(self, name) < 0:
                raise OptionError(f"{name} must be >= 0")
        for route in self.rest_fault_routes:
            if not isinstance(route, str) or not route.strip():
                raise OptionError("rest_fault_routes must be a list of strings like 'GET' or 'POST /v2/live'")
        return self

    def updated(self, changes: Mapping[str, Any]) -> "Faults":
        """A copy with ``changes`` applied (JSON values from the admin API or CLI), validated."""
        known = {f.name: f for f in fields(self) if not f.name.startswith("_")}
        values: dict[str, Any] = {}
        for name, raw in changes.items():
            if name not in known:
                raise OptionError(f"unknown fault {name!r}; known: {', '.join(sorted(known))}")
            values[name] = _coerce(name, known[name].type, raw)
        return replace(self, **values).validated()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rest_fault_routes"] = list(self.rest_fault_routes)
        return data


def _coerce(name: str, type_name: Any, raw: Any) -> Any:
    type_name = str(type_name)
    try:
        if type_name == "float":
            if isinstance(raw, bool):
                raise TypeError
            return float(raw)
        if type_name == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise TypeError
            return int(raw)
        if type_name.startswith("int | None"):
            return None if raw is None else _coerce(name, "int", raw)
        if type_name.startswith("tuple"):
            if isinstance(raw, str):
                raw = [part.strip() for part in raw.split(",") if part.strip()]
            if not isinstance(raw, (list, tuple)):
                raise TypeError
            return tuple(str(item) for item in raw)
    except (TypeError, ValueError):
        raise OptionError(f"{name} has an invalid value {raw!r}") from None
    raise OptionError(f"{name}: unsupported type {type_name}")  # pragma: no cover


@dataclass(frozen=True)
class EmulatorOptions:
    """How the emulator behaves where Gladia's documentation leaves it open."""

    host: str = field(default="127.0.0.1", metadata=flag("--host", "Interface to listen on."))
    port: int = field(default=8765, metadata=flag("--port", "Port to listen on.",
                                                  minimum=0, maximum=65535))
    engine: str = field(default="sphinx", metadata=flag(
        "--engine", "sphinx: real English recognition; vad: energy detection with placeholder words (cheap).",
        choices=ENGINES))
    api_keys: tuple[str, ...] = field(default=("local-dev-key",), metadata=flag(
        "--api-key", "Accepted x-gladia-key (repeatable). Default: $GLADIA_API_KEY or local-dev-key.",
        env="GLADIA_API_KEY"))
    max_sessions_per_key: int = field(default=30, metadata=flag(
        "--max-sessions-per-key", "Live sessions running at once per key; more -> 429.", minimum=1))
    # No audio for this long on an open socket: the session ends (post-processing, close 1000).
    idle_timeout_s: float = field(default=30.0, metadata=flag(
        "--idle-timeout", "Seconds without audio on an open socket before the session ends.",
        minimum=0, minimum_excluded=True))
    # A dropped (non-1000) connection may come back this long; then the session ends on its own.
    # Also how long a created session waits for its first connection.
    resume_grace_s: float = field(default=30.0, metadata=flag(
        "--resume-grace", "Seconds a disconnected (or never connected) session waits for a connection.",
        minimum=0, minimum_excluded=True))
    # Audio cap per session (Gladia: 3 hours); reaching it ends the recording.
    max_session_s: float = field(default=3 * 3600.0, metadata=flag(
        "--max-session-seconds", "Audio cap per session (Gladia: 3 hours).", minimum=0, minimum_excluded=True))
    # Callback delivery.
    callback_timeout_s: float = field(default=10.0, metadata=flag(
        "--callback-timeout", "Seconds to wait for the answer to a callback.", minimum=0, minimum_excluded=True))
    callback_retries: int = field(default=3, metadata=flag(
        "--callback-retries", "Retries of a callback answered non-2xx or timed out.", minimum=0))
    callback_backoff_s: float = field(default=0.5, metadata=flag(
        "--callback-backoff", "First retry delay in seconds (doubles each retry, at most 10 s).", minimum=0))
    callback_backoff_max_s: float = 10.0
    # Only what Gladia's OpenAPI description lists: refuse the documented-but-unlisted fields real clients send.
    strict_schema: bool = field(default=False, metadata=flag(
        "--strict-schema", "Refuse what Gladia's OpenAPI description does not list, though other Gladia documents "
                           "and real clients use it (realtime_processing.words_accurate_timestamps, translation "
                           "model 'batch')."))
    # Where received audio is spooled (a private temporary folder when empty).
    spool_dir: str = field(default="", metadata=flag(
        "--spool-dir", "Folder for received audio (default: a temporary folder)."))
    # Every fault has its own option (see Faults).
    faults: Faults = field(default_factory=Faults)

    def validated(self) -> "EmulatorOptions":
        if self.engine not in ENGINES:
            raise OptionError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if not self.api_keys or any(not key for key in self.api_keys):
            raise OptionError("at least one non-empty API key is needed")
        if not 0 <= self.port <= 65535:
            raise OptionError(f"port must be 0..65535, got {self.port}")
        if self.max_sessions_per_key < 1:
            raise OptionError("max_sessions_per_key must be >= 1")
        for name in ("idle_timeout_s", "resume_grace_s", "max_session_s", "callback_timeout_s",
                     "callback_backoff_max_s"):
            if getattr(self, name) <= 0:
                raise OptionError(f"{name} must be > 0")
        if self.callback_retries < 0 or self.callback_backoff_s < 0:
            raise OptionError("callback_retries and callback_backoff_s must be >= 0")
        self.faults.validated()
        return self


class FaultState:
    """The current faults and the seeded generator that decides each one.

    Replacing the faults (admin API) re-seeds the generator, so the same
    settings applied to the same traffic break the same messages.
    """

    def __init__(self, faults: Faults):
        self.set(faults)

    def set(self, faults: Faults) -> None:
        import random

        self.faults = faults.validated()
        self.rng = random.Random(faults.seed)

    def chance(self, rate: float, key: str | None = None) -> bool:
        """True with probability ``rate``; draws nothing when the rate is 0 (keeps other draws reproducible).

        With a seed and a ``key`` naming what is decided (e.g. "session 3,
        7th transcript, drop"), the answer depends only on the two, not on
        the order decisions happen in: concurrent work stays reproducible.
        """
        if rate <= 0:
            return False
        if key is not None and self.faults.seed is not None:
            import hashlib

            digest = hashlib.sha256(f"{self.faults.seed}|{key}".encode()).digest()
            return int.from_bytes(digest[:8], "big") / 2 ** 64 < rate
        return self.rng.random() < rate
