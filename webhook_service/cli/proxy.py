"""`webhook-service proxy`: nginx in front of the receiver, as a Procfile process.

The command writes the configuration (``nginx_conf.py``) into a private
prefix in the data folder and runs ``nginx -g 'daemon off;'`` in the
foreground. It stays nginx's parent only to pass its error log through the
callback-token redaction (nginx's error lines quote the request line) and to
forward the process manager's signals; its exit status is nginx's.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click

from .common import CLIError, load_settings

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def host_port(value: str, option: str) -> str:
    """``HOST:PORT`` checked (``[::1]:8000`` for IPv6), as nginx's ``listen``/``server`` takes it."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CLIError(f"{option} must be HOST:PORT, got {value!r}")
    return value


def find_nginx() -> str:
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise CLIError("nginx not found: install Debian's nginx-light (`make system-deps`)")


def run_nginx(nginx: str, prefix: Path, config: Path) -> int:
    """Run nginx in the foreground, its error log redacted onto our stderr, until it exits."""
    from ..log_redaction import redact_path

    process = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(config), "-e", "stderr", "-g", "daemon off;"],
                               stderr=subprocess.PIPE)
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, lambda received, _frame: process.send_signal(received))
    assert process.stderr is not None
    for line in iter(process.stderr.readline, b""):
        sys.stderr.write(redact_path(line.decode("utf-8", errors="replace")))
        sys.stderr.flush()
    return process.wait()


@click.command()
@click.option("--listen", default="0.0.0.0:8000", show_default=True, help="HOST:PORT the public port listens on.")
@click.option("--upstream", default="127.0.0.1:8001", show_default=True, help="HOST:PORT of gunicorn (the receiver).")
@click.option("--prefix", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for nginx's config, pid and temp files [default: DATA_DIR/proxy].")
@click.option("--access-log", default="/dev/stdout", show_default=True,
              help="Where nginx writes its access log (callback tokens redacted); 'off' for none.")
@click.option("--print-config", is_flag=True, help="Print the rendered nginx.conf and exit.")
def proxy(listen: str, upstream: str, prefix: Path | None, access_log: str, print_config: bool) -> None:
    """Run nginx in front of the receiver: buffers slow clients, limits them, redacts tokens from its logs."""
    from .nginx_conf import ProxyPaths, render

    settings = load_settings()
    paths = ProxyPaths((prefix or Path(settings.data_dir) / "proxy").resolve())
    text = render(settings, listen=host_port(listen, "--listen"), upstream=host_port(upstream, "--upstream"),
                  paths=paths, access_log=access_log)
    if print_config:
        click.echo(text, nl=False)
        return
    nginx = find_nginx()
    paths.create()
    paths.config.write_text(text)
    sys.exit(run_nginx(nginx, paths.prefix, paths.config))


COMMANDS = (proxy,)
