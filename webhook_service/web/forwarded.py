"""The client's address, believed only when the request comes from a trusted proxy.

Behind nginx (`webhook-service proxy`) every request's ``REMOTE_ADDR`` is the
proxy's; the client's is in ``X-Forwarded-For``. Anyone can send that header,
so it is applied (with werkzeug's ``ProxyFix``, one hop) only when the
connection comes from an address of ``FORWARDED_ALLOW_IPS``; by default none
is trusted and the headers are ignored.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Iterable

from werkzeug.middleware.proxy_fix import ProxyFix

from ..config import forwarded_proxy_networks


class TrustedProxyFix:
    """WSGI middleware: ``ProxyFix`` for requests from the trusted proxies, nothing for the others."""

    def __init__(self, app: Callable, allow_ips: str):
        self.app = app
        self.networks = forwarded_proxy_networks(allow_ips)
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=0, x_port=0, x_prefix=0)

    def is_trusted(self, remote_addr: str | None) -> bool:
        try:
            address = ipaddress.ip_address(remote_addr or "")
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.networks and self.is_trusted(environ.get("REMOTE_ADDR")):
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)


def trust_forwarded_headers(app: Any, allow_ips: str) -> None:
    """Wrap the Flask app's WSGI callable so it reads X-Forwarded-For/-Proto from ``allow_ips`` only."""
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, allow_ips)
