"""X-Forwarded-For is believed only from the proxies of FORWARDED_ALLOW_IPS (default: none)."""

from __future__ import annotations

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from webhook_service.web.forwarded import TrustedProxyFix

pytestmark = pytest.mark.dbless


@Request.application
def remote_addr(request: Request) -> Response:
    return Response(f"{request.remote_addr} {request.scheme}")


def seen(allow_ips: str, peer: str, **headers: str) -> str:
    client = Client(TrustedProxyFix(remote_addr, allow_ips))
    return client.get("/", headers=headers, environ_base={"REMOTE_ADDR": peer}).get_data(as_text=True)


def test_by_default_no_one_is_trusted():
    assert seen("", "127.0.0.1", X_Forwarded_For="6.6.6.6", X_Forwarded_Proto="https") == "127.0.0.1 http"


def test_a_trusted_proxy_gives_the_client_address_and_scheme():
    assert seen("127.0.0.1", "127.0.0.1", X_Forwarded_For="203.0.113.9", X_Forwarded_Proto="https") \
        == "203.0.113.9 https"
    assert seen("10.0.0.0/8", "10.1.2.3", X_Forwarded_For="203.0.113.9") == "203.0.113.9 http"


def test_only_the_last_hop_counts():
    # A client's own X-Forwarded-For is ignored: the proxy's value is the one appended last.
    assert seen("127.0.0.1", "127.0.0.1", X_Forwarded_For="6.6.6.6, 203.0.113.9") == "203.0.113.9 http"


def test_an_untrusted_peer_cannot_claim_an_address():
    assert seen("10.0.0.1", "192.0.2.7", X_Forwarded_For="10.0.0.1") == "192.0.2.7 http"
