"""Transcript export benchmark: memory and time of exporting long sessions, to show the export streams.

    .venv/bin/python bench/bench_export.py [--hours 0.5,3,12] [--formats srt,vtt,json,txt]
                                           [--pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Builds a private database (a SQLite file, or with ``--pg`` a PostgreSQL database created next to the one
named and dropped at the end), stores one stereo session per duration with an utterance every 4 s
(12 words each, with word timings, both channels in turn, i.e. ~2,700 utterances and ~32,000 words for
3 hours), then exports each session in each format through ``transcripts.export.export`` (what
`webhook-service export` runs) and reports, per run: the peak of Python memory allocated during the
export (``tracemalloc``), the time, and the size of the file written. Streaming means the peak does not
grow with the session's length. Prints a Markdown table for bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
import uuid
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webhook_service.db import dispose_engines, session_scope  # noqa: E402
from webhook_service.migrate import upgrade  # noqa: E402
from webhook_service.models import Batch, Job, Utterance  # noqa: E402
from webhook_service.transcripts.export import Selection, export  # noqa: E402

WORDS = ("we", "should", "review", "the", "quarterly", "numbers", "before", "the", "meeting", "with", "finance",
         "tomorrow")
EVERY_S = 4.0


def store_session(url: str, hours: float) -> str:
    job_id, gladia_id = str(uuid.uuid4()), f"bench-{uuid.uuid4().hex[:12]}"
    batch = f"bench-{hours}h"
    with session_scope(url) as s:
        s.add(Batch(id=batch, name=batch))
        s.flush()
        s.add(Job(id=job_id, batch_id=batch, source_path=f"/audio/meeting-{hours}h.wav", state="reconciled",
                  gladia_id=gladia_id, audio_duration_s=hours * 3600, audio_channels=2,
                  reconciled_at=datetime.now(timezone.utc)))
    count = int(hours * 3600 / EVERY_S)
    rows = []
    for i in range(count):
        start = i * EVERY_S
        words = [{"word": " " + w, "start": round(start + k * 0.3, 3), "end": round(start + k * 0.3 + 0.25, 3),
                  "confidence": 0.93} for k, w in enumerate(WORDS)]
        rows.append({"job_id": job_id, "gladia_id": gladia_id, "utterance_id": f"{i % 2:02d}_{i}", "is_final": True,
                     "channel": i % 2, "start_s": start, "end_s": words[-1]["end"], "text": " " + " ".join(WORDS),
                     "language": "en", "confidence": 0.93, "words": words, "word_count": len(WORDS),
                     "source": "websocket"})
        if len(rows) == 2000 or i == count - 1:
            with session_scope(url) as s:
                s.execute(insert(Utterance), rows)
            rows = []
    return batch


def measure(url: str, batch: str, fmt: str, out: Path) -> tuple[float, float, int]:
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    summary = export(url, str(out), fmt, Selection(batch=batch), force=True)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    [name] = summary.exported
    return peak / 2**20, elapsed, (out / name).stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", default="0.5,3,12")
    parser.add_argument("--formats", default="srt,vtt,json,txt")
    parser.add_argument("--pg", help="a PostgreSQL URL: the benchmark database is created next to it")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    admin = None
    if args.pg:
        name = f"bench_export_{uuid.uuid4().hex[:8]}"
        admin = create_engine(make_url(args.pg), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(args.pg).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{work / 'bench.sqlite3'}"
    try:
        upgrade(url)
        print(f"database: {'PostgreSQL' if args.pg else 'SQLite'}\n")
        print("| Session | Utterances | Format | Peak Python memory during export | Time | File |")
        print("|---|---|---|---|---|---|")
        for hours in (float(h) for h in args.hours.split(",")):
            batch = store_session(url, hours)
            for fmt in args.formats.split(","):
                peak, elapsed, size = measure(url, batch, fmt, work / "out")
                print(f"| {hours:g} h stereo | {int(hours * 3600 / EVERY_S):,} | {fmt} | {peak:.2f} MiB | "
                      f"{elapsed:.2f} s | {size / 2**20:.1f} MiB |", flush=True)
    finally:
        dispose_engines()
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
