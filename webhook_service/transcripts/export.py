"""Many sessions to a folder: one transcript file per session, named after its audio file, and a manifest.

The folder's ``manifest.csv`` lists every file written (job, Gladia id, batch, source file, format,
utterances, bytes, when). An export is resumable: a session the manifest lists with its file still present
is skipped unless ``force``; each file is written under a temporary name and renamed when complete, and
its manifest row is appended right after, so an interrupted export leaves no half-written file behind and
the next run goes on where it stopped.

File names: the audio file's name with the format's extension (``call.wav`` -> ``call.srt``); when that
name is taken (by another session of this export, or a file the export did not write) the job's 8-character
id is added (``call-1a2b3c4d.srt``). The same session gets the same name on every run.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Callable, Optional

from sqlalchemy import or_, select

from ..db import session_scope
from ..models import JOB_STATES, Batch, Job, utcnow
from ..reports import filters as report_filters
from .formats import FORMATS, WRITERS
from .source import TranscriptUnavailable, iter_lines, transcript_header

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("job_id", "gladia_id", "batch", "source_path", "state", "format", "file", "utterances",
                    "bytes", "exported_at")
_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)


class ExportError(ValueError):
    """The export cannot start: a bad option or a folder that cannot be written. The message says which."""


@dataclass(frozen=True)
class Selection:
    batch: Optional[str] = None
    since: Optional[date] = None  # UTC days, both inclusive, on the job's creation
    until: Optional[date] = None
    states: tuple[str, ...] = ("reconciled",)


@dataclass
class ExportSummary:
    selected: int = 0
    exported: list[str] = field(default_factory=list)  # file names
    skipped: int = 0  # already exported
    unavailable: list[str] = field(default_factory=list)  # job ids whose content was deleted


def parse_day(value: Optional[str], option: str) -> Optional[date]:
    """A UTC day as the reports read it (``YYYY-MM-DD``); anything else is an :class:`ExportError`."""
    try:
        return report_filters.parse_day(value, option)
    except report_filters.InvalidFilter as exc:
        raise ExportError(str(exc)) from None


def parse_states(value: Optional[str]) -> tuple[str, ...]:
    states = tuple(s.strip() for s in (value or "reconciled").split(",") if s.strip())
    unknown = [s for s in states if s not in JOB_STATES]
    if not states or unknown:
        raise ExportError(f"invalid state {', '.join(unknown) or value!r}: one or more of {', '.join(JOB_STATES)}")
    return states


def make_selection(batch: Optional[str], since: Optional[str], until: Optional[str],
                   states: Optional[str]) -> Selection:
    selection = Selection(batch=batch or None, since=parse_day(since, "--since"), until=parse_day(until, "--until"),
                          states=parse_states(states))
    if selection.since and selection.until and selection.since > selection.until:
        raise ExportError(f"--since {selection.since} is after --until {selection.until}")
    return selection


def prepare_folder(out: str) -> Path:
    """The output folder, created if needed and checked writable (one clear error otherwise)."""
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ExportError(f"cannot write to {out!r}: {exc.strerror or type(exc).__name__}") from None
    return folder


def selected_jobs(database_url: str, selection: Selection) -> list[tuple[str, str]]:
    """(job id, source path) of the jobs selected, oldest first."""
    with session_scope(database_url) as session:
        query = select(Job.id, Job.source_path).where(Job.state.in_(selection.states))
        if selection.batch:
            batch_id = session.scalar(select(Batch.id).where(or_(Batch.id == selection.batch,
                                                                 Batch.name == selection.batch)))
            if batch_id is None:
                raise ExportError(f"no batch with id or name {selection.batch!r}")
            query = query.where(Job.batch_id == batch_id)
        if selection.since:
            query = query.where(Job.created_at >= datetime.combine(selection.since, time(), timezone.utc))
        if selection.until:
            end = datetime.combine(selection.until + timedelta(days=1), time(), timezone.utc)
            query = query.where(Job.created_at < end)
        return [(job_id, path) for job_id, path in session.execute(query.order_by(Job.created_at, Job.id))]


def read_manifest(folder: Path) -> dict[tuple[str, str], dict[str, str]]:
    """(job id, format) -> its manifest row; the last row wins."""
    path = folder / MANIFEST
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        return {(row["job_id"], row["format"]): row for row in csv.DictReader(handle)
                if row.get("job_id") and row.get("format")}


def file_stem(source_path: str) -> str:
    """A file name from the audio file's: its base name without extension, made safe for any file system."""
    base = os.path.basename(source_path.replace("\\", "/")) or "session"
    stem = _UNSAFE.sub("_", os.path.splitext(base)[0]).strip(" .") or "session"
    return stem[:150]


def export(database_url: str, out: str, fmt: str, selection: Selection, *, force: bool = False,
           progress: Optional[Callable[[int, int, str], None]] = None) -> ExportSummary:
    """Write one file per selected session into ``out``; see the module docstring."""
    if fmt not in FORMATS:
        raise ExportError(f"invalid format {fmt!r}: one of {', '.join(FORMATS)}")
    folder = prepare_folder(out)
    jobs = selected_jobs(database_url, selection)
    manifest = read_manifest(folder)
    ours = {row["file"] for row in manifest.values()}
    summary = ExportSummary(selected=len(jobs))
    taken: dict[str, str] = {row["file"]: job_id for (job_id, _), row in manifest.items()}
    for index, (job_id, source_path) in enumerate(jobs, start=1):
        previous = manifest.get((job_id, fmt))
        if previous and (folder / previous["file"]).exists() and not force:
            summary.skipped += 1
            if progress:
                progress(index, len(jobs), previous["file"])
            continue
        name = previous["file"] if previous else _free_name(folder, file_stem(source_path), job_id, fmt, taken, ours)
        taken[name] = job_id
        row = _write_one(database_url, folder, name, job_id, fmt)
        if row is None:
            summary.unavailable.append(job_id)
        else:
            manifest[(job_id, fmt)] = row
            _append_manifest(folder, row)
            summary.exported.append(name)
        if progress:
            progress(index, len(jobs), name)
    _rewrite_manifest(folder, manifest)
    return summary


def _free_name(folder: Path, stem: str, job_id: str, fmt: str, taken: dict[str, str], ours: set[str]) -> str:
    for candidate in (f"{stem}.{fmt}", f"{stem}-{job_id[:8]}.{fmt}", f"{stem}-{job_id}.{fmt}"):
        owner = taken.get(candidate)
        foreign = (folder / candidate).exists() and candidate not in ours
        if (owner is None or owner == job_id) and not foreign:
            return candidate
    raise ExportError(f"no free file name for job {job_id} in {folder}")


def _write_one(database_url: str, folder: Path, name: str, job_id: str, fmt: str) -> Optional[dict[str, str]]:
    """Write one session's file (under a temporary name, renamed when complete); its manifest row."""
    target = folder / name
    partial = folder / f".{name}.part"
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        if job is None:
            return None
        try:
            header = transcript_header(session, job)
        except TranscriptUnavailable:
            return None
        counted = _Counter(iter_lines(session, job))
        size = 0
        try:
            with partial.open("w", encoding="utf-8", newline="") as handle:
                for chunk in WRITERS[fmt](header, counted):
                    handle.write(chunk)
                size = handle.tell()
            os.replace(partial, target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ExportError(f"cannot write {str(target)!r}: {exc.strerror or type(exc).__name__}") from None
        batch = session.get(Batch, job.batch_id) if job.batch_id else None
        return {"job_id": job.id, "gladia_id": job.gladia_id or "", "batch": batch.name if batch else "",
                "source_path": job.source_path, "state": job.state, "format": fmt, "file": name,
                "utterances": str(counted.count), "bytes": str(size),
                "exported_at": utcnow().isoformat(timespec="seconds")}


class _Counter:
    """An iterator that counts what passes through it."""

    def __init__(self, items):
        self._items = iter(items)
        self.count = 0

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self._items)
        self.count += 1
        return item


def _append_manifest(folder: Path, row: dict[str, str]) -> None:
    path = folder / MANIFEST
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, MANIFEST_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def _rewrite_manifest(folder: Path, manifest: dict[tuple[str, str], dict[str, str]]) -> None:
    """The manifest with one row per (job, format), rewritten atomically at the end of a run."""
    partial = folder / f".{MANIFEST}.part"
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in sorted(manifest.values(), key=lambda r: (r.get("exported_at", ""), r["job_id"], r["format"])):
            writer.writerow(row)
    os.replace(partial, folder / MANIFEST)
