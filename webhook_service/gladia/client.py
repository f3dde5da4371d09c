"""Gladia's REST API for live sessions (``/v2/live``), over ``requests``.

Retries follow what Gladia's own SDK does, and a little more: 408, 429 and 5xx
answers and connection failures are retried with exponential backoff and full
jitter, honouring ``Retry-After``. ``POST /v2/live`` is the exception: a retry
after a lost answer could open a second session, so :meth:`GladiaClient.create_live`
makes one attempt and leaves the decision to the caller (the streamer looks for
an orphan by ``custom_metadata`` before it tries again).

The API key travels only in the ``x-gladia-key`` header; no message, log line
or exception of this module contains it. It goes nowhere but to the configured
API: the client speaks https only (plain http only to a server on this machine,
the local emulator), and it follows no redirect, since a redirected request
would carry the key to whatever host the answer names. A 3xx is an error.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterator, Optional
from urllib.parse import quote, urlsplit

import requests

from ..config import is_loopback_host
from ..metrics import GLADIA_ERRORS


log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
USER_AGENT = "webhook-service"


class GladiaError(Exception):
    """An answer or a failure of Gladia's API; never carries the API key."""

    def __init__(self, message: str, *, status: Optional[int] = None, request_id: Optional[str] = None,
                 validation_errors: Optional[list[str]] = None, retry_after: Optional[float] = None,
                 detail: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.detail = detail  # Gladia's own message (the body's ``message``), when it answered
        self.request_id = request_id
        self.validation_errors = validation_errors or []
        self.retry_after = retry_after

    def __str__(self) -> str:
        text = super().__str__()
        if self.validation_errors:
            text += ": " + "; ".join(self.validation_errors)
        if self.request_id:
            text += f" (request {self.request_id})"
        return text


class GladiaAuthError(GladiaError):
    """401/403: the API key is missing, wrong, or not allowed to do this."""

    def key_refused(self) -> str:
        """The one line an operator needs: which setting to fix, with Gladia's answer."""
        return f"GLADIA_API_KEY was refused by Gladia ({self.status}: {self.detail or 'no message'})"


class GladiaNotFound(GladiaError):
    """404: no such session (deleted, or never existed for this key)."""


class GladiaBadRequest(GladiaError):
    """400/413/422: the request itself is wrong; retrying cannot help."""


class GladiaRateLimited(GladiaError):
    """429: too many requests or too many live sessions; back off and try later."""


class GladiaUnavailable(GladiaError):
    """Connection failures, timeouts and 5xx that outlasted the retries."""


class GladiaRedirect(GladiaError):
    """3xx: never followed, so the API key is never sent to the host a redirect names."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay_s: float = 0.3
    max_delay_s: float = 10.0

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        """Full-jitter backoff for the ``attempt``-th retry (1-based); ``Retry-After`` wins when longer."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, 120.0))
        return delay


def parse_retry_after(value: Optional[str]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class GladiaClient:
    """Synchronous client of the live-session endpoints (thread-safe: one ``requests.Session`` per instance)."""

    def __init__(self, api_url: str, api_key: str, *, region: str = "", timeout_s: float = 10.0,
                 retry: RetryPolicy = RetryPolicy(), sleep: Callable[[float], None] = time.sleep):
        _require_safe_api_url(api_url)
        self.api_url = api_url.rstrip("/")
        self._api_key = api_key
        self.region = region
        self.timeout_s = timeout_s
        self.retry = retry
        self._sleep = sleep
        self._http = requests.Session()
        self._http.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})

    @classmethod
    def from_settings(cls, settings) -> "GladiaClient":
        return cls(settings.gladia_api_url, settings.gladia_api_key, region=settings.gladia_region)

    def __repr__(self) -> str:  # never show the key
        return f"GladiaClient({self.api_url!r}, api_key='***')"

    def close(self) -> None:
        self._http.close()

    # ---------------------------------------------------------------- endpoints

    def create_live(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v2/live``: one attempt (see the module docstring); returns ``{id, created_at, url}``."""
        params = {"region": self.region} if self.region else None
        data = self._request("POST", "/v2/live", json_body=body, params=params, attempts=1)
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("id", "url")):
            raise GladiaError("POST /v2/live answered without a session id and url")
        return data

    def get_live(self, session_id: str) -> dict[str, Any]:
        """``GET /v2/live/:id``: the session with its status and, when done, ``result``."""
        return self._request("GET", f"/v2/live/{quote(session_id, safe='')}")

    def list_live(self, *, custom_metadata: Optional[dict[str, Any]] = None, status: Optional[list[str]] = None,
                  limit: int = 20, offset: int = 0, **filters: Any) -> dict[str, Any]:
        """``GET /v2/live``: one page (``items``, ``next``) of sessions matching the filters."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if custom_metadata is not None:
            params["custom_metadata"] = json.dumps(custom_metadata, separators=(",", ":"), sort_keys=True)
        if status:
            params["status"] = list(status)
        params.update({k: v for k, v in filters.items() if v is not None})
        return self._request("GET", "/v2/live", params=params)

    def iter_live(self, *, page_size: int = 50, max_items: int = 1000, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every session matching the filters, page by page (bounded by ``max_items``)."""
        offset = 0
        while offset < max_items:
            page = self.list_live(limit=page_size, offset=offset, **filters)
            items = page.get("items") or []
            yield from items
            if not items or not page.get("next"):
                return
            offset += len(items)

    def delete_live(self, session_id: str) -> bool:
        """``DELETE /v2/live/:id``: True when accepted (202); False when already gone (404)."""
        try:
            self._request("DELETE", f"/v2/live/{quote(session_id, safe='')}")
        except GladiaNotFound:
            return False
        return True

    def get_file(self, session_id: str) -> bytes:
        """``GET /v2/live/:id/file``: the audio Gladia recorded for the session."""
        return self._request("GET", f"/v2/live/{quote(session_id, safe='')}/file", raw=True)

    # ------------------------------------------------------------------ plumbing

    def _request(self, method: str, path: str, *, json_body: Any = None, params: Any = None,
                 attempts: Optional[int] = None, raw: bool = False) -> Any:
        attempts = attempts or self.retry.max_attempts
        url = self.api_url + path
        headers = {"x-gladia-key": self._api_key}
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(method, url, json=json_body, params=params, headers=headers,
                                              timeout=self.timeout_s, allow_redirects=False)
            except requests.RequestException as exc:
                GLADIA_ERRORS.labels(method, "0").inc()
                error: GladiaError = GladiaUnavailable(
                    f"{method} {path}: cannot reach {self.api_url} ({_connection_reason(exc, self.timeout_s)}); "
                    "check GLADIA_API_URL and that Gladia (or the emulator) is up")
            else:
                if response.is_redirect or 300 <= response.status_code < 400:
                    raise GladiaRedirect(f"{method} {path}: {response.status_code} redirect refused (not followed, "
                                         "so the API key stays with the configured API)", status=response.status_code)
                if response.status_code < 400:
                    if raw:
                        return response.content
                    if response.status_code in (202, 204) or not response.content:
                        return None
                    try:
                        return response.json()
                    except ValueError:
                        raise GladiaError(f"{method} {path}: answer is not JSON", status=response.status_code) from None
                GLADIA_ERRORS.labels(method, str(response.status_code)).inc()
                error = _error_from(method, path, response)
                if response.status_code not in RETRY_STATUSES:
                    raise error
            if attempt == attempts:
                raise error
            delay = self.retry.delay(attempt, error.retry_after)
            log.warning("%s %s failed (%s); retry %d/%d in %.2fs", method, path, error, attempt, attempts - 1, delay)
            self._sleep(delay)
        raise AssertionError("unreachable")


def _require_safe_api_url(api_url: str) -> None:
    """https, or http to this machine: the key must not cross a network in clear text."""
    parsed = urlsplit(api_url)
    if parsed.scheme == "https" and parsed.hostname:
        return
    if parsed.scheme == "http" and is_loopback_host(parsed.hostname):
        return
    raise ValueError(f"the Gladia API URL must be https:// (http:// only on loopback), got {parsed.scheme}://"
                     f"{parsed.hostname or ''}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


def _connection_reason(exc: requests.RequestException, timeout_s: float) -> str:
    """Why a request reached no answer, in words (not urllib3's nested reprs)."""
    text = str(exc)
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS handshake failed: " + _first_line(exc)[-120:]
    for needle, reason in (("Connection refused", "connection refused"),
                           ("Name or service not known", "host name not found"),
                           ("nodename nor servname", "host name not found"),
                           ("Temporary failure in name resolution", "host name not found"),
                           ("Network is unreachable", "network unreachable"),
                           ("No route to host", "no route to host"),
                           ("Connection reset", "connection reset"),
                           ("RemoteDisconnected", "connection closed without an answer")):
        if needle in text:
            return reason
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _error_from(method: str, path: str, response: requests.Response) -> GladiaError:
    status = response.status_code
    message = response.reason or "error"
    request_id = response.headers.get("x-aipi-call-id")
    validation: list[str] = []
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = str(body.get("message") or message)[:500]
        request_id = body.get("request_id") or request_id
        raw_validation = body.get("validation_errors")
        if isinstance(raw_validation, list):
            validation = [str(v)[:300] for v in raw_validation[:20]]
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    text = f"{method} {path}: {status} {message}"
    if status in (401, 403):
        cls: type[GladiaError] = GladiaAuthError
    elif status == 404:
        cls = GladiaNotFound
    elif status == 429:
        cls = GladiaRateLimited
    elif status in (400, 413, 422):
        cls = GladiaBadRequest
    elif status >= 500 or status == 408:
        cls = GladiaUnavailable
    else:
        cls = GladiaError
    return cls(text, status=status, request_id=request_id, validation_errors=validation, retry_after=retry_after,
               detail=message)
