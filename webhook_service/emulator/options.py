"""Emulator settings and fault-injection knobs.

Kept apart from the service's ``config.Settings`` on purpose: the emulator is a
stand-in for Gladia, not a part of the service, and nothing in the package may
depend on it. Every knob here is one of the behaviours the wire-format
reference marks UNCONFIRMED (timeouts, retries, grace periods), so each has a
default and can be changed from the command line or, for faults, at run time
through the admin API.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

ENGINES = ("sphinx", "vad")


class OptionError(ValueError):
    """An emulator option or fault setting is invalid; the message names it."""


@dataclass(frozen=True)
class Faults:
    """What to break, and how often. All rates are probabilities in [0, 1].

    A seeded random generator decides each fault, so a run with the same seed
    and the same traffic breaks the same things.
    """

    seed: int | None = None
    # Callbacks (per message; a message can be both delayed and duplicated).
    callback_drop_rate: float = 0.0
    callback_duplicate_rate: float = 0.0
    callback_delay_rate: float = 0.0
    callback_delay_s: float = 1.0
    callback_reorder_rate: float = 0.0
    # REST (routes under /v2/ only, never the admin API).
    rest_error_rate: float = 0.0
    rest_error_status: int = 503
    rest_429_rate: float = 0.0
    # Which REST calls may fail: "GET", "POST /v2/live", "GET /v2/live/{id}"...; empty = all.
    rest_fault_routes: tuple[str, ...] = ()
    # WebSocket: cut (close with ws_cut_code) once a connection has taken N chunks, or at random.
    ws_cut_after_chunks: int = 0
    ws_cut_rate: float = 0.0
    ws_cut_code: int = 1011
    # Delay before each acknowledgement is sent (messages after it wait too: order is kept).
    ack_delay_s: float = 0.0

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

    host: str = "127.0.0.1"
    port: int = 8765
    engine: str = "sphinx"
    api_keys: tuple[str, ...] = ("local-dev-key",)
    max_sessions_per_key: int = 30
    # No audio for this long on an open socket: the session ends (post-processing, close 1000).
    idle_timeout_s: float = 30.0
    # A dropped (non-1000) connection may come back this long; then the session ends on its own.
    # Also how long a created session waits for its first connection.
    resume_grace_s: float = 30.0
    # Audio cap per session (Gladia: 3 hours); reaching it ends the recording.
    max_session_s: float = 3 * 3600.0
    # Callback delivery.
    callback_timeout_s: float = 10.0
    callback_retries: int = 3
    callback_backoff_s: float = 0.5
    callback_backoff_max_s: float = 10.0
    # Where received audio is spooled (a private temporary folder when empty).
    spool_dir: str = ""
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
