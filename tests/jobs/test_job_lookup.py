"""Job ids as `status` shows them (8-character prefixes) are accepted wherever a job id is."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from webhook_service.cli import cli
from webhook_service.db import session_scope
from webhook_service.jobs.queries import AmbiguousReference, find_job
from webhook_service.models import Job


@pytest.fixture
def jobs(settings):
    with session_scope(settings.database_url) as s:
        s.add_all([
            Job(id="3f2a9c1e-0000-4000-8000-000000000001", source_path="/calls/a.wav", gladia_id="gid-alpha-1"),
            Job(id="3f2a9c1e-0000-4000-8000-000000000002", source_path="/calls/b.wav"),
            Job(id="77aa0b12-0000-4000-8000-000000000003", source_path="/calls/c.wav", state="failed"),
        ])


def test_whole_ids_prefixes_and_gladia_ids(settings, jobs):
    with session_scope(settings.database_url) as s:
        assert find_job(s, "77aa0b12").source_path == "/calls/c.wav"
        assert find_job(s, "gid-alpha-1").source_path == "/calls/a.wav"
        assert find_job(s, "3f2a9c1e-0000-4000-8000-000000000002").source_path == "/calls/b.wav"
        assert find_job(s, "77aa0b") is None  # shorter than status shows: never a guess
        assert find_job(s, "ffffffff") is None
        assert find_job(s, "77aa0b1%") is None  # a LIKE wildcard is a character, not a pattern
        with pytest.raises(AmbiguousReference, match="starts several jobs"):
            find_job(s, "3f2a9c1e")


def test_status_and_reconcile_take_a_prefix(settings, jobs):
    env = {"DATABASE_URL": settings.database_url, "DATA_DIR": settings.data_dir, "LOG_LEVEL": "WARNING"}
    shown = CliRunner().invoke(cli, ["status", "77aa0b12", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    assert '"77aa0b12-0000-4000-8000-000000000003"' in shown.output
    ambiguous = CliRunner().invoke(cli, ["status", "3f2a9c1e"], env=env)
    assert ambiguous.exit_code != 0
    assert "starts several jobs" in ambiguous.output and "Traceback" not in ambiguous.output


def test_the_api_detail_takes_a_prefix(client, jobs):
    found = client.get("/api/sessions/77aa0b12")
    assert found.status_code == 200
    assert found.get_json()["job"]["id"] == "77aa0b12-0000-4000-8000-000000000003"
    ambiguous = client.get("/api/sessions/3f2a9c1e")
    assert ambiguous.status_code == 404 and "starts several jobs" in ambiguous.get_json()["error"]["message"]
