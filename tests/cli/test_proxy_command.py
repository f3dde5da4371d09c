"""`webhook-service proxy`: the nginx configuration it renders from the settings, and its refusals."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from webhook_service.cli import cli

pytestmark = pytest.mark.dbless


def render(tmp_path: Path, *args: str, **env: str) -> str:
    result = CliRunner().invoke(cli, ["proxy", "--print-config", "--prefix", str(tmp_path / "px"), *args],
                                env={"DATA_DIR": str(tmp_path / "data"), **env})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_config_follows_the_settings(tmp_path):
    text = render(tmp_path, "--listen", "0.0.0.0:9000", "--upstream", "127.0.0.1:9001",
                  MAX_CALLBACK_BYTES="200000", PROXY_CLIENT_TIMEOUT_S="7", PROXY_MAX_CONN_PER_IP="33")
    for line in ("listen 0.0.0.0:9000;", "server 127.0.0.1:9001;", "client_max_body_size 200000;",
                 "client_header_timeout 7s;", "client_body_timeout 7s;", "limit_conn per_ip 33;",
                 "proxy_request_buffering on;", "proxy_set_header X-Forwarded-For $remote_addr;",
                 f"pid {tmp_path / 'px' / 'nginx.pid'};"):
        assert line in text
    # The raw request line never reaches the access log: only its redacted form does.
    assert "log_format redacted '$remote_addr - [$time_local] \"$loggable_request\" '" in text
    assert "$request " not in text.split("log_format", 1)[1].split(";", 1)[0]


def test_nginx_drops_an_idle_upstream_connection_before_gunicorn_does(tmp_path):
    """Else a request sent as gunicorn closes the idle connection is reset: a 502 for the caller."""
    from webhook_service import gunicorn_conf
    from webhook_service.cli.nginx_conf import UPSTREAM_IDLE_S

    upstream = render(tmp_path).split("upstream receiver {", 1)[1].split("}", 1)[0]
    assert f"keepalive_timeout {UPSTREAM_IDLE_S}s;" in upstream
    assert UPSTREAM_IDLE_S < gunicorn_conf.keepalive


@pytest.mark.skipif(shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists(), reason="needs nginx")
@pytest.mark.parametrize("access_log, log_format", [("/dev/stdout", "text"), ("/dev/stdout", "json"), ("off", "text")])
def test_nginx_accepts_the_config(tmp_path, access_log, log_format):
    text = render(tmp_path, "--access-log", access_log, LOG_FORMAT=log_format)
    (tmp_path / "px" / "temp").mkdir(parents=True)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    check = subprocess.run([nginx, "-t", "-p", str(tmp_path / "px"), "-c", str(conf), "-e", "stderr"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("args, message", [
    (["--listen", "8000"], "--listen must be HOST:PORT"),
    (["--upstream", "127.0.0.1:99999"], "--upstream must be HOST:PORT"),
    (["--listen", ":8000"], "--listen must be HOST:PORT"),
])
def test_bad_addresses_are_refused(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["proxy", "--print-config", *args], env={"DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize("name, value", [("PROXY_CLIENT_TIMEOUT_S", "0"), ("PROXY_MAX_CONN_PER_IP", "0"),
                                         ("FORWARDED_ALLOW_IPS", "10.0.0.1,not-an-address")])
def test_bad_settings_are_refused(tmp_path, name, value):
    result = CliRunner().invoke(cli, ["proxy", "--print-config"], env={"DATA_DIR": str(tmp_path), name: value})
    assert result.exit_code == 2
    assert name in result.output


def test_the_procfile_puts_the_proxy_on_the_public_port():
    lines = dict(line.split(": ", 1) for line in (Path(__file__).parents[2] / "Procfile").read_text().splitlines()
                 if ": " in line and not line.startswith("#"))
    assert "--listen ${BIND_HOST:-127.0.0.1}:${PORT" in lines["proxy"]  # loopback unless BIND_HOST says otherwise
    web_lines = [command for command in lines.values() if "webhook-service web " in command]
    assert len(web_lines) == 2  # gunicorn through `webhook-service web`: always with gunicorn_conf
    for command in web_lines:
        assert "--host 127.0.0.1 " in command and "0.0.0.0" not in command and "--access-logfile" not in command
