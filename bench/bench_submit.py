"""Submit start-up: how soon `webhook-service submit` puts the first stream task in the broker.

A backlog's makespan starts with this command: until its first task reaches the
broker, every Gladia slot stands empty. Each run starts the command as a user
would (a new process, ``submit DIR --batch NAME --json``) on N fresh files, with no
worker running, and reports:

* ``first_task_s``: from the process's start until the first ``stream_job`` task is
  in the broker (Redis: a BLPOP on the ``streams`` list, which takes that message
  and leaves the rest; filesystem broker: the first message file in its folder);
* ``exit_s``: until the command has exited (every job recorded and sent);
* ``python_s``: the same interpreter running ``pass``, the floor of any command.

``--ref REF`` also runs a git revision of the project (exported with ``git archive``,
run by the same virtualenv), alternating with the working tree run by run, so
that both see the same machine load.

    .venv/bin/python bench/bench_submit.py --files 30 --runs 9
    .venv/bin/python bench/bench_submit.py --files 30 --runs 9 --ref 98d0aaf
    .venv/bin/python bench/bench_submit.py --redis ''     # filesystem broker
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from stack_setup import drop_database, prepare, release_redis  # noqa: E402

from webhook_service.audio import synth_speechlike  # noqa: E402

STREAM_QUEUE = "streams"  # worker/config.py routes stream_job there


def export_ref(ref: str, into: Path) -> Path:
    """The project at ``ref``, as files (``git archive``), for the same virtualenv to run."""
    tree = into / f"ref-{ref}"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


class FirstTask:
    """Waits, in a thread, for the first stream task to reach the broker; ``at`` is its wall-clock time."""

    def __init__(self, broker: str, broker_dir: Path) -> None:
        self.broker, self.broker_dir, self.at = broker, broker_dir, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> "FirstTask":
        self._thread.start()
        return self

    def stop(self) -> Optional[float]:
        self._stop.set()
        self._thread.join(5)
        return self.at

    def _watch(self) -> None:
        if self.broker.startswith("redis"):
            import redis

            client = redis.Redis.from_url(self.broker)
            try:
                while not self._stop.is_set():
                    if client.blpop([STREAM_QUEUE], timeout=0.2):
                        self.at = time.time()
                        return
            finally:
                client.close()
        folder = self.broker_dir / "in"
        while not self._stop.is_set():
            if folder.is_dir() and any(True for _ in os.scandir(folder)):
                self.at = time.time()
                return
            time.sleep(0.001)


def run_once(python: str, cwd: Path, env: dict[str, str], audio: Path, batch: str, broker: str,
             broker_dir: Path) -> dict[str, float]:
    watcher = FirstTask(broker, broker_dir).start()
    time.sleep(0.05)  # the watcher is waiting on the broker
    started = time.time()
    done = subprocess.run([python, "-m", "webhook_service.cli", "submit", str(audio), "--batch", batch, "--json"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    ended = time.time()
    first = watcher.stop()
    if done.returncode != 0:
        raise SystemExit(f"submit failed ({done.returncode}):\n{done.stderr[-3000:]}")
    queued = sum(1 for job in json.loads(done.stdout)["jobs"] if job["state"] == "queued")
    return {"first_task_s": (first - started) if first else float("nan"), "exit_s": ended - started,
            "queued": queued}


def python_floor(python: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each file")
    parser.add_argument("--runs", type=int, default=9, help="runs per checkout")
    parser.add_argument("--ref", default=None, help="a git revision to run too, alternating with the working tree")
    parser.add_argument("--database", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14", help="'' for the filesystem broker")
    args = parser.parse_args()

    workdir, database_url, pg_name = prepare(None, args.database, "submit")
    broker = args.redis or "filesystem://"
    release_redis(broker)
    audio = workdir / "audio"
    audio.mkdir()
    for i in range(args.files):
        synth_speechlike(audio / f"file_{i:04d}.wav", args.seconds, sample_rate=16000, channels=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PROMETHEUS_"))}
    env.update(DATA_DIR=str(workdir / "data"), DATABASE_URL=database_url, CELERY_BROKER_URL=broker,
               GLADIA_API_URL="http://127.0.0.1:9", GLADIA_API_KEY="bench", PUBLIC_BASE_URL="http://127.0.0.1:9",
               CALLBACK_SIGNING_KEY=secrets.token_urlsafe(48))
    checkouts = {"working tree": ROOT}
    if args.ref:
        checkouts[args.ref] = export_ref(args.ref, workdir)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in checkouts}
    try:
        for number in range(args.runs):
            for name, tree in checkouts.items():
                release_redis(broker)
                shutil.rmtree(workdir / "data" / "broker", ignore_errors=True)  # the filesystem broker's messages
                results[name].append(run_once(sys.executable, tree, env, audio, f"submit-{number}-{len(results[name])}"
                                              f"-{name.replace(' ', '-')}", broker, workdir / "data" / "broker"))
    finally:
        release_redis(broker)
        drop_database(args.database, pg_name)
        shutil.rmtree(workdir, ignore_errors=True)  # the audio files (over a GB with --files 300 --seconds 120)
    report = {"files": args.files, "runs": args.runs, "database": database_url.split(":")[0],
              "broker": broker.split(":")[0], "python_s": round(python_floor(sys.executable, 5), 3),
              "load_average": round(os.getloadavg()[0], 2)}
    for name, runs in results.items():
        report[name] = {"first_task_s": summary([r["first_task_s"] for r in runs]),
                        "exit_s": summary([r["exit_s"] for r in runs]),
                        "queued": runs[0]["queued"]}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
