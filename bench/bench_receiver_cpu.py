"""CPU per callback of the receiver's code itself, in one process, without gunicorn or a load generator.

    .venv/bin/python bench/bench_receiver_cpu.py --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/bench_receiver_cpu.py --db ... --profile      # + cProfile (thread CPU time) top lines
    .venv/bin/python bench/bench_receiver_cpu.py --db ... --package-root /path/to/other/checkout

The WSGI app of ``bench/bench_wsgi.py`` (the real app plus the bare route) is
called directly with a prepared WSGI environ, one request after the other, on
a fresh database with the jobs and callbacks of ``bench_callbacks.py``; the
figure is the thread's CPU time per request (``time.thread_time``), for the
bare route and for the callbacks (all answered 200). It leaves out what
gunicorn adds to every request (the bare route's figure in
``bench_callbacks.py`` minus this one's) and what the GIL costs between threads, so it
is the part of the server's CPU the receiver's code decides, and it hardly
depends on the machine's load. ``--package-root``: import ``webhook_service``
from another checkout (e.g. ``git archive main | tar -x -C /tmp/main``), to
compare versions with the same script.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top lines (thread CPU time)")
    parser.add_argument("--package-root", type=Path, help="import webhook_service from this folder")
    args = parser.parse_args()
    sys.path.insert(0, str(args.package_root or BENCH.parent))
    import webhook_service  # noqa: F401 - from there, before bench_callbacks puts this checkout first

    sys.path.insert(1, str(BENCH))
    import bench_callbacks as bc

    workdir = Path(tempfile.mkdtemp(prefix="bench-receiver-cpu-"))
    url, drop = bc.make_database(args.db, workdir)
    try:
        bc.upgrade(url)
        jobs = bc.create_jobs(url, 20)
        os.environ.update(DATABASE_URL=url, CALLBACK_SIGNING_KEY=bc.SIGNING_KEY, DATA_DIR=str(workdir / "data"),
                          CELERY_BROKER_URL="memory://", LOG_LEVEL="WARNING")
        from bench_wsgi import app

        from webhook_service.tokens import callback_token

        paths = {job_id: "/callbacks/gladia/" + callback_token(job_id, bc.SIGNING_KEY) for job_id, _ in jobs}
        n = args.requests
        bodies = [(paths[jobs[i % len(jobs)][0]], bc.transcript_body(jobs[i % len(jobs)][1], i))
                  for i in range(3 * n + 200)]
        statuses: dict[str, int] = {}

        def start_response(status, headers, exc_info=None):
            statuses[status[:3]] = statuses.get(status[:3], 0) + 1

        def call(path: str, body: bytes) -> None:
            b"".join(app(bc.post_environ(path, body), start_response))

        for path, body in bodies[:200]:  # warm-up: pools, prepared statements, caches
            call(path, body)
        measured = bodies[200:200 + n]
        t0 = time.thread_time()
        for _, body in measured:
            call("/_bench/bare", body)
        bare = (time.thread_time() - t0) / n * 1000
        t0, w0 = time.thread_time(), time.perf_counter()
        for path, body in measured:
            call(path, body)
        cpu, wall = (time.thread_time() - t0) / n * 1000, (time.perf_counter() - w0) / n * 1000
        print(f"database {url.split(':')[0]}   package {sys.modules['webhook_service'].__file__.rsplit('/', 2)[0]}")
        print(f"bare route   CPU {bare:.3f} ms per request")
        print(f"callbacks    CPU {cpu:.3f} ms per callback (wall {wall:.2f} ms, one at a time)   statuses {statuses}")
        if args.profile:
            profile = cProfile.Profile(time.thread_time)
            profile.enable()
            for path, body in bodies[200 + n:200 + 2 * n]:
                call(path, body)
            profile.disable()
            out = io.StringIO()
            pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(40)
            print(out.getvalue())
        return 0 if set(statuses) == {"200"} else 1
    finally:
        drop()


if __name__ == "__main__":
    sys.exit(main())
