"""The ``POST /v2/live`` body: defaults, user options, validation.

A batch's configuration comes from CLI options and/or a JSON or YAML file; a
CSV manifest can override it per file. Everything is validated here, before
any row is written, against Gladia's ``StreamingRequest`` schema (reference
section 1.1): unknown keys, wrong types, values out of range or outside an
enum are reported all at once with their JSON path.

The schema itself is Gladia's, defined once in :mod:`.session_schema`; this
module states how the service narrows it, words its problems, and adds
what the service decides, whatever the user says:

* ``encoding``/``sample_rate``/``bit_depth``/``channels`` describe the PCM the
  worker produces (channels always follow the file);
* ``callback: true`` and ``callback_config.url`` (a per-job secret URL, added
  only when the request is sent, never stored), or ``callback: false`` when
  the deployment runs without callbacks (``CALLBACKS=off``);
* ``messages_config.receive_acknowledgments: true``: the worker cannot resume
  without acknowledgements; when the worker stores what the socket carries
  (``STORE_SOCKET_MESSAGES``), the socket also asks for every message type the
  ``callback_config`` wants (:func:`callback_flags`);
* ``custom_metadata`` carries ``job_id`` and ``batch_id`` (user metadata is
  kept beside them), so that an orphaned session can be found again.

Streaming options that are not part of Gladia's body (chunk length, speed)
travel in the stored configuration under the key ``"_stream"``, which is
removed from what is sent.
"""

from __future__ import annotations

import copy
import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from . import session_schema
from .messages import flag_for

STREAM_KEY = "_stream"
CUSTOM_METADATA_MAX_CHARS = session_schema.CUSTOM_METADATA_MAX_CHARS
RESERVED_METADATA = ("job_id", "batch_id")
GLADIA_CALLBACK_DEFAULTS = session_schema.GLADIA_CALLBACK_DEFAULTS

# What the socket carries at least: acknowledgements (the worker resumes from them), errors and the
# lifecycle. The results join them when the worker stores the socket's messages (see post_body).
DEFAULT_MESSAGES_CONFIG = {
    "receive_partial_transcripts": False,
    "receive_final_transcripts": False,
    "receive_speech_events": False,
    "receive_pre_processing_events": False,
    "receive_realtime_processing_events": False,
    "receive_post_processing_events": False,
    "receive_acknowledgments": True,
    "receive_errors": True,
    "receive_lifecycle_events": True,
}
# What the service asks for: everything that carries a result and the lifecycle that
# triggers reconciliation (Gladia's defaults), plus errors.
DEFAULT_CALLBACK_CONFIG = {**GLADIA_CALLBACK_DEFAULTS, "receive_errors": True}


def callback_flags(config: dict[str, Any] | None) -> dict[str, bool]:
    """The message types a session's ``callback_config`` asks for, Gladia's documented defaults filled in.

    What the user wants of a session: what callbacks deliver, what the worker
    stores from the socket, and what reconciliation expects to find stored.
    """
    callback_config = (config or {}).get("callback_config") or {}
    flags = dict(GLADIA_CALLBACK_DEFAULTS)
    for name in GLADIA_CALLBACK_DEFAULTS:
        if isinstance(callback_config.get(name), bool):
            flags[name] = callback_config[name]
    return flags


def is_expected(message: dict[str, Any], flags: dict[str, bool]) -> bool:
    """Whether ``flags`` (:func:`callback_flags`) ask for ``message``.

    Unknown message types are expected: storing one raw costs nothing, and
    the receiver stores unknown types rather than refusing them.
    """
    flag = flag_for(message)
    return True if flag is None else flags[flag]


# Gladia's schema as the service uses it: the worker sends PCM only, an empty
# vocabulary is a mistake, the callback URL is added when the request is sent,
# and the streaming options travel beside the body.
STREAM_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    "chunk_ms": {"type": "integer", "minimum": 10, "maximum": 5000},
    "speed": {"type": "number", "minimum": 0, "maximum": 1000},
}}
SERVICE_SCHEMA = session_schema.streaming_request(encodings=("wav/pcm",), min_vocabulary=1, callback_needs_url=False,
                                                  extra_properties={STREAM_KEY: STREAM_SCHEMA})


class SessionConfigError(ValueError):
    """The configuration is invalid; ``errors`` lists every problem with its path."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


# ------------------------------------------------------------------ validation

_TYPE_WORDS = {"boolean": "must be true or false", "number": "must be a number", "integer": "must be an integer",
               "string": "must be a string", "object": "must be an object", "array": "must be a list"}


def _path_text(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _worded(problem: session_schema.Problem) -> str:
    """One problem as the CLI shows it: ``path: what is wrong``."""
    where = _path_text(problem.path)
    if problem.kind == "unknown":
        return f"{where}: unknown option"
    if problem.kind == "enum":
        values = problem.expected
        shown = ", ".join(map(str, values)) if len(values) <= 12 else "a supported code"
        return f"{where}: must be one of {shown}, got {problem.value!r}"
    if problem.kind == "range":
        low, high = problem.expected
        return f"{where}: must be between {low} and {high}, got {problem.value}"
    if problem.kind == "min_items":
        return f"{where}: needs at least {problem.expected} item(s)"
    if problem.kind == "required" and problem.when:
        parent = _path_text(problem.path[:-1])
        return f"{where}.{problem.key}: required when {parent}.{problem.when} is true"
    if problem.kind == "required":
        return f"{where}: required"
    if problem.kind == "invalid":
        return f"{where}: {problem.message}"
    return f"{where}: {_TYPE_WORDS.get(problem.expected, f'must be of type {problem.expected}')}"


def _policy_errors(body: dict[str, Any]) -> list[str]:
    """What the service decides whatever the user says (see the module docstring)."""
    errors: list[str] = []
    callback_config = body.get("callback_config")
    if isinstance(callback_config, dict) and "url" in callback_config:
        errors.append("callback_config.url: set by the service (a per-job secret URL); remove it")
    if body.get("callback") is False:
        errors.append("callback: set by the service (CALLBACKS=on or off); remove it")
    messages = body.get("messages_config")
    if isinstance(messages, dict) and messages.get("receive_acknowledgments") is False:
        errors.append("messages_config.receive_acknowledgments: the worker needs acknowledgements to resume")
    metadata = body.get("custom_metadata")
    if isinstance(metadata, dict):
        for key in RESERVED_METADATA:
            if key in metadata:
                errors.append(f"custom_metadata.{key}: reserved (set by the service)")
        if len(json.dumps(metadata, separators=(",", ":"))) > CUSTOM_METADATA_MAX_CHARS - 120:
            errors.append(f"custom_metadata: too long (Gladia allows {CUSTOM_METADATA_MAX_CHARS} characters in all)")
    return errors


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Check a (partial) session configuration; returns it, or raises :class:`SessionConfigError`."""
    if not isinstance(config, dict):
        raise SessionConfigError(["the session configuration must be a JSON/YAML object"])
    errors = [_worded(p) for p in session_schema.problems(config, SERVICE_SCHEMA)]
    errors += _policy_errors(config)
    if errors:
        raise SessionConfigError(errors)
    return config


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: objects merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_yaml(text: str) -> Any:
    """YAML's data, or ValueError; PyYAML is imported here only (most runs read no YAML)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """A configuration file: JSON, or YAML (``.yaml``/``.yml``; JSON is valid YAML too)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SessionConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    try:
        data = _parse_yaml(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except ValueError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SessionConfigError([f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'JSON'} ({first})"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SessionConfigError([f"{path}: must hold an object of session options"])
    try:
        return validate(data)
    except SessionConfigError as exc:
        raise SessionConfigError([f"{path}: {e}" for e in exc.errors]) from None


def from_options(*, languages: tuple[str, ...] = (), code_switching: Optional[bool] = None,
                 sample_rate: Optional[int] = None, bit_depth: Optional[int] = None,
                 endpointing: Optional[float] = None, translate_to: tuple[str, ...] = (),
                 chunk_ms: Optional[int] = None, speed: Optional[float] = None,
                 metadata: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The partial configuration that CLI options stand for."""
    config: dict[str, Any] = {}
    if languages:
        config.setdefault("language_config", {})["languages"] = list(languages)
    if code_switching is not None:
        config.setdefault("language_config", {})["code_switching"] = code_switching
    if sample_rate is not None:
        config["sample_rate"] = sample_rate
    if bit_depth is not None:
        config["bit_depth"] = bit_depth
    if endpointing is not None:
        config["endpointing"] = endpointing
    if translate_to:
        config["realtime_processing"] = {"translation": True,
                                         "translation_config": {"target_languages": list(translate_to)}}
    stream: dict[str, Any] = {}
    if chunk_ms is not None:
        stream["chunk_ms"] = chunk_ms
    if speed is not None:
        stream["speed"] = speed
    if stream:
        config[STREAM_KEY] = stream
    if metadata:
        config["custom_metadata"] = dict(metadata)
    return validate(config)


@dataclass(frozen=True)
class StreamOptions:
    chunk_ms: int
    speed: float


def stream_options(job_config: dict[str, Any], settings) -> StreamOptions:
    """Chunk length and speed for one job: its own options, else the worker's settings."""
    stream = job_config.get(STREAM_KEY) or {}
    return StreamOptions(chunk_ms=int(stream.get("chunk_ms", settings.chunk_ms)),
                         speed=float(stream.get("speed", settings.stream_speed)))


def job_config(batch_config: dict[str, Any], file_config: Optional[dict[str, Any]], *,
               channels: int, sample_rate: int, bit_depth: int) -> dict[str, Any]:
    """The configuration stored on a job: batch options, per-file options, the audio format.

    User metadata stays in ``custom_metadata`` here; the job and batch ids are
    added by :func:`post_body` when the session is created.
    """
    config = merge(batch_config, file_config or {})
    config.pop("channels", None)
    config.update(encoding="wav/pcm", sample_rate=sample_rate, bit_depth=bit_depth, channels=channels)
    config["messages_config"] = merge(DEFAULT_MESSAGES_CONFIG, config.get("messages_config") or {})
    config["messages_config"]["receive_acknowledgments"] = True
    config["callback_config"] = merge(DEFAULT_CALLBACK_CONFIG, config.get("callback_config") or {})
    config["callback"] = True
    return validate(config)


def post_body(config: dict[str, Any], *, callback_url: Optional[str], job_id: str, batch_id: Optional[str],
              extra_metadata: Optional[dict[str, Any]] = None, socket_results: bool = False) -> dict[str, Any]:
    """The exact ``POST /v2/live`` body for a job (holds the secret callback URL: never store or log it).

    ``callback_url`` None: no callbacks (``CALLBACKS=off``). ``socket_results``:
    the socket also carries every message type the ``callback_config`` asks
    for, for the worker to store (``STORE_SOCKET_MESSAGES``).
    """
    body = {k: copy.deepcopy(v) for k, v in config.items() if k != STREAM_KEY}
    metadata = dict(body.get("custom_metadata") or {})
    metadata.update(extra_metadata or {})
    metadata["job_id"] = job_id
    if batch_id:
        metadata["batch_id"] = batch_id
    body["custom_metadata"] = metadata
    messages = body.setdefault("messages_config", dict(DEFAULT_MESSAGES_CONFIG))
    if socket_results:
        for flag, wanted in callback_flags(body).items():
            messages[flag] = bool(messages.get(flag)) or wanted
    messages["receive_acknowledgments"] = True
    if callback_url is None:
        body["callback"] = False
        body.pop("callback_config", None)
    else:
        body["callback"] = True
        body["callback_config"] = dict(body.get("callback_config") or DEFAULT_CALLBACK_CONFIG)
        body["callback_config"]["url"] = callback_url
    return body


def without_callback_url(document: Any) -> Any:
    """A copy of a session body or of a ``GET /v2/live`` answer without ``callback_config.url``.

    Gladia echoes the request in ``request_params``; its callback URL holds the
    job's callback token, a write credential, so no copy of it is stored or
    shown. The flags beside it (which messages were asked for) are kept.
    """
    if not isinstance(document, dict):
        return document
    cleaned = dict(document)
    for holder in ("request_params", None):
        parent = cleaned.get(holder) if holder else cleaned
        if not isinstance(parent, dict) or not isinstance(parent.get("callback_config"), dict):
            continue
        if "url" not in parent["callback_config"]:
            continue
        parent = dict(parent)
        parent["callback_config"] = {k: v for k, v in parent["callback_config"].items() if k != "url"}
        if holder:
            cleaned[holder] = parent
        else:
            cleaned = parent
    return cleaned


# --------------------------------------------------------------------- manifest

MANIFEST_OPTION_COLUMNS = ("language", "languages", "chunk_ms", "speed", "sample_rate", "config")


@dataclass(frozen=True)
class ManifestRow:
    path: Path
    config: dict[str, Any]  # per-file options (validated, partial)
    metadata: dict[str, Any]  # user metadata for custom_metadata


def _number(raw: str, kind: type, column: str):
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{column} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """A CSV manifest: a ``path`` column, optional option columns, every other column is metadata.

    Option columns: ``language``/``languages`` (codes separated by ``;`` or
    ``,``), ``chunk_ms``, ``speed``, ``sample_rate``, ``config`` (a JSON
    object merged into the session options). Relative paths are relative to
    the manifest's folder. Empty cells are ignored.
    """
    manifest = Path(path)
    try:
        handle = manifest.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise SessionConfigError([f"{manifest}: cannot read ({exc.strerror or exc})"]) from None
    rows: list[ManifestRow] = []
    errors: list[str] = []
    with handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "path" not in [f.strip() for f in reader.fieldnames]:
            raise SessionConfigError([f"{manifest}: needs a header row with a 'path' column"])
        for line, raw in enumerate(reader, start=2):
            record = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            row = _manifest_row(record, manifest, f"{manifest}:{line}", errors)
            if row is not None:
                rows.append(row)
    if errors:
        raise SessionConfigError(errors)
    if not rows:
        raise SessionConfigError([f"{manifest}: no rows"])
    return rows


def _manifest_row(record: dict[str, str], manifest: Path, where: str, errors: list[str]) -> Optional[ManifestRow]:
    """One manifest line as a row, or ``None`` with its problems added to ``errors``."""
    if not record.get("path"):
        errors.append(f"{where}: empty path")
        return None
    file_path = Path(record.pop("path")).expanduser()
    if not file_path.is_absolute():
        file_path = manifest.parent / file_path
    if not file_path.is_file():
        errors.append(f"{where}: {file_path}: no such file")
    try:
        config = _manifest_options(record)
    except ValueError as exc:
        errors.append(f"{where}: {str(exc).splitlines()[0]}")
        return None
    for key in MANIFEST_OPTION_COLUMNS:
        record.pop(key, None)
    metadata = {k: v for k, v in record.items() if k and v}
    if metadata:
        config["custom_metadata"] = merge(config.get("custom_metadata") or {}, metadata)
    try:
        validate(config)
    except SessionConfigError as exc:
        errors.extend(f"{where}: {e}" for e in exc.errors)
        return None
    return ManifestRow(path=file_path, config=config, metadata=metadata)


def _manifest_options(record: dict[str, str]) -> dict[str, Any]:
    """The session options of a manifest line's option columns (taken out of ``record``)."""
    config: dict[str, Any] = {}
    langs = record.pop("languages", "") or record.pop("language", "")
    record.pop("language", None)
    if langs:
        config["language_config"] = {"languages": [c.strip() for c in langs.replace(",", ";").split(";") if c.strip()]}
    stream: dict[str, Any] = {}
    if record.get("chunk_ms"):
        stream["chunk_ms"] = _number(record.pop("chunk_ms"), int, "chunk_ms")
    if record.get("speed"):
        stream["speed"] = _number(record.pop("speed"), float, "speed")
    if stream:
        config[STREAM_KEY] = stream
    if record.get("sample_rate"):
        config["sample_rate"] = _number(record.pop("sample_rate"), int, "sample_rate")
    if record.get("config"):
        extra = json.loads(record.pop("config"))
        if not isinstance(extra, dict):
            raise ValueError("the config column must hold a JSON object")
        config = merge(extra, config)
    return config
