"""GET /v2/live/:id for reconciliation: the answer, or why there is none.

A fetcher is a plain callable, so tests and the CLI can give the run any
source of session results; the default one is the service's Gladia REST client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

from ..config import Settings


@dataclass
class FetchResult:
    """The outcome of GET /v2/live/:id after the client's own retries.

    ``status_code`` is None when no HTTP answer came at all (timeouts,
    connection refused): a transient condition, like a 5xx.
    """

    status_code: Optional[int]
    body: Optional[dict[str, Any]] = None
    error: Optional[str] = None


class SessionFetcher(Protocol):
    def __call__(self, gladia_id: str) -> FetchResult: ...


def default_fetcher(settings: Settings) -> SessionFetcher:
    """GET /v2/live/:id through the service's Gladia REST client.

    The client retries 408/429/5xx and connection failures with backoff and
    honours Retry-After; what is left after its retries becomes a
    :class:`FetchResult`, and the caller decides between "look again later"
    and "give up" (only a 404 gives up).
    """
    from ..gladia.client import GladiaClient, GladiaError

    client = GladiaClient.from_settings(settings)

    def fetch(gladia_id: str) -> FetchResult:
        try:
            body = client.get_live(gladia_id)
        except GladiaError as exc:
            return FetchResult(exc.status, None, str(exc)[:300])
        return FetchResult(200, body if isinstance(body, dict) else None, None if isinstance(body, dict)
                           else "answer is not a JSON object")

    return fetch
