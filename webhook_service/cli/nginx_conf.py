"""The nginx configuration of `webhook-service proxy`, rendered from the settings.

Why nginx in front of gunicorn: a gunicorn thread reads a request until it is
complete, so a client that trickles its headers or body one byte a second
holds a thread for as long as it likes, and a few dozen such clients starve
the receiver (Gladia documents no retries: a callback that times out is lost
until reconciliation). nginx reads requests with an event loop, holds
thousands of slow connections for a few kilobytes each, and passes a request
upstream only once it has all of it (``proxy_request_buffering``), so
gunicorn's threads only ever see complete requests. On top of that:

* ``client_header_timeout`` (the whole header) and ``client_body_timeout``
  (each read of the body): ``PROXY_CLIENT_TIMEOUT_S``;
* ``limit_conn`` per client address: ``PROXY_MAX_CONN_PER_IP`` (429 beyond);
* ``client_max_body_size``: ``MAX_CALLBACK_BYTES``, the receiver's own limit;
* the access log writes the callback path as ``/callbacks/gladia/<redacted>``
  (a ``map`` on the request line; the raw line is never logged), one JSON object
  per line with ``LOG_FORMAT=json``;
* the client address goes upstream in ``X-Forwarded-For``/``X-Real-IP``,
  replacing whatever the client sent; the app believes it only from
  ``FORWARDED_ALLOW_IPS``.

Every path nginx writes (pid, temp files) is under a private prefix in the
data folder, so it runs as an ordinary Procfile process without root.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..log_redaction import REDACTED

# nginx's own refusals, answered with the service's JSON error body.
PROXY_ERRORS = {
    413: "request body too large",
    429: "too many connections from this address",
    502: "receiver unavailable",
    503: "receiver unavailable",
    504: "receiver did not answer in time",
}
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# nginx closes an idle connection to gunicorn before gunicorn does (gunicorn_conf.keepalive, 5 s). The other
# way round, a request sent on a connection that gunicorn is closing gets a reset, and the client a 502: a
# callback every 5 s or so met that race.
UPSTREAM_IDLE_S = 4


@dataclass(frozen=True)
class ProxyPaths:
    """Where one proxy instance keeps its files: ``<data>/proxy`` unless told otherwise."""

    prefix: Path

    @property
    def config(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.prefix / "nginx.pid"

    def create(self) -> None:
        for name in TEMP_DIRS:
            (self.prefix / "temp" / name).mkdir(parents=True, exist_ok=True)


def _error_pages() -> str:
    lines = []
    for status, message in PROXY_ERRORS.items():
        body = json.dumps({"error": {"status": status, "message": message}})
        lines.append(f"        error_page {status} /__proxy_error/{status};")
        lines.append(f"        location = /__proxy_error/{status} {{ internal; default_type application/json; "
                     f"return {status} '{body}'; }}")
    return "\n".join(lines)


def _log_format(log_format: str) -> str:
    """The access log's format: a text line, or with ``LOG_FORMAT=json`` one JSON object per line.

    The JSON has the keys of the service's own JSON lines (``time``, ``level``, ``logger``, ``message``,
    ``worker``) and the request's fields; ``escape=json`` escapes every value nginx puts in it. Both end
    with the receiver's own time (``$upstream_response_time``; ``-`` in text and empty in JSON for what
    nginx answered itself), so that a slow client (``request_time``) and a slow receiver tell apart.
    """
    if log_format == "json":
        return ("    log_format redacted escape=json '{\"time\":\"$time_iso8601\",\"level\":\"INFO\",'\n"
                "        '\"logger\":\"nginx.access\",\"worker\":\"$hostname:$pid\",'\n"
                "        '\"message\":\"$remote_addr $loggable_request $status\",\"remote_addr\":\"$remote_addr\",'\n"
                "        '\"request\":\"$loggable_request\",\"status\":$status,\"bytes_sent\":$body_bytes_sent,'\n"
                "        '\"request_time\":$request_time,\"upstream_time\":\"$upstream_response_time\",'\n"
                "        '\"user_agent\":\"$http_user_agent\"}';")
    return ("    log_format redacted '$remote_addr - [$time_local] \"$loggable_request\" '\n"
            "                        '$status $body_bytes_sent $request_time \"$http_user_agent\" $upstream_response_time';")


def render(settings: Settings, *, listen: str, upstream: str, paths: ProxyPaths, access_log: str) -> str:
    """nginx.conf for a proxy listening on ``listen`` in front of gunicorn on ``upstream``."""
    timeout = f"{int(settings.proxy_client_timeout_s)}s"
    temp = "\n".join(f"    {name}_temp_path {paths.prefix / 'temp' / name};" for name in TEMP_DIRS)
    # A master started as root would run its workers as `nobody`, which cannot reach a private data folder.
    user = "user root;\n" if os.geteuid() == 0 else ""
    access_log_line = "access_log off;" if access_log == "off" else f"access_log {access_log} redacted;"
    return f"""# Rendered by `webhook-service proxy`; edits are overwritten at the next start.
{user}worker_processes auto;
pid {paths.pid};
error_log stderr warn;
events {{ worker_connections 4096; }}

http {{
{temp}
    server_tokens off;
    default_type application/octet-stream;

    # The request line as the client sent it (an error page's internal redirect changes $request_method),
    # with the token of a callback path replaced.
    map $request $loggable_request {{
        "~*^(?<before_token>\\S+ /+callbacks(/|%2f)+gladia(/|%2f)+)[^?\\s]*(?<after_token>.*)$" "${{before_token}}{REDACTED}${{after_token}}";
        default $request;
    }}
{_log_format(settings.log_format)}
    {access_log_line}

    limit_conn_zone $binary_remote_addr zone=per_ip:10m;
    limit_conn_status 429;

    upstream receiver {{
        server {upstream};
        keepalive 16;
        keepalive_timeout {UPSTREAM_IDLE_S}s;
    }}

    server {{
        listen {listen};
        client_header_timeout {timeout};
        client_body_timeout {timeout};
        send_timeout {timeout};
        keepalive_timeout 15s;
        client_max_body_size {settings.max_callback_bytes};
        client_body_buffer_size 128k;
        limit_conn per_ip {settings.proxy_max_conn_per_ip};

        location / {{
            proxy_pass http://receiver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_connect_timeout 5s;
            proxy_read_timeout 60s;
            proxy_send_timeout 60s;
            proxy_intercept_errors off;
        }}
{_error_pages()}
    }}
}}
"""
