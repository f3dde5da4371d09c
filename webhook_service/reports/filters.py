"""The user's filters and page of a report, validated before any query runs.

``since`` / ``until`` are UTC calendar days, both inclusive, applied to the day
the session was created (the day a callback was received for callbacks that
match no session); ``batch`` is a batch id or name; ``limit`` / ``offset`` are
one page of the report's rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Optional

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ..models import Batch
from .errors import InvalidFilter

_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")

MAX_PAGE = 100_000
# The largest offset: far beyond any report's rows, and within every database's
# integer range (PostgreSQL's bigint refuses 2^63).
MAX_OFFSET = 2**31 - 1
MAX_BATCH_LENGTH = 200  # a batch's name column


@dataclass(frozen=True)
class Filters:
    since: Optional[date] = None
    until: Optional[date] = None
    batch_id: Optional[str] = None
    batch: Optional[str] = None  # as given by the user, echoed back
    limit: Optional[int] = None  # one page of rows (None: all of them), from ``offset``
    offset: int = 0

    def as_dict(self) -> dict[str, Optional[str]]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "batch": self.batch,
        }


def parse_day(value: Optional[str], option: str) -> Optional[date]:
    """'YYYY-MM-DD' -> date; anything else is an :class:`InvalidFilter` naming the option."""
    if value is None or value == "":
        return None
    try:
        if len(value) != 10 or not value.isascii():
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidFilter(f"invalid {option} {value!r}: expected a UTC date as YYYY-MM-DD") from None


def make_filters(session: Optional[Session], since: Optional[str] = None, until: Optional[str] = None,
                 batch: Optional[str] = None) -> Filters:
    """Validate user-given filters; resolve the batch by id or name."""
    since_day = parse_day(since, "since")
    until_day = parse_day(until, "until")
    if since_day and until_day and since_day > until_day:
        raise InvalidFilter(f"since {since_day} is after until {until_day}")
    batch_id = None
    if batch and (len(batch) > MAX_BATCH_LENGTH or "\x00" in batch):
        raise InvalidFilter(f"invalid batch: a batch id or name has 1 to {MAX_BATCH_LENGTH} characters and no NUL")
    if batch and session is not None:
        found = session.execute(
            select(Batch.id).where(or_(Batch.id == batch, Batch.name == batch))
        ).scalars().first()
        if found is None:
            raise InvalidFilter(f"no batch with id or name {batch!r}")
        batch_id = found
    return Filters(since=since_day, until=until_day, batch_id=batch_id, batch=batch or None)


def _page_number(value: Optional[str | int], option: str, low: int, high: Optional[int]) -> Optional[int]:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, str) and not _INTEGER.fullmatch(value.strip()):
            raise ValueError
        parsed = int(value)
    except (TypeError, ValueError):
        raise InvalidFilter(f"invalid {option} {str(value)[:40]!r}: expected an integer") from None
    if parsed < low or (high is not None and parsed > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise InvalidFilter(f"invalid {option} {str(value)[:40]!r}: must be {bound}")
    return parsed


def parse_page(limit: Optional[str | int], offset: Optional[str | int]) -> tuple[Optional[int], int]:
    """``limit`` (1..MAX_PAGE, None: every row) and ``offset`` (>= 0) as integers, or :class:`InvalidFilter`."""
    page_limit, page_offset = _page_number(limit, "limit", 1, MAX_PAGE), _page_number(offset, "offset", 0, MAX_OFFSET) or 0
    if page_limit is None and page_offset:
        raise InvalidFilter("offset needs a limit (one page of rows)")
    return page_limit, page_offset
