"""One job summary shape: `status --json` and `GET /api/sessions` write the same keys for a job."""

from __future__ import annotations

from datetime import datetime, timezone

from webhook_service.db import session_scope
from webhook_service.jobs.queries import job_summaries
from webhook_service.models import Batch, Job


def test_status_json_and_api_list_share_one_shape(client, settings):
    beat = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    with session_scope(settings.database_url) as s:
        batch = Batch(name="calls")
        s.add(batch)
        s.flush()
        s.add(Job(id="job-s", source_path="/calls/s.wav", batch_id=batch.id, state="streaming", gladia_id="g-s",
                  bytes_total=1000, bytes_acked=250, heartbeat_at=beat, worker_id="host:42",
                  ws_url="wss://api.gladia.io/v2/live?token=secret-token"))
    (cli,) = job_summaries(settings, "job-s")
    (api,) = client.get("/api/sessions").get_json()["items"]
    assert list(cli) == list(api)
    assert cli["id"] == cli["job_id"] == api["id"] == api["job_id"] == "job-s"
    assert (cli["batch"], api["batch"]) == ("calls", {"id": batch.id, "name": "calls"})
    assert (cli["heartbeat_at"], api["heartbeat_at"]) == (beat.isoformat(), "2026-03-04T05:06:07Z")
    different = {"batch", "created_at", "updated_at", "heartbeat_at"}
    assert {k: v for k, v in cli.items() if k not in different} == {k: v for k, v in api.items() if k not in different}
    assert "secret-token" not in str(cli) + str(api)
