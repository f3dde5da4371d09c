"""Batch submission: paths -> one Batch and one Job per file -> ``stream_job`` tasks.

Everything that can be wrong with the request (a path that does not exist, a
glob or folder that matches no audio, an invalid option, a broken manifest)
is found before the first row is written, so a bad command changes nothing.
A file that exists but cannot be streamed (not audio, empty, longer than 3
hours) is a fact about that file, not about the request: it gets a job in
state ``failed`` with the reason, and the other files go ahead.
"""

from __future__ import annotations

import glob
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from sqlalchemy import select

from ..audio import AudioError, AudioInfo, estimated_bytes, probe, session_format
from ..config import Settings
from ..db import session_scope
from ..gladia import session_config
from ..models import RESULT_STATES, STREAMED_STATES, Batch, Job, new_id, utcnow
from .dispatch import Dispatcher

AUDIO_EXTENSIONS = frozenset(
    "wav wave flac mp3 ogg oga opus m4a aac mp4 m4v mov mkv mka webm wma aif aiff aifc amr 3gp caf au snd".split()
)
# Files probed at once by submit (PyAV opens and parses a file's headers without holding the GIL).
PROBE_THREADS = 4


class SubmitError(ValueError):
    """The request is invalid; nothing was written."""


@dataclass
class FilePlan:
    path: Path
    config: dict[str, Any]  # per-file options from a manifest
    info: Optional[AudioInfo] = None
    error: Optional[str] = None


@dataclass
class Submission:
    batch_id: str
    batch_name: str
    jobs: list[dict[str, Any]] = field(default_factory=list)
    # Files left out: the same audio (sha256) is already reconciled in this batch.
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _is_audio_name(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS


def expand(paths: Iterable[str]) -> list[FilePlan]:
    """Files, folders (searched recursively for audio files), glob patterns and ``.csv`` manifests."""
    plans: list[FilePlan] = []
    errors: list[str] = []
    seen: set[Path] = set()

    def add(path: Path, config: Optional[dict[str, Any]] = None) -> None:
        resolved = path.resolve()
        if resolved in seen and not config:
            return
        seen.add(resolved)
        plans.append(FilePlan(path=resolved, config=config or {}))

    for raw in paths:
        path = Path(raw).expanduser()
        if any(ch in raw for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(raw), recursive=True))
            files = [m for m in matches if m.is_file()]
            if not files:
                errors.append(f"{raw}: the pattern matches no file")
            for match in files:
                add(match)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_audio_name(p))
            if not found:
                errors.append(f"{raw}: the folder holds no audio file ({', '.join(sorted(AUDIO_EXTENSIONS)[:6])}, ...)")
            for file in found:
                add(file)
        elif path.is_file() and path.suffix.lower() == ".csv":
            try:
                rows = session_config.read_manifest(path)
            except session_config.SessionConfigError as exc:
                errors.extend(exc.errors)
                continue
            for row in rows:
                if not row.path.is_file():
                    errors.append(f"{path}: {row.path}: no such file")
                else:
                    add(row.path, row.config)
        elif path.is_file():
            add(path)
        elif path.exists():
            errors.append(f"{raw}: not a regular file")
        else:
            errors.append(f"{raw}: no such file or folder")
    if errors:
        raise SubmitError("; ".join(errors))
    if not plans:
        raise SubmitError("no file to submit")
    return plans


def plan(settings: Settings, paths: Iterable[str], batch_config: dict[str, Any]) -> list[FilePlan]:
    """Expand the paths, validate every option and probe every file (no write)."""
    try:
        session_config.validate(batch_config)
    except session_config.SessionConfigError as exc:
        raise SubmitError("; ".join(exc.errors)) from None
    plans = expand(paths)
    for item, found in zip(plans, _probe_all([item.path for item in plans])):
        if isinstance(found, AudioError):
            item.error = str(found)
            continue
        item.info = found
        merged = session_config.merge(batch_config, item.config)
        try:
            fmt = session_format(item.info, merged.get("sample_rate"), merged.get("bit_depth", 16))
            item.config = session_config.job_config(batch_config, item.config, channels=fmt.channels,
                                                    sample_rate=fmt.sample_rate, bit_depth=fmt.bit_depth)
        except (AudioError, session_config.SessionConfigError) as exc:
            item.error = str(exc)
    return plans


def _probe_all(paths: list[Path]) -> list[AudioInfo | AudioError]:
    """Every file's probe (or its AudioError), in order; a few at a time, as PyAV opens a file without the GIL."""
    def one(path: Path) -> AudioInfo | AudioError:
        try:
            return probe(path)
        except AudioError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=PROBE_THREADS) as pool:
        return list(pool.map(one, paths))


def default_batch_name() -> str:
    return f"batch-{datetime.now():%Y%m%d-%H%M%S}-{new_id()[:4]}"


def record(settings: Settings, plans: list[FilePlan], batch_name: Optional[str],
           batch_config: dict[str, Any], *, resubmit: bool = False) -> Submission:
    """Write the batch (or add to an existing one of that name) and its jobs, in one transaction.

    A file whose audio (sha256) is already reconciled in that batch is skipped,
    unless ``resubmit``: submitting a folder again adds only what is new or failed.
    """
    name = batch_name or default_batch_name()
    with session_scope(settings.database_url) as session:
        batch = session.execute(select(Batch).where(Batch.name == name)).scalar_one_or_none()
        if batch is None:
            batch = Batch(id=new_id(), name=name, session_config=batch_config)
            session.add(batch)
            session.flush()
        submission = Submission(batch_id=batch.id, batch_name=batch.name)
        done: dict[str, str] = {}
        if not resubmit:
            done = dict(session.execute(select(Job.audio_sha256, Job.id).where(
                Job.batch_id == batch.id, Job.state == "reconciled", Job.audio_sha256.is_not(None))).all())
        now = utcnow()
        for item in plans:
            if item.info is not None and item.info.sha256 in done:
                submission.skipped.append({"path": str(item.path), "reconciled_job": done[item.info.sha256]})
                continue
            job = Job(id=new_id(), batch_id=batch.id, source_path=str(item.path), state="queued", queued_at=now,
                      created_at=now, custom_metadata=dict(item.config.get("custom_metadata") or {}))
            if item.info is not None:
                job.audio_sha256 = item.info.sha256
                job.audio_duration_s = item.info.duration_s
                job.audio_channels = item.info.channels
                job.audio_sample_rate = item.info.sample_rate
            if item.error is None and item.info is not None:
                job.session_config = item.config
                fmt = session_format(item.info, item.config["sample_rate"], item.config["bit_depth"])
                job.bytes_total = estimated_bytes(item.info, fmt)
            else:
                job.session_config = {}
                job.advance("failed", now)
                job.last_error = item.error
            session.add(job)
            submission.jobs.append({"id": job.id, "path": str(item.path), "state": job.state,
                                    "duration_s": job.audio_duration_s, "error": job.last_error})
    return submission


def enqueue(job_ids: list[str], dispatcher: Dispatcher) -> list[str]:
    """Send one stream task per job; returns the ids that could not be sent.

    A job whose task was not sent stays ``queued`` in the database, where the
    sweeper finds it; the broker holds no state of its own.
    """
    failed = []
    for job_id in job_ids:
        try:
            dispatcher.stream(job_id, resume=False)
        except Exception:  # noqa: BLE001 - broker down: the row is the source of truth
            failed.append(job_id)
    return failed


# ----------------------------------------------------------------- progress

@dataclass
class BatchProgress:
    total: int
    finished: int  # reached the awaited state
    failed: int
    audio_s_total: float
    audio_s_streamed: float
    states: dict[str, int]

    @property
    def settled(self) -> bool:
        return self.finished + self.failed >= self.total


def _bytes_per_second(config: dict[str, Any]) -> int:
    return int(config.get("sample_rate", 16000)) * int(config.get("channels", 1)) * int(config.get("bit_depth", 16)) // 8


def progress(settings: Settings, job_ids: list[str], until: str = "done") -> BatchProgress:
    """Where a set of jobs stands; ``until`` is streamed | done | reconciled."""
    awaited = {"streamed": STREAMED_STATES, "done": RESULT_STATES, "reconciled": ("reconciled",)}[until]
    states: dict[str, int] = {}
    finished = failed = 0
    total_s = streamed_s = 0.0
    with session_scope(settings.database_url) as session:
        for start in range(0, len(job_ids), 500):
            rows = session.execute(
                select(Job.state, Job.bytes_acked, Job.audio_duration_s, Job.session_config)
                .where(Job.id.in_(job_ids[start:start + 500]))
            ).all()
            for state, acked, duration, config in rows:
                states[state] = states.get(state, 0) + 1
                if state == "failed":
                    failed += 1
                elif state in awaited:
                    finished += 1
                total_s += duration or 0.0
                if state in STREAMED_STATES:
                    streamed_s += duration or 0.0
                elif acked and config:
                    streamed_s += min(duration or 0.0, acked / _bytes_per_second(config))
    return BatchProgress(len(job_ids), finished, failed, total_s, streamed_s, states)


def wait(settings: Settings, job_ids: list[str], until: str = "done", *, poll_s: float = 1.0,
         timeout_s: Optional[float] = None, on_progress: Optional[Callable[[BatchProgress], None]] = None
         ) -> BatchProgress:
    """Poll until every job reached ``until`` or failed (or ``timeout_s`` passed)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        current = progress(settings, job_ids, until)
        if on_progress is not None:
            on_progress(current)
        if current.settled or (deadline is not None and time.monotonic() >= deadline):
            return current
        time.sleep(poll_s)
