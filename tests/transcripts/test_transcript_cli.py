"""`webhook-service transcript` and `webhook-service export` as a user runs them, on the test database."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
import srt
import webvtt
from click.testing import CliRunner

from sessions_fixture import A, B, C, D, load
from webhook_service.cli import cli


@pytest.fixture
def env(settings) -> dict[str, str]:
    load(settings.database_url)
    return {"DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir, "CELERY_BROKER_URL": "memory://",
            "LOG_LEVEL": "WARNING"}


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(cli, list(args), env=env)


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert any(all(w in line for w in words) for line in lines), result.output


def test_transcript_of_a_job_by_prefix_as_srt_with_channels(env):
    result = run(env, "transcript", A[:8], "--format", "srt")
    assert result.exit_code == 0, result.output
    cues = list(srt.parse(result.output))
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))
    assert cues[0].content.startswith("Channel 0: Good morning")
    assert any(c.content.startswith("Channel 1: Hello") for c in cues)
    assert "partial" not in result.output  # finals only


def test_transcript_of_one_channel_by_gladia_id(env):
    result = run(env, "transcript", "g-aaa", "--format", "vtt", "--channel", "1")
    assert result.exit_code == 0, result.output
    captions = webvtt.from_buffer(io.StringIO(result.output)).captions
    assert " ".join(c.text.replace("\n", " ") for c in captions) == \
        "Hello, I would like to book a room for two nights please"
    assert "Channel" not in result.output  # one channel: no label


def test_transcript_txt_and_json(env):
    txt = run(env, "transcript", B)
    assert txt.exit_code == 0 and txt.output == "[00:00:01] Second call with the same file name\n"
    data = json.loads(run(env, "transcript", A, "--format", "json").output)
    assert [u["id"] for u in data["utterances"]] == ["00_1", "01_1", "00_2"]
    assert data["channels"] == [0, 1]


@pytest.mark.parametrize("args, words", [
    (["transcript", "nope-not-a-job"], ("no session or job", "nope-not-a-job")),
    (["transcript", A, "--channel", "3"], ("no utterance on channel 3", "0, 1")),
    (["transcript", A, "--format", "docx"], ("docx",)),
    (["export", "--format", "srt", "--out", "{tmp}/o", "--batch", "nobatch"], ("no batch", "nobatch")),
    (["export", "--format", "srt", "--out", "{tmp}/o", "--since", "2026-13-01"], ("--since", "YYYY-MM-DD")),
    (["export", "--format", "srt", "--out", "{tmp}/o", "--state", "finished"], ("invalid state", "finished")),
    (["export", "--format", "pdf", "--out", "{tmp}/o"], ("pdf",)),
    (["export", "--format", "srt", "--out", "{tmp}/file/sub"], ("cannot write to", "file/sub")),
])
def test_bad_input_is_one_line_and_exit_2(env, tmp_path, args, words):
    (tmp_path / "file").write_text("a file, not a folder")
    one_line_error(run(env, *[a.format(tmp=tmp_path) for a in args]), *words)


def test_an_ambiguous_prefix_is_refused(env, settings):
    from webhook_service.db import session_scope
    from webhook_service.models import Job

    with session_scope(settings.database_url) as s:
        s.add(Job(id=A[:8] + "-ffff-4000-8000-00000000000f", source_path="/x.wav", state="queued"))
    one_line_error(run(env, "transcript", A[:8]), "starts several jobs")


def manifest(folder) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_export_names_files_after_the_audio_and_resumes(env, tmp_path):
    out = tmp_path / "export"
    first = run(env, "export", "--batch", "calls", "--format", "srt", "--out", str(out))
    assert first.exit_code == 0, first.output
    assert "2 exported, 0 already there" in first.output
    assert sorted(os.listdir(out)) == sorted(["call.srt", f"call-{B[:8]}.srt", "manifest.csv"])
    rows = manifest(out)
    assert [(r["job_id"], r["file"], r["utterances"]) for r in rows] == [(A, "call.srt", "3"),
                                                                        (B, f"call-{B[:8]}.srt", "1")]
    assert int(rows[0]["bytes"]) == (out / "call.srt").stat().st_size
    assert list(srt.parse((out / "call.srt").read_text()))[0].content.startswith("Channel 0: Good")

    again = run(env, "export", "--batch", "calls", "--format", "srt", "--out", str(out))
    assert "0 exported, 2 already there (skipped)" in again.output
    (out / "call.srt").unlink()
    resumed = run(env, "export", "--batch", "calls", "--format", "srt", "--out", str(out))
    assert "1 exported, 1 already there" in resumed.output
    assert (out / "call.srt").exists()
    assert sorted(os.listdir(out)) == sorted(["call.srt", f"call-{B[:8]}.srt", "manifest.csv"])
    forced = run(env, "export", "--batch", "calls", "--format", "srt", "--out", str(out), "--force")
    assert "2 exported, 0 already there" in forced.output
    assert len(manifest(out)) == 2


def test_export_filters_and_csv(env, tmp_path):
    out = tmp_path / "csv"
    result = run(env, "export", "--since", "2026-03-03", "--until", "2026-03-05", "--format", "csv", "--out",
                 str(out))
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["manifest.csv", "memo.csv"]
    assert (out / "memo.csv").read_text().splitlines()[1].endswith(",0,en,0.9,A memo")
    failed = run(env, "export", "--state", "failed", "--format", "txt", "--out", str(tmp_path / "f"))
    assert "1 exported" in failed.output and (tmp_path / "f" / "broken.txt").read_text() == ""
    assert manifest(tmp_path / "f")[0]["job_id"] == C
    # A file the export did not write is never overwritten: the session gets the job id in its name.
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "memo.txt").write_text("mine")
    run(env, "export", "--batch", "other", "--format", "txt", "--out", str(tmp_path / "own"))
    assert (tmp_path / "own" / "memo.txt").read_text() == "mine"
    assert (tmp_path / "own" / f"memo-{D[:8]}.txt").read_text() == "[00:00:00] A memo\n"
