"""Row normalization: one JSON-ready representation of report rows, whatever the database returned.

SQLite returns view timestamps as text and PostgreSQL returns numerics as
``Decimal``; a report's columns say what each value is, and this module turns
every value into the same Python type on both databases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable, Sequence

FLOAT_DIGITS = 6


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # text | int | float | ts | day
    description: str


def as_utc(value: datetime | str) -> datetime:
    """A timestamp the database returned (text on SQLite, naive or aware) as an aware UTC datetime."""
    if isinstance(value, str):  # SQLite returns view timestamps as text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    if value.utcoffset():
        return value.astimezone(timezone.utc)
    return value


def iso_utc(value: datetime | str) -> str:
    """ISO-8601 text of a timestamp, in UTC with an explicit ``+00:00`` offset."""
    return as_utc(value).isoformat()


def _to_float(value: Any) -> float:
    return value if type(value) is float else float(value)  # Decimal from PostgreSQL numeric


def _to_rounded(value: Any) -> float:
    return round(float(value), FLOAT_DIGITS)


def _to_int(value: Any) -> int:
    return value if type(value) is int else int(value)


def _to_day(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def _to_text(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "float": _to_float, "int": _to_int, "ts": iso_utc, "day": _to_day, "text": _to_text,
}


def normalize_rows(columns: Sequence[Column], raw: Iterable[dict[str, Any]], *,
                   round_floats: bool = True) -> list[dict[str, Any]]:
    """One JSON-ready representation of the rows, whatever the database returned.

    A hot path for the 10,000-row session summary: one converter per column,
    looked up once.
    """
    if not round_floats:
        return _normalize_timestamps(columns, list(raw))
    converters = [(c.name, _to_rounded if c.kind == "float" else _CONVERTERS[c.kind]) for c in columns]
    out = []
    for row in raw:
        item = {}
        for name, convert in converters:
            value = row.get(name)
            item[name] = None if value is None else convert(value)
        out.append(item)
    return out


def _normalize_timestamps(columns: Sequence[Column], raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Row-level views return plain floats, ints and text on both databases
    (their SQL casts; a test checks it): only timestamps need converting."""
    stamps = [c.name for c in columns if c.kind == "ts"]
    names = [c.name for c in columns]
    # Rows of the view itself hold exactly the columns (same keys in every row): reuse them.
    reuse = bool(raw) and list(raw[0]) == names
    out = []
    for row in raw:
        item = row if reuse else {n: row.get(n) for n in names}
        for name in stamps:
            if item[name] is not None:
                item[name] = iso_utc(item[name])
        out.append(item)
    return out
