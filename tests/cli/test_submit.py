"""`webhook-service submit` and `status`: inputs, validation, rows written, tasks sent, --wait."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from webhook_service.audio import synth_speechlike
from webhook_service.cli import cli
from webhook_service.db import session_scope
from webhook_service.jobs.streaming import run_job
from webhook_service.models import Batch, Job


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("submit-audio")
    synth_speechlike(folder / "a.wav", 0.6)
    synth_speechlike(folder / "b.flac", 0.6, sample_rate=48000, channels=2)
    (folder / "nested").mkdir()
    synth_speechlike(folder / "nested" / "c.mp3", 0.6, sample_rate=44100)
    (folder / "notes.txt").write_text("not audio")
    return folder


@pytest.fixture
def env(settings) -> dict[str, str]:
    return {"DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir,
            "CELERY_BROKER_URL": "filesystem://", "LOG_LEVEL": "WARNING"}


def invoke(env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def counts(url: str) -> tuple[int, int]:
    with session_scope(url) as session:
        return (session.scalar(select(func.count()).select_from(Batch)),
                session.scalar(select(func.count()).select_from(Job)))


def broker_messages(data_dir: str) -> list[dict]:
    folder = Path(data_dir) / "broker" / "in"
    return [json.loads(p.read_text()) for p in folder.glob("*")] if folder.exists() else []


@pytest.mark.parametrize("args,message", [
    (["/no/such/file.wav"], "no such file or folder"),
    (["{audio}/*.ogg"], "matches no file"),
    (["{audio}/a.wav", "--language", "xx"], "language_config.languages[0]"),
    (["{audio}/a.wav", "--speed", "-1"], "_stream.speed"),
    (["{audio}/a.wav", "--metadata", "novalue"], "KEY=VALUE"),
    (["{audio}/a.wav", "--metadata", "job_id=x"], "reserved"),
    (["{audio}/a.wav", "--config", "{audio}/notes.txt"], "not valid JSON"),
])
def test_bad_input_exits_2_and_writes_nothing(settings, env, audio, args, message):
    result = invoke(env, "submit", *[a.format(audio=audio) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert counts(settings.database_url) == (0, 0)
    assert broker_messages(settings.data_dir) == []


def test_config_file_with_unknown_option_is_refused(settings, env, audio, tmp_path):
    config = tmp_path / "session.yaml"
    config.write_text("language_config:\n  languages: [en]\nrealtime_processing:\n  translation: true\nbogus: 1\n")
    result = invoke(env, "submit", str(audio / "a.wav"), "--config", str(config))
    assert result.exit_code == 2
    assert "bogus: unknown option" in result.output
    assert "translation_config.target_languages: required" in result.output
    assert counts(settings.database_url) == (0, 0)


def test_folder_glob_and_options_make_one_batch_and_tasks(settings, env, audio, tmp_path):
    config = tmp_path / "session.json"
    config.write_text(json.dumps({"endpointing": 0.3, "custom_metadata": {"team": "support"}}))
    result = invoke(env, "submit", str(audio), str(audio / "*.wav"), "--batch", "calls", "--config", str(config),
                    "--language", "en", "--chunk-ms", "50", "--metadata", "site=paris", "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["batch"] == "calls"
    assert sorted(Path(j["path"]).name for j in body["jobs"]) == ["a.wav", "b.flac", "c.mp3"]  # deduplicated
    with session_scope(settings.database_url) as session:
        jobs = {Path(j.source_path).name: j for j in session.scalars(select(Job))}
        stereo = jobs["b.flac"]
        assert stereo.state == "queued" and stereo.audio_channels == 2 and len(stereo.audio_sha256) == 64
        assert stereo.session_config["channels"] == 2 and stereo.session_config["sample_rate"] == 48000
        assert stereo.session_config["language_config"] == {"languages": ["en"]}
        assert stereo.session_config["endpointing"] == 0.3
        assert stereo.session_config["_stream"] == {"chunk_ms": 50}
        assert stereo.session_config["messages_config"]["receive_acknowledgments"] is True
        assert stereo.custom_metadata == {"team": "support", "site": "paris"}
        assert stereo.bytes_total == int(0.6 * 48000) * 4
    sent = broker_messages(settings.data_dir)
    assert len(sent) == 3  # one stream_job task per queued job, through the real broker


def test_manifest_with_per_file_options_and_a_bad_file(settings, env, audio, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEgarbage" * 10)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,language,speed,customer\n"
        f"{audio / 'a.wav'},fr,2,acme\n"
        f"{broken},,,globex\n"
    )
    result = invoke(env, "submit", str(manifest), "--json")
    assert result.exit_code == 0, result.output
    jobs = {Path(j["path"]).name: j for j in json.loads(result.output)["jobs"]}
    assert jobs["a.wav"]["state"] == "queued"
    assert jobs["broken.wav"]["state"] == "failed"
    assert "not a readable audio file" in jobs["broken.wav"]["error"]
    with session_scope(settings.database_url) as session:
        good = session.get(Job, jobs["a.wav"]["id"])
        assert good.session_config["language_config"]["languages"] == ["fr"]
        assert good.session_config["_stream"] == {"speed": 2.0}
        assert good.custom_metadata == {"customer": "acme"}
    assert len(broker_messages(settings.data_dir)) == 1  # nothing sent for the failed file


def test_manifest_errors_name_the_line(settings, env, audio, tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,chunk_ms\n{audio / 'a.wav'},fast\n/missing.wav,\n")
    result = invoke(env, "submit", str(manifest))
    assert result.exit_code == 2
    assert "manifest.csv:2" in result.output and "missing.wav" in result.output
    assert counts(settings.database_url) == (0, 0)


def test_wait_shows_progress_until_streamed_and_status(settings, env, audio, emulator):
    env = dict(env, GLADIA_API_URL=emulator.url, GLADIA_API_KEY=emulator.api_key, STREAM_SPEED="0")
    from dataclasses import replace

    worker_settings = replace(settings, gladia_api_url=emulator.url, gladia_api_key=emulator.api_key,
                              stream_speed=0.0)
    stop = threading.Event()

    def fake_worker() -> None:  # runs queued jobs in process, as a worker would
        seen: set[str] = set()
        while not stop.is_set():
            with session_scope(settings.database_url) as session:
                ids = [i for i in session.scalars(select(Job.id).where(Job.state == "queued")) if i not in seen]
            for job_id in ids:
                seen.add(job_id)
                run_job(worker_settings, job_id)
            time.sleep(0.1)

    thread = threading.Thread(target=fake_worker, daemon=True)
    thread.start()
    try:
        result = invoke(env, "submit", str(audio / "a.wav"), str(audio / "b.flac"), "--batch", "waited",
                        "--wait", "--until", "streamed", "--timeout", "60")
    finally:
        stop.set()
        thread.join(10)
    assert result.exit_code == 0, result.output
    assert "2 streamed, 0 failed" in result.output
    status = invoke(env, "status", "waited", "--json")
    rows = json.loads(status.output)
    assert [r["state"] for r in rows] == ["stream_closed", "stream_closed"]
    assert all(r["bytes_acked"] == r["bytes_total"] for r in rows)
    table = invoke(env, "status", "waited")
    assert "stream_closed: 2" in table.output and "100%" in table.output


def test_every_file_refused_exits_non_zero_and_a_truncated_file_says_so(settings, env, audio, tmp_path):
    whole = (audio / "a.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[:40])  # the header torn off mid-way
    (tmp_path / "empty.wav").write_bytes(b"")
    result = invoke(env, "submit", str(tmp_path / "cut.wav"), str(tmp_path / "empty.wav"), "--batch", "refused")
    assert result.exit_code == 1, result.output
    assert "0 queued, 2 failed" in result.output
    assert "corrupt, truncated or not audio (Invalid data found when processing input)" in result.output
    assert "Errno" not in result.output and "empty file" in result.output
    # One good file among them: the submission goes ahead (exit 0), the bad one is reported.
    mixed = invoke(env, "submit", str(tmp_path / "cut.wav"), str(audio / "a.wav"), "--batch", "mixed")
    assert mixed.exit_code == 0 and "1 queued, 1 failed" in mixed.output


def test_a_file_already_reconciled_in_the_batch_is_skipped_unless_resubmitted(settings, env, audio):
    first = json.loads(invoke(env, "submit", str(audio / "a.wav"), str(audio / "b.flac"), "--batch", "again",
                              "--json").output)
    done_id = next(j["id"] for j in first["jobs"] if j["path"].endswith("a.wav"))
    with session_scope(settings.database_url) as session:
        session.get(Job, done_id).state = "reconciled"

    again = invoke(env, "submit", str(audio), "--batch", "again")
    assert again.exit_code == 0, again.output
    assert "2 queued, 0 failed, 1 skipped (already reconciled in this batch; --resubmit" in again.output
    assert f"{done_id}  skipped" in again.output
    # Another batch is another question; --resubmit sends it anyway.
    assert "1 skipped" not in invoke(env, "submit", str(audio / "a.wav"), "--batch", "other").output
    forced = json.loads(invoke(env, "submit", str(audio / "a.wav"), "--batch", "again", "--resubmit",
                               "--json").output)
    assert len(forced["jobs"]) == 1 and forced["skipped"] == []
    with session_scope(settings.database_url) as session:
        batch = session.scalar(select(Batch).where(Batch.name == "again"))
        assert session.scalar(select(func.count()).select_from(Job).where(Job.batch_id == batch.id)) == 5
