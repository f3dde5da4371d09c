"""Callback tokens never reach a log line.

A live callback URL ``/callbacks/gladia/<token>`` is the only credential
Gladia's callbacks carry, so whoever reads an access log could write into a
running session. Every access log of the service (gunicorn's, the dev server's,
and nginx's through the same pattern in its ``map``) writes the path as
``/callbacks/gladia/<redacted>``.
"""

from __future__ import annotations

import logging
import re

REDACTED = "<redacted>"

# Extra or percent-encoded slashes still reach the route after normalization, so they are matched too.
CALLBACK_PATH = re.compile(r"(/+callbacks(?:/|%2f)+gladia(?:/|%2f)+)[^?\s\"]*", re.IGNORECASE)


def redact_path(text: str) -> str:
    """``text`` with every callback token replaced by ``<redacted>``."""
    return CALLBACK_PATH.sub(lambda m: m.group(1) + REDACTED, text)


class RedactCallbackTokens(logging.Filter):
    """A logging filter that redacts callback tokens in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_path(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_path(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact_path(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True
