"""LOG_FORMAT: readable text by default, one JSON object per line with the job, session and worker on request."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import os
import subprocess
import sys

import pytest

from webhook_service.config import ConfigError, Settings
from webhook_service.logging_setup import JobContextFilter, formatter, job_context, set_gladia_id

pytestmark = pytest.mark.dbless


def _capture(log_format: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(JobContextFilter())
    logger = logging.getLogger(f"test.logging.{log_format}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def test_json_lines_carry_the_job_the_session_and_the_worker():
    contextvars.Context().run(_json_lines)  # a fresh context: no job of an earlier test in this thread


def _json_lines():
    logger, stream = _capture("json")
    with job_context("job-1"):
        logger.info("claimed %s", "it")
        set_gladia_id("gl-9")
        logger.warning("streaming")
    logger.info("no job here")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["claimed it", "streaming", "no job here", "failed"]
    assert lines[0]["job_id"] == "job-1" and "gladia_id" not in lines[0]
    assert (lines[1]["job_id"], lines[1]["gladia_id"], lines[1]["level"]) == ("job-1", "gl-9", "WARNING")
    assert "job_id" not in lines[2] and "gladia_id" not in lines[2]
    assert all(line["worker"].endswith(f":{os.getpid()}") and line["time"] for line in lines)
    assert "ValueError: boom" in lines[3]["exc_info"]


def test_text_stays_the_default():
    assert Settings.from_env(environ={}).log_format == "text"
    logger, stream = _capture("text")
    with job_context("job-2", "gl-2"):
        logger.info("hello")
    assert stream.getvalue().rstrip().endswith("[job=job-2 gladia=gl-2] hello")
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        Settings.from_env(environ={"LOG_FORMAT": "xml"})


def test_a_command_logs_json_when_asked(tmp_path):
    env = {**os.environ, "LOG_FORMAT": "json", "DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-m", "webhook_service.cli", "db", "upgrade"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(line["logger"] and line["level"] == "INFO" for line in lines)
