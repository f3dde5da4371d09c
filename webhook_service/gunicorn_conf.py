"""gunicorn's options for the receiver, in one place for `webhook-service web` and the Procfile.

    gunicorn -c python:webhook_service.gunicorn_conf --bind HOST:PORT [--access-logfile -] webhook_service.wsgi:app

Options given on the command line win over these. What matters for safety:

* the access and error logs write callback paths as ``/callbacks/gladia/<redacted>``
  (``RedactingLogger``): the token in the path is a write credential. The access log is
  `webhook-service web`'s ``--access-log`` (on by default; the Procfile's receiver leaves it to
  the proxy in front of it, which logs every request it passes: a second line per callback cost
  the receiver about 0.05 ms of CPU, bench/README.md);
* ``X-Forwarded-Proto`` is trusted only from ``FORWARDED_ALLOW_IPS`` (default: from no one,
  where gunicorn's own default trusts loopback); the app applies the same list to
  ``X-Forwarded-For`` (``web/forwarded.py``);
* metrics: with ``PROMETHEUS_MULTIPROC_DIR`` set (``webhook-service web`` sets it to this surface's
  folder of ``METRICS_DIR``), the master empties that folder at start and marks each exited
  worker dead, prometheus-client's documented multiprocess set-up;
* gthread workers (4 threads each) with a short keep-alive. A slow client still holds a thread while it trickles
  its request, which is why the public port is nginx (`webhook-service proxy`), which buffers
  whole requests before gunicorn sees them.
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

from webhook_service.log_redaction import RedactCallbackTokens, redact_path


class RedactingLogger(Logger):
    """gunicorn's logger with callback tokens redacted from every access-log atom and error line."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if not any(isinstance(f, RedactCallbackTokens) for f in self.error_log.filters):
            self.error_log.addFilter(RedactCallbackTokens())
        if os.environ.get("LOG_FORMAT", "text").strip() == "json":  # gunicorn's own lines too
            from webhook_service.logging_setup import JobContextFilter, json_formatter

            for handler in self.error_log.handlers + self.access_log.handlers:
                handler.setFormatter(json_formatter())
                handler.addFilter(JobContextFilter())

    def atoms(self, resp: Any, req: Any, environ: dict, request_time: Any) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact_path(value) if isinstance(value, str) else value for key, value in atoms.items()}


worker_class = "gthread"
# One process per core (`webhook-service web`'s default) and 4 threads each: a callback's thread mostly waits
# for its database commit, and more threads per process cost more in switching than they gain
# (bench/README.md, "Receiver cost").
threads = 4
timeout = 30
graceful_timeout = 20
keepalive = 5  # longer than the proxy keeps an idle connection to gunicorn (cli/nginx_conf.UPSTREAM_IDLE_S)
logger_class = RedactingLogger
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")
# gunicorn 25+ opens a control socket at one path per user ($HOME/.gunicorn/gunicorn.ctl): the receiver
# and the operator surface on one machine would take it from each other. The process manager drives
# gunicorn with signals instead.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Before any worker starts: no sample of a previous run of this surface survives."""
    from webhook_service.metrics import wipe_process_dir

    wipe_process_dir()


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited: its live gauges leave the sums (its counters stay, as Prometheus expects)."""
    from webhook_service.metrics import mark_process_dead

    mark_process_dead(worker.pid)
